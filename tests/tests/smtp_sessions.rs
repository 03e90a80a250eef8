//! SMTP sessions as servers offer them — PIPELINING, CHUNKING (BDAT), both, or nothing at all
//! (HELO) — with every recipient's answer kept; the bytes on the wire; politeness (connection
//! limits, mails per connection, a server that pushes back). Real aiosmtpd servers, a real
//! cluster with the worker.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use mail_gateway_tests::smtp::{Received, SmtpOptions, SmtpServer, dkim_verifies};
use mail_gateway_tests::{Client, Gateway, exec, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// A gateway that sends, polling every 200 ms with an SMTP timeout of 5 s. Its relay is only a
/// placeholder, inactive: each test adds servers that take their own domain.
fn sending() -> Gateway {
    Gateway::sending_through(1)
        .poll_interval("200ms")
        .smtp_timeout("5s")
        .sql("UPDATE mail_gateway.outgoing_server SET active = false")
}

/// A server for mail from `domain`, with its own settings.
fn add_server(db: &mut Client, name: &str, port: u16, domain: &str, extra: &str) {
    exec(
        db,
        &format!(
            "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, from_filter)
             VALUES ('{name}', '127.0.0.1', {port}, 'none', '{domain}');
             {extra}"
        ),
    );
}

fn send(db: &mut Client, from: &str, to: &[&str], body: &str) -> i64 {
    let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
    db.query_one(
        "SELECT mail_gateway.send_mail($1, $2, 'Hello', body_text => $3)",
        &[&from, &to, &body],
    )
    .unwrap()
    .get(0)
}

/// Waits until no mail is being sent or due now.
fn settled(db: &mut Client) {
    wait_for("every mail to be attempted", WAIT, || {
        let busy: i64 = db
            .query_one(
                "SELECT count(*) FROM mail_gateway.mail
                 WHERE state = 'sending' OR (state = 'outgoing' AND attempts = 0)",
                &[],
            )
            .unwrap()
            .get(0);
        (busy == 0).then_some(())
    });
}

fn recipient_states(db: &mut Client, id: i64) -> HashMap<String, (String, String)> {
    let text: String = db
        .query_one(
            "SELECT recipients::text FROM mail_gateway.mail WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let text = |f: &str| v[f].as_str().unwrap_or_default().to_string();
            (k.clone(), (text("state"), text("reason")))
        })
        .collect()
}

fn state(db: &mut Client, id: i64) -> (String, Option<String>) {
    let row = db
        .query_one(
            "SELECT state, failure_type FROM mail_gateway.mail WHERE id = $1",
            &[&id],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

fn subjects_by_session(received: &[Received]) -> HashMap<u64, usize> {
    let mut sessions = HashMap::new();
    for m in received {
        *sessions.entry(m.session).or_insert(0) += 1;
    }
    sessions
}

#[test]
fn every_kind_of_server_keeps_each_recipients_answer() {
    let kinds = [
        (
            "pipelining",
            SmtpOptions {
                pipelining: true,
                ..Default::default()
            },
        ),
        (
            "chunking",
            SmtpOptions {
                pipelining: true,
                chunking: true,
                ..Default::default()
            },
        ),
        (
            "bdat-alone",
            SmtpOptions {
                chunking: true,
                ..Default::default()
            },
        ),
        ("plain", SmtpOptions::default()),
        (
            "helo",
            SmtpOptions {
                no_ehlo: true,
                ..Default::default()
            },
        ),
    ];
    let (_cluster, mut db) = sending().start();
    let servers: Vec<(&str, SmtpServer)> = kinds
        .into_iter()
        .map(|(name, options)| (name, SmtpServer::start(options)))
        .collect();
    for (name, server) in &servers {
        // One connection: the mails follow each other on it.
        let one = format!(
            "UPDATE mail_gateway.outgoing_server SET max_connections = 1 WHERE name = '{name}';"
        );
        add_server(&mut db, name, server.port, &format!("{name}.example"), &one);
    }
    // Per server, in one transaction (one claim, one connection): a mail whose pipelined
    // group has a refused and a deferred recipient, one with no recipient accepted, one whose
    // sender is refused, then a plain one that must still go through on the same connection.
    let mut ids = HashMap::new();
    let mut tx = db.transaction().unwrap();
    for (name, _) in &servers {
        let from = format!("a@{name}.example");
        let mut queue = |from: &str, to: &[&str]| -> i64 {
            let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
            tx.query_one(
                "SELECT mail_gateway.send_mail($1, $2, 'Hello')",
                &[&from, &to],
            )
            .unwrap()
            .get(0)
        };
        let mixed = queue(
            &from,
            &[
                "ok1@customer.example",
                "reject1@customer.example",
                "tempfail1@customer.example",
                "ok2@customer.example",
            ],
        );
        let refused = queue(&from, &["reject2@customer.example"]);
        let sender = queue(
            &format!("refuse-sender@{name}.example"),
            &["ok3@customer.example"],
        );
        let plain = queue(&from, &["ok4@customer.example"]);
        ids.insert(*name, (mixed, refused, sender, plain));
    }
    tx.commit().unwrap();
    settled(&mut db);
    for (name, server) in &servers {
        let (mixed, refused, sender, plain) = ids[name];
        let received = server.received();
        let rcpts: Vec<Vec<String>> = received.iter().map(|m| m.rcpt_tos.clone()).collect();
        assert_eq!(
            rcpts,
            [
                vec!["ok1@customer.example", "ok2@customer.example"],
                vec!["ok4@customer.example"]
            ],
            "{name}: only accepted recipients received it, in order"
        );
        let states = recipient_states(&mut db, mixed);
        assert_eq!(states["ok1@customer.example"].0, "sent", "{name}");
        assert_eq!(states["ok2@customer.example"].0, "sent", "{name}");
        let (s, reason) = &states["reject1@customer.example"];
        assert!(
            s == "exception" && reason.contains("550 5.1.1"),
            "{name}: {s} {reason}"
        );
        let (s, reason) = &states["tempfail1@customer.example"];
        assert!(
            s == "deferred" && reason.contains("451 4.2.0"),
            "{name}: {s} {reason}"
        );
        assert_eq!(
            state(&mut db, mixed),
            ("outgoing".into(), Some("recipient_deferred".into())),
            "{name}: retried for the deferred recipient only"
        );
        assert_eq!(
            state(&mut db, refused),
            ("exception".into(), Some("recipient_refused".into())),
            "{name}"
        );
        assert_eq!(
            state(&mut db, sender),
            ("exception".into(), Some("sender_refused".into())),
            "{name}"
        );
        assert_eq!(state(&mut db, plain).0, "sent", "{name}");
        assert_eq!(
            subjects_by_session(&received).len(),
            1,
            "{name}: one connection carried them all"
        );
    }
}

/// Everything between the header and the end of the message.
fn body(m: &Received) -> &[u8] {
    let at = m
        .data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a body");
    &m.data[at + 4..]
}

fn assert_crlf_only(data: &[u8], what: &str) {
    for (i, &b) in data.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(data.get(i + 1), Some(&b'\n'), "{what}: bare CR at {i}");
        }
        if b == b'\n' {
            assert!(i > 0 && data[i - 1] == b'\r', "{what}: bare LF at {i}");
        }
    }
}

