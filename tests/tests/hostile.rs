//! Hostile mail (docs/SECURITY.md): each attack a stranger can mount by mail, through the
//! public API (`process_message`) or a real mailbox (Dovecot), and the outcome asserted —
//! stored, routed, not relayed, not blocklisted, sent today, not lost.

use std::time::Duration;

use mail_gateway_tests::dovecot::Dovecot;
use mail_gateway_tests::smtp::{SmtpOptions, SmtpServer};
use mail_gateway_tests::{Client, Gateway, count, error_text, exec, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// A cluster without the worker (routing runs inside `process_message`), the extension created
/// with catchall domain `mycompany.com`.
fn without_worker() -> Gateway {
    Gateway::new().without_preload().catchall("mycompany.com")
}

fn process(db: &mut Client, raw: &[u8]) -> i64 {
    db.query_one("SELECT mail_gateway.process_message($1)", &[&raw])
        .map_err(|e| error_text(&e))
        .unwrap()
        .get(0)
}

/// State, route and reason of a received message.
fn routed(db: &mut Client, id: i64) -> (String, String, String) {
    let row = db
        .query_one(
            "SELECT state, coalesce(route, ''), coalesce(reason, '') FROM mail_gateway.inbound WHERE id = $1",
            &[&id],
        )
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// Thread `sale_order` #42 with Ann (ours) and Bob (a customer) following, and one posted
/// message; returns the Message-ID a reply would answer.
fn thread(db: &mut Client) -> String {
    exec(
        db,
        "SELECT mail_gateway.follow('sale_order', 42, '\"Ann\" <ann@mycompany.com>');
         SELECT mail_gateway.follow('sale_order', 42, '\"Bob\" <bob@customer.example>');
         SELECT mail_gateway.post_message('sale_order', 42, 'ann@mycompany.com', 'Your quotation', subject => 'SO042');",
    );
    db.query_one(
        "SELECT message_id FROM mail_gateway.message WHERE model = 'sale_order' AND res_id = 42",
        &[],
    )
    .unwrap()
    .get(0)
}

fn reply(from: &str, in_reply_to: &str, n: usize, extra_headers: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: catchall@mycompany.com\r\nSubject: Re: SO042\r\n\
         Message-ID: <reply-{n}@outside.example>\r\nIn-Reply-To: {in_reply_to}\r\n{extra_headers}\r\n\
         Reply number {n}.\r\n"
    )
    .into_bytes()
}

#[test]
fn a_nul_or_an_absurd_header_never_blocks_a_mailbox() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = Gateway::new()
        .poll_interval("200ms")
        .fetch_timeout("5s")
        .catchall("mycompany.com")
        .no_daily_limit()
        .start();
    // At the head of the mailbox: messages whose NULs, ids and structure once made storing fail.
    let long_id = "x".repeat(300_000);
    let mut hostile: Vec<Vec<u8>> = (0..60)
        .map(|n| {
            format!(
                "From: =?utf-8?q?Ev=00il?= <evil{n}@attacker.example>\r\nTo: catchall@mycompany.com\r\n\
                 Subject: =?utf-8?q?x=00y_{n}?=\r\nMessage-ID: <hostile-{n}@attacker.example>\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                 body with a NUL =00 here\r\n"
            )
            .into_bytes()
        })
        .collect();
    hostile.push(
        format!("From: a@attacker.example\r\nMessage-ID: <{long_id}@x>\r\nSubject: long id\r\n\r\nhi\r\n")
            .into_bytes(),
    );
    let mut deep =
        String::from("From: b@attacker.example\r\nSubject: deep\r\nMessage-ID: <deep@x>\r\n");
    for i in 0..3000 {
        deep.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    hostile.push(deep.into_bytes());
    let ordinary: Vec<Vec<u8>> = (0..5)
        .map(|n| {
            format!(
                "From: Customer {n} <c{n}@customer.example>\r\nTo: catchall@mycompany.com\r\n\
                 Subject: ordinary {n}\r\nMessage-ID: <ordinary-{n}@customer.example>\r\n\r\nhello\r\n"
            )
            .into_bytes()
        })
        .collect();
    dovecot.deliver_many(hostile.iter().cloned().chain(ordinary.iter().cloned()));
    dovecot.add_confirmed(&mut db, "catchall", "imap");
    exec(&mut db, "SELECT mail_gateway.fetch_now()");
    wait_for("every message stored", WAIT, || {
        (count(&mut db, "SELECT count(*) FROM mail_gateway.inbound") == 67).then_some(())
    });
    // Stored byte for byte, whatever the bytes.
    for raw in hostile.iter().chain(&ordinary) {
        let stored = count(
            &mut db,
            &format!(
                "SELECT count(*) FROM mail_gateway.inbound WHERE raw = decode('{}', 'hex')",
                raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        );
        assert_eq!(stored, 1);
    }
    let (subject, notes): (String, String) = {
        let row = db
            .query_one(
                "SELECT subject, summary->>'notes' FROM mail_gateway.inbound
                 WHERE message_id = '<hostile-0@attacker.example>'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(subject, "x\u{FFFD}y 0");
    assert!(
        notes.contains("NUL characters in the subject replaced"),
        "{notes}"
    );
    let (long, deep): (String, String) = {
        let row = db
            .query_one(
                "SELECT (SELECT summary->>'notes' FROM mail_gateway.inbound WHERE subject = 'long id'),
                        (SELECT summary->>'notes' FROM mail_gateway.inbound WHERE subject = 'deep')",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(long.contains("Message-ID ignored"), "{long}");
    assert!(deep.contains("absurd structure"), "{deep}");
    // The ordinary mail behind them arrived and was routed; the server recorded no error.
    wait_for("the ordinary mail routed", WAIT, || {
        (count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.inbound WHERE subject LIKE 'ordinary %' AND state <> 'new'",
        ) == 5)
            .then_some(())
    });
    let error: Option<String> = db
        .query_one(
            "SELECT last_error FROM mail_gateway.incoming_server WHERE name = 'catchall'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(error, None);
    assert_eq!(dovecot.counts().1, 67, "every message flagged \\Seen");
}

#[test]
fn a_huge_report_is_read_in_bounded_work_and_can_be_cancelled() {
    let (_cluster, mut db) = without_worker().start();
    // 5 MB naming 200,000 addresses, from a mailer daemon to our bounce address.
    let mut raw = String::from(
        "From: MAILER-DAEMON@mx.attacker.example\r\nTo: bounce@mycompany.com\r\n\
         Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <huge@attacker.example>\r\n\r\n\
         The following addresses could not be delivered: user unknown\r\n\r\n",
    );
    for i in 0..200_000 {
        raw.push_str(&format!("user{i}@example{}.com\r\n", i % 97));
    }
    assert!(raw.len() > 5_000_000);
    let id = process(&mut db, raw.as_bytes());
    let (state, _, reason) = routed(&mut db, id);
    assert_eq!(state, "bounce", "{reason}");
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.bounce"),
        100,
        "at most 100 failed recipients are read from one report"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.bounce WHERE trusted"
        ),
        0
    );
    // statement_timeout ends even a 60 MB message of hostile structure: the work is
    // interruptible (it is also linear: docs/BENCHMARKS.md gives the worst case in ms).
    let mut big = String::from(
        "From: MAILER-DAEMON@mx.attacker.example\r\nTo: bounce@mycompany.com\r\n\
         Subject: failure notice\r\nMessage-ID: <bigger@attacker.example>\r\n\r\n",
    );
    while big.len() < 60_000_000 {
        big.push_str("could not be delivered to <a@b.example> <c@d.example> user unknown\r\n");
    }
    exec(&mut db, "SET statement_timeout = '100ms'");
    let err = db
        .query_one(
            "SELECT mail_gateway.process_message($1)",
            &[&big.as_bytes()],
        )
        .expect_err("cancelled by statement_timeout");
    assert_eq!(
        err.as_db_error().map(|d| d.code().code()),
        Some("57014"),
        "{}",
        error_text(&err)
    );
    exec(&mut db, "RESET statement_timeout");
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.inbound WHERE message_id = '<bigger@attacker.example>'"
        ),
        0
    );
}

#[test]
fn a_forged_colleague_is_relayed_encapsulated() {
    let (_cluster, mut db) = without_worker().start();
    let root = thread(&mut db);
    let forged = reply("\"The CEO\" <ceo@mycompany.com>", &root, 1, "");
    let id = process(&mut db, &forged);
    let (state, route, reason) = routed(&mut db, id);
    assert_eq!(
        (state.as_str(), route.as_str()),
        ("routed", "reply"),
        "{reason}"
    );
    let verdict: String = db
        .query_one(
            "SELECT auth_verdict FROM mail_gateway.inbound WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(verdict, "none");
    let from: Vec<String> = db
        .query(
            "SELECT email_from FROM mail_gateway.mail WHERE message_ref =
                 (SELECT message_ref FROM mail_gateway.inbound WHERE id = $1)",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        from, ["\"The CEO (unverified)\" <notifications@mycompany.com>"; 2],
        "relayed to Ann and Bob, never under our From"
    );

    // Results of an untrusted server are a stranger's words; a trusted server's are believed.
    let claimed =
        "Authentication-Results: mx.mycompany.com; dmarc=pass header.from=mycompany.com\r\n";
    let id = process(
        &mut db,
        &reply("\"The CEO\" <ceo@mycompany.com>", &root, 2, claimed),
    );
    let verdict: String = db
        .query_one(
            "SELECT auth_verdict FROM mail_gateway.inbound WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(verdict, "none", "mx.mycompany.com is not trusted yet");
    exec(
        &mut db,
        "SELECT mail_gateway.set_parameter('mail.authentication.trusted_servers', 'MX.mycompany.com')",
    );
    let id = process(
        &mut db,
        &reply("\"The CEO\" <ceo@mycompany.com>", &root, 3, claimed),
    );
    let from: Vec<String> = db
        .query(
            "SELECT m.email_from FROM mail_gateway.mail m JOIN mail_gateway.inbound i
                 ON i.message_ref = m.message_ref WHERE i.id = $1 AND i.auth_verdict = 'pass'",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(from, ["\"The CEO\" <ceo@mycompany.com>"; 2]);
}

#[test]
fn strangers_cannot_amplify_through_a_shared_record() {
    let (_cluster, mut db) = without_worker().start();
    exec(
        &mut db,
        "CREATE TABLE public.ticket (id bigserial PRIMARY KEY, name text);
         INSERT INTO public.ticket (id, name) VALUES (7, 'shared');
         INSERT INTO mail_gateway.alias (name, model, force_thread_id) VALUES ('support', 'ticket', 7);
         SELECT mail_gateway.follow('public.ticket', 7, 'agent@mycompany.com');",
    );
    for n in 0..30 {
        process(
            &mut db,
            format!(
                "From: Stranger {n} <s{n}@random{n}.example>\r\nTo: support@mycompany.com\r\n\
                 Subject: help {n}\r\nMessage-ID: <s{n}@random.example>\r\n\r\nplease\r\n"
            )
            .as_bytes(),
        );
    }
    // Each message is in the record; none of the strangers follows it, so each is relayed to
    // the agent alone — and at most mail.relay.limit.thread (20) of them within the period.
    let reasons: Vec<String> = db
        .query(
            "SELECT state || ': ' || coalesce(reason, '') FROM mail_gateway.inbound",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.message WHERE model = 'public.ticket' AND res_id = 7"
        ),
        30,
        "{reasons:?}"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.follower WHERE model = 'public.ticket' AND res_id = 7"
        ),
        1
    );
    assert_eq!(count(&mut db, "SELECT count(*) FROM mail_gateway.mail"), 20);
    let reason: String = db
        .query_one(
            "SELECT reason FROM mail_gateway.inbound ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(reason.contains("mail.relay.limit.thread"), "{reason}");
}

#[test]
fn automatic_mail_is_stored_but_never_relayed_or_answered() {
    let (_cluster, mut db) = without_worker().start();
    let root = thread(&mut db);
    exec(
        &mut db,
        "SELECT mail_gateway.follow('sale_order', 42, 'tickets@helpdesk-a.example');
         SELECT mail_gateway.follow('sale_order', 42, 'tickets@helpdesk-b.example');",
    );
    let queued = count(&mut db, "SELECT count(*) FROM mail_gateway.mail");
    // Two ticket systems answering each other through the thread, and the robots' usual marks.
    for (n, (from, marks)) in [
        (
            "tickets@helpdesk-a.example",
            "Auto-Submitted: auto-replied\r\n",
        ),
        (
            "tickets@helpdesk-b.example",
            "Auto-Submitted: auto-generated\r\n",
        ),
        ("tickets@helpdesk-a.example", "Precedence: bulk\r\n"),
        ("tickets@helpdesk-b.example", "X-Autoreply: yes\r\n"),
        (
            "list@lists.example",
            "List-Id: <customers.lists.example>\r\n",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let id = process(&mut db, &reply(from, &root, n, marks));
        let (state, route, reason) = routed(&mut db, id);
        assert_eq!(
            (state.as_str(), route.as_str()),
            ("routed", "reply"),
            "{reason}"
        );
        assert!(reason.contains("not relayed"), "{reason}");
    }
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.message WHERE kind = 'email'"
        ),
        5,
        "stored in the thread"
    );
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.mail"),
        queued,
        "nothing relayed"
    );
    // Automatic mail to the catchall is not answered either.
    let id = process(
        &mut db,
        b"From: robot@x.example\r\nTo: catchall@mycompany.com\r\nAuto-Submitted: auto-generated\r\n\
          Subject: report\r\nMessage-ID: <robot@x.example>\r\n\r\nnightly report\r\n",
    );
    let (_, _, reason) = routed(&mut db, id);
    assert!(reason.contains("automatic, so not answered"), "{reason}");
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.mail"),
        queued
    );
}

