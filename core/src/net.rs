//! Sockets for our clients (SMTP, IMAP, POP3): connect with a timeout, optional TLS with
//! certificate verification on by default, and reads bounded three ways — an idle timeout per
//! read, a deadline per command, and a cancel check (the worker shutting down) once a second.
//! It knows nothing of PostgreSQL.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long one blocking read waits before the cancel check runs.
const SLICE: Duration = Duration::from_secs(1);

/// Limits of one connection.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Connect, and every read or write that makes no progress.
    pub timeout: Duration,
    /// Asked once a second while a read waits; `true` abandons the connection.
    pub cancelled: fn() -> bool,
}

fn never() -> bool {
    false
}

impl Limits {
    pub fn new(timeout: Duration) -> Limits {
        Limits {
            timeout,
            cancelled: never,
        }
    }
}

/// How a connection is encrypted, for SMTP and the mailboxes alike (the `encryption` column
/// of `outgoing_server` and `incoming_server`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    None,
    /// Plain first, then STARTTLS (POP3: STLS) before anything else is said.
    StartTls,
    /// TLS from the first byte (implicit TLS).
    Ssl,
}

impl Encryption {
    /// The `encryption` column's text (the mapping is in `model`).
    pub fn as_str(self) -> &'static str {
        crate::model::Column::as_str(self)
    }
}

/// TLS settings of a server: verification is on unless turned off explicitly.
pub struct Tls<'a> {
    pub host: &'a str,
    pub verify: bool,
    /// PEM certificate(s) trusted in addition to the system's.
    pub ca_cert: Option<&'a str>,
}

/// Which step failed, in words an administrator can act on.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Tls(String),
}

/// A TCP stream whose reads honour `Limits` and a deadline the protocol code moves forward
/// for each command (shared through `Deadline`).
pub struct TimedStream {
    tcp: TcpStream,
    limits: Limits,
    deadline: Deadline,
    applied: Option<Duration>,
}

/// The deadline of the command in progress, shared between a client and its stream.
#[derive(Clone)]
pub struct Deadline(Rc<Cell<Instant>>);

impl Deadline {
    /// The next command must finish within `allowance`.
    pub fn start(&self, allowance: Duration) {
        self.0.set(Instant::now() + allowance);
    }
}

pub fn connect(host: &str, port: u16, limits: Limits) -> Result<(TimedStream, Deadline), NetError> {
    let addresses = (host, port)
        .to_socket_addrs()
        .map_err(|e| NetError::Connect(format!("cannot resolve host \"{host}\": {e}")))?;
    let mut last = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, limits.timeout) {
            Ok(tcp) => {
                tcp.set_write_timeout(Some(limits.timeout))
                    .and_then(|_| tcp.set_nodelay(true))
                    .map_err(|e| NetError::Connect(e.to_string()))?;
                let deadline = Deadline(Rc::new(Cell::new(Instant::now() + limits.timeout)));
                let stream = TimedStream {
                    tcp,
                    limits,
                    deadline: deadline.clone(),
                    applied: None,
                };
                return Ok((stream, deadline));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(NetError::Connect(match last {
        Some(e) if e.kind() == io::ErrorKind::TimedOut => {
            format!("connection to {host}:{port} timed out")
        }
        Some(e) => format!("cannot connect to {host}:{port}: {e}"),
        None => format!("host \"{host}\" has no address"),
    }))
}

impl Read for TimedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let idle_limit = Instant::now() + self.limits.timeout;
        loop {
            let limit = idle_limit.min(self.deadline.0.get());
            let left = limit.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the server did not answer in time (timed out)",
                ));
            }
            let slice = left.min(SLICE);
            if self.applied != Some(slice) {
                self.tcp.set_read_timeout(Some(slice))?;
                self.applied = Some(slice);
            }
            match self.tcp.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if (self.limits.cancelled)() {
                        return Err(io::Error::other("cancelled: the worker is shutting down"));
                    }
                }
                result => return result,
            }
        }
    }
}

impl Write for TimedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// A plain or TLS connection, so that protocol code has one stream type.
pub enum Stream {
    Plain(TimedStream),
    Tls(Box<native_tls::TlsStream<TimedStream>>),
}