#[test]
fn smuggling_sequences_arrive_as_plain_lines_byte_for_byte() {
    // Bare CR, bare LF, "\r.\r", "\n.\n" and "\r\n.\r\n" inside a body, a dotted line, and a
    // final "." without a line end.
    let smuggling = "a\rb\nc\r.\rd\n.\ne\r\n.\r\nf\n..g\r\n.";
    let expected = "a\r\nb\r\nc\r\n.\r\nd\r\n.\r\ne\r\n.\r\nf\r\n..g\r\n.\r\n";
    // After DATA (dot-stuffed on the wire, unstuffed by the server) and in a BDAT chunk (as is).
    for (kind, options) in [
        (
            "DATA",
            SmtpOptions {
                pipelining: true,
                ..Default::default()
            },
        ),
        (
            "BDAT",
            SmtpOptions {
                pipelining: true,
                chunking: true,
                ..Default::default()
            },
        ),
    ] {
        let smtp = SmtpServer::start(options);
        let (_cluster, mut db) = sending().start();
        add_server(&mut db, "relay2", smtp.port, "mycompany.com", "");
        let record: String = db
            .query_one(
                "SELECT mail_gateway.create_dkim_key('mycompany.com', 's1', 'ed25519')",
                &[],
            )
            .unwrap()
            .get(0);
        let txt: String = record.split('"').skip(1).step_by(2).collect();
        send(
            &mut db,
            "a@mycompany.com",
            &["x@customer.example"],
            smuggling,
        );
        // Relayed content: a chatter post goes out through the same path.
        exec(
            &mut db,
            "SELECT mail_gateway.follow('ticket', 7, 'f@customer.example')",
        );
        db.execute(
            "SELECT mail_gateway.post_message('ticket', 7, 'Ann <ann@mycompany.com>', $1)",
            &[&smuggling],
        )
        .unwrap();
        let received = smtp.wait_for(2, WAIT);
        for m in &received {
            assert_crlf_only(&m.data, kind);
            assert!(
                dkim_verifies(&m.data, &txt),
                "{kind}: the signature covers the bytes that arrived"
            );
        }
        let first = received
            .iter()
            .find(|m| m.rcpt_tos == ["x@customer.example"])
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(body(first)),
            expected,
            "{kind}: the body, byte for byte"
        );
        let relayed = received
            .iter()
            .find(|m| m.rcpt_tos == ["f@customer.example"])
            .unwrap();
        assert!(
            relayed.text().contains("\r\ne\r\n.\r\nf\r\n"),
            "{kind}: the relayed post too: {}",
            relayed.text()
        );
    }
}

