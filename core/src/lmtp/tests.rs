//! The LMTP session over an in-memory stream, and the server over loopback TCP.

use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

fn limits() -> Limits {
    Limits {
        max_message_size: 1000,
        max_recipients: 3,
        timeout: Duration::from_secs(2),
        hostname: "gw.test".into(),
    }
}

/// A client's whole input, and what the server wrote.
struct Script {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The messages a session handed over, with their envelopes.
type Handed = Vec<(Envelope, Vec<u8>)>;

/// Runs a session on `input`; returns how it ended, the reply lines and the messages handed
/// over.
fn run(input: &[u8], limits: &Limits, verdict: Verdict) -> (End, Vec<String>, Handed) {
    let mut script = Script {
        input: Cursor::new(input.to_vec()),
        output: Vec::new(),
    };
    let mut got = Vec::new();
    let end = serve(&mut script, limits, &|| false, &mut |e, raw| {
        got.push((e.clone(), raw));
        verdict.clone()
    });
    let text = String::from_utf8(script.output).unwrap();
    assert!(
        text.ends_with("\r\n"),
        "every reply ends with CRLF: {text:?}"
    );
    let lines = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    (end, lines, got)
}

fn codes(lines: &[String]) -> Vec<&str> {
    lines.iter().map(|l| &l[..3]).collect()
}

const SESSION: &[u8] = b"LHLO mta.example\r\n\
MAIL FROM:<a@customer.example> SIZE=40 BODY=8BITMIME\r\n\
RCPT TO:<sales@mycompany.example>\r\n\
RCPT TO:<bob@mycompany.example>\r\n\
DATA\r\n\
Subject: hi\r\n\
\r\n\
..leading dot\r\n\
.\r\n\
QUIT\r\n";

#[test]
fn one_reply_per_recipient_after_data_and_dots_unstuffed() {
    let (end, lines, got) = run(SESSION, &limits(), Verdict::Stored);
    assert!(matches!(end, End::Quit), "{end:?}");
    assert_eq!(
        codes(&lines),
        [
            "220", "250", "250", "250", "250", "250", "250", "250", "250", "354", "250", "250",
            "221"
        ]
    );
    assert!(lines[5].contains("SIZE 1000"), "{lines:?}");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.from, "a@customer.example");
    assert_eq!(
        got[0].0.recipients,
        ["sales@mycompany.example", "bob@mycompany.example"]
    );
    assert_eq!(got[0].1, b"Subject: hi\r\n\r\n.leading dot\r\n");
}

#[test]
fn try_later_and_refused_answer_every_recipient() {
    let (_, lines, _) = run(SESSION, &limits(), Verdict::TryLater("disk\r\nfull".into()));
    assert_eq!(lines[10], "451 4.3.0 disk  full");
    assert_eq!(lines[11], "451 4.3.0 disk  full");
    let (_, lines, _) = run(SESSION, &limits(), Verdict::Refused("bad".into()));
    assert_eq!(codes(&lines)[10..12], ["554", "554"]);
}

#[test]
fn over_the_size_limit_is_552_per_recipient_and_disconnects() {
    let mut input =
        b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n".to_vec();
    for _ in 0..30 {
        input.extend_from_slice(&[b'x'; 60]);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b".\r\nQUIT\r\n");
    let (end, lines, got) = run(&input, &limits(), Verdict::Stored);
    assert!(matches!(end, End::TooBig), "{end:?}");
    assert!(got.is_empty());
    let n = lines.len();
    assert_eq!(lines[n - 2], "552 5.3.4 message too big (limit 1000 bytes)");
    assert_eq!(codes(&lines)[n - 1], "552");

    // A single line longer than the limit too, and a declared SIZE before any data.
    let mut input = b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\n".to_vec();
    input.extend_from_slice(&[b'y'; 5000]);
    input.extend_from_slice(b"\r\n.\r\n");
    let (end, lines, _) = run(&input, &limits(), Verdict::Stored);
    assert!(matches!(end, End::TooBig), "{end:?}");
    assert_eq!(codes(&lines).last(), Some(&"552"));
    let (_, lines, _) = run(
        b"LHLO x\r\nMAIL FROM:<a@b> SIZE=1001\r\nQUIT\r\n",
        &limits(),
        Verdict::Stored,
    );
    assert!(lines[6].starts_with("552 5.3.4"), "{lines:?}");
}

#[test]
fn exactly_the_limit_is_taken() {
    let mut input = b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\n".to_vec();
    input.extend_from_slice(&[b'z'; 998]);
    input.extend_from_slice(b"\r\n.\r\n");
    let (end, _, got) = run(&input, &limits(), Verdict::Stored);
    assert!(matches!(end, End::Closed), "{end:?}");
    assert_eq!(got[0].1.len(), 1000);
}

#[test]
fn a_long_command_line_is_500_and_disconnects() {
    let mut input = b"LHLO ".to_vec();
    input.extend_from_slice(&[b'h'; 5000]);
    input.extend_from_slice(b"\r\nQUIT\r\n");
    let (end, lines, _) = run(&input, &limits(), Verdict::Stored);
    assert!(matches!(end, End::LineTooLong), "{end:?}");
    assert_eq!(codes(&lines), ["220", "500"]);
}

