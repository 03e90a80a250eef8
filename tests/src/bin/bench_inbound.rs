//! Inbound benchmark (run by scripts/bench.sh against the installed build): messages per
//! second stored by process_message (5 KB and 1 MB), fetched from Dovecot over IMAP, and the
//! fetcher's peak memory for one 50 MB message. Prints numbers; asserts nothing.

use std::time::{Duration, Instant};

use mail_gateway_tests::dovecot::{Dovecot, PASSWORD, USER};
use mail_gateway_tests::{Client, Cluster, Gateway, bench_row, exec, wait_for};

/// A realistic message of about `size` bytes: text and HTML parts and a base64 attachment.
fn message(n: usize, size: usize, with_id: &str) -> Vec<u8> {
    let mut raw = format!(
        "Return-Path: <c{n}@customer.example>\r\nDelivered-To: catchall@mycompany.com\r\n\
         Received: from mx.customer.example (mx.customer.example [192.0.2.1]) by mx.mycompany.com; Sat, 21 Nov 2026 10:00:00 +0000\r\n\
         From: \"Customer {n}\" <c{n}@customer.example>\r\nTo: \"Sales\" <sales@mycompany.com>\r\n\
         Subject: Re: Quotation {n}\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\
         Message-ID: <{with_id}{n}@customer.example>\r\nIn-Reply-To: <q{n}@mycompany.com>\r\n\
         References: <q{n}@mycompany.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: multipart/alternative; boundary=\"b2\"\r\n\r\n\
         --b2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\nplease find the order attached.\r\n\
         --b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Hello,</p><p>please find the order attached.</p>\r\n\
         --b2--\r\n--b1\r\nContent-Type: application/pdf; name=\"order.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"order.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    );
    let line = "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29k\r\n";
    while raw.len() + line.len() + 10 < size {
        raw.push_str(line);
    }
    raw.push_str("--b1--\r\n");
    raw.into_bytes()
}

/// Prints a rate and adds it to the benchmark table with its `target` ("" when none).
fn rate(label: &str, n: usize, took: Duration, extra: &str, row: &str, target: &str) {
    let per_second = n as f64 / took.as_secs_f64();
    println!(
        "{label:<40} {per_second:>8.0} msgs/s   ({n} in {:.2} s{extra})",
        took.as_secs_f64()
    );
    bench_row(row, &format!("{per_second:.0} msgs/s"), target);
}

/// process_message from `clients` connections at once, `n` messages of `size` bytes.
fn process_message(cluster: &Cluster, label: &str, n: usize, size: usize, clients: usize) {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..clients {
            scope.spawn(move || {
                let mut db = cluster.connect("postgres");
                let statement = db
                    .prepare("SELECT mail_gateway.process_message($1)")
                    .unwrap();
                for i in (c..n).step_by(clients) {
                    let raw = message(i, size, &format!("{label}-{size}-{clients}-"));
                    db.query_one(&statement, &[&raw]).unwrap();
                }
            });
        }
    });
    rate(
        &format!("process_message, {label}"),
        n,
        started.elapsed(),
        &format!(", {clients} clients"),
        &format!("`process_message()`, {label}, {clients} client(s)"),
        if size <= 5 * 1024 { "≥ 2,000" } else { "" },
    );
}

