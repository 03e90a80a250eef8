//! Fetching end to end: a real cluster with the fetcher, a real Dovecot with IMAP and POP3.

use std::time::Duration;

use mail_gateway_tests::dovecot::{Dovecot, PASSWORD, TOKEN, USER};
use mail_gateway_tests::smtp::{SmtpOptions, SmtpServer};
use mail_gateway_tests::{Client, Gateway, error_text, exec, wait_for};

const WAIT: Duration = Duration::from_secs(60);

/// A gateway whose fetcher polls every 200 ms and gives up on a silent server after 5 s.
fn fetching() -> Gateway {
    Gateway::new().poll_interval("200ms").fetch_timeout("5s")
}

/// Adds an incoming server; `extra` is more `, column => value` pairs as SQL.
fn add_server(
    db: &mut Client,
    name: &str,
    protocol: &str,
    port: u16,
    encryption: &str,
    extra: &[(&str, &str)],
) {
    let mut columns = String::new();
    let mut values = String::new();
    let password = extra
        .iter()
        .find(|(c, _)| *c == "password")
        .map(|(_, v)| v.trim_matches('\'').to_string())
        .unwrap_or_else(|| PASSWORD.to_string());
    for (c, v) in extra.iter().filter(|(c, _)| *c != "password") {
        columns.push_str(&format!(", {c}"));
        values.push_str(&format!(", {v}"));
    }
    db.execute(
        &format!(
            "INSERT INTO mail_gateway.incoming_server (name, protocol, host, port, encryption, username, password{columns})
             VALUES ($1, $2, '127.0.0.1', $3, $4, $5, $6{values})"
        ),
        &[&name, &protocol, &(port as i32), &encryption, &USER, &password],
    )
    .map_err(|e| error_text(&e))
    .unwrap();
}

fn test_server(db: &mut Client, name: &str) -> Result<String, String> {
    db.query_one("SELECT mail_gateway.test_incoming_server($1)", &[&name])
        .map(|r| r.get(0))
        .map_err(|e| {
            let hint = e
                .as_db_error()
                .and_then(|d| d.hint())
                .unwrap_or("")
                .to_string();
            format!("{} HINT: {hint}", error_text(&e))
        })
}

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Customer {n} <customer{n}@example.com>\r\nTo: catchall@mycompany.com\r\n\
         Subject: Message {n}\r\nMessage-ID: <m{n}@example.com>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n\
         \r\nBody of message {n}.\r\n..a line starting with a dot\r\n"
    )
    .into_bytes()
}