#[test]
fn order_of_commands_is_enforced_and_rset_clears() {
    let input = b"MAIL FROM:<a@b>\r\nHELO x\r\nLHLO x\r\nRCPT TO:<a@b>\r\nDATA\r\n\
MAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\nRCPT TO:<>\r\nRSET\r\nRCPT TO:<a@b>\r\nNOOP\r\nFOO\r\nQUIT\r\n";
    let (_, lines, got) = run(input, &limits(), Verdict::Stored);
    let c = codes(&lines);
    // 220, 503 (no LHLO), 500 (HELO), 250 ×5 (LHLO), 503 (no MAIL), 503 (no RCPT), 250,
    // 503 (nested), 501 (empty RCPT), 250 (RSET), 503, 250 (NOOP), 500, 221
    assert_eq!(
        c,
        [
            "220", "503", "500", "250", "250", "250", "250", "250", "503", "503", "250", "503",
            "501", "250", "503", "250", "500", "221"
        ]
    );
    assert!(got.is_empty());
}

#[test]
fn too_many_recipients_are_452_and_bad_clients_are_dropped() {
    let input = b"LHLO x\r\nMAIL FROM:<>\r\nRCPT TO:<1@b>\r\nRCPT TO:<2@b>\r\nRCPT TO:<3@b>\r\nRCPT TO:<4@b>\r\nQUIT\r\n";
    let (_, lines, _) = run(input, &limits(), Verdict::Stored);
    assert_eq!(codes(&lines)[10], "452");
    let input = b"X\r\n".repeat(20);
    let (end, lines, _) = run(&input, &limits(), Verdict::Stored);
    assert!(matches!(end, End::TooManyErrors), "{end:?}");
    assert_eq!(lines.len(), 1 + 9 + 1);
    assert_eq!(codes(&lines).last(), Some(&"421"));
}

/// A client that says nothing: every read times out.
struct Silent;
impl Read for Silent {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        std::thread::sleep(Duration::from_millis(10));
        Err(io::ErrorKind::WouldBlock.into())
    }
}
impl Write for Silent {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_silent_client_times_out() {
    let mut l = limits();
    l.timeout = Duration::from_millis(100);
    let started = Instant::now();
    let end = serve(Silent, &l, &|| false, &mut |_, _| Verdict::Stored);
    assert!(matches!(end, End::TimedOut), "{end:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

fn settings(max_connections: usize) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        max_connections,
        limits: limits(),
    }
}

/// Reads one reply (all its lines); returns the last line.
fn reply(r: &mut BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.trim_end().to_string();
        }
    }
}

#[test]
fn the_server_answers_data_only_after_the_worker_does() {
    let mut server = Server::new().unwrap();
    server.configure(settings(2)).unwrap();
    let address = server.local_addr().unwrap();
    let tcp = TcpStream::connect(address).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = tcp.try_clone().unwrap();
    let mut r = BufReader::new(tcp);
    assert!(reply(&mut r).starts_with("220"));
    w.write_all(b"LHLO t\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\n")
        .unwrap();
    for code in ["250", "250", "250", "354"] {
        assert!(reply(&mut r).starts_with(code));
    }
    w.write_all(b"Subject: s\r\n\r\nbody\r\n.\r\n").unwrap();
    // Nothing comes back before the worker answers.
    r.get_ref()
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        r.get_ref().peek(&mut byte).is_err(),
        "answered before the commit"
    );
    let started = Instant::now();
    let delivery = loop {
        if let Some(d) = server.take().pop() {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(delivery.raw, b"Subject: s\r\n\r\nbody\r\n");
    assert_eq!(delivery.envelope.recipients, ["x@y"]);
    delivery.answer(Verdict::Stored);
    r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(reply(&mut r), "250 2.0.0 stored");

    // The connection limit: a second is fine, a third gets 421.
    let second = TcpStream::connect(address).unwrap();
    let mut second = BufReader::new(second);
    assert!(reply(&mut second).starts_with("220"));
    let third = TcpStream::connect(address).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut third = BufReader::new(third);
    assert!(reply(&mut third).starts_with("421 4.3.2"));
}

#[test]
fn no_answer_in_time_is_451() {
    let mut server = Server::new().unwrap();
    let mut s = settings(1);
    s.limits.timeout = Duration::from_millis(300);
    server.configure(s).unwrap();
    let tcp = TcpStream::connect(server.local_addr().unwrap()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = tcp.try_clone().unwrap();
    let mut r = BufReader::new(tcp);
    w.write_all(b"LHLO t\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nDATA\r\nbody\r\n.\r\n")
        .unwrap();
    for code in ["220", "250", "250", "250", "354", "451"] {
        assert!(reply(&mut r).starts_with(code));
    }
    // Answering late is harmless.
    for d in server.take() {
        d.answer(Verdict::Stored);
    }
}

#[test]
fn the_trace_names_the_envelope_in_the_message_s_line_ending() {
    let envelope = Envelope {
        from: String::new(),
        recipients: vec!["sales@mycompany.com".into(), "ann@mycompany.com".into()],
    };
    assert_eq!(
        envelope.trace(b"Subject: x\r\n\r\nbody\r\n"),
        b"Return-Path: <>\r\nDelivered-To: sales@mycompany.com\r\nDelivered-To: ann@mycompany.com\r\n"
    );
    let envelope = Envelope {
        from: "bob@customer.example".into(),
        recipients: vec!["sales@mycompany.com".into()],
    };
    assert_eq!(
        envelope.trace(b"Subject: x\n\nbody\n"),
        b"Return-Path: <bob@customer.example>\nDelivered-To: sales@mycompany.com\n"
    );
}
