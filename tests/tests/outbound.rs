//! Outbound end to end: real cluster with the worker, real SMTP server (aiosmtpd).

use std::time::Duration;

use mail_gateway_tests::smtp::{SelfSigned, SmtpOptions, SmtpServer, dkim_verifies};
use mail_gateway_tests::{Client, Gateway, error_text, exec, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn add_server(db: &mut Client, name: &str, port: u16, extra_columns: &str, extra_values: &str) {
    exec(
        db,
        &format!(
            "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption{extra_columns})
             VALUES ('{name}', '127.0.0.1', {port}, 'none'{extra_values})"
        ),
    );
}

fn send(db: &mut Client, from: &str, to: &[&str]) -> i64 {
    let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
    db.query_one(
        "SELECT mail_gateway.send_mail($1, $2, 'Hello')",
        &[&from, &to],
    )
    .map_err(|e| error_text(&e))
    .unwrap()
    .get(0)
}

fn state(db: &mut Client, id: i64) -> (String, Option<String>, Option<String>, i32) {
    let row = db
        .query_one("SELECT state, failure_type, failure_reason, attempts FROM mail_gateway.mail WHERE id = $1", &[&id])
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

fn wait_state(
    db: &mut Client,
    id: i64,
    wanted: &str,
) -> (String, Option<String>, Option<String>, i32) {
    wait_for(&format!("mail {id} to be {wanted}"), WAIT, || {
        let s = state(db, id);
        (s.0 == wanted).then_some(s)
    })
}

/// Waits until the worker has tried `id` at least once and put it back in the queue.
fn wait_attempted(db: &mut Client, id: i64) -> (String, Option<String>, Option<String>, i32) {
    wait_for(&format!("a first attempt of mail {id}"), WAIT, || {
        let s = state(db, id);
        (s.3 >= 1 && s.0 != "sending").then_some(s)
    })
}

#[test]
fn committed_mail_arrives_at_once_and_rolled_back_mail_never() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    // Polling once an hour: only the commit can wake the worker in time.
    let (_cluster, mut db) = Gateway::usual().poll_interval("1h").start();
    add_server(&mut db, "relay", smtp.port, "", "");

    let mut tx = db.transaction().unwrap();
    tx.execute("SELECT mail_gateway.send_mail('a@mycompany.com', ARRAY['rolled-back@customer.example'], 'never')", &[])
        .unwrap();
    tx.rollback().unwrap();

    let id: i64 = db
        .query_one(
            "SELECT mail_gateway.send_mail(
                 email_from => '\"Sales\" <sales@mycompany.com>',
                 email_to => ARRAY['Ann <ann@customer.example>'],
                 cc => ARRAY['bob@customer.example'],
                 bcc => ARRAY['hidden@customer.example'],
                 reply_to => 'replies@mycompany.com',
                 subject => 'Devis n° 42',
                 body_text => 'Bonjour',
                 headers => '{\"X-Order\": \"SO042\"}')",
            &[],
        )
        .unwrap()
        .get(0);
    let got = smtp.wait_for(1, Duration::from_secs(15));
    assert_eq!(got.len(), 1, "only the committed mail");
    let m = &got[0];
    assert!(
        m.mail_from.starts_with(&format!("bounce+{id}-"))
            && m.mail_from.ends_with("@mycompany.com"),
        "Return-Path is the bounce address, tagged with the mail: {}",
        m.mail_from
    );
    let mut rcpts = m.rcpt_tos.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "ann@customer.example",
            "bob@customer.example",
            "hidden@customer.example"
        ]
    );
    assert_eq!(
        m.header("From").as_deref(),
        Some("Sales <sales@mycompany.com>")
    );
    assert_eq!(
        m.header("Reply-To").as_deref(),
        Some("replies@mycompany.com")
    );
    assert_eq!(m.header("X-Order").as_deref(), Some("SO042"));
    assert!(m.header("Bcc").is_none(), "Bcc never in the headers");
    assert!(
        !m.text().contains("hidden@"),
        "the Bcc address appears nowhere in the message"
    );
    let message_id: String = db
        .query_one(
            "SELECT message_id FROM mail_gateway.mail WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(m.header("Message-ID"), Some(message_id));
    let (state, ..) = wait_state(&mut db, id, "sent");
    assert_eq!(state, "sent");
    let count: i64 = db
        .query_one("SELECT count(*) FROM mail_gateway.mail", &[])
        .unwrap()
        .get(0);
    assert_eq!(count, 1, "the rolled-back mail was never queued");
}

