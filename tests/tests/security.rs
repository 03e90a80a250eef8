//! Security review, one test per point: roles and secrets, secrets kept out of errors,
//! logs, views and pg_stat_activity, header injection, alias handlers, SECURITY DEFINER, TLS.

use std::time::Duration;

use mail_gateway_tests::smtp::{SelfSigned, SmtpOptions, SmtpServer};
use mail_gateway_tests::{Client, Gateway, error_text, exec, wait_for};

const WAIT: Duration = Duration::from_secs(30);

fn denied(db: &mut Client, sql: &str) {
    let err = db.batch_execute(sql).expect_err(sql);
    assert!(
        error_text(&err).contains("permission denied"),
        "{sql}: {}",
        error_text(&err)
    );
}

#[test]
fn the_user_role_reads_no_secret_and_changes_no_server() {
    let (cluster, mut db) = Gateway::usual().fetch_timeout("2s").start();
    exec(
        &mut db,
        "CREATE ROLE erp_app LOGIN IN ROLE mail_gateway_user;
         INSERT INTO mail_gateway.outgoing_server (name, host, username, password) VALUES ('out', 'smtp.x', 'u', 'p1');
         INSERT INTO mail_gateway.incoming_server (name, host, username, password) VALUES ('in', 'imap.x', 'u', 'p2');
         SELECT mail_gateway.create_dkim_key('mycompany.com');",
    );
    let mut app = cluster.connect_as("erp_app");
    for sql in [
        "SELECT password FROM mail_gateway.outgoing_server",
        "SELECT client_key FROM mail_gateway.outgoing_server",
        "SELECT password FROM mail_gateway.incoming_server",
        "SELECT private_key FROM mail_gateway.dkim_key",
        "SELECT raw FROM mail_gateway.inbound",
        "UPDATE mail_gateway.outgoing_server SET host = 'evil.example'",
        "INSERT INTO mail_gateway.outgoing_server (name, host) VALUES ('evil', 'evil.example')",
        "UPDATE mail_gateway.incoming_server SET host = 'evil.example'",
        "INSERT INTO mail_gateway.alias (name, model) VALUES ('evil', 'pg_class')",
        "DELETE FROM mail_gateway.blacklist",
        "SELECT mail_gateway.test_outgoing_server('out')",
        "SELECT mail_gateway.create_dkim_key('evil.example')",
        "SELECT mail_gateway.reprocess(1)",
    ] {
        denied(&mut app, sql);
    }
    // What it is for works.
    exec(
        &mut app,
        "SELECT mail_gateway.follow('sale_order', 1, 'bob@customer.example');
         SELECT mail_gateway.post_message('sale_order', 1, 'ann@mycompany.com', 'Hello');
         SELECT mail_gateway.send_mail('ann@mycompany.com', ARRAY['bob@customer.example'], 'Hi');
         SELECT host, username FROM mail_gateway.outgoing_server;
         SELECT * FROM mail_gateway.queue_status;",
    );
}

