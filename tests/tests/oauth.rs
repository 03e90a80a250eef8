//! OAuth2 with refresh tokens (issue 14), end to end: a local OAuth2 provider
//! (`tests/servers/oauth2_endpoint.py`) issues short-lived access tokens and rotates refresh
//! tokens; the test SMTP server (aiosmtpd) and Dovecot's oauth2 passdb accept XOAUTH2 only
//! with a token the provider calls active now. Expiry during a run of sends and fetches,
//! rotation, revocation (invalid_grant) and a slow or failing endpoint: no mail ever fails.

use std::time::{Duration, Instant};

use mail_gateway_tests::dovecot::{Dovecot, USER};
use mail_gateway_tests::oauth::{CLIENT_ID, CLIENT_SECRET, Provider, REFRESH_TOKEN};
use mail_gateway_tests::smtp::{SelfSigned, SmtpOptions, SmtpServer};
use mail_gateway_tests::{Client, Cluster, Gateway, count, error_text, exec, wait_for};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

/// A gateway with outgoing server `relay` (the SMTP server) and incoming server `box`
/// (Dovecot's IMAP), both as the mailbox `mg`, sharing the OAuth2 account `relay`.
struct Setup {
    cluster: Cluster,
    db: Client,
    smtp: SmtpServer,
    dovecot: Dovecot,
    provider: Provider,
    _cert: SelfSigned,
}

fn setup(control: serde_json::Value, settings: &[(&str, &str)]) -> Setup {
    let provider = Provider::start(USER, control);
    let introspect = provider.introspection_url();
    // aiosmtpd offers AUTH over TLS only, and then requires it.
    let cert = SelfSigned::new();
    let smtp = SmtpServer::start(SmtpOptions {
        tls: Some(("starttls", &cert)),
        auth: Some(&format!("{USER}:no-password-login")),
        xoauth2: Some(&format!("{USER}:unused")),
        xoauth2_introspect: Some(&introspect),
        ..Default::default()
    });
    let dovecot = Dovecot::with_introspection(&introspect);
    let (cluster, mut db) = Gateway::usual()
        .setting("mail_gateway.retry_delay", "1s")
        .settings(settings)
        .sql(&format!(
            "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, username, password, ca_cert)
                 VALUES ('relay', '127.0.0.1', {}, 'starttls', '{USER}', 'a-static-token', '{}');
             INSERT INTO mail_gateway.incoming_server (name, protocol, host, port, encryption, username, password, fetch_interval)
                 VALUES ('box', 'imap', '127.0.0.1', {}, 'none', '{USER}', 'x', '1 second');",
            smtp.port,
            cert.cert_pem(),
            dovecot.imap
        ))
        .start();
    let summary: String = db
        .query_one(
            "SELECT mail_gateway.set_oauth(server => 'relay', provider => 'custom',
                    token_endpoint => $1, client_id => $2, client_secret => $3, refresh_token => $4)",
            &[&provider.token_url(), &CLIENT_ID, &CLIENT_SECRET, &REFRESH_TOKEN],
        )
        .map_err(|e| error_text(&e))
        .unwrap()
        .get(0);
    assert!(
        summary.contains(
            "OAuth2 account \"relay\" (custom): outgoing server \"relay\" logs in with its tokens"
        ),
        "{summary}"
    );
    // The mailbox shares the account.
    exec(
        &mut db,
        "SELECT mail_gateway.set_oauth(server => 'box', account => 'relay')",
    );
    Setup {
        cluster,
        db,
        smtp,
        dovecot,
        provider,
        _cert: cert,
    }
}

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Customer {n} <customer{n}@example.com>\r\nTo: nobody@elsewhere.example\r\n\
         Subject: Fetched {n}\r\nMessage-ID: <oauth-{n}@example.com>\r\n\
         Date: Sat, 21 Nov 2026 10:00:00 +0000\r\n\r\nBody {n}.\r\n"
    )
    .into_bytes()
}