#[test]
fn from_and_envelope_follow_the_server_filter() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::usual().start();
    add_server(
        &mut db,
        "company",
        smtp.port,
        ", from_filter",
        ", 'mycompany.com'",
    );
    let id = send(
        &mut db,
        "\"Admin\" <admin@example.com>",
        &["x@customer.example"],
    );
    let m = smtp.wait_for(1, WAIT).remove(0);
    assert_eq!(
        m.header("From").as_deref(),
        Some("Admin <notifications@mycompany.com>")
    );
    assert!(
        m.mail_from.starts_with(&format!("bounce+{id}-")),
        "{}",
        m.mail_from
    );

    // A server that may only send as the default sender: the envelope is that address.
    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET from_filter = 'notifications@mycompany.com'",
    );
    send(&mut db, "Bob <bob@mycompany.com>", &["x@customer.example"]);
    let m = smtp.wait_for(2, WAIT).remove(1);
    assert_eq!(
        m.header("From").as_deref(),
        Some("Bob <notifications@mycompany.com>")
    );
    assert_eq!(m.mail_from, "notifications@mycompany.com");
}

#[test]
fn starttls_and_login_with_a_trusted_self_signed_certificate() {
    let cert = SelfSigned::new();
    let smtp = SmtpServer::start(SmtpOptions {
        tls: Some(("starttls", &cert)),
        auth: Some("mailer:s3cret"),
        ..Default::default()
    });
    let (_cluster, mut db) = Gateway::usual().start();
    db.execute(
        "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, username, password, ca_cert)
         VALUES ('tls', '127.0.0.1', $1, 'starttls', 'mailer', 's3cret', $2)",
        &[&(smtp.port as i32), &cert.cert_pem()],
    )
    .unwrap();
    let summary: String = db
        .query_one("SELECT mail_gateway.test_outgoing_server('tls')", &[])
        .unwrap()
        .get(0);
    assert!(summary.starts_with("OK: 127.0.0.1:"), "{summary}");
    assert!(
        summary.contains("encrypted") && summary.contains("logged in as mailer"),
        "{summary}"
    );
    assert!(
        smtp.received().is_empty(),
        "Test Connection sends no message"
    );

    send(&mut db, "a@mycompany.com", &["x@customer.example"]);
    let m = smtp.wait_for(1, WAIT).remove(0);
    assert!(m.tls, "sent over STARTTLS");
    assert_eq!(m.auth.as_deref(), Some("mailer"));

    // The same server without the CA: the certificate is not trusted, and the error says so.
    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET ca_cert = NULL",
    );
    let err = db
        .query_one("SELECT mail_gateway.test_outgoing_server('tls')", &[])
        .unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert_eq!(db_err.code().code(), "08006");
    assert!(
        db_err.message().contains("STARTTLS"),
        "{}",
        db_err.message()
    );
    assert!(
        db_err.hint().unwrap_or_default().contains("ca_cert"),
        "{:?}",
        db_err.hint()
    );

    // Wrong password: a clear error, and no secret in it.
    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET ca_cert = NULL, verify_tls = false, password = 'wrong-pass'",
    );
    let err = error_text(
        &db.query_one("SELECT mail_gateway.test_outgoing_server('tls')", &[])
            .unwrap_err(),
    );
    assert!(err.contains("authentication on 127.0.0.1"), "{err}");
    assert!(!err.contains("wrong-pass"), "{err}");
}

