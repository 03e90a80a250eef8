//! Upgrades: release 0.1.0, installed from its own generated script (tests/upgrade/), filled
//! with servers, queued mail, a thread and received messages, then `ALTER EXTENSION
//! mail_gateway UPDATE` with this library: the schema must equal a fresh install's, object by
//! object (so a schema change without its upgrade script fails here), the data must be intact,
//! and the workers — waiting while the database is at 0.1.0 — must send the old queue.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mail_gateway_tests::smtp::{SmtpOptions, SmtpServer};
use mail_gateway_tests::{Client, Cluster, exec, pg_bin, wait_for};

const OLD: &str = "0.1.0";
const NEW: &str = "0.2.0";

/// The extension directory of the PostgreSQL under test.
fn extension_dir() -> PathBuf {
    let out = std::process::Command::new(pg_bin().join("pg_config"))
        .arg("--sharedir")
        .output()
        .unwrap();
    Path::new(String::from_utf8_lossy(&out.stdout).trim()).join("extension")
}

/// Puts release 0.1.0's install script where CREATE EXTENSION … VERSION finds it, for the
/// test's life (packages never ship it).
struct OldRelease(PathBuf);

impl OldRelease {
    fn install() -> OldRelease {
        let target = extension_dir().join(format!("mail_gateway--{OLD}.sql"));
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("upgrade/mail_gateway--{OLD}.sql")),
            &target,
        )
        .unwrap();
        OldRelease(target)
    }
}