#[test]
fn an_out_of_office_to_the_bounce_address_is_not_a_bounce() {
    let (_cluster, mut db) = without_worker().start();
    let root = thread(&mut db);
    let (mail_id, message_id): (i64, String) = {
        let row = db
            .query_one(
                "SELECT id, message_id FROM mail_gateway.mail WHERE email_to = ARRAY['\"Bob\" <bob@customer.example>']",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    let check: String = message_id
        .trim_start_matches('<')
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    // Exchange's out-of-office, as RFC 3834 says: to the envelope sender, our tracked address.
    let oof = format!(
        "Return-Path: <>\r\nFrom: Bob <bob@customer.example>\r\nTo: bounce+{mail_id}-{check}@mycompany.com\r\n\
         Subject: Automatic reply: SO042\r\nX-Auto-Response-Suppress: All\r\nAuto-Submitted: auto-replied\r\n\
         Message-ID: <oof@customer.example>\r\n\r\nI am on holiday until Monday.\r\n"
    );
    let id = process(&mut db, oof.as_bytes());
    let (state, route, reason) = routed(&mut db, id);
    assert_eq!(
        (state.as_str(), route.as_str()),
        ("routed", "reply"),
        "{reason}"
    );
    assert!(reason.contains("not relayed"), "{reason}");
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.bounce"),
        0
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.mail WHERE bounced_at IS NOT NULL"
        ),
        0,
        "no red envelope"
    );
    let _ = root;
}