#[test]
fn implicit_tls() {
    let cert = SelfSigned::new();
    let smtp = SmtpServer::start(SmtpOptions {
        tls: Some(("ssl", &cert)),
        ..Default::default()
    });
    let (_cluster, mut db) = Gateway::usual().start();
    db.execute(
        "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, ca_cert)
         VALUES ('ssl', '127.0.0.1', $1, 'ssl', $2)",
        &[&(smtp.port as i32), &cert.cert_pem()],
    )
    .unwrap();
    send(&mut db, "a@mycompany.com", &["x@customer.example"]);
    assert!(smtp.wait_for(1, WAIT)[0].tls);

    // The wrong setting for this port: the error names the TLS mismatch.
    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET encryption = 'starttls'",
    );
    let err = error_text(
        &db.query_one("SELECT mail_gateway.test_outgoing_server('ssl')", &[])
            .unwrap_err(),
    );
    assert!(err.starts_with("08006"), "{err}");
}

#[test]
fn dead_hanging_and_blocked_servers_give_actionable_errors() {
    let hanging = SmtpServer::start(SmtpOptions {
        hang: true,
        ..Default::default()
    });
    let (_cluster, mut db) = Gateway::usual()
        .smtp_timeout("1s")
        .setting("mail_gateway.blocked_ports", "25, 2525")
        .start();
    let dead_port = mail_gateway_tests::free_port();
    add_server(&mut db, "dead", dead_port, "", "");
    add_server(&mut db, "hanging", hanging.port, "", "");
    add_server(&mut db, "port25", 25, "", "");
    let err = error_text(
        &db.query_one("SELECT mail_gateway.test_outgoing_server('dead')", &[])
            .unwrap_err(),
    );
    assert!(
        err.contains(&format!("cannot connect to 127.0.0.1:{dead_port}")),
        "{err}"
    );
    let err = error_text(
        &db.query_one("SELECT mail_gateway.test_outgoing_server('hanging')", &[])
            .unwrap_err(),
    );
    assert!(err.contains("timed out"), "{err}");
    let err = db
        .query_one("SELECT mail_gateway.test_outgoing_server('port25')", &[])
        .unwrap_err();
    let db_err = err.as_db_error().unwrap();
    assert!(
        db_err
            .message()
            .contains("port 25 of server \"port25\" is blocked"),
        "{}",
        db_err.message()
    );
    assert!(db_err.hint().unwrap_or_default().contains("587"));
    let err = error_text(
        &db.query_one("SELECT mail_gateway.test_outgoing_server('nope')", &[])
            .unwrap_err(),
    );
    assert!(err.contains("no outgoing server named \"nope\""), "{err}");

    // Queued mail on the dead server waits, with the reason; the worker goes on.
    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET active = (name = 'dead')",
    );
    let id = send(&mut db, "a@mycompany.com", &["x@customer.example"]);
    let (state, kind, reason, _) = wait_attempted(&mut db, id);
    assert_eq!(state, "outgoing");
    assert_eq!(kind.as_deref(), Some("connection"));
    assert!(reason.unwrap().contains("cannot connect"));
    let last_error: Option<String> = db
        .query_one(
            "SELECT last_error FROM mail_gateway.server_status WHERE name = 'dead'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(last_error.unwrap_or_default().contains("cannot connect"));
}

