//! CREATE / DROP EXTENSION, several databases, roles and pg_dump, on a real cluster.

use mail_gateway_tests::{Client, Cluster, Gateway, error_text, exec};

/// Objects in the database that are not PostgreSQL's own, to compare before and after.
fn user_objects(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT 'class ' || oid::regclass::text FROM pg_class WHERE relnamespace NOT IN
                (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast'))
             UNION ALL SELECT 'proc ' || oid::regprocedure::text FROM pg_proc WHERE pronamespace NOT IN
                (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema'))
             UNION ALL SELECT 'type ' || oid::regtype::text FROM pg_type WHERE typnamespace NOT IN
                (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pg_toast'))
             UNION ALL SELECT 'schema ' || nspname FROM pg_namespace
             UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger WHERE NOT tgisinternal
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn roles(client: &mut Client) -> Vec<String> {
    client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'mail_gateway%' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn create_in_several_databases_and_drop_leaves_only_the_roles() {
    let cluster = Cluster::start(&[]);
    let mut admin = cluster.connect("postgres");
    exec(&mut admin, "CREATE DATABASE erp1");
    exec(&mut admin, "CREATE DATABASE erp2");
    let mut erp1 = cluster.connect("erp1");
    let mut erp2 = cluster.connect("erp2");
    let before = user_objects(&mut erp1);

    exec(&mut erp1, "CREATE EXTENSION mail_gateway");
    exec(&mut erp2, "CREATE EXTENSION mail_gateway");
    assert_eq!(
        roles(&mut admin),
        [
            "mail_gateway_admin",
            "mail_gateway_user",
            "mail_gateway_worker"
        ]
    );
    for db in [&mut erp1, &mut erp2] {
        let elsewhere: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_depend d JOIN pg_proc p ON p.oid = d.objid
                 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'mail_gateway')
                   AND d.classid = 'pg_proc'::regclass AND p.pronamespace <> 'mail_gateway'::regnamespace",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            elsewhere, 0,
            "every function of the extension is in schema mail_gateway"
        );
        let n: i64 = db
            .query_one("SELECT count(*) FROM mail_gateway.parameter", &[])
            .unwrap()
            .get(0);
        // The thirteen parameters of the first release, and docs/SECURITY.md's five.
        assert_eq!(n, 18);
    }
    // Not relocatable.
    exec(&mut erp1, "CREATE SCHEMA other");
    let err = erp1
        .batch_execute("ALTER EXTENSION mail_gateway SET SCHEMA other")
        .unwrap_err();
    assert!(
        error_text(&err).contains("does not support SET SCHEMA"),
        "{}",
        error_text(&err)
    );
    exec(&mut erp1, "DROP SCHEMA other");

    exec(&mut erp1, "DROP EXTENSION mail_gateway");
    assert_eq!(user_objects(&mut erp1), before);
    // The roles stay (cluster-wide, still used by erp2), and erp2 is untouched.
    assert_eq!(
        roles(&mut admin),
        [
            "mail_gateway_admin",
            "mail_gateway_user",
            "mail_gateway_worker"
        ]
    );
    let n: i64 = erp2
        .query_one("SELECT count(*) FROM mail_gateway.parameter", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 18);
    // Created again after a drop, with the roles already there.
    exec(&mut erp1, "CREATE EXTENSION mail_gateway");
}

#[test]
fn user_role_reads_configuration_but_no_secret() {
    let (cluster, _admin) = Gateway::new()
        .sql(
            "CREATE ROLE erp_app LOGIN IN ROLE mail_gateway_user;
             CREATE ROLE erp_admin LOGIN IN ROLE mail_gateway_admin;
             INSERT INTO mail_gateway.outgoing_server (name, host, username, password)
                 VALUES ('main', 'smtp.example.net', 'u', 'hunter2');",
        )
        .start();
    let mut app = cluster.connect_as("erp_app");
    let host: String = app
        .query_one("SELECT host FROM mail_gateway.outgoing_server", &[])
        .unwrap()
        .get(0);
    assert_eq!(host, "smtp.example.net");
    let err = app
        .query("SELECT password FROM mail_gateway.outgoing_server", &[])
        .unwrap_err();
    assert!(
        error_text(&err).contains("permission denied"),
        "{}",
        error_text(&err)
    );
    let err = app
        .query("SELECT * FROM mail_gateway.outgoing_server", &[])
        .unwrap_err();
    assert!(
        error_text(&err).contains("permission denied"),
        "{}",
        error_text(&err)
    );
    let err = app
        .query(
            "SELECT mail_gateway.set_parameter('mail.bounce.alias', 'x')",
            &[],
        )
        .unwrap_err();
    assert!(
        error_text(&err).contains("permission denied"),
        "{}",
        error_text(&err)
    );
    let chosen: String = app
        .query_one(
            "SELECT server_name FROM mail_gateway.find_outgoing_server('a@b.com')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(chosen, "main");

    let mut erp_admin = cluster.connect_as("erp_admin");
    exec(
        &mut erp_admin,
        "SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
             UPDATE mail_gateway.outgoing_server SET password = 'new' WHERE name = 'main';",
    );
}

#[test]
fn pg_dump_keeps_the_configuration() {
    let cluster = Cluster::start(&[]);
    let mut admin = cluster.connect("postgres");
    exec(&mut admin, "CREATE DATABASE source");
    exec(&mut admin, "CREATE DATABASE restored");
    let mut source = cluster.connect("source");
    exec(&mut source, "CREATE TABLE crm_lead (id bigserial PRIMARY KEY, name text);
             CREATE EXTENSION mail_gateway;
             SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
             SELECT mail_gateway.set_parameter('mail.send.daily_limit', '1000');
             INSERT INTO mail_gateway.outgoing_server (name, host, from_filter) VALUES ('main', 'smtp.example.net', 'mycompany.com');
             INSERT INTO mail_gateway.incoming_server (name, host, username, password) VALUES ('in', 'imap.example.net', 'u', 'p');
             INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'crm_lead');
             INSERT INTO mail_gateway.contact (email, name) VALUES ('ann@customer.example', 'Ann');
             INSERT INTO mail_gateway.blacklist (email, reason) VALUES ('gone@customer.example', 'bounced');",);
    let dump = cluster.client_program("pg_dump", &["-d", "source", "-f", "/dev/stdout"]);
    let dump_file = cluster.dir.join("dump.sql");
    std::fs::write(&dump_file, &dump.stdout).unwrap();
    cluster.client_program(
        "psql",
        &[
            "-d",
            "restored",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-f",
            dump_file.to_str().unwrap(),
        ],
    );

    let mut restored = cluster.connect("restored");
    let q = |c: &mut Client, sql: &str| -> Option<String> { c.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(
        q(
            &mut restored,
            "SELECT mail_gateway.get_parameter('mail.catchall.domain')"
        )
        .as_deref(),
        Some("mycompany.com")
    );
    assert_eq!(
        q(
            &mut restored,
            "SELECT mail_gateway.get_parameter('mail.send.daily_limit')"
        )
        .as_deref(),
        Some("1000")
    );
    assert_eq!(
        q(
            &mut restored,
            "SELECT mail_gateway.get_parameter('mail.bounce.alias')"
        )
        .as_deref(),
        Some("bounce")
    );
    assert_eq!(
        q(
            &mut restored,
            "SELECT count(*)::text FROM mail_gateway.parameter"
        )
        .as_deref(),
        Some("18")
    );
    assert_eq!(
        q(
            &mut restored,
            "SELECT from_filter FROM mail_gateway.outgoing_server"
        )
        .as_deref(),
        Some("mycompany.com")
    );
    assert_eq!(
        q(
            &mut restored,
            "SELECT password FROM mail_gateway.incoming_server"
        )
        .as_deref(),
        Some("p")
    );
    assert_eq!(
        q(&mut restored, "SELECT model FROM mail_gateway.alias").as_deref(),
        Some("public.crm_lead")
    );
    assert_eq!(
        q(&mut restored, "SELECT name FROM mail_gateway.contact").as_deref(),
        Some("Ann")
    );
    assert_eq!(
        q(&mut restored, "SELECT reason FROM mail_gateway.blacklist").as_deref(),
        Some("bounced")
    );
    // Identity sequences came along: new rows do not collide with restored ids.
    exec(
        &mut restored,
        "INSERT INTO mail_gateway.outgoing_server (name, host) VALUES ('second', 'smtp2.example.net')",
    );
}

#[test]
fn sql_api_works_without_preloading() {
    let (_cluster, mut db) = Gateway::new().without_preload().start();
    exec(
        &mut db,
        "SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
         INSERT INTO mail_gateway.outgoing_server (name, host, from_filter) VALUES ('main', 'h', 'mycompany.com');",
    );
    let header: String = db
        .query_one(
            "SELECT header_from FROM mail_gateway.find_outgoing_server('\"Admin\" <admin@example.com>')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(header, "\"Admin\" <notifications@mycompany.com>");
    let workers: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'mail_gateway%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(workers, 0);
}

#[test]
fn create_extension_keeps_the_callers_search_path() {
    let cluster = Cluster::start_without_preload();
    let mut db = cluster.connect("postgres");
    exec(
        &mut db,
        "SET search_path TO public; CREATE EXTENSION mail_gateway",
    );
    let path: String = db.query_one("SHOW search_path", &[]).unwrap().get(0);
    assert_eq!(path, "public");
}

/// The monitoring queries of docs/OPERATIONS.md run as written (docs true to the schema), on a
/// database with mail in every state they look at.
#[test]
fn the_documented_monitoring_queries_run() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/OPERATIONS.md"
    ))
    .unwrap();
    let section = doc
        .split("\n## Monitoring")
        .nth(1)
        .expect("a Monitoring section");
    let block = section
        .split("```sql\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its SQL block");
    let statements: Vec<&str> = block
        .split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert!(statements.len() >= 6, "{statements:?}");

    let cluster = Cluster::start(&[]);
    // A database the worker does not serve: the waiting mail stays waiting.
    exec(&mut cluster.connect("postgres"), "CREATE DATABASE erp");
    let mut db = cluster.connect("erp");
    exec(&mut db, "CREATE EXTENSION mail_gateway");
    exec(
        &mut db,
        "SELECT mail_gateway.send_mail('a@mycompany.com', ARRAY['b@customer.example'], 'waiting');
         SELECT mail_gateway.process_message(convert_to('From: c@customer.example\r\nTo: x@y.example\r\nSubject: s\r\n\r\nhi\r\n', 'UTF8'))",
    );
    for statement in statements {
        let rows = db
            .query(statement, &[])
            .unwrap_or_else(|e| panic!("{statement}\n-> {}", error_text(&e)));
        if statement.contains("state IN ('outgoing', 'sending')") {
            assert_eq!(rows[0].get::<_, i64>(0), 1, "the waiting mail is counted");
        }
    }
}