#[test]
fn forged_reports_blocklist_nobody_and_a_reset_counts() {
    let (_cluster, mut db) = without_worker().start();
    // Five forged reports naming no mail of ours, spread over eight days.
    for n in 0..5i32 {
        let id = process(
            &mut db,
            format!(
                "From: MAILER-DAEMON@mx.attacker.example\r\nTo: catchall@mycompany.com\r\n\
                 X-Failed-Recipients: customer@client.example\r\nSubject: failure\r\n\
                 Message-ID: <forged-{n}@attacker.example>\r\n\r\n550 5.1.1 user unknown\r\n"
            )
            .as_bytes(),
        );
        let (state, _, reason) = routed(&mut db, id);
        assert_eq!(state, "bounce", "{reason}");
        assert!(reason.contains("untrusted"), "{reason}");
        db.execute(
            "UPDATE mail_gateway.bounce SET created_at = now() - make_interval(days => 2 * $1)
             WHERE inbound_id = $2",
            &[&n, &id],
        )
        .unwrap();
    }
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.blacklist"),
        0
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT coalesce(sum(bounce_count), 0)::bigint FROM mail_gateway.contact"
        ),
        0
    );

    // Real bounces of mail we sent count: tied by the returned original's Message-ID.
    let bounce_of = |db: &mut Client, n: usize| {
        let mail_id: i64 = db
            .query_one(
                "SELECT mail_gateway.send_mail('ann@mycompany.com', ARRAY['customer@client.example'], 'Invoice')",
                &[],
            )
            .unwrap()
            .get(0);
        let message_id: String = db
            .query_one(
                "SELECT message_id FROM mail_gateway.mail WHERE id = $1",
                &[&mail_id],
            )
            .unwrap()
            .get(0);
        let id = process(
            db,
            format!(
                "From: MAILER-DAEMON@mx.client.example\r\nTo: bounce@mycompany.com\r\n\
                 Subject: Undelivered Mail\r\nMessage-ID: <real-{n}@mx.client.example>\r\n\
                 Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
                 --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.client.example\r\n\r\n\
                 Final-Recipient: rfc822; customer@client.example\r\nAction: failed\r\nStatus: 5.2.2\r\n\r\n\
                 --b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {message_id}\r\n\r\n--b--\r\n"
            )
            .as_bytes(),
        );
        db.execute(
            "UPDATE mail_gateway.bounce SET created_at = now() - make_interval(days => 8 - 2 * $1)
             WHERE inbound_id = $2",
            &[&(n as i32), &id],
        )
        .unwrap();
    };
    for n in 0..4 {
        bounce_of(&mut db, n);
    }
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.bounce WHERE trusted"
        ),
        4
    );
    // The customer writes to us: the counter starts again, and so does what the rule counts.
    process(
        &mut db,
        b"From: customer@client.example\r\nTo: catchall@mycompany.com\r\nSubject: still here\r\n\
          Message-ID: <alive@client.example>\r\n\r\nhello\r\n",
    );
    bounce_of(&mut db, 4);
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.blacklist"),
        0,
        "the four bounces before the reset no longer count"
    );
    // Without the reset, five trusted bounces over eight days blocklist (the rule of mail.bounce.limit).
    exec(
        &mut db,
        "UPDATE mail_gateway.contact SET bounces_reset_at = NULL",
    );
    bounce_of(&mut db, 5);
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.blacklist WHERE email = 'customer@client.example'"
        ),
        1
    );
}