/// Largest anonymous memory of `pid` while `until` is false, sampled every 5 ms.
fn peak_anon_kb(pid: i32, mut until: impl FnMut() -> bool) -> u64 {
    let mut peak = 0;
    while !until() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines() {
                if let Some(kb) = line.strip_prefix("RssAnon:") {
                    let kb: u64 = kb
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    peak = peak.max(kb);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    peak
}

/// Replies into threads with 10 followers (each reply posted and relayed to the other 9), and
/// first mails to an alias (each creating a record). The replies are spread over 1,000 threads
/// and 10,000 authors, as an ERP's are: one thread taking thousands of replies an hour is what
/// `mail.relay.limit.thread` stops (it would measure the limit, not the routing).
fn routing(cluster: &Cluster) {
    let mut admin = cluster.connect("postgres");
    exec(&mut admin, "CREATE DATABASE routing");
    let mut db = cluster.connect("routing");
    Gateway::new()
        .catchall("mycompany.com")
        .parameter("mail.incoming.limit.alias", "1000000")
        .sql(
            "CREATE TABLE crm_lead (id bigserial PRIMARY KEY, name text, email_from text, description text);
             INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'crm_lead');
             SELECT mail_gateway.follow('sale_order', t, 'f' || t || '-' || k || '@customer.example')
             FROM generate_series(1, 1000) t, generate_series(1, 10) k;
             SELECT mail_gateway.post_message('sale_order', t, 'ann@mycompany.com', 'Quotation ready', 'Quotation')
             FROM generate_series(1, 1000) t;",
        )
        .install(&mut db);
    // A database in use, not an empty one: 20,000 older threads with a follower, a message and
    // its notification each, vacuumed and analysed as autovacuum would have. (From empty tables, the first
    // plans are made for empty tables and the first minute runs slower until autovacuum
    // analyses them: see docs/DECISIONS.md.)
    exec(
        &mut db,
        "SELECT mail_gateway.follow('old_order', i, 'c' || i || '@customer.example') FROM generate_series(1, 20000) i;
         SELECT mail_gateway.post_message('old_order', i, 'ann@mycompany.com', 'Old news', 'Old order')
         FROM generate_series(1, 20000) i;
         INSERT INTO crm_lead (name) SELECT 'old lead' FROM generate_series(1, 20000);",
    );
    exec(&mut db, "VACUUM ANALYZE");
    let thread_ids: Vec<String> = db
        .query(
            "SELECT message_id FROM mail_gateway.message WHERE model = 'sale_order' ORDER BY res_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let threads = thread_ids.len();
    // The first thousand after seeding read cold pages and set hint bits: a warm-up, not
    // measured (clients = 0).
    for clients in [0, 1, 2] {
        let warm_up = clients == 0;
        let clients = clients.max(1);
        let before: i64 = db
            .query_one("SELECT count(*) FROM mail_gateway.mail", &[])
            .unwrap()
            .get(0);
        let n = if warm_up { 1000 } else { 4000 };
        let took = in_parallel(cluster, "routing", clients, n, |i| {
            // Reply i of this run: thread i mod 1,000, from one of its other followers.
            let j = i + before as usize;
            let thread = j % threads;
            let thread_id = &thread_ids[thread];
            format!(
                "From: f{}-{}@customer.example\r\nTo: catchall@mycompany.com\r\nSubject: Re: Quotation\r\n\
                 Message-ID: <r{clients}-{i}-{before}@customer.example>\r\nIn-Reply-To: {thread_id}\r\n\
                 References: {thread_id}\r\n\r\nReply number {i}: fine with me.\r\n",
                thread + 1,
                j / threads % 10 + 1,
            )
        });
        let after: i64 = db
            .query_one("SELECT count(*) FROM mail_gateway.mail", &[])
            .unwrap()
            .get(0);
        if warm_up {
            continue;
        }
        assert_eq!(
            after - before,
            9 * n as i64,
            "every reply was relayed to the 9 other followers"
        );
        rate(
            "routed replies (relayed to 9 followers)",
            n,
            took,
            &format!(
                ", {} relayed mails queued, {clients} client(s)",
                after - before
            ),
            &format!("routed replies, each relayed to 9 followers, {clients} client(s)"),
            "≥ 1,000",
        );
    }
    for clients in [1, 2] {
        let n = 4000;
        let took = in_parallel(cluster, "routing", clients, n, |i| {
            format!(
                "From: p{clients}-{i}@prospect.example\r\nTo: sales@mycompany.com\r\nSubject: Lead {i}\r\n\
                 Message-ID: <l{clients}-{i}@prospect.example>\r\n\r\nPlease call me.\r\n"
            )
        });
        rate(
            "alias creations (sales@ → crm_lead)",
            n,
            took,
            &format!(", {clients} client(s)"),
            &format!("alias creations (sales@ → a lead), {clients} client(s)"),
            "",
        );
    }
    let leads: i64 = db
        .query_one(
            "SELECT count(*) FROM crm_lead WHERE name <> 'old lead'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(leads, 8000, "every mail created its lead");
}

/// `n` messages made by `message(i)` through process_message from `clients` connections.
fn in_parallel(
    cluster: &Cluster,
    database: &str,
    clients: usize,
    n: usize,
    message: impl Fn(usize) -> String + Sync,
) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..clients {
            let message = &message;
            scope.spawn(move || {
                let mut db = cluster.connect(database);
                let statement = db
                    .prepare("SELECT mail_gateway.process_message($1)")
                    .unwrap();
                for i in (c..n).step_by(clients) {
                    db.query_one(&statement, &[&message(i).as_bytes()]).unwrap();
                }
            });
        }
    });
    started.elapsed()
}

fn count(db: &mut Client) -> i64 {
    db.query_one("SELECT count(*) FROM mail_gateway.inbound", &[])
        .unwrap()
        .get(0)
}

