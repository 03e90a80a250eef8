//! A real Postfix in front of the gateway (tests/src/postfix.rs), configured with the lines
//! docs/OPERATIONS.md shows: mail sent to it over SMTP is pushed to the fetcher's LMTP listener,
//! or piped into `mail-gateway-deliver`, and survives a stopped database (both), a busy one, an
//! answer lost after the commit and a fetcher killed while the message is in flight (LMTP):
//! Postfix keeps it, tries again, and the gateway stores it once.

use std::process::Command;
use std::time::{Duration, Instant};

use mail_gateway_tests::postfix::{
    LMTP_MAIN_CF, LMTP_MASTER_CF, LMTP_TRANSPORT, PIPE_MAIN_CF, PIPE_MASTER_CF, PIPE_ROLE_SQL,
    PIPE_TRANSPORT, Postfix, ROUTING_MAIN_CF, Transport,
};
use mail_gateway_tests::proxy::{Cut, EndOfDataProxy};
use mail_gateway_tests::{
    Client, Cluster, Gateway, count, deliver_program, exec, free_port, post_quotation, wait_for,
    wait_for_fetcher, wait_for_lmtp_listener, with_sales_alias,
};

const WAIT: Duration = Duration::from_secs(60);

/// A cluster whose fetcher listens for LMTP on a free port; `settings` come last.
fn listening(settings: &[(&str, &str)]) -> (Cluster, Client, u16) {
    let port = free_port();
    let (cluster, db) = Gateway::usual()
        .lmtp_listener(port)
        .setting("mail_gateway.lmtp_timeout", "10s")
        .settings(settings)
        .start();
    (cluster, db, port)
}

fn first_mail(id: &str, body_lines: usize) -> Vec<u8> {
    let mut raw = format!(
        "From: Dan <dan@prospect.example>\r\nTo: sales@mycompany.com\r\nSubject: 300 chairs\r\n\
         Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <{id}@prospect.example>\r\n\r\nPlease send a quote.\r\n"
    );
    for i in 0..body_lines {
        raw.push_str(&format!(
            "Line {i:06} of the specification, padded to a realistic length of text.\r\n"
        ));
    }
    raw.into_bytes()
}

/// The lead, its thread and the stored message each exist once.
fn assert_stored_once(cluster: &Cluster, id: &str, postfix: &Postfix) {
    let mut db = cluster.connect("postgres");
    let stored = count(
        &mut db,
        &format!(
            "SELECT count(*) FROM mail_gateway.inbound WHERE message_id = '<{id}@prospect.example>'"
        ),
    );
    let leads = count(&mut db, "SELECT count(*) FROM crm_lead");
    // The thread is the one the message was routed to (the lead's).
    let in_thread = count(
        &mut db,
        &format!(
            "SELECT count(*) FROM mail_gateway.message m JOIN mail_gateway.inbound i
                 ON m.model = i.model AND m.res_id = i.res_id
             WHERE i.message_id = '<{id}@prospect.example>'"
        ),
    );
    assert_eq!(
        (stored, leads, in_thread),
        (1, 1, 1),
        "inbound rows, leads, messages in the lead's thread\n{}",
        postfix.maillog()
    );
    let state: String = db
        .query_one(
            "SELECT state FROM mail_gateway.inbound WHERE message_id = $1",
            &[&format!("<{id}@prospect.example>")],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "routed");
}