fn send(db: &mut Client, n: usize) {
    db.execute(
        "SELECT mail_gateway.send_mail('notifications@mycompany.com', ARRAY['r' || $1::text || '@customer.example'], 'Mail ' || $1::text)",
        &[&n.to_string()],
    )
    .map_err(|e| error_text(&e))
    .unwrap();
}

/// Waits until all `n` mails are sent (their results committed), and checks that none failed.
fn wait_all_sent(db: &mut Client, n: usize) {
    wait_for(&format!("{n} mails sent"), WAIT, || {
        let row = db
            .query_one(
                "SELECT count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE state IN ('exception', 'cancel'))
                 FROM mail_gateway.mail",
                &[],
            )
            .unwrap();
        let (sent, failed): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(failed, 0, "a mail failed");
        (sent == n as i64).then_some(())
    });
}

fn text(db: &mut Client, sql: &str) -> String {
    db.query_one(sql, &[])
        .unwrap()
        .get::<_, Option<String>>(0)
        .unwrap_or_default()
}

fn sql_error(db: &mut Client, sql: &str) -> (String, String, String) {
    let e = db.query_one(sql, &[]).expect_err(sql);
    let d = e.as_db_error().expect("a database error");
    (
        d.code().code().to_string(),
        d.message().to_string(),
        d.hint().unwrap_or_default().to_string(),
    )
}

#[test]
fn tokens_that_expire_during_a_run_of_sends_and_fetches_fail_no_mail() {
    // Four-second tokens, a new refresh token at every refresh (the old one dead at once),
    // two senders and the fetcher sharing one account, new SMTP logins all the time.
    let Setup {
        cluster,
        mut db,
        smtp,
        dovecot,
        provider,
        _cert,
    } = setup(
        json!({"lifetime": 4, "rotate": true}),
        &[
            ("mail_gateway.senders", "2"),
            ("mail_gateway.smtp_idle_timeout", "300ms"),
        ],
    );
    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET max_mails_per_connection = 2",
    );
    let out = text(&mut db, "SELECT mail_gateway.test_outgoing_server('relay')");
    assert!(
        out.contains("logged in as mg")
            && out.contains("OAuth2 account \"relay\": access token valid for another"),
        "{out}"
    );
    let inc = text(&mut db, "SELECT mail_gateway.test_incoming_server('box')");
    assert!(inc.contains("logged in as \"mg\""), "{inc}");

    let started = Instant::now();
    let (mut mails, mut messages) = (0, 0);
    while started.elapsed() < Duration::from_secs(30) {
        for _ in 0..3 {
            mails += 1;
            send(&mut db, mails);
        }
        messages += 1;
        dovecot.deliver(&message(messages));
        std::thread::sleep(Duration::from_millis(500));
    }
    smtp.wait_for(mails, WAIT);
    wait_for("every fetched message", WAIT, || {
        (count(&mut db, "SELECT count(*) FROM mail_gateway.inbound") >= messages as i64)
            .then_some(())
    });
    wait_all_sent(&mut db, mails);
    assert_eq!(smtp.received().len(), mails, "each mail once");
    // Many tokens over the run, every rotated refresh token stored at once: never one used
    // twice, and the account holds the provider's current one.
    let state = provider.state();
    eprintln!(
        "provider: {state}\nrefused logins: {}, held for a token: {}",
        cluster
            .log()
            .matches("refused the OAuth2 access token")
            .count(),
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.mail WHERE failure_reason LIKE '%OAuth2%'"
        )
    );
    assert!(state["grants"].as_u64().unwrap() >= 5, "{state}");
    assert_eq!(state["reuses"], 0, "{state}");
    assert_eq!(state["refused"], 0, "{state}");
    let stored = text(
        &mut db,
        "SELECT refresh_token FROM mail_gateway.oauth_account WHERE name = 'relay'",
    );
    assert_eq!(stored, state["refresh_token"].as_str().unwrap());
    assert_eq!(
        text(&mut db, "SELECT state FROM mail_gateway.oauth_account"),
        "ok"
    );
    // No secret in the log.
    let log = cluster.log();
    assert!(
        !log.contains(&stored) && !log.contains(CLIENT_SECRET) && !log.contains("Bearer"),
        "a secret in the log"
    );
}