fn stored(db: &mut Client) -> Vec<(Vec<u8>, String)> {
    db.query(
        "SELECT raw, coalesce(message_id, '') FROM mail_gateway.inbound ORDER BY id",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

fn wait_stored(db: &mut Client, n: usize) -> Vec<(Vec<u8>, String)> {
    wait_for(&format!("{n} stored messages"), WAIT, || {
        let rows = stored(db);
        (rows.len() >= n).then_some(rows)
    })
}

#[test]
fn test_and_confirm_over_every_protocol_and_encryption() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = fetching().start();
    let ca = format!("'{}'", dovecot.cert.cert_pem());
    let cases = [
        ("imap-plain", "imap", dovecot.imap, "none", "IMAP"),
        ("imap-starttls", "imap", dovecot.imap, "starttls", "(TLS)"),
        ("imap-ssl", "imap", dovecot.imaps, "ssl", "(TLS)"),
        ("pop3-plain", "pop3", dovecot.pop3, "none", "POP3"),
        ("pop3-stls", "pop3", dovecot.pop3, "starttls", "(TLS)"),
        ("pop3-ssl", "pop3", dovecot.pop3s, "ssl", "(TLS)"),
    ];
    for (name, protocol, port, encryption, expect) in cases {
        add_server(
            &mut db,
            name,
            protocol,
            port,
            encryption,
            &[("ca_cert", &ca)],
        );
        let answer = test_server(&mut db, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            answer.starts_with("OK: ") && answer.contains(expect),
            "{name}: {answer}"
        );
        let state: String = db
            .query_one(
                "SELECT state FROM mail_gateway.incoming_server WHERE name = $1",
                &[&name],
            )
            .unwrap()
            .get(0);
        assert_eq!(state, "confirmed", "{name}");
    }
}

#[test]
fn failures_say_what_to_fix_and_leave_the_server_in_draft() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = fetching().start();
    let ca = format!("'{}'", dovecot.cert.cert_pem());
    let closed = mail_gateway_tests::free_port();
    add_server(
        &mut db,
        "wrong-password",
        "imap",
        dovecot.imap,
        "none",
        &[("password", "'nope'")],
    );
    add_server(
        &mut db,
        "wrong-password-pop",
        "pop3",
        dovecot.pop3,
        "none",
        &[("password", "'nope'")],
    );
    add_server(&mut db, "wrong-port", "imap", closed, "none", &[]);
    add_server(
        &mut db,
        "tls-to-plain-port",
        "imap",
        dovecot.imap,
        "ssl",
        &[("ca_cert", &ca)],
    );
    add_server(
        &mut db,
        "plain-to-tls-port",
        "pop3",
        dovecot.pop3s,
        "none",
        &[],
    );
    add_server(&mut db, "untrusted-cert", "imap", dovecot.imaps, "ssl", &[]);
    add_server(
        &mut db,
        "missing-mailbox",
        "imap",
        dovecot.imap,
        "none",
        &[("mailbox", "'Nowhere'")],
    );
    let cases = [
        (
            "wrong-password",
            "login as \"mg\" failed",
            "Check username and password",
        ),
        (
            "wrong-password-pop",
            "login as \"mg\" failed",
            "Check username and password",
        ),
        (
            "wrong-port",
            "cannot connect to 127.0.0.1",
            "Check host and port",
        ),
        ("tls-to-plain-port", "TLS", "Check the encryption setting"),
        (
            "plain-to-tls-port",
            "does this port expect TLS?",
            "Check the encryption setting",
        ),
        ("untrusted-cert", "certificate verify failed", "ca_cert"),
        (
            "missing-mailbox",
            "cannot open mailbox \"Nowhere\"",
            "Check the mailbox name",
        ),
    ];
    for (name, message, hint) in cases {
        let err = test_server(&mut db, name).expect_err(name);
        eprintln!("{name}: {err}");
        assert!(err.starts_with("08006: incoming server"), "{name}: {err}");
        assert!(err.contains(message) && err.contains(hint), "{name}: {err}");
        assert!(
            !err.contains("nope") && !err.contains(PASSWORD),
            "{name} leaks a secret: {err}"
        );
        let state: String = db
            .query_one(
                "SELECT state FROM mail_gateway.incoming_server WHERE name = $1",
                &[&name],
            )
            .unwrap()
            .get(0);
        assert_eq!(state, "draft", "{name}");
    }
    let err = test_server(&mut db, "no-such-server").unwrap_err();
    assert!(err.starts_with("42704"), "{err}");
}

#[test]
fn imap_messages_arrive_byte_for_byte_and_are_flagged_seen_after_commit() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = fetching().start();
    for n in 0..3 {
        dovecot.deliver(&message(n));
    }
    add_server(
        &mut db,
        "imap",
        "imap",
        dovecot.imap,
        "starttls",
        &[("ca_cert", &format!("'{}'", dovecot.cert.cert_pem()))],
    );
    test_server(&mut db, "imap").unwrap();
    let rows = wait_stored(&mut db, 3);
    let mut raws: Vec<Vec<u8>> = rows.into_iter().map(|r| r.0).collect();
    raws.sort();
    assert_eq!(raws, (0..3).map(message).collect::<Vec<_>>());
    wait_for("3 seen messages", WAIT, || {
        (dovecot.counts() == (3, 3)).then_some(())
    });

    // New mail is fetched at the next interval, or at once after fetch_now.
    exec(
        &mut db,
        "UPDATE mail_gateway.incoming_server SET fetch_interval = '1 hour'",
    );
    dovecot.deliver(&message(3));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stored(&mut db).len(), 3, "not due yet");
    let n: i64 = db
        .query_one("SELECT mail_gateway.fetch_now('imap')", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let rows = wait_stored(&mut db, 4);
    assert_eq!(rows[3].0, message(3));
    assert_eq!(stored(&mut db).len(), 4, "nothing fetched twice");

    let row = db
        .query_one(
            "SELECT fetched, last_fetch_at IS NOT NULL, last_error FROM mail_gateway.incoming_status WHERE name = 'imap'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, bool>(1),
            row.get::<_, Option<String>>(2)
        ),
        (4, true, None)
    );
}

