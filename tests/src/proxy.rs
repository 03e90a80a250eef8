//! TCP proxies on 127.0.0.1 that misbehave as networks do: one delays every byte, one breaks an
//! SMTP/LMTP transaction at its end of data, one cuts every connection after so many bytes.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Delays every byte by a fixed time in each direction, without limiting bandwidth: a server
/// `2 × delay` of round trip away, as real relays are (10–80 ms).
pub struct DelayingProxy {
    pub port: u16,
}

impl DelayingProxy {
    /// Listens on `port` (0: any free port) and forwards to 127.0.0.1:`upstream`.
    pub fn start(port: u16, upstream: u16, one_way: Duration) -> DelayingProxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the proxy's port");
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for s in [&client, &server] {
                    let _ = s.set_nodelay(true);
                }
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(client, server, one_way);
                pipe(s2, c2, one_way);
            }
        });
        DelayingProxy { port }
    }
}

/// Copies `from` → `to`, each chunk written `delay` after it was read.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        // An empty chunk: the end, delayed like the data before it.
        let _ = tx.send((Instant::now() + delay, Vec::new()));
    });
    std::thread::spawn(move || {
        for (at, chunk) in rx {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            if chunk.is_empty() || to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// What `EndOfDataProxy` does to the first message that passes through it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cut {
    /// The end of the data reaches the server, its answer never reaches the client: the
    /// connection is cut instead. The server stored the message; the client does not know.
    AnswerLost,
    /// The end of the data (`.` CRLF) is held until `release`: the message is in flight, the
    /// server has all of it but the last three bytes.
    HoldEnd,
}

/// A TCP proxy for SMTP/LMTP on 127.0.0.1 that breaks the first transaction at its end of data
/// (CRLF `.` CRLF from the client) as `Cut` says; later connections pass untouched.
pub struct EndOfDataProxy {
    pub port: u16,
    state: std::sync::Arc<(std::sync::Mutex<Progress>, std::sync::Condvar)>,
}

#[derive(Default)]
struct Progress {
    /// The first end of data was seen (and held or forwarded).
    reached: bool,
    released: bool,
    /// The server's answer that was swallowed (AnswerLost).
    swallowed: Vec<u8>,
}

impl EndOfDataProxy {
    pub fn start(upstream: u16, cut: Cut) -> EndOfDataProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Condvar, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy's port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new((Mutex::new(Progress::default()), Condvar::new()));
        let shared = state.clone();
        std::thread::spawn(move || {
            let mut cutting = true;
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                if !cutting {
                    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                    pipe(client, server, Duration::ZERO);
                    pipe(s2, c2, Duration::ZERO);
                    continue;
                }
                // One connection is cut; the ones after it (Postfix's retry) pass.
                cutting = false;
                let ended = Arc::new(AtomicBool::new(false));
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (state, flag) = (shared.clone(), ended.clone());
                std::thread::spawn(move || {
                    let mut tail: Vec<u8> = Vec::new();
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match c_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &buf[..n];
                        // Found across reads: the last bytes of the previous one count.
                        let mut window = tail.clone();
                        window.extend_from_slice(chunk);
                        let end = (!flag.load(Ordering::SeqCst))
                            .then(|| window.windows(5).position(|w| w == b"\r\n.\r\n"))
                            .flatten();
                        let Some(at) = end else {
                            if s_write.write_all(chunk).is_err() {
                                break;
                            }
                            tail = window[window.len().saturating_sub(4)..].to_vec();
                            continue;
                        };
                        // Bytes of `chunk` up to and including the CRLF before the dot.
                        let keep = (at + 2).saturating_sub(tail.len());
                        let (before, rest) = chunk.split_at(keep);
                        // Set before the dot reaches the server: its answer comes after.
                        flag.store(true, Ordering::SeqCst);
                        if s_write.write_all(before).is_err() {
                            break;
                        }
                        let (lock, changed) = &*state;
                        let mut progress = lock.lock().unwrap();
                        progress.reached = true;
                        changed.notify_all();
                        if cut == Cut::HoldEnd {
                            while !progress.released {
                                progress = changed.wait(progress).unwrap();
                            }
                        }
                        drop(progress);
                        let _ = s_write.write_all(rest);
                        let _ = std::io::copy(&mut c_read, &mut s_write);
                        break;
                    }
                    let _ = s_write.shutdown(Shutdown::Both);
                });
                let (mut s_read, mut c_write) = (server, client);
                let state = shared.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if ended.load(Ordering::SeqCst) && cut == Cut::AnswerLost {
                            // The answer to the data: swallowed, and the line cut.
                            state.0.lock().unwrap().swallowed = buf[..n].to_vec();
                            state.1.notify_all();
                            break;
                        }
                        if c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_write.shutdown(Shutdown::Both);
                    let _ = s_read.shutdown(Shutdown::Both);
                });
            }
        });
        EndOfDataProxy { port, state }
    }

    /// Waits until the first transaction reached its end of data (held, or forwarded).
    pub fn wait_reached(&self, timeout: Duration) -> bool {
        let (lock, changed) = &*self.state;
        let progress = lock.lock().unwrap();
        let (progress, _) = changed
            .wait_timeout_while(progress, timeout, |p| !p.reached)
            .unwrap();
        progress.reached
    }

    /// Waits for the server's answer that `Cut::AnswerLost` kept from the client.
    pub fn swallowed(&self, timeout: Duration) -> String {
        let (lock, changed) = &*self.state;
        let progress = lock.lock().unwrap();
        let (progress, _) = changed
            .wait_timeout_while(progress, timeout, |p| p.swallowed.is_empty())
            .unwrap();
        String::from_utf8_lossy(&progress.swallowed).into_owned()
    }

    /// Lets a held end of data go on (to a server that may be gone by now).
    pub fn release(&self) {
        let (lock, changed) = &*self.state;
        lock.lock().unwrap().released = true;
        changed.notify_all();
    }
}

/// A TCP proxy on 127.0.0.1 that cuts every connection once the server has sent `limit` bytes
/// through it: a server that drops the line in the middle of an answer.
pub struct CuttingProxy {
    pub port: u16,
}

impl CuttingProxy {
    pub fn start(upstream: u16, limit: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(Shutdown::Both);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let mut sent = 0;
                    let mut buf = [0u8; 4096];
                    while sent < limit {
                        match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let n = n.min(limit - sent);
                                if c_write.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                sent += n;
                            }
                        }
                    }
                    let _ = c_write.shutdown(Shutdown::Both);
                    let _ = s_read.shutdown(Shutdown::Both);
                });
            }
        });
        CuttingProxy { port }
    }
}