#[test]
fn secrets_stay_out_of_errors_logs_views_and_activity() {
    let cert = SelfSigned::new();
    let smtp = SmtpServer::start(SmtpOptions {
        tls: Some(("starttls", &cert)),
        auth: Some("mailer:the-right-one"),
        ..Default::default()
    });
    let (cluster, mut db) = Gateway::usual().fetch_timeout("2s").start();
    const OUT: &str = "Out-S3cret-7f3a";
    const IN: &str = "In-S3cret-91bc";
    db.execute(
        "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, username, password, ca_cert)
         VALUES ('relay', '127.0.0.1', $1, 'starttls', 'mailer', $2, $3)",
        &[&(smtp.port as i32), &OUT, &cert.cert_pem()],
    )
    .unwrap();
    let closed = mail_gateway_tests::free_port();
    db.execute(
        "INSERT INTO mail_gateway.incoming_server (name, host, port, encryption, username, password)
         VALUES ('box', '127.0.0.1', $1, 'none', 'mg', $2)",
        &[&(closed as i32), &IN],
    )
    .unwrap();
    exec(
        &mut db,
        "ALTER TABLE mail_gateway.incoming_server DISABLE TRIGGER USER;
         UPDATE mail_gateway.incoming_server SET state = 'confirmed';
         ALTER TABLE mail_gateway.incoming_server ENABLE TRIGGER USER;
         SELECT mail_gateway.send_mail('ann@mycompany.com', ARRAY['bob@customer.example'], 'Hi');",
    );
    // The login fails (wrong password), the fetch fails (closed port): both recorded.
    wait_for("the failed attempt", WAIT, || {
        db.query_one("SELECT attempts FROM mail_gateway.mail", &[])
            .unwrap()
            .get::<_, i32>(0)
            .ge(&1)
            .then_some(())
    });
    wait_for("the fetch error", WAIT, || {
        db.query_one("SELECT last_error FROM mail_gateway.incoming_server", &[])
            .unwrap()
            .get::<_, Option<String>>(0)
    });
    let mut seen = Vec::new();
    for sql in [
        "SELECT string_agg(concat_ws(' ', failure_type, failure_reason, recipients::text), ' ') FROM mail_gateway.mail",
        "SELECT coalesce(string_agg(row_to_json(q)::text, ' '), '') FROM mail_gateway.queue_status q",
        "SELECT coalesce(string_agg(row_to_json(s)::text, ' '), '') FROM mail_gateway.server_status s",
        "SELECT coalesce(string_agg(row_to_json(s)::text, ' '), '') FROM mail_gateway.incoming_status s",
        "SELECT coalesce(string_agg(query, ' '), '') FROM pg_stat_activity",
    ] {
        seen.push(db.query_one(sql, &[]).unwrap().get::<_, String>(0));
    }
    for sql in [
        "SELECT mail_gateway.test_outgoing_server('relay')",
        "SELECT mail_gateway.test_incoming_server('box')",
    ] {
        seen.push(error_text(&db.query_one(sql, &[]).unwrap_err()));
    }
    seen.push(cluster.log());
    let all = seen.join("\n");
    assert!(
        all.contains("authentication") || all.contains("535"),
        "the failure is recorded: {all}"
    );
    assert!(
        !all.contains(OUT) && !all.contains(IN),
        "a secret leaked:\n{all}"
    );
}

#[test]
fn header_injection_is_impossible() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (_cluster, mut db) = Gateway::usual().fetch_timeout("2s").start();
    db.execute(
        "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption) VALUES ('relay', '127.0.0.1', $1, 'none')",
        &[&(smtp.port as i32)],
    )
    .unwrap();
    // Refused outright: a line break where only one line may be.
    for sql in [
        "SELECT mail_gateway.send_mail('ann@mycompany.com', ARRAY['bob@x.example'], 's', headers => '{\"X-A\": \"1\\r\\nBcc: evil@x.example\"}')",
        "SELECT mail_gateway.send_mail(E'\"Ann\\r\\nBcc: evil@x.example\" <ann@mycompany.com>', ARRAY['bob@x.example'], 's')",
        "SELECT mail_gateway.send_mail('ann@mycompany.com', ARRAY[E'bob@x.example\\r\\nBcc: evil@x.example'], 's')",
        "SELECT mail_gateway.send_mail('ann@mycompany.com', ARRAY['bob@x.example'], 's', reply_to => E'a@x.example\\r\\nBcc: evil@x.example')",
        "SELECT mail_gateway.post_message('t', 1, 'ann@mycompany.com', 'b', E'Hi\\r\\nBcc: evil@x.example')",
    ] {
        let err = db.batch_execute(sql).expect_err(sql);
        assert!(
            error_text(&err).starts_with("22023"),
            "{sql}: {}",
            error_text(&err)
        );
    }
    // Accepted, but written so that no header appears: a subject and a follower's name.
    exec(
        &mut db,
        "SELECT mail_gateway.send_mail('ann@mycompany.com', ARRAY['bob@x.example'], E'Hello\\r\\nBcc: evil@x.example');
         SELECT mail_gateway.follow('t', 1, 'carol@x.example', E'Carol\\r\\nBcc: evil@x.example');
         SELECT mail_gateway.post_message('t', 1, 'ann@mycompany.com', 'Hello');",
    );
    let got = smtp.wait_for(2, WAIT);
    for m in &got {
        assert!(
            m.rcpt_tos.iter().all(|r| !r.contains("evil")),
            "{:?}",
            m.rcpt_tos
        );
        let head = m.text();
        let head = head.split("\r\n\r\n").next().unwrap();
        assert!(
            !head.lines().any(|l| l.to_lowercase().starts_with("bcc:")),
            "an injected header:\n{head}"
        );
    }
}