#[test]
fn strangers_never_starve_the_erps_own_mail() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::sending_through(smtp.port)
        .poll_interval("200ms")
        .start();
    exec(
        &mut db,
        "SELECT mail_gateway.set_parameter('mail.send.daily_limit', '100')",
    );
    for n in 0..60 {
        process(
            &mut db,
            format!(
                "From: stranger{n}@random{n}.example\r\nTo: catchall@mycompany.com\r\n\
                 Subject: hello {n}\r\nMessage-ID: <hello-{n}@random.example>\r\n\r\nhi\r\n"
            )
            .as_bytes(),
        );
    }
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.mail WHERE kind = 'auto_reply'"
        ),
        10,
        "automatic answers take at most 10 % of mail.send.daily_limit"
    );
    let invoice: i64 = db
        .query_one(
            "SELECT mail_gateway.send_mail('billing@mycompany.com', ARRAY['customer@client.example'], 'Invoice 1')",
            &[],
        )
        .unwrap()
        .get(0);
    wait_for("the invoice sent today", WAIT, || {
        let state: String = db
            .query_one(
                "SELECT state FROM mail_gateway.mail WHERE id = $1",
                &[&invoice],
            )
            .unwrap()
            .get(0);
        (state == "sent").then_some(())
    });
    assert!(
        smtp.received()
            .iter()
            .any(|m| m.rcpt_tos.contains(&"customer@client.example".to_string()))
    );
}

