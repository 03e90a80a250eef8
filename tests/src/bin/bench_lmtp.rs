//! Push-delivery benchmark (run by `BENCH_PARTS=lmtp scripts/bench.sh`, and by the full run):
//! messages per second stored through the fetcher's LMTP listener, sent by Postfix's
//! `smtp-source -L`, next to `process_message()` from one client of the same 5 KB message;
//! then through a real Postfix (SMTP in, its queue, LMTP out to the listener). Every message
//! is distinct (smtp-source numbers its Message-Ids) and each run checks that all were stored;
//! it asserts nothing about speed.

use std::process::Command;
use std::time::{Duration, Instant};

use mail_gateway_tests::postfix::{Postfix, Transport};
use mail_gateway_tests::{Client, Cluster, Gateway, bench_row, exec, free_port};

const SIZE: usize = 5120;
const FROM: &str = "c@customer.example";
/// Neither an alias nor the catchall: each message is stored and routed to `unroutable`,
/// the same work on every row.
const TO: &str = "info@mycompany.com";

/// A message shaped as smtp-source writes them: four header fields, then `SIZE` bytes of
/// 80-byte lines.
fn smtp_source_like(i: usize) -> Vec<u8> {
    let mut raw = format!(
        "From: <{FROM}>\r\nTo: <{TO}>\r\nDate: Wed,  2 Dec 2026 10:00:00 +0000 (UTC)\r\n\
         Message-Id: <bench-{i:08}@client.example>\r\n\r\n"
    );
    let mut body = 0;
    let mut line = 1;
    while body < SIZE {
        let text = format!("{line}{}\r\n", "X".repeat(77));
        body += text.len();
        raw.push_str(&text);
        line += 1;
    }
    raw.into_bytes()
}

fn stored(db: &mut Client) -> i64 {
    db.query_one("SELECT count(*) FROM mail_gateway.inbound", &[])
        .unwrap()
        .get(0)
}

/// A database in use: 20,000 older messages, vacuumed and analysed as autovacuum keeps it.
/// (From empty tables, each session's kept plans are made for empty tables and every row
/// after would measure that: see docs/DECISIONS.md.)
fn seed(db: &mut Client) {
    // In statements of 500: one transaction's routing of thousands runs out of lock slots.
    for first in (1..=20_000).step_by(500) {
        exec(
            db,
            &format!(
                "SELECT count(mail_gateway.process_message(convert_to(format(
                     E'From: <old%s@customer.example>\\r\\nTo: <info@mycompany.com>\\r\\n'
                     'Message-Id: <old-%s@client.example>\\r\\n\\r\\nAn older message.\\r\\n',
                     i, i), 'UTF8')))
                 FROM generate_series({first}, {}) i",
                first + 499
            ),
        );
    }
    exec(db, "VACUUM ANALYZE");
}

/// Runs `work`, which must store `n` new messages; checks that it did.
fn stores<T>(db: &mut Client, n: usize, what: &str, work: impl FnOnce() -> T) -> T {
    let before = stored(db);
    let result = work();
    let after = stored(db);
    assert_eq!(
        after - before,
        n as i64,
        "{what}: each of the {n} messages stored once (distinct Message-Ids)"
    );
    result
}

/// Prints a rate and adds it to the table; returns it.
fn rate(label: &str, n: usize, took: Duration, row: &str, extra: &str, target: &str) -> f64 {
    let per_second = n as f64 / took.as_secs_f64();
    println!(
        "{label:<52} {per_second:>8.0} msgs/s   ({n} in {:.2} s)",
        took.as_secs_f64()
    );
    bench_row(row, &format!("{per_second:.0} msgs/s{extra}"), target);
    per_second
}

fn process_message(cluster: &Cluster, n: usize, first: usize) -> Duration {
    let mut db = cluster.connect("postgres");
    let statement = db
        .prepare("SELECT mail_gateway.process_message($1)")
        .unwrap();
    let started = Instant::now();
    for i in first..first + n {
        db.query_one(&statement, &[&smtp_source_like(i)]).unwrap();
    }
    started.elapsed()
}