/// Waits until the one queued message waits for a reason that contains one of `reasons`;
/// returns the reason. It waits in `deferred`, or in `incoming` when qmgr found it still
/// locked by the agent that just tried it (then it is left alone for 60 s; a flush takes it).
fn wait_deferred(postfix: &Postfix, reasons: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let queue = postfix.queue();
        if let [one] = queue.as_slice()
            && ["deferred", "incoming"].contains(&one.queue_name.as_str())
            && let Some((_, why)) = one
                .recipients
                .iter()
                .find(|(_, why)| reasons.iter().any(|r| why.contains(r)))
        {
            return why.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no deferred message with {reasons:?}: {queue:?}\n{}",
            postfix.maillog()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until Postfix logged a deferral whose reason contains one of `reasons` (for a
/// deferral that may be over before the queue is looked at: the retry comes within seconds).
fn wait_deferral_logged(postfix: &Postfix, reasons: &[&str]) -> String {
    let found = || {
        std::fs::read_to_string(postfix.maillog_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("status=deferred"))
            .find(|l| reasons.iter().any(|r| l.contains(r)))
            .map(str::to_string)
    };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = found() {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no deferral with {reasons:?}\n{}",
            postfix.maillog()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deliveries Postfix logged as done (LMTP or pipe).
fn sent_lines(postfix: &Postfix) -> usize {
    std::fs::read_to_string(postfix.maillog_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" to=<") && l.contains("status=sent"))
        .count()
}

/// How Postfix hands mail to the gateway.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Lmtp,
    Pipe,
}

/// A gateway (listening for LMTP, or with the pipe's role) and a Postfix delivering to it.
fn behind_postfix(via: Via) -> (Cluster, Client, Postfix) {
    match via {
        Via::Lmtp => {
            let (cluster, db, port) = listening(&[]);
            (cluster, db, Postfix::start(Transport::Lmtp(port)))
        }
        Via::Pipe => {
            let (cluster, mut db) = Gateway::usual().start();
            exec(&mut db, PIPE_ROLE_SQL);
            let conninfo = format!(
                "host=127.0.0.1 port={} dbname=postgres user=mailgateway",
                cluster.port
            );
            let postfix = Postfix::start(Transport::Pipe {
                program: deliver_program(),
                conninfo,
            });
            (cluster, db, postfix)
        }
    }
}

/// After a database restart: LMTP needs its listener back; the pipe connects per message.
fn wait_until_deliverable(via: Via, postfix: &Postfix) {
    if via == Via::Lmtp {
        let port = postfix
            .lmtp_port()
            .expect("an LMTP transport names its port");
        wait_for_lmtp_listener(port);
    }
}

/// A reply sent to Postfix lands in its thread; prints the time from Postfix's 250 to the
/// routed row.
fn a_reply_lands_in_its_thread(via: Via) {
    let (_cluster, mut db, postfix) = behind_postfix(via);
    let posted = post_quotation(&mut db);
    let reply = format!(
        "From: Bob <bob@customer.example>\r\nTo: catchall@mycompany.com\r\n\
         Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n\
         Subject: Re: Quotation SO042\r\nMessage-ID: <bob-postfix-1@customer.example>\r\n\
         In-Reply-To: {posted}\r\nReferences: {posted}\r\n\r\n\
         I accept the quotation.\r\n.a line that starts with a dot\r\n"
    );
    let answer = postfix.send(
        "bob@customer.example",
        &["catchall@mycompany.com"],
        reply.as_bytes(),
    );
    let accepted = Instant::now();
    assert!(answer.starts_with("250"), "{answer}\n{}", postfix.maillog());

    // From Postfix's 250 to the reply routed in its thread, polled every 5 ms.
    let routed = "SELECT count(*) FROM mail_gateway.inbound
                  WHERE message_id = '<bob-postfix-1@customer.example>' AND state = 'routed'";
    let took = loop {
        if count(&mut db, routed) == 1 {
            break accepted.elapsed();
        }
        assert!(
            accepted.elapsed() < WAIT,
            "not routed after {WAIT:?}: {}\n{}",
            postfix.queue_listing(),
            postfix.maillog()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    println!("{via:?}: Postfix's 250 → routed in the thread: {took:?}");
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}\n{}",
        postfix.maillog()
    );

    let row = db
        .query_one(
            "SELECT route, model, res_id, convert_from(raw, 'UTF8') FROM mail_gateway.inbound
             WHERE message_id = '<bob-postfix-1@customer.example>'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, i64>(2)
        ),
        ("reply".into(), "sale_order".into(), 42)
    );
    let raw: String = row.get(3);
    // LMTP carries CRLF lines; pipe(8) writes LF lines, and the Return-Path (flag R) first.
    let sent = match via {
        Via::Lmtp => reply.clone(),
        Via::Pipe => reply.replace("\r\n", "\n"),
    };
    assert!(
        raw.contains("Received: from client.test.example") && raw.ends_with(&sent),
        "Postfix's trace header, then the message as sent (dot-stuffing undone):\n{raw}"
    );
    // The envelope on top, as a mailbox has it: the LMTP listener writes it, pipe(8) its
    // Return-Path (flag R).
    let envelope = match via {
        Via::Lmtp => {
            "Return-Path: <bob@customer.example>\r\nDelivered-To: catchall@mycompany.com\r\n"
        }
        Via::Pipe => "Return-Path: <bob@customer.example>\n",
    };
    assert!(raw.starts_with(envelope), "{raw}");
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.message WHERE model = 'sale_order' AND res_id = 42"
        ),
        2
    );
    postfix.wait_empty(WAIT);
    let log = postfix.maillog();
    let delivered = match via {
        Via::Lmtp => format!(
            "relay=127.0.0.1[127.0.0.1]:{}",
            postfix.lmtp_port().unwrap()
        ),
        Via::Pipe => "relay=mailgateway".to_string(),
    };
    assert!(
        log.contains(&delivered) && log.contains("status=sent"),
        "{log}"
    );
}