#[test]
fn alias_handlers_cannot_run_arbitrary_sql() {
    let (_cluster, mut db) = Gateway::usual().fetch_timeout("2s").start();
    exec(
        &mut db,
        "CREATE TABLE crm_lead (id bigserial PRIMARY KEY, name text)",
    );
    for (sql, expected) in [
        (
            "INSERT INTO mail_gateway.alias (name, model, handler) VALUES ('a', 'crm_lead', 'now(); DROP TABLE crm_lead; --')",
            "22P02",
        ),
        (
            "INSERT INTO mail_gateway.alias (name, model) VALUES ('b', 'crm_lead; DROP TABLE crm_lead')",
            "invalid name syntax",
        ),
        (
            "INSERT INTO mail_gateway.alias (name, model, handler) VALUES ('c', 'crm_lead', 'pg_sleep(double precision)')",
            "wrong signature",
        ),
    ] {
        let err = error_text(&db.batch_execute(sql).expect_err(sql));
        assert!(err.contains(expected), "{sql}: {err}");
    }
    // Keys of `defaults` are matched against the table's columns, never spliced into SQL.
    exec(
        &mut db,
        "INSERT INTO mail_gateway.alias (name, model, defaults)
             VALUES ('sales', 'crm_lead', '{\"name) VALUES (1); DROP TABLE crm_lead; --\": \"x\"}');",
    );
    let id: i64 = db
        .query_one(
            "SELECT mail_gateway.process_message(convert_to(E'From: a@x.example\\r\\nTo: sales@mycompany.com\\r\\nSubject: Hi\\r\\n\\r\\nx\\r\\n', 'UTF8'))",
            &[],
        )
        .unwrap()
        .get(0);
    let state: String = db
        .query_one(
            "SELECT state FROM mail_gateway.inbound WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "routed");
    let leads: i64 = db
        .query_one("SELECT count(*) FROM crm_lead", &[])
        .unwrap()
        .get(0);
    assert_eq!(leads, 1, "the table is still there, with the new lead");
}

#[test]
fn no_function_runs_with_the_owners_rights_and_an_open_search_path() {
    let (_cluster, mut db) = Gateway::usual().fetch_timeout("2s").start();
    let open: Vec<String> = db
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
             JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
             JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'mail_gateway'
             WHERE p.prosecdef AND NOT coalesce(p.proconfig::text LIKE '%search_path%', false)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        open.is_empty(),
        "SECURITY DEFINER without a pinned search_path: {open:?}"
    );
    // And the trigger functions that normalise input pin theirs.
    let unpinned: Vec<String> = db
        .query(
            "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = 'mail_gateway' AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
               AND p.proname <> 'alias_validate'
               AND NOT coalesce(p.proconfig::text LIKE '%search_path%', false)",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(unpinned.is_empty(), "{unpinned:?}");
}

#[test]
fn tls_verification_is_on_unless_turned_off_explicitly() {
    let (_cluster, mut db) = Gateway::usual().fetch_timeout("2s").start();
    exec(
        &mut db,
        "INSERT INTO mail_gateway.outgoing_server (name, host) VALUES ('out', 'smtp.x');
         INSERT INTO mail_gateway.incoming_server (name, host, username) VALUES ('in', 'imap.x', 'u');",
    );
    let row = db
        .query_one(
            "SELECT o.encryption, o.verify_tls, i.encryption, i.verify_tls
             FROM mail_gateway.outgoing_server o, mail_gateway.incoming_server i",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, bool>(1),
            row.get::<_, String>(2),
            row.get::<_, bool>(3)
        ),
        ("starttls".into(), true, "ssl".into(), true),
        "encrypted and verified by default"
    );
    for sql in [
        "UPDATE mail_gateway.outgoing_server SET verify_tls = NULL",
        "UPDATE mail_gateway.incoming_server SET verify_tls = NULL",
    ] {
        let err = error_text(&db.batch_execute(sql).expect_err(sql));
        assert!(err.contains("null value"), "{sql}: {err}");
    }
}
