//! What Microsoft 365 and Google answer, and the hints we give: the SMTP test server (aiosmtpd)
//! answers with the providers' own texts; `test_outgoing_server`, `server_status.last_error`
//! and the mail's `failure_reason` say what to change, and a daily sending quota makes mail
//! wait instead of failing.

use std::time::Duration;

use mail_gateway_tests::smtp::{SmtpOptions, SmtpServer};
use mail_gateway_tests::{Client, Gateway, exec, wait_for};

const WAIT: Duration = Duration::from_secs(30);

const M365_SMTP_AUTH_DISABLED: &str = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [SN4PR0501CA0054.namprd05.prod.outlook.com]";
const GOOGLE_APP_PASSWORD: &str = "534-5.7.9 Application-specific password required. Learn more at\r\n534 5.7.9  https://support.google.com/mail/?p=InvalidSecondFactor d2e1a72fcca58-7 - gsmtp";

/// A server with a login over the loopback (allowed in clear, as the test server has no TLS).
fn add_login_server(db: &mut Client, name: &str, port: u16) {
    exec(
        db,
        &format!(
            "INSERT INTO mail_gateway.outgoing_server
                 (name, host, port, encryption, username, password, allow_plaintext_login, active)
             VALUES ('{name}', '127.0.0.1', {port}, 'none', 'sales@mycompany.com', 'secret', true, false)"
        ),
    );
}

/// `test_outgoing_server`'s SQLSTATE, message and hint.
fn test_server(db: &mut Client, name: &str) -> (String, String, String) {
    let err = db
        .query_one("SELECT mail_gateway.test_outgoing_server($1)", &[&name])
        .unwrap_err();
    let e = err.as_db_error().expect("an ERROR from the server");
    (
        e.code().code().to_string(),
        e.message().to_string(),
        e.hint().unwrap_or_default().to_string(),
    )
}

fn use_only(db: &mut Client, name: &str) {
    db.execute(
        "UPDATE mail_gateway.outgoing_server SET active = (name = $1)",
        &[&name],
    )
    .unwrap();
}

fn send(db: &mut Client, from: &str) -> i64 {
    db.query_one(
        "SELECT mail_gateway.send_mail($1, ARRAY['customer@customer.example'], 'Order')",
        &[&from],
    )
    .unwrap()
    .get(0)
}

/// A mail's state, attempts and failure_reason once the worker has answered for it.
fn answered(db: &mut Client, id: i64) -> (String, i32, String) {
    wait_for(&format!("an answer for mail {id}"), WAIT, || {
        let row = db
            .query_one(
                "SELECT state, attempts, failure_reason FROM mail_gateway.mail WHERE id = $1",
                &[&id],
            )
            .unwrap();
        let reason: Option<String> = row.get(2);
        let state: String = row.get(0);
        (state != "sending" && reason.is_some()).then(|| (state, row.get(1), reason.unwrap()))
    })
}

fn last_error(db: &mut Client, name: &str) -> String {
    wait_for(&format!("a last_error for {name}"), WAIT, || {
        db.query_one(
            "SELECT last_error FROM mail_gateway.server_status WHERE name = $1",
            &[&name],
        )
        .unwrap()
        .get::<_, Option<String>>(0)
    })
}