#[test]
fn temporary_failures_retry_permanent_ones_fail_with_the_servers_words() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::usual().start();
    add_server(&mut db, "relay", smtp.port, "", "");

    let temp = send(&mut db, "a@mycompany.com", &["tempfail@customer.example"]);
    let (state, kind, reason, attempts) = wait_attempted(&mut db, temp);
    assert_eq!((state.as_str(), attempts), ("outgoing", 1));
    assert_eq!(kind.as_deref(), Some("recipient_deferred"));
    assert!(reason.unwrap().contains("451 4.2.0"));
    let delay: f64 = db
        .query_one("SELECT extract(epoch FROM next_attempt_at - now())::float8 FROM mail_gateway.mail WHERE id = $1", &[&temp])
        .unwrap()
        .get(0);
    assert!(
        (40.0..=61.0).contains(&delay),
        "first retry after about a minute, not {delay}s"
    );

    let perm = send(&mut db, "a@mycompany.com", &["reject@customer.example"]);
    let (_, kind, reason, attempts) = wait_state(&mut db, perm, "exception");
    assert_eq!(attempts, 1, "a 5xx is not retried");
    assert_eq!(kind.as_deref(), Some("recipient_refused"));
    assert!(reason.unwrap().contains("550 5.1.1"));

    // Without a catchall domain there is no bounce address: the envelope is the From.
    exec(
        &mut db,
        "SELECT mail_gateway.set_parameter('mail.catchall.domain', NULL)",
    );
    let id = send(
        &mut db,
        "refuse-sender@mycompany.com",
        &["x@customer.example"],
    );
    let (_, kind, reason, _) = wait_state(&mut db, id, "exception");
    assert_eq!(kind.as_deref(), Some("sender_refused"));
    assert!(reason.unwrap().contains("553 5.7.1"));

    let queued: i64 = db
        .query_one("SELECT mail_gateway.send_mail('a@mycompany.com', ARRAY['x@customer.example'], 'x', headers => '{\"X-Test-Reject\": \"yes\"}')", &[])
        .unwrap()
        .get(0);
    let (_, kind, reason, _) = wait_state(&mut db, queued, "exception");
    assert_eq!(kind.as_deref(), Some("recipient_refused"));
    assert!(reason.unwrap().contains("554 5.6.0"));

    let status: i64 = db
        .query_one(
            "SELECT sum(mails)::bigint FROM mail_gateway.queue_status WHERE state = 'exception'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(status >= 3);
}

#[test]
fn one_refused_recipient_does_not_stop_the_others() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::usual().start();
    add_server(&mut db, "relay", smtp.port, "", "");
    exec(
        &mut db,
        "INSERT INTO mail_gateway.blacklist (email, reason) VALUES ('blocked@customer.example', 'test')",
    );
    let id = send(
        &mut db,
        "a@mycompany.com",
        &[
            "ok@customer.example",
            "reject@customer.example",
            "blocked@customer.example",
        ],
    );
    let m = smtp.wait_for(1, WAIT).remove(0);
    assert_eq!(m.rcpt_tos, ["ok@customer.example"]);
    let (state, kind, ..) = wait_state(&mut db, id, "sent");
    assert_eq!(state, "sent");
    assert_eq!(kind.as_deref(), Some("partial"));
    let recipients: String = db
        .query_one(
            "SELECT recipients::text FROM mail_gateway.mail WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(
        recipients.contains("\"ok@customer.example\": {\"state\": \"sent\"}"),
        "{recipients}"
    );
    assert!(
        recipients.contains("\"blocked@customer.example\": {\"state\": \"blacklisted\""),
        "{recipients}"
    );
    assert!(recipients.contains("550 5.1.1"), "{recipients}");

    // Only blocklisted recipients: cancelled, nothing sent.
    let id = send(&mut db, "a@mycompany.com", &["blocked@customer.example"]);
    let (_, kind, ..) = wait_state(&mut db, id, "cancel");
    assert_eq!(kind.as_deref(), Some("blacklisted"));
    assert_eq!(smtp.received().len(), 1);
}

#[test]
fn the_daily_limit_defers_without_failing() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::usual().start();
    add_server(&mut db, "relay", smtp.port, "", "");
    exec(
        &mut db,
        "SELECT mail_gateway.set_parameter('mail.send.daily_limit', '2')",
    );
    let ids: Vec<i64> = (0..3)
        .map(|i| {
            send(
                &mut db,
                "a@mycompany.com",
                &[&format!("r{i}@customer.example")],
            )
        })
        .collect();
    smtp.wait_for(2, WAIT);
    let reason = wait_for("the third mail to be deferred", WAIT, || {
        let (state, _, reason, _) = state(&mut db, ids[2]);
        (state == "outgoing").then_some(reason).flatten()
    });
    assert!(
        reason.contains("daily limit of 2 mails reached"),
        "{reason}"
    );
    let tomorrow: bool = db
        .query_one(
            "SELECT next_attempt_at = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day'
             FROM mail_gateway.mail WHERE id = $1",
            &[&ids[2]],
        )
        .unwrap()
        .get(0);
    assert!(tomorrow, "waits for the next UTC day");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(smtp.received().len(), 2);
}

