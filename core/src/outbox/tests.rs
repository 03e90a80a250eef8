//! The pool's logic without a server: what it does with a bug and with a server that cannot
//! be reached.

use super::*;
use crate::net::Encryption;
use crate::smtp::{Auth, ServerConfig};
use std::time::Instant;

fn settings(port: u16) -> Settings {
    Settings {
        config: ServerConfig {
            host: "127.0.0.1".into(),
            port,
            encryption: Encryption::None,
            auth: Auth::None,
            username: None,
            password: None,
            client_cert: None,
            client_key: None,
            verify_tls: true,
            ca_cert: None,
            timeout: Duration::from_secs(2),
        },
        max_mails: 100,
        idle: Duration::from_secs(1),
        token: None,
    }
}

fn job(mail_id: i64, content: Content) -> Job {
    Job {
        mail_id,
        server_id: 1,
        from: None,
        to: vec!["b@customer.example".parse().unwrap()],
        content,
    }
}

/// Waits until `n` mails are finished.
fn finish(pool: &mut Pool, n: usize) -> Vec<Finished> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    while all.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} finished",
            all.len()
        );
        std::thread::sleep(Duration::from_millis(10));
        all.extend(pool.collect());
        pool.committed();
        pool.dispatch();
    }
    all
}

fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_panic_fails_its_mail_only_and_the_connection_goes_on() {
    let mut pool = Pool::new(Duration::from_secs(1)).unwrap();
    pool.configure(1, settings(closed_port()), 1);
    let mut panics = job::tests::content("x");
    panics.subject = "panic while rendering".into();
    let mut unbuildable = job::tests::content("x");
    unbuildable.attachments = Some(serde_json::json!([{"filename": "a", "content_base64": "!!"}]));
    assert!(pool.submit(job(1, panics)).is_none());
    assert!(pool.submit(job(2, unbuildable)).is_none());
    pool.dispatch();
    let finished = finish(&mut pool, 2);
    let mut seen = Vec::new();
    for f in finished {
        match f {
            Finished::Attempt {
                mail_id,
                attempt: Attempt::Panicked(message),
                ..
            } => {
                assert_eq!(mail_id, 1);
                assert_eq!(message, "internal error (panic): boom");
                seen.push(1);
            }
            Finished::Attempt {
                mail_id,
                attempt: Attempt::Unbuildable(reason),
                ..
            } => {
                assert_eq!(mail_id, 2);
                assert!(reason.contains("attachment"), "{reason}");
                seen.push(2);
            }
            _ => panic!("unexpected outcome"),
        }
    }
    seen.sort();
    assert_eq!(seen, [1, 2]);
    assert_eq!(pool.unfinished(), 0);
}

#[test]
fn an_unreachable_server_fails_every_mail_waiting_for_it_at_once() {
    let mut pool = Pool::new(Duration::from_secs(1)).unwrap();
    pool.configure(1, settings(closed_port()), 1);
    for id in 1..=5 {
        pool.submit(job(id, job::tests::content("x")));
    }
    pool.dispatch();
    let finished = finish(&mut pool, 5);
    for f in &finished {
        let Finished::Unreachable { error, .. } = f else {
            panic!("each mail is unreachable");
        };
        assert!(
            error.message.contains("cannot connect"),
            "{}",
            error.message
        );
        assert!(error.transient);
    }
    assert_eq!(pool.unfinished(), 0);
}

/// A connection reports, then writes its wake-up byte; the worker collects, then sleeps until
/// the socket is readable. A report that lands while the worker collects must leave the socket
/// readable, or its mail waits a whole poll interval (`net::take_woken`). Pairs of reports a few
/// microseconds apart hit that moment many times over.
#[test]
fn a_report_that_arrives_while_reports_are_collected_still_wakes_the_worker() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    const PAIRS: usize = 20_000;
    let (tx, rx) = mpsc::channel::<usize>();
    let (wake_read, wake_write) = UnixStream::pair().unwrap();
    wake_read.set_nonblocking(true).unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let seen = received.clone();
    let producer = std::thread::spawn(move || {
        let mut wake = &wake_write;
        for pair in 0..PAIRS {
            for item in [2 * pair, 2 * pair + 1] {
                tx.send(item).unwrap();
                let _ = io::Write::write(&mut wake, &[1]);
                for _ in 0..pair % 128 {
                    std::hint::spin_loop();
                }
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while seen.load(Ordering::Acquire) < 2 * pair + 2 {
                assert!(
                    Instant::now() < deadline,
                    "report {} never woke the worker",
                    2 * pair + 1
                );
                std::hint::spin_loop();
            }
        }
    });
    let mut byte = [0u8; 1];
    let mut total = 0;
    while total < 2 * PAIRS && !producer.is_finished() {
        // The worker's sleep: until a wake-up byte can be read.
        if !matches!(io::Read::read(&mut &wake_read, &mut byte), Ok(1)) {
            std::thread::yield_now();
            continue;
        }
        total += crate::net::take_woken(&rx, &wake_read).len();
        received.store(total, Ordering::Release);
    }
    producer.join().expect("every report woke the worker");
    assert_eq!(total, 2 * PAIRS);
}