/// `smtp-source` with `args` (its messages: `-l SIZE` bytes, from FROM to TO), timed.
fn smtp_source(args: &[&str], n: usize, target: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new("/usr/sbin/smtp-source")
        .args(args)
        .args(["-m", &n.to_string(), "-l", &SIZE.to_string()])
        .args(["-f", FROM, "-t", TO, target])
        .output()
        .expect("smtp-source (Debian's postfix package)");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "smtp-source {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let lmtp = free_port();
    let (cluster, mut db) = Gateway::new()
        .setting("shared_buffers", "512MB")
        .poll_interval("200ms")
        .lmtp_listener(lmtp)
        .catchall("mycompany.com")
        .start();
    let lmtp_target = format!("127.0.0.1:{lmtp}");

    println!(
        "== Push delivery: {n} messages of 5 KB (smtp-source's form) a row, stored and routed, in a database holding 20,000"
    );
    seed(&mut db);
    // Warm-up, not measured: plans, caches, both paths once.
    stores(&mut db, 500, "warm-up", || {
        process_message(&cluster, 500, 10_000_000)
    });
    stores(&mut db, 500, "warm-up", || {
        smtp_source(
            &["-L", "-d", "-s", "2", "-M", "warm.example"],
            500,
            &lmtp_target,
        )
    });

    let took = stores(&mut db, n, "process_message", || {
        process_message(&cluster, n, 0)
    });
    let baseline = rate(
        "process_message(), 1 client",
        n,
        took,
        "`process_message()`, smtp-source's 5 KB message, 1 client",
        "",
        "",
    );

    for sessions in [1, 4] {
        // Its Message-Ids name the host (-M): distinct from every other run's.
        let host = format!("lmtp{sessions}.example");
        let args = ["-L", "-d", "-s", &sessions.to_string(), "-M", &host];
        // smtp-source finished: every message had its 250, which comes after the commit.
        let took = stores(&mut db, n, "smtp-source -L", || {
            smtp_source(&args, n, &lmtp_target)
        });
        let per_second = n as f64 / took.as_secs_f64();
        rate(
            &format!("LMTP from smtp-source -L, {sessions} session(s)"),
            n,
            took,
            &format!(
                "LMTP listener ← `smtp-source -L -d -s {sessions}`, 5 KB, committed before each 250"
            ),
            &format!(" = {:.2}× `process_message()`", per_second / baseline),
            // The fair one: one backend stores in both; several sessions hide smtp-source's
            // round trips (it does not pipeline: four a message, process_message one).
            if sessions == 4 {
                "≥ 0.8× `process_message()`, 1 client"
            } else {
                ""
            },
        );
    }

    // A real MTA in front: smtpd takes the messages into Postfix's queue (fsynced), its LMTP
    // client pushes them to the listener (up to 10 sessions). Timed until all are stored.
    let postfix = Postfix::start(Transport::Lmtp(lmtp));
    let smtp_target = format!("127.0.0.1:{}", postfix.smtp_port);
    let before = stored(&mut db);
    let started = Instant::now();
    let accepted = smtp_source(&["-d", "-s", "4", "-M", "smtp.example"], n, &smtp_target);
    let mut last = 0;
    let mut progress = Instant::now();
    while stored(&mut db) - before < n as i64 {
        let now = stored(&mut db) - before;
        if now != last {
            (last, progress) = (now, Instant::now());
        }
        assert!(
            progress.elapsed() < Duration::from_secs(120),
            "stuck at {now} of {n} stored:\n{}\n{}",
            postfix.queue_listing(),
            postfix.maillog()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    println!(
        "{:<52} {:>8.0} msgs/s   (smtpd accepted them in {:.2} s)",
        "  Postfix's smtpd alone",
        n as f64 / accepted.as_secs_f64(),
        accepted.as_secs_f64()
    );
    rate(
        "Postfix: SMTP in → queue → LMTP → stored",
        n,
        took,
        "Postfix 3.7 (`smtp-source -d -s 4` into smtpd, its queue, its LMTP client) → stored",
        &format!(
            " (smtpd alone {:.0} msgs/s)",
            n as f64 / accepted.as_secs_f64()
        ),
        "",
    );
    postfix.wait_empty(Duration::from_secs(60));
    assert_eq!(stored(&mut db) - before, n as i64, "stored once each");
}