#[test]
fn scheduled_retried_and_cancelled_mail() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::usual().start();
    add_server(&mut db, "relay", smtp.port, "", "");
    let later: i64 = db
        .query_one(
            "SELECT mail_gateway.send_mail('a@mycompany.com', ARRAY['later@customer.example'], 'later',
                                           scheduled_at => now() + interval '1 hour')",
            &[],
        )
        .unwrap()
        .get(0);
    let cancelled: i64 = db
        .query_one(
            "SELECT mail_gateway.send_mail('a@mycompany.com', ARRAY['c@customer.example'], 'c',
                                           scheduled_at => now() + interval '1 hour')",
            &[],
        )
        .unwrap()
        .get(0);
    let failed = send(&mut db, "a@mycompany.com", &["reject@customer.example"]);
    wait_state(&mut db, failed, "exception");
    assert_eq!(state(&mut db, later).0, "outgoing", "not before its time");
    let s: String = db
        .query_one("SELECT mail_gateway.cancel_mail($1)", &[&cancelled])
        .unwrap()
        .get(0);
    assert_eq!(s, "cancel");
    exec(
        &mut db,
        &format!(
            "UPDATE mail_gateway.mail SET scheduled_at = now(), next_attempt_at = now() WHERE id = {later}"
        ),
    );
    wait_state(&mut db, later, "sent");
    assert_eq!(state(&mut db, cancelled).0, "cancel");

    let err = error_text(
        &db.query_one("SELECT mail_gateway.retry_mail($1)", &[&later])
            .unwrap_err(),
    );
    assert!(
        err.contains("is sent; only mail in exception or cancel can be retried"),
        "{err}"
    );
    let err = error_text(
        &db.query_one("SELECT mail_gateway.retry_mail(999999)", &[])
            .unwrap_err(),
    );
    assert!(err.starts_with("42704"), "{err}");
    // A retried cancelled mail goes out.
    let s: String = db
        .query_one("SELECT mail_gateway.retry_mail($1)", &[&cancelled])
        .unwrap()
        .get(0);
    assert_eq!(s, "outgoing");
    wait_state(&mut db, cancelled, "sent");
    let rcpts: Vec<Vec<String>> = smtp.received().into_iter().map(|m| m.rcpt_tos).collect();
    assert!(rcpts.contains(&vec!["c@customer.example".to_string()]));
}

/// The TXT value of a zone-file record: its quoted strings, joined.
fn txt_value(record: &str) -> String {
    record.split('"').skip(1).step_by(2).collect()
}