#[test]
fn a_message_over_the_size_limit_is_fetched_again_and_never_lost() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = Gateway::new()
        .poll_interval("200ms")
        .fetch_timeout("5s")
        .setting("mail_gateway.max_message_size", "64kB")
        .catchall("mycompany.com")
        .start();
    let big = format!(
        "From: c@customer.example\r\nTo: catchall@mycompany.com\r\nSubject: big\r\n\
         Message-ID: <big@customer.example>\r\n\r\n{}\r\n",
        "x".repeat(100_000)
    )
    .into_bytes();
    dovecot.deliver(&big);
    dovecot.add_confirmed(&mut db, "pop", "pop3");
    exec(&mut db, "SELECT mail_gateway.fetch_now()");
    wait_for("recorded without its bytes", WAIT, || {
        (count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.inbound WHERE octet_length(raw) = 0 AND state = 'error'",
        ) == 1)
            .then_some(())
    });
    // Let one more fetch run: the message must stay on the server.
    exec(&mut db, "SELECT mail_gateway.fetch_now()");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(dovecot.counts().0, 1, "still in the maildrop");
    // The hint says to raise the limit: then the next fetch stores the bytes, then deletes.
    exec(
        &mut db,
        "ALTER SYSTEM SET mail_gateway.max_message_size = '1MB'",
    );
    exec(&mut db, "SELECT pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(500));
    exec(&mut db, "SELECT mail_gateway.fetch_now()");
    wait_for("the bytes stored", WAIT, || {
        let raw: Vec<u8> = db
            .query_one(
                "SELECT raw FROM mail_gateway.inbound WHERE message_id = '<big@customer.example>'",
                &[],
            )
            .unwrap()
            .get(0);
        (raw == big).then_some(())
    });
    wait_for("deleted from the maildrop", WAIT, || {
        (dovecot.counts().0 == 0).then_some(())
    });
    let (state, _, reason) = {
        let id: i64 = db
            .query_one("SELECT id FROM mail_gateway.inbound", &[])
            .unwrap()
            .get(0);
        routed(&mut db, id)
    };
    assert_ne!(state, "error", "{reason}");
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.inbound"),
        1
    );
}