#[test]
fn connections_are_limited_reused_and_renewed() {
    // Each message is answered after 0.2 s: mails pile up and several connections fill.
    let smtp = SmtpServer::start(SmtpOptions {
        pipelining: true,
        delay: 0.2,
        ..Default::default()
    });
    let (_cluster, mut db) = sending()
        .setting("mail_gateway.smtp_idle_timeout", "1s")
        .start();
    add_server(
        &mut db,
        "limited",
        smtp.port,
        "mycompany.com",
        "UPDATE mail_gateway.outgoing_server SET max_connections = 3, max_mails_per_connection = 4
         WHERE name = 'limited';",
    );
    exec(
        &mut db,
        "SELECT mail_gateway.send_mail('a@mycompany.com', ARRAY['r' || i || '@customer.example'], 'mail ' || i)
         FROM generate_series(1, 24) AS i",
    );
    let received = smtp.wait_for(24, WAIT);
    let sessions = subjects_by_session(&received);
    assert!(
        sessions.values().all(|&n| n <= 4),
        "at most 4 mails per connection: {sessions:?}"
    );
    assert!(sessions.len() >= 6, "renewed after 4 mails: {sessions:?}");
    let open = received.iter().map(|m| m.open_sessions).max().unwrap();
    assert!(open <= 3, "never more than 3 connections at once ({open})");
    assert!(open >= 2, "several connections in flight ({open})");

    // Across rounds: an idle queue reuses a kept connection …
    let before: HashSet<u64> = received.iter().map(|m| m.session).collect();
    send(
        &mut db,
        "a@mycompany.com",
        &["later1@customer.example"],
        "x",
    );
    let first = smtp.wait_for(25, WAIT)[24].session;
    send(
        &mut db,
        "a@mycompany.com",
        &["later2@customer.example"],
        "x",
    );
    let second = smtp.wait_for(26, WAIT)[25].session;
    assert!(
        !before.contains(&first),
        "a new connection after the renewals"
    );
    assert_eq!(first, second, "the next mail reuses the kept connection");
    // … until it has been idle for mail_gateway.smtp_idle_timeout.
    std::thread::sleep(Duration::from_secs(3));
    send(
        &mut db,
        "a@mycompany.com",
        &["later3@customer.example"],
        "x",
    );
    let third = smtp.wait_for(27, WAIT)[26].session;
    assert_ne!(
        third, second,
        "an idle connection is closed (QUIT) and a new one opened"
    );
}

#[test]
fn a_server_that_pushes_back_is_backed_off_alone() {
    // After 5 mails the limited server answers MAIL FROM with 421 for 2 seconds.
    let limited = SmtpServer::start(SmtpOptions {
        pipelining: true,
        rate_limit: Some((5, 2.0)),
        ..Default::default()
    });
    let other = SmtpServer::start(SmtpOptions {
        pipelining: true,
        ..Default::default()
    });
    let (_cluster, mut db) = sending()
        .setting("mail_gateway.retry_delay", "500ms")
        .start();
    // Fewer connections than mails: with one connection per mail, every MAIL FROM would
    // arrive before the fifth message and none would be pushed back.
    add_server(
        &mut db,
        "limited",
        limited.port,
        "limited.example",
        "UPDATE mail_gateway.outgoing_server SET max_connections = 4 WHERE name = 'limited';",
    );
    add_server(&mut db, "other", other.port, "other.example", "");
    exec(
        &mut db,
        "SELECT mail_gateway.send_mail('a@limited.example', ARRAY['l' || i || '@customer.example'], 'limited ' || i)
         FROM generate_series(1, 20) AS i;
         SELECT mail_gateway.send_mail('a@other.example', ARRAY['o' || i || '@customer.example'], 'other ' || i)
         FROM generate_series(1, 5) AS i;",
    );
    let got = limited.wait_for(20, WAIT);
    assert_eq!(other.wait_for(5, WAIT).len(), 5);
    wait_for("every mail recorded as sent", WAIT, || {
        let sent: i64 = db
            .query_one(
                "SELECT count(*) FROM mail_gateway.mail WHERE state = 'sent'",
                &[],
            )
            .unwrap()
            .get(0);
        (sent == 25).then_some(())
    });
    let ids: HashSet<String> = got.iter().filter_map(|m| m.header("Message-ID")).collect();
    assert_eq!(ids.len(), 20, "each mail once");
    let row = db
        .query_one(
            "SELECT max(attempts), (SELECT last_error FROM mail_gateway.outgoing_server WHERE name = 'limited')
             FROM mail_gateway.mail WHERE email_from = 'a@limited.example'",
            &[],
        )
        .unwrap();
    let (attempts, error): (i32, Option<String>) = (row.get(0), row.get(1));
    assert!(
        error.as_deref().unwrap_or_default().contains("421 4.7.0"),
        "the server's words are kept: {error:?}"
    );
    assert_eq!(
        attempts, 1,
        "held back, not failed: no mail counts an attempt for it"
    );
    let last: bool = db
        .query_one(
            "SELECT (SELECT max(sent_at) FROM mail_gateway.mail WHERE email_from = 'a@other.example')
                  < (SELECT max(sent_at) FROM mail_gateway.mail WHERE email_from = 'a@limited.example')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        last,
        "the other server's mail did not wait for the limited one"
    );
}