#[test]
fn dkim_signatures_verify_with_an_independent_verifier() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::usual().start();
    add_server(&mut db, "relay", smtp.port, "", "");
    for (i, (domain, algorithm)) in [("mycompany.com", "rsa"), ("ed.example", "ed25519")]
        .iter()
        .enumerate()
    {
        let record: String = db
            .query_one(
                "SELECT mail_gateway.create_dkim_key($1, 's1', $2)",
                &[domain, algorithm],
            )
            .unwrap()
            .get(0);
        assert!(
            record.starts_with(&format!("s1._domainkey.{domain}. IN TXT")),
            "{record}"
        );
        db.execute(
            "SELECT mail_gateway.send_mail($1, ARRAY['x@customer.example'], 'Signé — été',
                 body_text => 'Une ligne assez longue pour être pliée. ' || repeat('abc ', 100),
                 body_html => '<p>Bonjour</p>')",
            &[&format!("\"Jérôme\" <j@{domain}>")],
        )
        .unwrap();
        let m = smtp.wait_for(i + 1, WAIT).remove(i);
        let signature = m.header("DKIM-Signature").expect("signed");
        assert!(
            signature.contains(&format!("d={domain}")) && signature.contains("c=relaxed/relaxed"),
            "{signature}"
        );
        assert!(
            dkim_verifies(&m.data, &txt_value(&record)),
            "dkimpy verifies the {algorithm} signature"
        );
        // Tampering breaks it: the verifier is not a rubber stamp.
        let tampered = m.text().replacen("Bonjour", "Bonsoir", 1);
        assert!(!dkim_verifies(tampered.as_bytes(), &txt_value(&record)));
    }
    // Mail from a domain without a key is not signed.
    send(&mut db, "a@other.example", &["x@customer.example"]);
    assert!(smtp.wait_for(3, WAIT)[2].header("DKIM-Signature").is_none());
}

#[test]
fn bad_arguments_are_clear_errors() {
    let (_cluster, mut db) = Gateway::usual().start();
    let cases = [
        (
            "SELECT mail_gateway.send_mail('not an address', ARRAY['x@y.com'], 's')",
            "malformed From address",
        ),
        (
            "SELECT mail_gateway.send_mail('a@b.com', ARRAY['x@y.com', 'bad@'], 's')",
            "malformed email_to address \"bad@\"",
        ),
        (
            "SELECT mail_gateway.send_mail('a@b.com', ARRAY[]::text[], 's')",
            "a mail needs at least one recipient",
        ),
        (
            "SELECT mail_gateway.send_mail('a@b.com', ARRAY['x@y.com'], 's', headers => '{\"Bcc\": \"x@y.com\"}')",
            "header \"Bcc\" is set by mail_gateway itself",
        ),
        (
            "SELECT mail_gateway.send_mail('a@b.com', ARRAY['x@y.com'], 's', headers => '{\"X-A\": \"1\\r\\nBcc: x@y.com\"}')",
            "contains a line break",
        ),
        (
            "SELECT mail_gateway.send_mail('a@b.com', ARRAY['x@y.com'], 's', attachments => '[{\"filename\": \"a\"}]')",
            "lacks filename, content_type or content_base64",
        ),
        (
            "SELECT mail_gateway.send_mail('a@b.com', ARRAY['x@y.com'], 's', attachments => '[{\"filename\": \"a\", \"content_type\": \"text/plain\", \"content_base64\": \"!!\"}]')",
            "is not valid base64",
        ),
        (
            "SELECT mail_gateway.send_mail('a@b.com', ARRAY['x@y.com'], 's', kind => 'bulk')",
            "unknown mail kind \"bulk\"",
        ),
        (
            "SELECT mail_gateway.create_dkim_key('mycompany.com', algorithm => 'dsa')",
            "unknown DKIM algorithm \"dsa\"",
        ),
    ];
    for (sql, expected) in cases {
        let err = error_text(&db.query_one(sql, &[]).unwrap_err());
        assert!(
            err.starts_with("22023") && err.contains(expected),
            "{sql}\n-> {err}"
        );
    }
}

#[test]
fn xoauth2_login() {
    let cert = SelfSigned::new();
    let smtp = SmtpServer::start(SmtpOptions {
        tls: Some(("starttls", &cert)),
        auth: Some("mailer:password-not-used"),
        xoauth2: Some("mailer@mycompany.com:ya29.token"),
        ..Default::default()
    });
    let (_cluster, mut db) = Gateway::usual().start();
    db.execute(
        "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, auth, username, password, ca_cert)
         VALUES ('oauth', '127.0.0.1', $1, 'starttls', 'xoauth2', 'mailer@mycompany.com', 'ya29.token', $2)",
        &[&(smtp.port as i32), &cert.cert_pem()],
    )
    .unwrap();
    send(&mut db, "a@mycompany.com", &["x@customer.example"]);
    assert_eq!(
        smtp.wait_for(1, WAIT)[0].auth.as_deref(),
        Some("mailer@mycompany.com")
    );

    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET password = 'expired-token'",
    );
    let err = error_text(
        &db.query_one("SELECT mail_gateway.test_outgoing_server('oauth')", &[])
            .unwrap_err(),
    );
    assert!(err.contains("authentication on 127.0.0.1"), "{err}");
    assert!(!err.contains("expired-token"), "no secret in errors: {err}");
}

