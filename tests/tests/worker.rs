//! The background worker's life cycle, observed from outside through a real cluster.

use std::time::Duration;

use mail_gateway_tests::{Cluster, Gateway, exec, wait_for, wait_for_worker};

#[test]
fn the_launcher_waits_for_the_extension_and_starts_the_workers_at_once() {
    let cluster = Cluster::start(&[
        ("mail_gateway.database", "erp"),
        ("mail_gateway.poll_interval", "1h"),
    ]);
    // No database erp, no role yet: the launcher waits, saying why once.
    wait_for(
        "the launcher to say it waits",
        Duration::from_secs(10),
        || {
            cluster
                .log()
                .contains("waiting for CREATE EXTENSION mail_gateway")
                .then_some(())
        },
    );
    let mut admin = cluster.connect("postgres");
    exec(&mut admin, "CREATE DATABASE erp");
    let mut erp = cluster.connect("erp");
    // With a poll interval of an hour, only CREATE EXTENSION's commit can wake the launcher.
    exec(&mut erp, "CREATE EXTENSION mail_gateway");
    let started = std::time::Instant::now();
    let pid = wait_for_worker(&cluster, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the workers start when CREATE EXTENSION commits, not at the next poll"
    );
    wait_for("the fetcher", Duration::from_secs(10), || {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE backend_type = 'mail_gateway fetcher' AND datname = 'erp' AND usename = 'mail_gateway_worker'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 1).then_some(())
    });
    // A worker shows in pg_stat_activity as soon as it has connected, a moment before it logs.
    let line = format!(
        "mail_gateway worker started: database \"erp\", role \"mail_gateway_worker\", pid {pid}"
    );
    let log = wait_for("the worker's start line", Duration::from_secs(10), || {
        let log = cluster.log();
        log.contains(&line).then_some(log)
    });
    assert_eq!(log.matches(&line).count(), 1, "one start line:\n{log}");
    let user: String = admin
        .query_one(
            "SELECT usename::text FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .unwrap()
        .get(0);
    assert_eq!(user, "mail_gateway_worker", "never a superuser");
    assert!(!cluster.log().contains("PANIC"));
}

#[test]
fn worker_stops_promptly_and_is_restarted() {
    // A poll interval of an hour: only the latch can make it stop quickly.
    let (cluster, mut client) = Gateway::new().poll_interval("1h").start();
    let pid = wait_for_worker(&cluster, None);

    let terminated: bool = client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(terminated);
    wait_for(
        "the worker to log its stop",
        Duration::from_secs(10),
        || {
            cluster
                .log()
                .contains("mail_gateway worker stopped")
                .then_some(())
        },
    );
    let restarted = wait_for_worker(&cluster, Some(pid));
    assert_ne!(restarted, pid);
}

#[test]
fn worker_killed_with_sigkill_comes_back() {
    let (cluster, _) = Gateway::new().start();
    let pid = wait_for_worker(&cluster, None);
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let restarted = wait_for_worker(&cluster, Some(pid));
    assert_ne!(restarted, pid);
}

#[test]
fn fast_shutdown_does_not_wait_for_the_worker() {
    let (mut cluster, _) = Gateway::new().poll_interval("1h").start();
    wait_for_worker(&cluster, None);
    // pg_ctl fails after its 60 s timeout if the worker ignores SIGTERM.
    cluster.stop("fast");
    assert!(cluster.log().contains("mail_gateway worker stopped"));
}

#[test]
fn worker_follows_a_changed_database_on_reload() {
    let (cluster, mut admin) = Gateway::new().start();
    let pid = wait_for_worker(&cluster, None);
    exec(&mut admin, "CREATE DATABASE erp");
    exec(&mut cluster.connect("erp"), "CREATE EXTENSION mail_gateway");
    exec(&mut admin, "ALTER SYSTEM SET mail_gateway.database = 'erp'");
    exec(&mut admin, "SELECT pg_reload_conf()");
    let restarted = wait_for_worker(&cluster, Some(pid));
    let database: String = admin
        .query_one(
            "SELECT datname::text FROM pg_stat_activity WHERE pid = $1",
            &[&restarted],
        )
        .unwrap()
        .get(0);
    assert_eq!(database, "erp");
    wait_for("postgres's workers gone", Duration::from_secs(10), || {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'mail_gateway%' AND datname = 'postgres'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    });
}

#[test]
fn on_a_standby_the_workers_wait_and_start_when_it_is_promoted() {
    let smtp = mail_gateway_tests::smtp::SmtpServer::start(Default::default());
    let (primary, mut db) = Gateway::sending_through(smtp.port)
        .poll_interval("200ms")
        .start();
    let standby = primary.standby();
    let mut replica = standby.connect("postgres");
    let in_recovery: bool = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let workers: i64 = replica
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'mail_gateway%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(workers, 0, "a standby runs no mail_gateway worker");

    // The primary goes away with mail in its queue (due in a few seconds); the promoted standby
    // sends it.
    mail_gateway_tests::exec(
        &mut db,
        "SELECT mail_gateway.send_mail('a@mycompany.com', ARRAY['x@customer.example'], 'after failover',
                                       scheduled_at => now() + interval '6 seconds')",
    );
    drop(db);
    mail_gateway_tests::wait_for(
        "the standby to catch up",
        std::time::Duration::from_secs(30),
        || {
            let n: i64 = replica
                .query_one("SELECT count(*) FROM mail_gateway.mail", &[])
                .unwrap()
                .get(0);
            (n == 1).then_some(())
        },
    );
    let mut primary = primary;
    primary.crash();
    standby.promote();
    let got = smtp.wait_for(1, std::time::Duration::from_secs(60));
    assert!(got[0].text().contains("after failover"));
}