#[test]
fn a_reply_sent_to_postfix_is_in_its_thread_within_seconds_over_lmtp() {
    a_reply_lands_in_its_thread(Via::Lmtp);
}

#[test]
fn a_reply_sent_to_postfix_is_in_its_thread_within_seconds_through_the_pipe() {
    a_reply_lands_in_its_thread(Via::Pipe);
}

/// With the database stopped, the message waits in Postfix's queue, deferred for `reason`,
/// and is stored once after the database is back.
fn the_database_stopped(via: Via, reason: &str) {
    let (mut cluster, mut db, postfix) = behind_postfix(via);
    with_sales_alias(&mut db);
    drop(db);
    cluster.stop("fast");

    let answer = postfix.send(
        "dan@prospect.example",
        &["sales@mycompany.com"],
        &first_mail("dan-stopped", 10),
    );
    assert!(answer.starts_with("250"), "{answer}\n{}", postfix.maillog());
    let why = wait_deferred(&postfix, &[reason]);
    println!("{via:?}, deferred: {why}");
    // Tried again while the database is down (flushed: see `Postfix::wait_empty`), and kept.
    let first = postfix.deferrals();
    wait_for("a second attempt", WAIT, || {
        postfix.flush();
        std::thread::sleep(Duration::from_millis(500));
        (postfix.deferrals() > first).then_some(())
    });
    assert_eq!(postfix.queue().len(), 1, "{}", postfix.queue_listing());

    cluster.restart();
    wait_until_deliverable(via, &postfix);
    postfix.flush();
    postfix.wait_empty(WAIT);
    assert_stored_once(&cluster, "dan-stopped", &postfix);
    assert_eq!(sent_lines(&postfix), 1, "{}", postfix.maillog());
}

#[test]
fn with_the_database_stopped_postfix_keeps_the_message_and_delivers_it_once_later_over_lmtp() {
    the_database_stopped(Via::Lmtp, "Connection refused");
}

#[test]
fn with_the_database_stopped_postfix_keeps_the_message_and_delivers_it_once_later_through_the_pipe()
{
    // Exit 75: Postfix keeps the message, with the program's reason.
    the_database_stopped(
        Via::Pipe,
        "mail-gateway-deliver: cannot connect to the database",
    );
}

#[test]
fn a_busy_database_answers_451_and_postfix_retries_until_it_is_stored_once() {
    let (cluster, mut db, port) = listening(&[("mail_gateway.lmtp_timeout", "2s")]);
    with_sales_alias(&mut db);
    let postfix = Postfix::start(Transport::Lmtp(port));

    // Nothing can be stored while this transaction holds the table.
    let mut locker = cluster.connect("postgres");
    let mut lock = locker.transaction().unwrap();
    lock.batch_execute("LOCK TABLE mail_gateway.inbound IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let answer = postfix.send(
        "dan@prospect.example",
        &["sales@mycompany.com"],
        &first_mail("dan-busy", 10),
    );
    assert!(answer.starts_with("250"), "{answer}\n{}", postfix.maillog());
    let why = wait_deferred(&postfix, &["451 4.3.0"]);
    println!("deferred: {why}");
    lock.rollback().unwrap();

    // The first attempt may be committed after its 451; the retries then find it stored.
    postfix.flush();
    postfix.wait_empty(WAIT);
    assert_stored_once(&cluster, "dan-busy", &postfix);
    assert_eq!(sent_lines(&postfix), 1, "{}", postfix.maillog());
}