#[test]
fn client_certificate_authentication() {
    let cert = SelfSigned::new();
    let client = SelfSigned::with_cn("erp-client");
    let smtp = SmtpServer::start(SmtpOptions {
        tls: Some(("starttls", &cert)),
        client_ca: Some(&client),
        ..Default::default()
    });
    let (_cluster, mut db) = Gateway::usual().start();
    db.execute(
        "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, auth, client_cert, client_key, ca_cert)
         VALUES ('cert', '127.0.0.1', $1, 'starttls', 'certificate', $2, $3, $4)",
        &[&(smtp.port as i32), &client.cert_pem(), &client.key_pem(), &cert.cert_pem()],
    )
    .unwrap();
    let summary: String = db
        .query_one("SELECT mail_gateway.test_outgoing_server('cert')", &[])
        .unwrap()
        .get(0);
    assert!(summary.contains("client certificate"), "{summary}");
    send(&mut db, "a@mycompany.com", &["x@customer.example"]);
    assert_eq!(
        smtp.wait_for(1, WAIT)[0].peer.as_deref(),
        Some("erp-client")
    );

    // Without the certificate the server refuses the TLS session.
    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET auth = 'none'",
    );
    let err = error_text(
        &db.query_one("SELECT mail_gateway.test_outgoing_server('cert')", &[])
            .unwrap_err(),
    );
    assert!(err.starts_with("08006"), "{err}");
}

#[test]
fn mass_mail_goes_to_the_dedicated_server() {
    let transactional = SmtpServer::start(SmtpOptions::default());
    let bulk = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::usual().start();
    add_server(
        &mut db,
        "transactional",
        transactional.port,
        ", priority",
        ", 1",
    );
    add_server(&mut db, "bulk", bulk.port, ", priority", ", 50");
    exec(
        &mut db,
        "SELECT mail_gateway.set_parameter('mass_mailing.outgoing_mail_server', 'bulk')",
    );
    exec(
        &mut db,
        "SELECT mail_gateway.send_mail('news@mycompany.com', ARRAY['x@customer.example'], 'Newsletter', kind => 'mass')",
    );
    send(&mut db, "sales@mycompany.com", &["y@customer.example"]);
    assert_eq!(bulk.wait_for(1, WAIT)[0].rcpt_tos, ["x@customer.example"]);
    assert_eq!(
        transactional.wait_for(1, WAIT)[0].rcpt_tos,
        ["y@customer.example"]
    );
    assert_eq!(bulk.received().len(), 1);
}

#[test]
fn an_expired_lease_of_a_vanished_sender_is_taken_over() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::usual().start();
    add_server(&mut db, "relay", smtp.port, "", "");
    // As a sender that no longer exists (index 7) would have left it.
    let id: i64 = db
        .query_one(
            "INSERT INTO mail_gateway.mail (message_id, email_from, email_to, subject, state, claimed_by, lease_until, attempts)
             VALUES ('<orphan@mycompany.com>', 'a@mycompany.com', ARRAY['x@customer.example'], 'orphan',
                     'sending', 7, now() + interval '2 seconds', 1)
             RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        state(&mut db, id).0,
        "sending",
        "not taken while its lease runs"
    );
    let (_, _, _, attempts) = wait_state(&mut db, id, "sent");
    assert_eq!(attempts, 2);
    assert_eq!(
        smtp.received()[0].header("Message-ID").as_deref(),
        Some("<orphan@mycompany.com>")
    );
}