#[test]
fn pop3_messages_arrive_and_are_deleted_after_commit() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = fetching().start();
    for n in 0..5 {
        dovecot.deliver(&message(n));
    }
    add_server(
        &mut db,
        "pop",
        "pop3",
        dovecot.pop3s,
        "ssl",
        &[("ca_cert", &format!("'{}'", dovecot.cert.cert_pem()))],
    );
    test_server(&mut db, "pop").unwrap();
    let rows = wait_stored(&mut db, 5);
    let mut raws: Vec<Vec<u8>> = rows.into_iter().map(|r| r.0).collect();
    raws.sort();
    assert_eq!(raws, (0..5).map(message).collect::<Vec<_>>());
    wait_for("an empty maildrop", WAIT, || {
        (dovecot.counts().0 == 0).then_some(())
    });
    assert_eq!(stored(&mut db).len(), 5);
}

#[test]
fn an_oversized_message_is_recorded_without_its_bytes() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = fetching()
        .setting("mail_gateway.max_message_size", "64kB")
        .start();
    let mut big =
        b"From: big@example.com\r\nSubject: Too big\r\nMessage-ID: <big@example.com>\r\n\r\n"
            .to_vec();
    for _ in 0..2000 {
        big.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789\r\n",
        );
    }
    dovecot.deliver(&big);
    dovecot.deliver(&message(1));
    add_server(&mut db, "imap", "imap", dovecot.imap, "none", &[]);
    test_server(&mut db, "imap").unwrap();
    wait_stored(&mut db, 2);
    let row = db
        .query_one(
            "SELECT length(raw), raw_size, state, reason, subject FROM mail_gateway.inbound WHERE message_id = '<big@example.com>'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 0);
    assert_eq!(row.get::<_, i64>(1), big.len() as i64);
    assert_eq!(row.get::<_, String>(2), "error");
    assert!(
        row.get::<_, String>(3)
            .contains("over mail_gateway.max_message_size")
    );
    assert_eq!(row.get::<_, String>(4), "Too big");
}

#[test]
fn a_failing_server_records_its_error_and_the_others_go_on() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = fetching().start();
    dovecot.deliver(&message(1));
    // Confirmed once, then its password changed on the mail server: every fetch fails.
    add_server(
        &mut db,
        "bad",
        "imap",
        dovecot.imap,
        "none",
        &[("password", "'old'"), ("priority", "1")],
    );
    exec(
        &mut db,
        "ALTER TABLE mail_gateway.incoming_server DISABLE TRIGGER USER;
                   UPDATE mail_gateway.incoming_server SET state = 'confirmed' WHERE name = 'bad';
                   ALTER TABLE mail_gateway.incoming_server ENABLE TRIGGER USER;",
    );
    add_server(&mut db, "good", "imap", dovecot.imap, "none", &[]);
    test_server(&mut db, "good").unwrap();
    wait_stored(&mut db, 1);
    let error: String = wait_for("the bad server's error", WAIT, || {
        db.query_one(
            "SELECT last_error FROM mail_gateway.incoming_status WHERE name = 'bad'",
            &[],
        )
        .unwrap()
        .get(0)
    });
    assert!(error.contains("login as \"mg\" failed"), "{error}");
    assert!(!error.contains("old"), "{error}");
}