#[test]
fn an_answer_lost_after_the_commit_is_delivered_again_and_stored_once() {
    let (cluster, mut db, port) = listening(&[]);
    with_sales_alias(&mut db);
    let proxy = EndOfDataProxy::start(port, Cut::AnswerLost);
    let postfix = Postfix::start(Transport::Lmtp(proxy.port));

    let answer = postfix.send(
        "dan@prospect.example",
        &["sales@mycompany.com"],
        &first_mail("dan-lost", 10),
    );
    assert!(answer.starts_with("250"), "{answer}\n{}", postfix.maillog());
    let swallowed = proxy.swallowed(WAIT);
    assert!(
        swallowed.starts_with("250 2.0.0 stored"),
        "the gateway's answer that Postfix never got: {swallowed:?}\n{}",
        postfix.maillog()
    );
    // Stored, but Postfix does not know: it keeps the message and delivers it again.
    let why = wait_deferral_logged(&postfix, &["lost connection"]);
    println!("deferred: {why}");
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.inbound WHERE message_id = '<dan-lost@prospect.example>'"
        ),
        1
    );
    postfix.flush();
    postfix.wait_empty(WAIT);
    assert_stored_once(&cluster, "dan-lost", &postfix);
    assert_eq!(sent_lines(&postfix), 1, "{}", postfix.maillog());
}

#[test]
fn killing_the_fetcher_while_a_message_is_in_flight_loses_nothing() {
    let (cluster, mut db, port) = listening(&[("mail_gateway.max_message_size", "10MB")]);
    with_sales_alias(&mut db);
    let fetcher: i32 = db
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'mail_gateway fetcher'",
            &[],
        )
        .unwrap()
        .get(0);
    drop(db);
    let proxy = EndOfDataProxy::start(port, Cut::HoldEnd);
    let postfix = Postfix::start(Transport::Lmtp(proxy.port));

    // About 1 MB: the listener has all of it but the final dot when the fetcher dies.
    let message = first_mail("dan-killed", 13_000);
    let answer = postfix.send("dan@prospect.example", &["sales@mycompany.com"], &message);
    assert!(answer.starts_with("250"), "{answer}\n{}", postfix.maillog());
    assert!(
        proxy.wait_reached(WAIT),
        "the message never got to its end of data\n{}",
        postfix.maillog()
    );
    let status = Command::new("kill")
        .args(["-KILL", &fetcher.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    proxy.release();
    // Postfix lost the line (or finds nobody listening while the cluster restarts).
    let why = wait_deferral_logged(
        &postfix,
        &["lost connection", "Connection refused", "421 4."],
    );
    println!("deferred: {why}");

    // The cluster restarts after the kill: refused connections meanwhile.
    wait_for_fetcher(&cluster, Some(fetcher));
    wait_for_lmtp_listener(port);
    postfix.flush();
    postfix.wait_empty(WAIT);
    assert_stored_once(&cluster, "dan-killed", &postfix);
    let mut db = cluster.connect("postgres");
    let stored: i32 = db
        .query_one(
            "SELECT length(raw) FROM mail_gateway.inbound WHERE message_id = '<dan-killed@prospect.example>'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        stored as usize > message.len(),
        "the whole message and Postfix's header: {stored} bytes"
    );
    assert_eq!(sent_lines(&postfix), 1, "{}", postfix.maillog());
}

/// docs/OPERATIONS.md shows the very lines these tests configure Postfix with.
#[test]
fn the_operations_guide_shows_the_postfix_lines_the_tests_use() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATIONS.md");
    let doc = std::fs::read_to_string(path).expect("docs/OPERATIONS.md");
    let lines: Vec<&str> = doc.lines().map(str::trim_end).collect();
    let shown = ROUTING_MAIN_CF
        .iter()
        .chain(LMTP_MAIN_CF)
        .chain(LMTP_MASTER_CF)
        .chain(PIPE_MAIN_CF)
        .chain(PIPE_MASTER_CF)
        .chain([&LMTP_TRANSPORT, &PIPE_TRANSPORT])
        .copied()
        .chain(PIPE_ROLE_SQL.lines().map(str::trim));
    for line in shown {
        assert!(
            lines.contains(&line),
            "docs/OPERATIONS.md does not show the line {line:?}"
        );
    }
}