#[test]
fn logins_refused_by_microsoft_and_google_say_what_to_change() {
    let m365 = SmtpServer::start(SmtpOptions {
        auth: Some("sales@mycompany.com:secret"),
        auth_reply: Some(M365_SMTP_AUTH_DISABLED),
        ..Default::default()
    });
    let google = SmtpServer::start(SmtpOptions {
        auth: Some("sales@mycompany.com:secret"),
        auth_reply: Some(GOOGLE_APP_PASSWORD),
        ..Default::default()
    });
    let (_cluster, mut db) = Gateway::usual().start();
    add_login_server(&mut db, "m365", m365.port);
    add_login_server(&mut db, "google", google.port);

    let (code, message, hint) = test_server(&mut db, "m365");
    assert_eq!(code, "08006", "{message}");
    assert!(
        message.contains("SmtpClientAuthentication is disabled"),
        "{message}"
    );
    assert!(hint.contains("Authenticated SMTP"), "{hint}");
    assert!(hint.contains("OAuth2"), "{hint}");

    let (_, message, hint) = test_server(&mut db, "google");
    assert!(
        message.contains("Application-specific password required"),
        "{message}"
    );
    assert!(hint.contains("app password"), "{hint}");

    // The worker's attempt: the mail waits (a login failure is the server's, not the mail's),
    // and the administrator reads the hint where the error is shown.
    use_only(&mut db, "m365");
    let id = send(&mut db, "sales@mycompany.com");
    let (state, _, reason) = answered(&mut db, id);
    assert_eq!(state, "outgoing", "{reason}");
    assert!(
        reason.contains("(hint: Microsoft 365: SMTP AUTH is disabled"),
        "{reason}"
    );
    let error = last_error(&mut db, "m365");
    assert!(
        error.contains("(hint: Microsoft 365: SMTP AUTH is disabled"),
        "{error}"
    );
}

#[test]
fn a_daily_sending_quota_makes_mail_wait_and_send_as_refusals_explain_themselves() {
    // The account's quota: one message, then Google's 550 5.4.5 to every MAIL FROM.
    let smtp = SmtpServer::start(SmtpOptions {
        quota_after: Some(1),
        ..Default::default()
    });
    let (_cluster, mut db) = Gateway::usual().start();
    exec(
        &mut db,
        &format!(
            "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption)
             VALUES ('relay', '127.0.0.1', {}, 'none')",
            smtp.port
        ),
    );
    let first = send(&mut db, "sales@mycompany.com");
    smtp.wait_for(1, WAIT);
    wait_for("the first mail recorded as sent", WAIT, || {
        let state: String = db
            .query_one(
                "SELECT state FROM mail_gateway.mail WHERE id = $1",
                &[&first],
            )
            .unwrap()
            .get(0);
        (state == "sent").then_some(())
    });

    // Over the quota: not an attempt, not an exception; the mail waits with the reason and
    // the hint, and the server is backed off (the next mail waits without being tried).
    let over = send(&mut db, "sales@mycompany.com");
    let (state, attempts, reason) = answered(&mut db, over);
    assert_eq!(state, "outgoing", "{reason}");
    assert_eq!(
        attempts, 0,
        "a refused MAIL FROM is not an attempt: {reason}"
    );
    assert!(
        reason.contains("5.4.5 Daily user sending limit exceeded"),
        "{reason}"
    );
    assert!(
        reason.contains("(hint: Google: the account reached its daily sending limit"),
        "{reason}"
    );
    let error = last_error(&mut db, "relay");
    assert!(error.contains("daily sending limit"), "{error}");
    let next = send(&mut db, "sales@mycompany.com");
    let (state, attempts, reason) = answered(&mut db, next);
    assert_eq!((state.as_str(), attempts), ("outgoing", 0), "{reason}");
    assert_eq!(smtp.received().len(), 1, "nothing more was sent");

    // Microsoft's SendAsDenied (after DATA) is final for the mail, with what to change.
    for id in [over, next] {
        db.execute("SELECT mail_gateway.cancel_mail($1)", &[&id])
            .unwrap();
    }
    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET active = false",
    );
    let m365 = SmtpServer::start(SmtpOptions::default());
    exec(
        &mut db,
        &format!(
            "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption)
             VALUES ('m365', '127.0.0.1', {}, 'none')",
            m365.port
        ),
    );
    let denied = send(&mut db, "sendas@mycompany.com");
    let (state, _, reason) = answered(&mut db, denied);
    assert_eq!(state, "exception", "{reason}");
    assert!(reason.contains("SendAsDenied"), "{reason}");
    assert!(
        reason.contains("(hint: Microsoft 365: this mailbox may not send as"),
        "{reason}"
    );
}