/// Confirms a server without testing it (as if it had passed the test earlier).
fn force_confirm(db: &mut Client, name: &str) {
    exec(
        db,
        &format!(
            "ALTER TABLE mail_gateway.incoming_server DISABLE TRIGGER USER;
             UPDATE mail_gateway.incoming_server SET state = 'confirmed' WHERE name = '{name}';
             ALTER TABLE mail_gateway.incoming_server ENABLE TRIGGER USER;"
        ),
    );
}

#[test]
fn a_server_that_hangs_costs_one_fetch_not_the_worker() {
    let dovecot = Dovecot::start();
    // Accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            held.push(stream);
        }
    });
    let (_cluster, mut db) = fetching().fetch_timeout("1s").start();
    dovecot.deliver(&message(1));
    add_server(
        &mut db,
        "silent",
        "imap",
        silent_port,
        "none",
        &[("priority", "1")],
    );
    force_confirm(&mut db, "silent");
    add_server(&mut db, "good", "imap", dovecot.imap, "none", &[]);
    test_server(&mut db, "good").unwrap();
    wait_stored(&mut db, 1);
    let error: String = wait_for("the silent server's error", WAIT, || {
        db.query_one(
            "SELECT last_error FROM mail_gateway.incoming_status WHERE name = 'silent'",
            &[],
        )
        .unwrap()
        .get(0)
    });
    assert!(error.contains("timed out"), "{error}");
    // And the fetcher is still there for the next message.
    dovecot.deliver(&message(2));
    exec(&mut db, "SELECT mail_gateway.fetch_now('good')");
    wait_stored(&mut db, 2);
}

#[test]
fn the_same_message_through_two_mailboxes_is_stored_once() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = fetching().start();
    dovecot.deliver(&message(7));
    add_server(&mut db, "by-imap", "imap", dovecot.imap, "none", &[]);
    add_server(&mut db, "by-pop3", "pop3", dovecot.pop3, "none", &[]);
    // IMAP first (it flags the message \\Seen), then POP3, which finds it stored already.
    test_server(&mut db, "by-imap").unwrap();
    wait_stored(&mut db, 1);
    test_server(&mut db, "by-pop3").unwrap();
    wait_for("both servers fetched", WAIT, || {
        let n: i64 = db
            .query_one("SELECT count(*) FROM mail_gateway.incoming_server WHERE last_success_at IS NOT NULL", &[])
            .unwrap()
            .get(0);
        (n == 2).then_some(())
    });
    wait_for("the POP3 maildrop emptied", WAIT, || {
        (dovecot.counts().0 == 0).then_some(())
    });
    assert_eq!(stored(&mut db).len(), 1);
}

