//! Least privilege (docs/SECURITY.md, "Roles"): the workers run as mail_gateway_worker, never a
//! superuser; alias handlers run as the alias's owner and default inserts as the table's; the
//! queue has one way in; every parameter reads as its default when its row is deleted; no
//! password crosses a network unencrypted unless the administrator says so. Through real
//! connections, with non-superuser roles.

use std::time::Duration;

use mail_gateway_tests::dovecot::Dovecot;
use mail_gateway_tests::smtp::{SmtpOptions, SmtpServer};
use mail_gateway_tests::{Client, Gateway, count, error_text, exec, wait_for};

const WAIT: Duration = Duration::from_secs(60);

fn is_superuser(db: &mut Client, role: &str) -> bool {
    db.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .unwrap()
        .get(0)
}

fn sales_mail(n: usize) -> Vec<u8> {
    format!(
        "From: Customer {n} <c{n}@customer.example>\r\nTo: sales@mycompany.com\r\n\
         Subject: Quote request {n}\r\nMessage-ID: <lead-{n}@customer.example>\r\n\r\nPlease call me.\r\n"
    )
    .into_bytes()
}

#[test]
fn an_administrator_cannot_become_superuser_through_a_handler_or_a_trigger() {
    let dovecot = Dovecot::start();
    let (cluster, mut db) = Gateway::new()
        .poll_interval("200ms")
        .fetch_timeout("5s")
        .catchall("mycompany.com")
        .sql(
            "CREATE ROLE mallory LOGIN IN ROLE mail_gateway_admin;
             GRANT CREATE ON SCHEMA public TO mallory;",
        )
        .start();
    let mut mallory = cluster.connect_as("mallory");
    // A handler whose body makes its author a superuser, and a table whose trigger does.
    exec(
        &mut mallory,
        "CREATE FUNCTION public.evil(message jsonb) RETURNS bigint LANGUAGE plpgsql AS $$
         BEGIN ALTER ROLE mallory SUPERUSER; RETURN 1; END $$;
         INSERT INTO mail_gateway.alias (name, model, handler)
             VALUES ('sales', 'public.evil_leads', 'public.evil(jsonb)');",
    );
    exec(
        &mut mallory,
        "CREATE TABLE public.evil_leads (id bigserial PRIMARY KEY, name text, email_from text);
         CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN ALTER ROLE mallory SUPERUSER; RETURN NEW; END $$;
         CREATE TRIGGER escalate BEFORE INSERT ON public.evil_leads
             FOR EACH ROW EXECUTE FUNCTION public.escalate();",
    );
    // The superuser (an unsuspecting DBA) points an alias at mallory's table.
    exec(
        &mut db,
        "INSERT INTO mail_gateway.alias (name, model) VALUES ('support', 'public.evil_leads')",
    );
    let owners: Vec<(String, String)> = db
        .query(
            "SELECT name, owner::text FROM mail_gateway.alias ORDER BY name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        owners,
        [
            ("sales".to_string(), "mallory".to_string()),
            ("support".to_string(), "postgres".to_string())
        ]
    );
    let mut to_support = String::from_utf8(sales_mail(2)).unwrap();
    to_support = to_support.replace("sales@", "support@");
    dovecot.deliver_many([sales_mail(1), to_support.into_bytes()]);
    dovecot.add_confirmed(&mut db, "box", "imap");
    exec(&mut db, "SELECT mail_gateway.fetch_now()");
    let reasons: Vec<String> = wait_for("both messages routed", WAIT, || {
        let rows: Vec<String> = db
            .query(
                "SELECT state || ': ' || coalesce(reason, '') FROM mail_gateway.inbound
                 WHERE state <> 'new' ORDER BY message_id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        (rows.len() == 2).then_some(rows)
    });
    assert!(!is_superuser(&mut db, "mallory"), "{reasons:?}");
    for reason in &reasons {
        assert!(
            reason.starts_with("error: routing failed:") && reason.contains("superuser"),
            "{reasons:?}"
        );
    }
    // The fetcher that ran them is no superuser either.
    let fetcher: (String, bool) = {
        let row = db
            .query_one(
                "SELECT a.usename::text, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.rolname = a.usename
                 WHERE a.backend_type = 'mail_gateway fetcher'",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(fetcher, ("mail_gateway_worker".to_string(), false));
}

#[test]
fn a_legitimate_handler_creates_its_record_and_owners_are_checked() {
    let (cluster, mut db) = Gateway::new()
        .without_preload()
        .catchall("mycompany.com")
        .sql(
            "CREATE ROLE erp_admin LOGIN IN ROLE mail_gateway_admin;
             CREATE TABLE public.crm_lead (id bigserial PRIMARY KEY, name text, email_from text, description text);
             GRANT SELECT, INSERT ON public.crm_lead TO erp_admin;
             GRANT USAGE ON SEQUENCE public.crm_lead_id_seq TO erp_admin;
             CREATE FUNCTION public.new_lead(message jsonb) RETURNS bigint LANGUAGE sql AS $$
                 INSERT INTO public.crm_lead (name, email_from)
                 VALUES (message->>'subject', message->'from'->>'address') RETURNING id $$;
             REVOKE EXECUTE ON FUNCTION public.new_lead(jsonb) FROM PUBLIC;",
        )
        .start();
    let mut erp = cluster.connect_as("erp_admin");
    // Its owner may not execute the handler: refused when the alias is saved, with a hint.
    let err = erp
        .batch_execute(
            "INSERT INTO mail_gateway.alias (name, model, handler) VALUES ('sales', 'crm_lead', 'public.new_lead(jsonb)')",
        )
        .unwrap_err();
    assert!(
        error_text(&err).contains("42501: role \"erp_admin\" may not execute handler"),
        "{}",
        error_text(&err)
    );
    // Nor can it name another owner.
    let err = erp
        .batch_execute(
            "INSERT INTO mail_gateway.alias (name, model, owner) VALUES ('x', 'crm_lead', 'postgres')",
        )
        .unwrap_err();
    assert!(
        error_text(&err).contains("cannot be owned by \"postgres\""),
        "{}",
        error_text(&err)
    );
    exec(
        &mut db,
        "GRANT EXECUTE ON FUNCTION public.new_lead(jsonb) TO erp_admin",
    );
    exec(
        &mut erp,
        "INSERT INTO mail_gateway.alias (name, model, handler) VALUES ('sales', 'crm_lead', 'public.new_lead(jsonb)');
         INSERT INTO mail_gateway.alias (name, model) VALUES ('info', 'crm_lead');",
    );
    let id: i64 = db
        .query_one("SELECT mail_gateway.process_message($1)", &[&sales_mail(1)])
        .unwrap()
        .get(0);
    let info = String::from_utf8(sales_mail(2))
        .unwrap()
        .replace("sales@", "info@");
    db.query_one(
        "SELECT mail_gateway.process_message($1)",
        &[&info.as_bytes()],
    )
    .unwrap();
    let leads: Vec<(String, String)> = db
        .query(
            "SELECT name, email_from FROM public.crm_lead ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        leads,
        [
            (
                "Quote request 1".to_string(),
                "c1@customer.example".to_string()
            ),
            (
                "Quote request 2".to_string(),
                "c2@customer.example".to_string()
            )
        ]
    );
    let state: String = db
        .query_one(
            "SELECT state FROM mail_gateway.inbound WHERE id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert_eq!(state, "routed");
}

#[test]
fn the_queue_has_one_way_in() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let (cluster, mut db) = Gateway::sending_through(smtp.port)
        .poll_interval("200ms")
        .start();
    exec(
        &mut db,
        "CREATE ROLE erp_app LOGIN IN ROLE mail_gateway_user;
         CREATE ROLE erp_boss LOGIN IN ROLE mail_gateway_admin;",
    );
    for role in ["erp_app", "erp_boss"] {
        let mut app = cluster.connect_as(role);
        for sql in [
            "INSERT INTO mail_gateway.mail (message_id, email_from, email_to, state, kind)
             VALUES ('<planted@x>', 'a@mycompany.com', ARRAY['b@x.example'], 'sending', 'auto_reply')",
            "UPDATE mail_gateway.mail SET state = 'sending'",
            "INSERT INTO mail_gateway.message (model, res_id, message_id) VALUES ('sale_order', 1, '<steer@x>')",
        ] {
            let err = app.batch_execute(sql).expect_err(sql);
            assert!(
                error_text(&err).contains("permission denied"),
                "{role}: {sql}: {}",
                error_text(&err)
            );
        }
    }
    // The ways in work: one mail, and thousands in one statement through the outbox view.
    let mut app = cluster.connect_as("erp_app");
    let one: i64 = app
        .query_one(
            "SELECT mail_gateway.send_mail('billing@mycompany.com', ARRAY['c@customer.example'], 'Invoice')",
            &[],
        )
        .unwrap()
        .get(0);
    let ids: Vec<i64> = app
        .query(
            "INSERT INTO mail_gateway.outbox (email_from, email_to, subject, body_text, kind)
             SELECT 'news@mycompany.com', ARRAY['r' || i || '@customer.example'], 'News ' || i, 'Hello', 'mass'
             FROM generate_series(1, 2000) AS i
             RETURNING id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 2000);
    assert!(ids.iter().all(|id| *id > one));
    // The outbox checks as send_mail does.
    let err = app
        .batch_execute(
            "INSERT INTO mail_gateway.outbox (email_from, email_to, subject, kind)
             VALUES ('news@mycompany.com', ARRAY['x@y.example'], 'x', 'auto_reply')",
        )
        .unwrap_err();
    assert!(
        error_text(&err).contains("unknown mail kind \"auto_reply\""),
        "{}",
        error_text(&err)
    );
    smtp.wait_for(2001, WAIT);
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.mail WHERE state = 'sent' AND message_id LIKE '<%@mycompany.com>'"
        ),
        2001
    );
}

#[test]
fn every_parameter_reads_as_its_default_when_its_row_is_deleted() {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let dovecot = Dovecot::start();
    let (cluster, mut db) = Gateway::sending_through(smtp.port)
        .poll_interval("200ms")
        .fetch_timeout("5s")
        .start();
    exec(
        &mut db,
        "SELECT mail_gateway.follow('sale_order', 1, 'bob@customer.example');
         SELECT mail_gateway.post_message('sale_order', 1, 'ann@mycompany.com', 'Hello', subject => 'SO1');",
    );
    let root: String = db
        .query_one("SELECT message_id FROM mail_gateway.message", &[])
        .unwrap()
        .get(0);
    dovecot.add_confirmed(&mut db, "box", "imap");
    let keys: Vec<String> = db
        .query("SELECT key FROM mail_gateway.parameter ORDER BY key", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys.len(), 18);
    for (n, key) in keys.iter().enumerate() {
        // Keep the alias domain: without it there is nothing to route replies by.
        if key == "mail.catchall.domain" {
            continue;
        }
        let default: Option<String> = db
            .query_one("SELECT mail_gateway.parameter_default($1)", &[key])
            .unwrap()
            .get(0);
        db.execute("DELETE FROM mail_gateway.parameter WHERE key = $1", &[key])
            .unwrap();
        let read: Option<String> = db
            .query_one("SELECT mail_gateway.get_parameter($1)", &[key])
            .unwrap()
            .get(0);
        assert_eq!(read, default, "{key}");
        // Sending goes on …
        let id: i64 = db
            .query_one(
                "SELECT mail_gateway.send_mail('ann@mycompany.com', ARRAY['x@customer.example'], $1)",
                &[&format!("without {key}")],
            )
            .unwrap()
            .get(0);
        wait_for(&format!("mail sent without {key}"), WAIT, || {
            let state: String = db
                .query_one("SELECT state FROM mail_gateway.mail WHERE id = $1", &[&id])
                .unwrap()
                .get(0);
            (state == "sent").then_some(())
        });
        // … routing goes on …
        let reply = format!(
            "From: bob@customer.example\r\nTo: catchall@mycompany.com\r\nSubject: Re: SO1\r\n\
             Message-ID: <reply-{n}@customer.example>\r\nIn-Reply-To: {root}\r\n\r\nok\r\n"
        );
        let id: i64 = db
            .query_one(
                "SELECT mail_gateway.process_message($1)",
                &[&reply.as_bytes()],
            )
            .unwrap()
            .get(0);
        let routed: String = db
            .query_one(
                "SELECT state FROM mail_gateway.inbound WHERE id = $1",
                &[&id],
            )
            .unwrap()
            .get(0);
        assert_eq!(routed, "routed", "routing without {key}");
        // … and so does fetching.
        dovecot.deliver(
            format!(
                "From: c@customer.example\r\nTo: catchall@mycompany.com\r\nSubject: fetched {n}\r\n\
                 Message-ID: <fetched-{n}@customer.example>\r\n\r\nhi\r\n"
            )
            .as_bytes(),
        );
        exec(&mut db, "SELECT mail_gateway.fetch_now()");
        wait_for(&format!("fetched without {key}"), WAIT, || {
            (count(
                &mut db,
                &format!(
                    "SELECT count(*) FROM mail_gateway.inbound WHERE message_id = '<fetched-{n}@customer.example>'"
                ),
            ) == 1)
                .then_some(())
        });
    }
    assert!(!cluster.log().contains("positioned before the start"));
}

#[test]
fn a_password_never_crosses_a_network_unencrypted_unless_allowed() {
    let (_cluster, mut db) = Gateway::new().without_preload().start();
    for sql in [
        "INSERT INTO mail_gateway.incoming_server (name, host, encryption, username, password)
         VALUES ('in', 'imap.example.com', 'none', 'u', 'p')",
        "INSERT INTO mail_gateway.outgoing_server (name, host, encryption, username, password)
         VALUES ('out', 'smtp.example.com', 'none', 'u', 'p')",
    ] {
        let err = db.batch_execute(sql).unwrap_err();
        let db_err = err.as_db_error().unwrap();
        assert_eq!(db_err.code().code(), "23514", "{sql}");
        assert!(
            db_err
                .message()
                .ends_with("would send its credentials without encryption"),
            "{}",
            db_err.message()
        );
        assert!(
            db_err
                .hint()
                .unwrap_or_default()
                .contains("allow_plaintext_login = true"),
            "{:?}",
            db_err.hint()
        );
    }
    // Said explicitly, or over the loopback (a local tunnel), it is accepted.
    exec(
        &mut db,
        "INSERT INTO mail_gateway.incoming_server (name, host, encryption, username, password, allow_plaintext_login)
             VALUES ('in', 'imap.example.com', 'none', 'u', 'p', true);
         INSERT INTO mail_gateway.incoming_server (name, host, encryption, username, password)
             VALUES ('tunnel', '127.0.0.1', 'none', 'u', 'p');
         INSERT INTO mail_gateway.outgoing_server (name, host, encryption, username, password, allow_plaintext_login)
             VALUES ('out', 'smtp.example.com', 'none', 'u', 'p', true);",
    );
    // Turning it off again refuses the row as it stands.
    let err = db
        .batch_execute(
            "UPDATE mail_gateway.incoming_server SET allow_plaintext_login = false WHERE name = 'in'",
        )
        .unwrap_err();
    assert!(error_text(&err).contains("without encryption"));
}
