//! Nothing lost, nothing doubled: senders killed mid-batch, the whole cluster killed, several
//! senders racing for the same queue.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use mail_gateway_tests::smtp::{SmtpOptions, SmtpServer};
use mail_gateway_tests::{Client, Cluster, exec, wait_for, wait_for_worker};

const MAILS: i64 = 2000;
const BATCH: usize = 100;

fn gateway(senders: &str) -> (Cluster, Client, SmtpServer) {
    let smtp = SmtpServer::start(SmtpOptions::default());
    let batch = BATCH.to_string();
    let cluster = Cluster::start(&[
        ("mail_gateway.poll_interval", "200ms"),
        ("mail_gateway.send_batch_size", &batch),
        ("mail_gateway.senders", senders),
    ]);
    let mut db = cluster.connect("postgres");
    exec(
        &mut db,
        &format!(
            "CREATE EXTENSION mail_gateway;
             SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
             SELECT mail_gateway.set_parameter('mail.send.daily_limit', '0');
             INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption)
                 VALUES ('relay', '127.0.0.1', {}, 'none');",
            smtp.port
        ),
    );
    (cluster, db, smtp)
}

fn queue(db: &mut Client, n: i64) {
    exec(
        db,
        &format!(
            "SELECT mail_gateway.send_mail('a@mycompany.com', ARRAY['r' || i || '@customer.example'], 'mail ' || i)
             FROM generate_series(1, {n}) AS i"
        ),
    );
}

/// How many times each queued Message-ID arrived.
fn arrivals(db: &mut Client, smtp: &SmtpServer) -> (Vec<String>, HashMap<String, usize>) {
    let queued: Vec<String> = db
        .query("SELECT message_id FROM mail_gateway.mail ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut seen = HashMap::new();
    for m in smtp.received() {
        *seen
            .entry(m.header("Message-ID").expect("a Message-ID"))
            .or_insert(0) += 1;
    }
    (queued, seen)
}

fn wait_all_sent(cluster: &Cluster, n: i64) {
    wait_for("every mail to be sent", Duration::from_secs(180), || {
        let mut db = Client::connect(&cluster.url("postgres"), postgres::NoTls).ok()?;
        let sent: i64 = db
            .query_one(
                "SELECT count(*) FROM mail_gateway.mail WHERE state = 'sent'",
                &[],
            )
            .ok()?
            .get(0);
        (sent == n).then_some(())
    });
}

/// Every queued mail arrived at least once; duplicates are at most what was in flight.
fn assert_nothing_lost(queued: &[String], seen: &HashMap<String, usize>, in_flight: usize) {
    let missing: Vec<&String> = queued.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} mails never arrived, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= in_flight,
        "{duplicates} duplicates, but at most {in_flight} mails were in flight"
    );
    assert!(
        seen.keys().all(|id| queued.contains(id)),
        "nothing arrived that was not queued"
    );
}

#[test]
fn killing_the_sender_mid_batch_loses_nothing() {
    let (cluster, mut db, smtp) = gateway("1");
    let pid = wait_for_worker(&cluster, None);
    queue(&mut db, MAILS);
    smtp.wait_for(300, Duration::from_secs(60));
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(db);
    // The postmaster restarts everything after a crash; the new worker resumes the queue.
    wait_for_worker(&cluster, Some(pid));
    wait_all_sent(&cluster, MAILS);
    let mut db = cluster.connect("postgres");
    let (queued, seen) = arrivals(&mut db, &smtp);
    assert_eq!(queued.len(), MAILS as usize);
    assert_nothing_lost(&queued, &seen, BATCH);
}

#[test]
fn killing_the_whole_cluster_mid_batch_loses_nothing() {
    let (mut cluster, mut db, smtp) = gateway("1");
    wait_for_worker(&cluster, None);
    queue(&mut db, MAILS);
    smtp.wait_for(300, Duration::from_secs(60));
    drop(db);
    // SIGKILL to the postmaster and every child at once: a power cut, as far as PostgreSQL knows.
    let pid_file = std::fs::read_to_string(cluster.data().join("postmaster.pid")).unwrap();
    let postmaster = pid_file.lines().next().unwrap().trim().to_string();
    let children = Command::new("pgrep")
        .args(["-P", &postmaster])
        .output()
        .unwrap();
    let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    pids.push(postmaster);
    // A child may exit on its own between pgrep and kill: only the postmaster must be hit.
    Command::new("kill")
        .arg("-KILL")
        .args(&pids)
        .status()
        .unwrap();
    wait_for("the cluster to be gone", Duration::from_secs(30), || {
        let alive = std::path::Path::new(&format!("/proc/{}", pids[pids.len() - 1])).exists();
        (!alive).then_some(())
    });
    cluster.start_after_crash();
    wait_all_sent(&cluster, MAILS);
    let mut db = cluster.connect("postgres");
    let (queued, seen) = arrivals(&mut db, &smtp);
    assert_eq!(
        queued.len(),
        MAILS as usize,
        "every committed mail survived the crash"
    );
    assert_nothing_lost(&queued, &seen, BATCH);
    assert!(
        cluster.log().contains("database system was interrupted"),
        "it really crashed"
    );
}

#[test]
fn several_senders_never_send_the_same_mail_twice() {
    let (cluster, mut db, smtp) = gateway("3");
    wait_for("three senders", Duration::from_secs(30), || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'mail_gateway%'",
                &[],
            )
            .unwrap()
            .get(0);
        (n == 3).then_some(())
    });
    queue(&mut db, MAILS);
    wait_all_sent(&cluster, MAILS);
    let (queued, seen) = arrivals(&mut db, &smtp);
    assert_nothing_lost(&queued, &seen, 0);
    let senders: i64 = db
        .query_one(
            "SELECT count(DISTINCT claimed_by) FROM mail_gateway.mail",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(senders, 0, "no mail is left claimed");
}