#[test]
fn xoauth2_logs_in_with_an_access_token_over_imap_and_pop3() {
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = fetching().start();
    dovecot.deliver(&message(1));
    let token = format!("'{TOKEN}'");
    add_server(
        &mut db,
        "imap-oauth",
        "imap",
        dovecot.imap,
        "none",
        &[("auth", "'xoauth2'"), ("password", &token)],
    );
    add_server(
        &mut db,
        "pop-oauth",
        "pop3",
        dovecot.pop3,
        "none",
        &[("auth", "'xoauth2'"), ("password", &token)],
    );
    add_server(
        &mut db,
        "expired",
        "imap",
        dovecot.imap,
        "none",
        &[("auth", "'xoauth2'"), ("password", "'ya29.expired'")],
    );
    add_server(
        &mut db,
        "expired-pop",
        "pop3",
        dovecot.pop3,
        "none",
        &[("auth", "'xoauth2'"), ("password", "'ya29.expired'")],
    );
    for name in ["imap-oauth", "pop-oauth"] {
        let answer = test_server(&mut db, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(answer.contains("logged in as \"mg\""), "{name}: {answer}");
    }
    for name in ["expired", "expired-pop"] {
        let err = test_server(&mut db, name).expect_err(name);
        assert!(
            err.contains("login as \"mg\" failed") && err.contains("fresh access token"),
            "{name}: {err}"
        );
        assert!(!err.contains("ya29"), "{name} leaks the token: {err}");
    }
    wait_stored(&mut db, 1);
}

#[test]
fn a_reply_goes_round_the_whole_gateway() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let dovecot = Dovecot::start();
    let (_cluster, mut db) = fetching()
        .catchall("mycompany.com")
        .no_daily_limit()
        .relay(smtp.port)
        .sql(
            "CREATE TABLE crm_lead (id bigserial PRIMARY KEY, name text, email_from text, description text);
             INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'crm_lead');
             SELECT mail_gateway.follow('sale_order', 42, 'Ann <ann@mycompany.com>');
             SELECT mail_gateway.follow('sale_order', 42, 'Bob <bob@customer.example>');
             SELECT mail_gateway.follow('sale_order', 42, 'Carol <carol@customer.example>');",
        )
        .start();
    add_server(&mut db, "imap", "imap", dovecot.imap, "none", &[]);
    test_server(&mut db, "imap").unwrap();
    exec(
        &mut db,
        "SELECT mail_gateway.post_message('sale_order', 42, 'Ann <ann@mycompany.com>',
             'Your quotation SO042 is ready.', 'Quotation SO042')",
    );
    let notifications = smtp.wait_for(2, WAIT);
    let to_bob = notifications
        .iter()
        .find(|m| m.rcpt_tos == ["bob@customer.example"])
        .expect("Bob is notified");
    assert_eq!(
        to_bob.header("Reply-To").as_deref(),
        Some("catchall@mycompany.com")
    );
    let notification_id = to_bob.header("Message-ID").unwrap();
    let references = to_bob.header("References").unwrap();

    // Bob answers from his mail client; the reply reaches the catchall mailbox.
    dovecot.deliver(
        format!(
            "From: Bob <bob@customer.example>\r\nTo: catchall@mycompany.com\r\n\
             Subject: Re: Quotation SO042\r\nMessage-ID: <bob-reply-1@customer.example>\r\n\
             In-Reply-To: {notification_id}\r\nReferences: {references} {notification_id}\r\n\r\n\
             I accept the quotation.\r\n"
        )
        .as_bytes(),
    );
    // And Dan writes to sales@ for the first time.
    dovecot.deliver(
        b"From: Dan <dan@prospect.example>\r\nTo: sales@mycompany.com\r\nSubject: 300 chairs\r\n\
          Message-ID: <dan-1@prospect.example>\r\n\r\nPlease send a quote.\r\n",
    );
    exec(&mut db, "SELECT mail_gateway.fetch_now('imap')");

    // Relayed to Ann and Carol, never back to Bob; from us, with Bob's name.
    let all = smtp.wait_for(4, WAIT);
    let relays: Vec<_> = all[2..].iter().collect();
    let mut relayed_to: Vec<String> = relays.iter().flat_map(|m| m.rcpt_tos.clone()).collect();
    relayed_to.sort();
    assert_eq!(relayed_to, ["ann@mycompany.com", "carol@customer.example"]);
    for m in &relays {
        assert_eq!(
            m.header("From").as_deref(),
            Some("Bob <notifications@mycompany.com>")
        );
        assert!(m.text().contains("I accept the quotation."));
    }
    let row = db
        .query_one(
            "SELECT state, route, model, res_id FROM mail_gateway.inbound
             WHERE message_id = '<bob-reply-1@customer.example>'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, i64>(3)
        ),
        ("routed".into(), "reply".into(), "sale_order".into(), 42)
    );
    let in_thread: i64 = db
        .query_one(
            "SELECT count(*) FROM mail_gateway.message WHERE model = 'sale_order' AND res_id = 42",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(in_thread, 2);
    let lead: String = wait_for("the lead", WAIT, || {
        db.query_opt("SELECT name FROM crm_lead", &[])
            .unwrap()
            .map(|r| r.get(0))
    });
    assert_eq!(lead, "300 chairs");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(smtp.received().len(), 4, "nothing else was sent");
}