impl Stream {
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Whether the peer has sent something (or closed) that nobody asked for: a kept
    /// connection the server gave up on (a 421 on idle timeout, or a FIN). Never blocks.
    pub fn has_unsolicited_input(&self) -> bool {
        let tcp = match self {
            Stream::Plain(s) => &s.tcp,
            Stream::Tls(s) => &s.get_ref().tcp,
        };
        if tcp.set_nonblocking(true).is_err() {
            return true;
        }
        let pending =
            !matches!(tcp.peek(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        pending || tcp.set_nonblocking(false).is_err()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The TLS handshake on a connected stream (implicit TLS, or after STARTTLS/STLS).
pub fn secure(stream: TimedStream, tls: &Tls<'_>) -> Result<Stream, NetError> {
    secure_as(stream, tls, None)
}

/// `secure`, presenting a client certificate when one is given.
pub fn secure_as(
    stream: TimedStream,
    tls: &Tls<'_>,
    identity: Option<native_tls::Identity>,
) -> Result<Stream, NetError> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(identity) = identity {
        builder.identity(identity);
    }
    if let Some(pem) = tls.ca_cert {
        let cert = native_tls::Certificate::from_pem(pem.as_bytes())
            .map_err(|e| NetError::Tls(format!("unreadable ca_cert: {e}")))?;
        builder.add_root_certificate(cert);
    }
    if !tls.verify {
        builder
            .danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true);
    }
    let connector = builder
        .build()
        .map_err(|e| NetError::Tls(format!("TLS set-up failed: {e}")))?;
    match connector.connect(tls.host, stream) {
        Ok(s) => Ok(Stream::Tls(Box::new(s))),
        Err(native_tls::HandshakeError::Failure(e)) => Err(NetError::Tls(describe_tls(&e))),
        Err(native_tls::HandshakeError::WouldBlock(_)) => Err(NetError::Tls(
            "TLS handshake timed out: does this port speak TLS from the start?".into(),
        )),
    }
}

/// A server's words made fit for `last_error`, `failure_reason` and the log: control
/// characters (CR, LF, ESC …) become spaces, so a hostile or broken server cannot forge log
/// lines or hide text on a terminal.
pub fn printable(text: String) -> String {
    if text.contains(char::is_control) {
        text.replace(char::is_control, " ")
    } else {
        text
    }
}

/// `text` followed by the causes of `e` that it does not already say (OpenSSL's reason is
/// often only in a cause).
pub fn with_causes(mut text: String, e: &dyn std::error::Error) -> String {
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn describe_tls(e: &native_tls::Error) -> String {
    let mut text = with_causes(format!("TLS handshake failed: {e}"), e);
    if text.contains("wrong version number") || text.contains("packet length too long") {
        text.push_str(" (the server does not speak TLS on this port)");
    }
    text
}

/// Reads one line (up to LF) byte by byte: used before a TLS upgrade, where nothing past the
/// line may be consumed.
pub fn read_line_unbuffered(stream: &mut impl Read, max: usize) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < max {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return Ok(line);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "the server sent an overlong line",
    ))
}

/// Everything in `items`, for a thread that sleeps until `wake` is readable and is sent to by
/// threads that send an item, then write a byte to `wake`. The bytes are drained *before* the
/// channel: an item that arrives after the drain leaves its byte behind, so the sleeper wakes
/// for it. Draining after the channel could swallow the byte of an item sent in between, and
/// the sender's results then waited a whole `poll_interval` (a 10 s stall).
pub fn take_woken<T>(
    items: &std::sync::mpsc::Receiver<T>,
    mut wake: &std::os::unix::net::UnixStream,
) -> Vec<T> {
    let mut drained = [0u8; 256];
    while matches!(std::io::Read::read(&mut wake, &mut drained), Ok(n) if n > 0) {}
    items.try_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encryption_reads_its_column() {
        for e in [Encryption::None, Encryption::StartTls, Encryption::Ssl] {
            assert_eq!(e.as_str().parse::<Encryption>(), Ok(e));
        }
        assert!("tls".parse::<Encryption>().is_err());
    }

    #[test]
    fn server_words_lose_their_control_characters() {
        assert_eq!(
            printable("550 no\r\nX-Forged: yes\x1b[2J".into()),
            "550 no  X-Forged: yes [2J"
        );
        assert_eq!(printable("250 fine".into()), "250 fine");
    }
    use std::net::TcpListener;

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut stream, _) =
            connect("127.0.0.1", port, Limits::new(Duration::from_millis(300))).unwrap();
        let _held = listener.accept().unwrap();
        let started = Instant::now();
        let err = stream.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_dripping_server_hits_the_command_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut stream, deadline) =
            connect("127.0.0.1", port, Limits::new(Duration::from_millis(400))).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        std::thread::spawn(move || {
            // One byte every 100 ms: never idle for 400 ms, but never done either.
            while server.write_all(b"x").is_ok() {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        deadline.start(Duration::from_millis(800));
        let started = Instant::now();
        let mut buf = [0u8; 1];
        let err = loop {
            if let Err(e) = stream.read(&mut buf) {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn cancel_stops_a_waiting_read() {
        fn yes() -> bool {
            true
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = Limits {
            timeout: Duration::from_secs(30),
            cancelled: yes,
        };
        let (mut stream, _) = connect("127.0.0.1", port, limits).unwrap();
        let _held = listener.accept().unwrap();
        let started = Instant::now();
        let err = stream.read(&mut [0u8; 16]).unwrap_err();
        assert!(err.to_string().contains("shutting down"));
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        match connect("127.0.0.1", port, Limits::new(Duration::from_secs(2))) {
            Err(NetError::Connect(m)) => assert!(m.contains("cannot connect"), "{m}"),
            _ => panic!("expected a connect error"),
        }
    }
}