#[test]
fn a_revoked_grant_holds_mail_with_a_hint_until_consent_is_given_again() {
    let Setup {
        cluster,
        mut db,
        smtp,
        dovecot,
        provider,
        _cert,
    } = setup(json!({"lifetime": 3}), &[]);
    exec(
        &mut db,
        "SELECT mail_gateway.test_incoming_server('box');
         UPDATE mail_gateway.outgoing_server SET max_mails_per_connection = 1",
    );
    send(&mut db, 1);
    smtp.wait_for(1, WAIT);
    // The grant is revoked (a password change, an administrator): invalid_grant.
    provider.control(json!({"lifetime": 3, "revoked": true}));
    std::thread::sleep(Duration::from_secs(3));
    for n in 2..=4 {
        send(&mut db, n);
    }
    dovecot.deliver(&message(1));
    let reason = wait_for("the account to need consent", WAIT, || {
        let r = db
            .query_one(
                "SELECT state, last_error FROM mail_gateway.oauth_account WHERE name = 'relay'",
                &[],
            )
            .unwrap();
        (r.get::<_, String>(0) == "needs_consent").then(|| r.get::<_, Option<String>>(1))
    })
    .unwrap_or_default();
    assert!(
        reason.contains("invalid_grant") && reason.contains("AADSTS50173"),
        "{reason}"
    );
    // The server says what to do; the mail waits, it never fails; no retry storm at the
    // endpoint.
    let server_error = wait_for("the server's last error", WAIT, || {
        let e = text(
            &mut db,
            "SELECT last_error FROM mail_gateway.server_status WHERE name = 'relay' AND direction = 'outgoing'",
        );
        e.contains("oauth_authorize_url").then_some(e)
    });
    assert!(
        server_error.contains("OAuth2 account \"relay\"") && server_error.contains("consent"),
        "{server_error}"
    );
    let fetch_error = wait_for("the mailbox's last error", WAIT, || {
        let e = text(
            &mut db,
            "SELECT last_error FROM mail_gateway.incoming_server WHERE name = 'box'",
        );
        e.contains("invalid_grant").then_some(e)
    });
    assert!(fetch_error.contains("oauth_exchange_code"), "{fetch_error}");
    let refreshes = provider.count("refreshes");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        provider.count("refreshes"),
        refreshes,
        "needs_consent is not retried"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.mail WHERE state IN ('outgoing', 'sending') AND failure_type IS NULL"
        ),
        3,
        "the mails wait, unfailed"
    );
    let (code, message, hint) =
        sql_error(&mut db, "SELECT mail_gateway.test_outgoing_server('relay')");
    assert_eq!(code, "28000", "{message}");
    assert!(message.contains("AADSTS50173"), "{message}");
    assert!(hint.contains("oauth_authorize_url('relay')"), "{hint}");
    // Consent again: the authorize URL, then the code the browser came back with.
    let (code, _, hint) = sql_error(&mut db, "SELECT mail_gateway.oauth_authorize_url('relay')");
    assert_eq!(
        code, "55000",
        "a custom provider without authorize_endpoint"
    );
    assert!(hint.contains("authorize_endpoint =>"), "{hint}");
    exec(
        &mut db,
        "SELECT mail_gateway.set_oauth(account => 'relay', authorize_endpoint => 'https://idp.example.com/authorize')",
    );
    let url = text(&mut db, "SELECT mail_gateway.oauth_authorize_url('relay')");
    assert!(
        url.starts_with("https://idp.example.com/authorize?client_id=mg-app&response_type=code&redirect_uri=http%3A%2F%2Flocalhost")
            && url.contains("state=relay&prompt=consent&access_type=offline&login_hint=mg"),
        "{url}"
    );
    provider.control(json!({"lifetime": 3}));
    let done = text(
        &mut db,
        "SELECT mail_gateway.oauth_exchange_code('relay', 'http://localhost/?code=the-code&state=relay')",
    );
    assert!(
        done.starts_with("OK: OAuth2 account \"relay\" has a refresh token"),
        "{done}"
    );
    smtp.wait_for(4, WAIT);
    wait_for("the fetch", WAIT, || {
        (count(&mut db, "SELECT count(*) FROM mail_gateway.inbound") == 1).then_some(())
    });
    wait_all_sent(&mut db, 4);
    assert_eq!(
        text(&mut db, "SELECT state FROM mail_gateway.oauth_account"),
        "ok"
    );
    let current = text(
        &mut db,
        "SELECT refresh_token FROM mail_gateway.oauth_account",
    );
    let log = cluster.log();
    assert!(
        !log.contains(CLIENT_SECRET) && !log.contains(REFRESH_TOKEN) && !log.contains(&current),
        "a secret in the log"
    );
}