impl Drop for OldRelease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Everything of schema mail_gateway that an upgrade must get right, one line per object, in a
/// stable order (columns by name: an added column comes last, which changes nothing).
fn schema(db: &mut Client) -> Vec<String> {
    // Privileges compare as sets: their order is the order they were granted in.
    exec(
        db,
        "CREATE OR REPLACE FUNCTION pg_temp.acl(a aclitem[]) RETURNS text LANGUAGE sql AS
         $$ SELECT coalesce(string_agg(i::text, ',' ORDER BY i::text), '') FROM unnest(a) AS i $$",
    );
    db.query(
        "WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = 'mail_gateway')
         SELECT line FROM (
           SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                  || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
                  || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
                  || coalesce(' storage ' || a.attstorage::text, '') AS line
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
           LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
           WHERE c.relnamespace = (SELECT oid FROM ns) AND a.attnum > 0 AND NOT a.attisdropped
           UNION ALL
           SELECT 'relation ' || relname || ' ' || relkind::text || ' acl ' || pg_temp.acl(relacl)
           FROM pg_class WHERE relnamespace = (SELECT oid FROM ns)
           UNION ALL
           SELECT 'column acl ' || c.relname || '.' || a.attname || ' ' || pg_temp.acl(a.attacl)
           FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
           WHERE c.relnamespace = (SELECT oid FROM ns) AND a.attacl IS NOT NULL
           UNION ALL
           SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
           FROM pg_constraint WHERE connamespace = (SELECT oid FROM ns)
           UNION ALL
           SELECT 'index ' || pg_get_indexdef(indexrelid)
           FROM pg_index WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = (SELECT oid FROM ns))
           UNION ALL
           SELECT 'trigger ' || pg_get_triggerdef(t.oid)
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           WHERE c.relnamespace = (SELECT oid FROM ns) AND NOT t.tgisinternal
           UNION ALL
           SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid)
           FROM pg_class c WHERE c.relnamespace = (SELECT oid FROM ns) AND c.relkind = 'v'
           UNION ALL
           SELECT 'function ' || p.oid::regprocedure || ' ' || pg_get_function_result(p.oid)
                  || ' ' || p.provolatile::text || ' ' || p.proparallel::text || ' ' || p.prosecdef::text
                  || ' ' || coalesce(p.proconfig::text, '') || ' acl ' || pg_temp.acl(p.proacl)
                  || ' ' || md5(CASE WHEN p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')
                                     THEN p.probin || p.prosrc ELSE p.prosrc END)
           FROM pg_proc p WHERE p.pronamespace = (SELECT oid FROM ns)
           UNION ALL
           SELECT 'comment ' || coalesce(c.relname, '') || ' ' || d.objsubid::text || ' ' || d.description
           FROM pg_description d LEFT JOIN pg_class c ON c.oid = d.objoid
           WHERE d.objoid IN (SELECT oid FROM pg_class WHERE relnamespace = (SELECT oid FROM ns))
           UNION ALL
           SELECT 'dumped ' || c::regclass::text
           FROM pg_extension e, unnest(e.extconfig) AS c WHERE e.extname = 'mail_gateway'
           UNION ALL
           SELECT 'schema acl ' || pg_temp.acl(nspacl) FROM pg_namespace WHERE nspname = 'mail_gateway'
         ) all_lines ORDER BY line",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn release_0_1_0_upgrades_to_the_schema_of_a_fresh_install_with_its_data() {
    let _old = OldRelease::install();
    let smtp = SmtpServer::start(SmtpOptions::default());
    let cluster = Cluster::start(&[
        ("mail_gateway.database", "*"),
        ("mail_gateway.poll_interval", "200ms"),
    ]);
    let mut admin = cluster.connect("postgres");
    exec(&mut admin, "CREATE DATABASE erp");
    exec(&mut admin, "CREATE DATABASE fresh");
    // Another database already at this version (so the workers' role exists, as in a cluster
    // where one database was upgraded before the others).
    let mut fresh = cluster.connect("fresh");
    exec(&mut fresh, "CREATE EXTENSION mail_gateway");
    let mut erp = cluster.connect("erp");
    exec(
        &mut erp,
        &format!("CREATE EXTENSION mail_gateway VERSION '{OLD}'"),
    );
    // 0.1.0's tables, filled as 0.1.0 left them: configuration, a queue, a thread, received
    // mail, a bounce (plain INSERTs: 0.1.0's functions are this library's now).
    exec(
        &mut erp,
        &format!(
            "UPDATE mail_gateway.parameter SET value = 'mycompany.com' WHERE key = 'mail.catchall.domain';
             UPDATE mail_gateway.parameter SET value = '0' WHERE key = 'mail.send.daily_limit';
             INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, auth)
                 VALUES ('relay', '127.0.0.1', {}, 'none', 'none');
             INSERT INTO mail_gateway.incoming_server (name, protocol, host, port, encryption, username, password)
                 VALUES ('box', 'imap', 'imap.example.com', 993, 'ssl', 'u', 'secret');
             CREATE TABLE public.crm_lead (id bigserial PRIMARY KEY, name text);
             INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'public.crm_lead');
             INSERT INTO mail_gateway.mail (message_id, email_from, email_to, subject, body_text)
                 SELECT '<old-' || i || '@mycompany.com>', 'a@mycompany.com',
                        ARRAY['r' || i || '@customer.example'], 'queued before the upgrade ' || i, 'hi'
                 FROM generate_series(1, 5) AS i;
             INSERT INTO mail_gateway.message (model, res_id, message_id, author_email, subject, body_text, kind)
                 VALUES ('sale_order', 42, '<thread@mycompany.com>', 'ann@mycompany.com', 'SO042', 'Hello', 'comment');
             INSERT INTO mail_gateway.follower (model, res_id, email) VALUES ('sale_order', 42, 'bob@customer.example');
             INSERT INTO mail_gateway.inbound (raw, raw_size, raw_sha256, message_id, email_from, subject, state, route)
                 VALUES ('From: bob@customer.example', 27, sha256('x'), '<in@customer.example>',
                         'bob@customer.example', 'Re: SO042', 'routed', 'reply');
             INSERT INTO mail_gateway.contact (email, bounce_count) VALUES ('gone@customer.example', 1);
             INSERT INTO mail_gateway.bounce (email, status, hard, mail_id)
                 VALUES ('gone@customer.example', '5.1.1', true, (SELECT min(id) FROM mail_gateway.mail));",
            smtp.port
        ),
    );
    // The workers wait while the database is at 0.1.0: nothing is sent.
    wait_for(
        "the workers to notice the old version",
        Duration::from_secs(30),
        || {
            cluster
            .log()
            .contains("has mail_gateway 0.1.0, this library is 0.2.0; waiting for ALTER EXTENSION mail_gateway UPDATE")
            .then_some(())
        },
    );
    assert!(smtp.received().is_empty());

    exec(&mut erp, "ALTER EXTENSION mail_gateway UPDATE");
    let version: String = erp
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'mail_gateway'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, NEW);

    let (upgraded, installed) = (schema(&mut erp), schema(&mut fresh));
    let missing: Vec<&String> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
    let extra: Vec<&String> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the upgraded schema differs from a fresh install's:\nmissing after the upgrade: {missing:#?}\nonly after the upgrade: {extra:#?}"
    );

    // The data is intact, and what 0.2.0 adds has sensible values.
    let row = erp
        .query_one(
            "SELECT (SELECT count(*) FROM mail_gateway.mail),
                    (SELECT count(*) FROM mail_gateway.parameter),
                    (SELECT owner::text FROM mail_gateway.alias WHERE name = 'sales'),
                    (SELECT trusted FROM mail_gateway.bounce),
                    (SELECT auth_verdict FROM mail_gateway.inbound),
                    (SELECT password FROM mail_gateway.incoming_server WHERE name = 'box'),
                    (SELECT count(*) FROM mail_gateway.follower)",
            &[],
        )
        .unwrap();
    let (mails, parameters, owner, trusted, verdict, password, followers): (
        i64,
        i64,
        String,
        bool,
        String,
        String,
        i64,
    ) = (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
    );
    assert_eq!(
        (
            mails,
            parameters,
            owner.as_str(),
            trusted,
            verdict.as_str(),
            password.as_str(),
            followers
        ),
        (5, 18, "postgres", true, "none", "secret", 1)
    );
    // … and the workers send the old queue.
    let got = smtp.wait_for(5, Duration::from_secs(60));
    assert!(
        got.iter()
            .all(|m| m.text().contains("queued before the upgrade")),
        "{:?}",
        got.iter().map(|m| m.rcpt_tos.clone()).collect::<Vec<_>>()
    );
}