/// An RSA key pair for DKIM: the private key's PEM file and the public key as DNS publishes it.
fn dkim_key(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(format!("{name}.pem"));
    let status = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let der = std::process::Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .stderr(std::process::Stdio::null())
        .output()
        .unwrap()
        .stdout;
    use base64::Engine;
    (key, base64::engine::general_purpose::STANDARD.encode(der))
}

/// Signs `raw` for `domain` with dkimpy (an independent signer).
fn dkim_sign(raw: &[u8], domain: &str, key: &std::path::Path) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(mail_gateway_tests::smtp::servers_dir().join("dkim_sign.py"))
        .args([domain, "sel"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn the_fetcher_verifies_dkim_itself_and_believes_only_a_pass() {
    let dir = mail_gateway_tests::temp_dir("mgdkim");
    let (ours, ours_public) = dkim_key(&dir, "ours");
    let (theirs, theirs_public) = dkim_key(&dir, "theirs");
    let dns = mail_gateway_tests::dns::DnsServer::start(&serde_json::json!({
        "sel._domainkey.mycompany.com": {"TXT": [format!("v=DKIM1; k=rsa; p={ours_public}")]},
        "sel._domainkey.attacker.example": {"TXT": [format!("v=DKIM1; k=rsa; p={theirs_public}")]},
    }));
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = Gateway::new()
        .poll_interval("200ms")
        .fetch_timeout("5s")
        .setting("mail_gateway.dns_server", &dns.address())
        .catchall("mycompany.com")
        .no_daily_limit()
        .start();
    let root = thread(&mut db);
    let message = |n: usize, from: &str| {
        format!(
            "From: {from}\r\nTo: catchall@mycompany.com\r\nSubject: Re: SO042\r\n\
             Message-ID: <dkim-{n}@mycompany.com>\r\nIn-Reply-To: {root}\r\n\
             Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\nSigned reply {n}.\r\n"
        )
        .into_bytes()
    };
    // A colleague's reply, signed by our domain's key: verified.
    let genuine = dkim_sign(
        &message(1, "\"Ann\" <ann@mycompany.com>"),
        "mycompany.com",
        &ours,
    );
    // The CEO's name, signed by the attacker's own domain: a valid signature, not aligned.
    let unaligned = dkim_sign(
        &message(2, "\"The CEO\" <ceo@mycompany.com>"),
        "attacker.example",
        &theirs,
    );
    // Signed by our key, then altered on the way: the signature fails.
    let altered = String::from_utf8(dkim_sign(
        &message(3, "\"The CEO\" <ceo@mycompany.com>"),
        "mycompany.com",
        &ours,
    ))
    .unwrap()
    .replace("Signed reply 3.", "Pay the invoice to this account.")
    .into_bytes();
    dovecot.deliver_many([genuine, unaligned, altered]);
    dovecot.add_confirmed(&mut db, "box", "imap");
    exec(&mut db, "SELECT mail_gateway.fetch_now()");
    wait_for("three messages routed", WAIT, || {
        (count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.inbound WHERE state = 'routed'",
        ) == 3)
            .then_some(())
    });
    let verdicts: Vec<(String, String, String)> = db
        .query(
            "SELECT i.message_id, i.auth_verdict || ': ' || i.auth_detail,
                    (SELECT min(m.email_from) FROM mail_gateway.mail m WHERE m.message_ref = i.message_ref)
             FROM mail_gateway.inbound i ORDER BY i.message_id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(
        verdicts[0]
            .1
            .starts_with("pass: dkim=pass header.d=mycompany.com"),
        "{verdicts:?}"
    );
    assert_eq!(
        verdicts[0].2, "\"Ann\" <ann@mycompany.com>",
        "a verified colleague keeps our From"
    );
    assert!(verdicts[1].1.starts_with("none:"), "{verdicts:?}");
    assert!(verdicts[2].1.starts_with("fail: dkim=fail"), "{verdicts:?}");
    for forged in &verdicts[1..] {
        assert_eq!(
            forged.2, "\"The CEO (unverified)\" <notifications@mycompany.com>",
            "{verdicts:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