#[test]
fn a_slow_or_failing_token_endpoint_delays_mail_but_fails_none() {
    let Setup {
        cluster: _cluster,
        mut db,
        smtp,
        dovecot,
        provider,
        _cert,
    } = setup(json!({"lifetime": 3}), &[]);
    exec(
        &mut db,
        "SELECT mail_gateway.test_incoming_server('box');
         UPDATE mail_gateway.outgoing_server SET max_mails_per_connection = 1",
    );
    send(&mut db, 1);
    smtp.wait_for(1, WAIT);
    // The endpoint fails (503) longer than a token lives: mail waits, the error says why.
    provider.control(json!({"lifetime": 3, "fail": 503}));
    std::thread::sleep(Duration::from_secs(3));
    for n in 2..=4 {
        send(&mut db, n);
    }
    dovecot.deliver(&message(1));
    let error = wait_for("the transient error", WAIT, || {
        let e = text(
            &mut db,
            "SELECT last_error FROM mail_gateway.oauth_account WHERE name = 'relay'",
        );
        e.contains("HTTP 503").then_some(e)
    });
    assert!(error.contains("temporarily_unavailable"), "{error}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(smtp.received().len(), 1, "no login without a valid token");
    assert_eq!(
        text(&mut db, "SELECT state FROM mail_gateway.oauth_account"),
        "ok",
        "a failing endpoint is no reason to ask for consent"
    );
    let (code, _, hint) = sql_error(&mut db, "SELECT mail_gateway.test_outgoing_server('relay')");
    assert_eq!(code, "08006");
    assert!(hint.contains("tries again"), "{hint}");
    // Back, but slow (2 s an answer, within the 5 s timeout): everything goes.
    // (Tokens of 10 s here: a token that arrives after 2 s still has most of its life.)
    provider.control(json!({"lifetime": 10, "delay": 2}));
    smtp.wait_for(4, WAIT);
    wait_for("the fetch", WAIT, || {
        (count(&mut db, "SELECT count(*) FROM mail_gateway.inbound") == 1).then_some(())
    });
    wait_all_sent(&mut db, 4);
    // An endpoint slower than the timeout (5 s) is a transient failure too. (Without rotation
    // here: the provider still answers the abandoned requests, and a strict-rotation provider
    // would then have replaced a refresh token we never saw — docs/DECISIONS.md.)
    provider.control(json!({"lifetime": 3, "delay": 8, "rotate": false}));
    std::thread::sleep(Duration::from_secs(10));
    send(&mut db, 5);
    let error = wait_for("the timeout", WAIT, || {
        let e = text(
            &mut db,
            "SELECT last_error FROM mail_gateway.oauth_account WHERE name = 'relay'",
        );
        e.contains("timed out").then_some(e)
    });
    assert!(error.contains("token endpoint"), "{error}");
    provider.control(json!({"lifetime": 3, "rotate": false}));
    smtp.wait_for(5, WAIT);
    wait_all_sent(&mut db, 5);
    assert_eq!(provider.count("reuses"), 0);
}

#[test]
fn a_failed_test_keeps_the_rotated_refresh_token() {
    // A strict-rotation provider: the refresh token used is dead once a new one is issued.
    let Setup {
        cluster: _cluster,
        mut db,
        smtp: _smtp,
        dovecot: _dovecot,
        provider,
        _cert,
    } = setup(json!({"lifetime": 60, "rotate": true}), &[]);
    // The server refuses the login (another user than the token's): the test fails after the
    // refresh, and its ERROR rolls back the caller's transaction — not the new refresh token,
    // which a helper worker committed.
    exec(
        &mut db,
        "UPDATE mail_gateway.outgoing_server SET username = 'someone-else'",
    );
    let (code, message, hint) =
        sql_error(&mut db, "SELECT mail_gateway.test_outgoing_server('relay')");
    assert_eq!(code, "08006", "{message}");
    assert!(
        message.contains("authentication") && hint.contains("username is the mailbox"),
        "{message} / {hint}"
    );
    assert_eq!(provider.count("grants"), 1);
    let stored = text(
        &mut db,
        "SELECT refresh_token FROM mail_gateway.oauth_account",
    );
    assert_eq!(stored, provider.state()["refresh_token"].as_str().unwrap());
    assert_ne!(stored, REFRESH_TOKEN);
    // … and the cached token serves the next test without a refresh.
    exec(
        &mut db,
        &format!("UPDATE mail_gateway.outgoing_server SET username = '{USER}'"),
    );
    let out = text(&mut db, "SELECT mail_gateway.test_outgoing_server('relay')");
    assert!(out.starts_with("OK: "), "{out}");
    assert_eq!(provider.count("grants"), 1);
}

#[test]
fn set_oauth_sets_up_a_server_in_one_statement_and_keeps_secrets_hidden() {
    let (cluster, mut db) = Gateway::new()
        .poll_interval("200ms")
        .sql(
            "CREATE ROLE erp_app LOGIN IN ROLE mail_gateway_user;
             INSERT INTO mail_gateway.outgoing_server (name, host, encryption, username, password)
                 VALUES ('office365', 'smtp.office365.com', 'starttls', 'notifications@mycompany.com', 'old-password'),
                        ('nobody', 'smtp.example.com', 'starttls', NULL, NULL);
             INSERT INTO mail_gateway.incoming_server (name, host, username, password)
                 VALUES ('office365', 'outlook.office365.com', 'catchall@mycompany.com', 'old-password');",
        )
        .start();
    // Clear errors, with SQLSTATE and hint.
    for (sql, code, words) in [
        (
            "SELECT mail_gateway.set_oauth(server => 'nowhere', provider => 'google', client_id => 'x')",
            "42704",
            "no outgoing or incoming server named \"nowhere\"",
        ),
        (
            "SELECT mail_gateway.set_oauth(server => 'office365', client_id => 'x')",
            "23502",
            "provider is needed",
        ),
        (
            "SELECT mail_gateway.set_oauth(server => 'office365', provider => 'yahoo', client_id => 'x')",
            "22023",
            "unknown OAuth2 provider \"yahoo\"",
        ),
        (
            "SELECT mail_gateway.set_oauth(server => 'nobody', provider => 'google', client_id => 'x')",
            "23514",
            "has no username",
        ),
        (
            "SELECT mail_gateway.set_oauth(server => 'office365', provider => 'custom', client_id => 'x',
                    token_endpoint => 'http://idp.example.com/token', client_secret => 'Sec-9')",
            "23514",
            "is not encrypted",
        ),
        (
            "SELECT mail_gateway.set_oauth(server => 'office365', provider => 'microsoft', client_id => 'x',
                    tenant => 'a/b')",
            "23514",
            "is not a tenant",
        ),
    ] {
        let (got, message, hint) = sql_error(&mut db, sql);
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(words), "{sql}: {message}");
        assert!(!hint.is_empty(), "{sql}: no hint");
        assert!(!message.contains("Sec-9") && !hint.contains("Sec-9"));
    }
    let summary = text(
        &mut db,
        "SELECT mail_gateway.set_oauth(server => 'office365', provider => 'microsoft',
                client_id => '00000000-aaaa', client_secret => 'Client-S3cret', refresh_token => '0.AX-Refresh-S3cret')",
    );
    assert!(
        summary.contains(
            "(microsoft, tenant organizations): outgoing and incoming server \"office365\""
        ) && summary.contains("test_outgoing_server('office365')"),
        "{summary}"
    );
    let row = db
        .query_one(
            "SELECT a.token_endpoint, a.scope, a.state, o.auth, o.password IS NULL, i.auth, i.state
             FROM mail_gateway.oauth_account a, mail_gateway.outgoing_server o, mail_gateway.incoming_server i
             WHERE a.name = 'office365' AND o.oauth_account = a.name AND i.oauth_account = a.name",
            &[],
        )
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    );
    assert!(
        row.get::<_, String>(1)
            .contains("https://outlook.office.com/SMTP.Send")
    );
    assert_eq!(row.get::<_, String>(2), "ok");
    assert_eq!(row.get::<_, String>(3), "xoauth2");
    assert!(row.get::<_, bool>(4), "the static password is dropped");
    assert_eq!(
        (row.get::<_, String>(5), row.get::<_, String>(6)),
        ("xoauth2".into(), "draft".into())
    );
    // The consent URL, with the mailbox as login hint.
    let url = text(
        &mut db,
        "SELECT mail_gateway.oauth_authorize_url('office365')",
    );
    assert!(
        url.starts_with("https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize?client_id=00000000-aaaa")
            && url.contains("prompt=consent")
            && url.contains("offline_access")
            && url.contains("login_hint=notifications%40mycompany.com"),
        "{url}"
    );
    // Another tenant moves the endpoints; a new refresh token clears the state.
    exec(
        &mut db,
        "UPDATE mail_gateway.oauth_account SET state = 'needs_consent', last_error = 'x' WHERE name = 'office365';
         SELECT mail_gateway.set_oauth(account => 'office365', tenant => 'contoso.onmicrosoft.com', refresh_token => 'new-rt');",
    );
    let row = db
        .query_one(
            "SELECT token_endpoint, state, last_error FROM mail_gateway.oauth_account",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, Option<String>>(2)
        ),
        (
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token".into(),
            "ok".into(),
            None
        )
    );
    // ERP code sees the state, never a secret; the gateway writes tokens, not settings.
    let mut app = cluster.connect_as("erp_app");
    for column in ["client_secret", "refresh_token", "access_token"] {
        let e = app
            .query_one(
                &format!("SELECT {column} FROM mail_gateway.oauth_account"),
                &[],
            )
            .unwrap_err();
        assert!(error_text(&e).contains("permission denied"), "{column}");
    }
    let seen: String = app
        .query_one(
            "SELECT state || ' ' || provider || ' ' || (SELECT oauth_account FROM mail_gateway.outgoing_server WHERE name = 'office365')
             FROM mail_gateway.oauth_account",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(seen, "ok microsoft office365");
    for sql in [
        "SELECT mail_gateway.set_oauth(account => 'office365', refresh_token => 'evil')",
        "UPDATE mail_gateway.oauth_account SET token_endpoint = 'https://evil.example/token'",
    ] {
        let e = app.batch_execute(sql).unwrap_err();
        assert!(error_text(&e).contains("permission denied"), "{sql}");
    }
    exec(
        &mut db,
        "SET ROLE mail_gateway_worker;
         UPDATE mail_gateway.oauth_account SET access_token = 't', expires_at = now();",
    );
    let e = db
        .batch_execute("UPDATE mail_gateway.oauth_account SET client_id = 'evil'")
        .unwrap_err();
    assert!(error_text(&e).contains("permission denied"));
    exec(&mut db, "RESET ROLE");
    // pg_dump keeps the account (before the servers that name it).
    let dump = cluster.client_program("pg_dump", &["--data-only", "-d", "postgres"]);
    let dump = String::from_utf8_lossy(&dump.stdout);
    let (account, server) = (
        dump.find("COPY mail_gateway.oauth_account")
            .expect("dumped"),
        dump.find("COPY mail_gateway.outgoing_server")
            .expect("dumped"),
    );
    assert!(account < server, "the account is restored first");
}