/// The worst case found for the analysis of a stranger's report: 5 MB naming 200,000
/// addresses, from a mailer daemon to our bounce address (once took hours), stored and routed
/// by process_message.
fn hostile_report(cluster: &Cluster) {
    let mut raw = String::from(
        "From: MAILER-DAEMON@mx.attacker.example\r\nTo: bounce@mycompany.com\r\n\
         Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bench-huge@attacker.example>\r\n\r\n\
         The following addresses could not be delivered: user unknown\r\n\r\n",
    );
    for i in 0..200_000 {
        raw.push_str(&format!("user{i}@example{}.com\r\n", i % 97));
    }
    let mut db = cluster.connect("postgres");
    let started = Instant::now();
    db.query_one(
        "SELECT mail_gateway.process_message($1)",
        &[&raw.as_bytes()],
    )
    .unwrap();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{:<40} {ms:>8.0} ms   ({:.1} MB, 200,000 addresses, 100 bounce rows kept)",
        "a hostile report, process_message",
        raw.len() as f64 / 1048576.0
    );
    bench_row(
        "worst hostile message: a 5 MB report naming 200,000 addresses, process_message",
        &format!("{ms:.0} ms"),
        "bounded (was hours)",
    );
}

fn main() {
    let fetch_n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let (cluster, mut db) = Gateway::new()
        .setting("shared_buffers", "512MB")
        .poll_interval("200ms")
        .setting("mail_gateway.max_message_size", "100MB")
        .start();
    if std::env::var("BENCH_PARTS").as_deref() == Ok("routing") {
        routing(&cluster);
        return;
    }

    println!("== Received mail stored by process_message() (parse, summary, dedupe, insert)");
    process_message(&cluster, "5 KB", 20_000, 5 * 1024, 1);
    process_message(&cluster, "5 KB", 20_000, 5 * 1024, 2);
    process_message(&cluster, "1 MB", 200, 1024 * 1024, 1);

    println!(
        "== Routing (process_message stores and routes; in a database the worker does not serve)"
    );
    routing(&cluster);

    println!("== The worst hostile message found (docs/SECURITY.md)");
    hostile_report(&cluster);

    println!("== Fetched from Dovecot over IMAP (STARTTLS off, batches of 50), 5 KB each");
    exec(&mut db, "TRUNCATE mail_gateway.inbound CASCADE");
    let dovecot = Dovecot::start();
    dovecot.deliver_many((0..fetch_n).map(|i| message(i, 5 * 1024, "imap-")));
    db.execute(
        "INSERT INTO mail_gateway.incoming_server (name, protocol, host, port, encryption, username, password)
         VALUES ('box', 'imap', '127.0.0.1', $1, 'none', $2, $3)",
        &[&(dovecot.imap as i32), &USER, &PASSWORD],
    )
    .unwrap();
    let started = Instant::now();
    exec(&mut db, "SELECT mail_gateway.test_incoming_server('box')");
    wait_for("every message fetched", Duration::from_secs(600), || {
        (count(&mut db) >= fetch_n as i64).then_some(())
    });
    rate(
        "IMAP fetch → inbound (committed)",
        fetch_n,
        started.elapsed(),
        "",
        "IMAP fetch from Dovecot → committed rows, 5 KB",
        "",
    );

    println!("== Fetcher memory for one 50 MB message");
    let big = message(0, 50 * 1024 * 1024, "big-");
    let fetcher: i32 = db
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'mail_gateway fetcher'",
            &[],
        )
        .unwrap()
        .get(0);
    let before = peak_anon_kb(fetcher, || true).max(1);
    let baseline = {
        let status = std::fs::read_to_string(format!("/proc/{fetcher}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|kb| kb.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .unwrap_or(before)
    };
    dovecot.deliver(&big);
    let target = fetch_n as i64 + 1;
    exec(&mut db, "SELECT mail_gateway.fetch_now('box')");
    let mut watcher = cluster.connect("postgres");
    let peak = peak_anon_kb(fetcher, || count(&mut watcher) >= target);
    let size_mb = big.len() as f64 / 1048576.0;
    let grown_mb = peak.saturating_sub(baseline) as f64 / 1024.0;
    println!(
        "{:<40} {grown_mb:>8.1} MB over its {:.1} MB baseline = {:.2}× the {size_mb:.0} MB message",
        "fetcher peak anonymous memory",
        baseline as f64 / 1024.0,
        grown_mb / size_mb
    );
    bench_row(
        "fetcher peak memory for one 50 MB message",
        &format!("{grown_mb:.0} MB = {:.1}×", grown_mb / size_mb),
        "≤ 3×",
    );
    let stored: i32 = db
        .query_one(
            "SELECT length(raw) FROM mail_gateway.inbound WHERE message_id = '<big-0@customer.example>'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        stored as usize,
        big.len(),
        "the 50 MB message is stored whole"
    );
}
