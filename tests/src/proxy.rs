//! A TCP proxy on 127.0.0.1 that delays every byte by a fixed time in each direction, without
//! limiting bandwidth: a server `2 × delay` of round trip away, as real relays are (10–80 ms).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
