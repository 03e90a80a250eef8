//! LMTP over TCP: one thread accepts (up to `max_connections` sessions at a time, more get
//! 421), one thread per connection speaks `session`. A complete message goes to the worker's
//! main thread as a `Delivery` over a channel, with one byte on the wake socket its latch
//! waits on; the connection thread waits for the answer (bounded by the timeout) and only then
//! replies to DATA. No answer in time is a 451: the MTA retries, and the gateway's dedupe
//! (Message-ID) stores a message that did get committed meanwhile only once.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::session::{self, Envelope, Limits, Verdict};

/// How often a waiting read or accept looks whether the server is stopping.
const SLICE: Duration = Duration::from_millis(500);

/// The listener's settings; a change of `listen` binds anew, the rest applies to new sessions.
#[derive(Clone, PartialEq)]
pub struct Settings {
    /// `host:port`; empty: no listener.
    pub listen: String,
    pub max_connections: usize,
    pub limits: Limits,
}

/// A complete message waiting for the worker: store it, commit, then `answer`.
pub struct Delivery {
    pub envelope: Envelope,
    pub raw: Vec<u8>,
    answer: SyncSender<Verdict>,
}

impl Delivery {
    /// Tells the connection what became of the message (after the commit, for `Stored`).
    pub fn answer(self, verdict: Verdict) {
        // The connection may have given up waiting (it answered 451); nothing to do then.
        let _ = self.answer.try_send(verdict);
    }
}

/// The worker's side: deliveries arrive on `take`, the wake socket says when.
pub struct Server {
    deliveries: Receiver<Delivery>,
    deliveries_tx: Sender<Delivery>,
    wake_read: UnixStream,
    wake_write: Arc<UnixStream>,
    settings: Arc<Mutex<Settings>>,
    listening: Option<Listening>,
}

struct Listening {
    listen: String,
    stop: Arc<AtomicBool>,
    local: std::net::SocketAddr,
}

/// What `configure` could not do: bind the address, or start the thread that accepts.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        listen: String,
        source: std::io::Error,
    },
    #[error("cannot start the LMTP listener: {0}")]
    Thread(std::io::Error),
}

impl Server {
    pub fn new() -> io::Result<Server> {
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        let (deliveries_tx, deliveries) = mpsc::channel();
        Ok(Server {
            deliveries,
            deliveries_tx,
            wake_read,
            wake_write: Arc::new(wake_write),
            settings: Arc::new(Mutex::new(Settings {
                listen: String::new(),
                max_connections: 0,
                limits: Limits {
                    max_message_size: 0,
                    max_recipients: 0,
                    timeout: Duration::ZERO,
                    hostname: String::new(),
                },
            })),
            listening: None,
        })
    }

    /// Readable when a delivery waits: the worker's latch waits on it.
    pub fn wake_fd(&self) -> RawFd {
        self.wake_read.as_raw_fd()
    }

    /// The address listened on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listening.as_ref().map(|l| l.local)
    }

    /// Applies `settings`: binds `listen` when it changed (an empty one stops listening;
    /// sessions in progress finish). The error says what could not be bound.
    pub fn configure(&mut self, settings: Settings) -> Result<(), ListenError> {
        let listen = settings.listen.trim().to_string();
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
        if self.listening.as_ref().map(|l| l.listen.as_str()) == Some(listen.as_str()) {
            return Ok(());
        }
        if let Some(old) = self.listening.take() {
            old.stop.store(true, Ordering::Relaxed);
        }
        if listen.is_empty() {
            return Ok(());
        }
        let cannot_listen = |source| ListenError::Bind {
            listen: listen.clone(),
            source,
        };
        let listener = TcpListener::bind(&listen).map_err(cannot_listen)?;
        let local = listener
            .local_addr()
            .and_then(|a| listener.set_nonblocking(true).map(|_| a))
            .map_err(cannot_listen)?;
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = Acceptor {
            listener,
            stop: stop.clone(),
            active: Arc::new(AtomicUsize::new(0)),
            settings: self.settings.clone(),
            deliveries: self.deliveries_tx.clone(),
            wake: self.wake_write.clone(),
        };
        thread::Builder::new()
            .name("lmtp accept".into())
            .spawn(move || acceptor.run())
            .map_err(ListenError::Thread)?;
        self.listening = Some(Listening {
            listen,
            stop,
            local,
        });
        Ok(())
    }

    /// Every delivery that arrived since the last call; does not wait.
    pub fn take(&mut self) -> Vec<Delivery> {
        crate::net::take_woken(&self.deliveries, &self.wake_read)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(l) = &self.listening {
            l.stop.store(true, Ordering::Relaxed);
        }
    }
}

struct Acceptor {
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    settings: Arc<Mutex<Settings>>,
    deliveries: Sender<Delivery>,
    wake: Arc<UnixStream>,
}

impl Acceptor {
    fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            match self.listener.accept() {
                Ok((tcp, _)) => self.start(tcp),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(SLICE / 5),
                // Out of descriptors and the like: wait, do not spin.
                Err(_) => thread::sleep(SLICE),
            }
        }
    }

    fn start(&self, mut tcp: TcpStream) {
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let timeout = settings.limits.timeout.max(Duration::from_millis(100));
        let setup = tcp
            .set_nonblocking(false)
            .and_then(|_| tcp.set_read_timeout(Some(SLICE.min(timeout))))
            .and_then(|_| tcp.set_write_timeout(Some(timeout)))
            .and_then(|_| tcp.set_nodelay(true));
        if setup.is_err() {
            return;
        }
        if self.active.fetch_add(1, Ordering::AcqRel) >= settings.max_connections {
            self.active.fetch_sub(1, Ordering::AcqRel);
            let _ = tcp.write_all(b"421 4.3.2 too many connections, try again later\r\n");
            return;
        }
        let connection = Connection {
            stop: self.stop.clone(),
            active: self.active.clone(),
            deliveries: self.deliveries.clone(),
            wake: self.wake.clone(),
        };
        let spawned = thread::Builder::new()
            .name("lmtp session".into())
            .spawn(move || connection.run(tcp, settings.limits));
        if spawned.is_err() {
            // The closure, with its count, was dropped unrun.
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct Connection {
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    deliveries: Sender<Delivery>,
    wake: Arc<UnixStream>,
}

impl Connection {
    fn run(self, tcp: TcpStream, limits: Limits) {
        let stopping = || self.stop.load(Ordering::Relaxed);
        let mut deliver =
            |envelope: &Envelope, raw: Vec<u8>| self.hand_over(envelope, raw, &limits);
        session::serve(tcp, &limits, &stopping, &mut deliver);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Hands a message to the worker and waits for its answer, at most the timeout.
    fn hand_over(&self, envelope: &Envelope, raw: Vec<u8>, limits: &Limits) -> Verdict {
        let (answer, answered) = mpsc::sync_channel(1);
        let delivery = Delivery {
            envelope: envelope.clone(),
            raw,
            answer,
        };
        if self.deliveries.send(delivery).is_err() {
            return Verdict::TryLater("the gateway is stopping".into());
        }
        // Full (the worker has bytes to read already) is as good as written.
        let _ = (&*self.wake).write(&[1]);
        match answered.recv_timeout(limits.timeout) {
            Ok(verdict) => verdict,
            Err(_) => Verdict::TryLater("the gateway did not store the message in time".into()),
        }
    }
}
