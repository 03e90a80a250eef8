//! Integration harness: throw-away PostgreSQL clusters (`Cluster`), a gateway set up in one
//! (`Gateway`), and real mail servers beside it (Postfix, Dovecot, aiosmtpd, DNS, OAuth2).
//!
//! The extension must be installed first (`cargo pgrx install`, done by `scripts/test.sh`) into
//! the PostgreSQL whose programs are in `MG_PG_BIN` (default: Debian's PostgreSQL 15).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod cluster;
pub mod dns;
pub mod dovecot;
mod fixture;
pub mod oauth;
pub mod postfix;
pub mod proxy;
pub mod smtp;

pub use cluster::{Cluster, is_root, pg_bin, temp_dir};
pub use fixture::{Gateway, post_quotation, wait_for_lmtp_listener, with_sales_alias};
pub use postgres::Client;
use postgres::NoTls;

/// A port on 127.0.0.1 that is free now and handed out once per test process. Chosen below
/// Linux's ephemeral range (32768–60999): a port the kernel picked for `bind(0)` can be taken by
/// the local end of any outgoing connection before the server we start binds it.
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut state = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ ((std::process::id() as u64) << 32);
    loop {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = 20_000 + ((state >> 33) % 12_000) as u16;
        let mut given = GIVEN.lock().unwrap();
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
}

/// One row of `scripts/bench.sh`'s table (what, figure, target), appended to the file named by
/// `BENCH_ROWS` when the script runs the program; nothing otherwise.
pub fn bench_row(what: &str, figure: &str, target: &str) {
    use std::io::Write;
    if let Some(path) = std::env::var_os("BENCH_ROWS") {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .expect("BENCH_ROWS is writable");
        writeln!(file, "{what}\t{figure}\t{target}").expect("BENCH_ROWS is writable");
    }
}

/// Runs SQL, panicking with the server's own words (`postgres::Error` alone says "db error").
pub fn exec(client: &mut Client, sql: &str) {
    if let Err(e) = client.batch_execute(sql) {
        panic!("{sql}\n-> {}", error_text(&e));
    }
}

/// The single `bigint` that `sql` answers (a `count(*)`, mostly).
pub fn count(db: &mut Client, sql: &str) -> i64 {
    db.query_one(sql, &[])
        .map_err(|e| format!("{sql}: {}", error_text(&e)))
        .unwrap()
        .get(0)
}

/// The server's message of an error, for assertions.
pub fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for the mail_gateway worker, one whose pid differs from `not` (any when `None`).
pub fn wait_for_worker(cluster: &Cluster, not: Option<i32>) -> i32 {
    wait_for_backend(cluster, "mail_gateway worker", not)
}

/// Waits for the mail_gateway fetcher, one whose pid differs from `not` (any when `None`).
pub fn wait_for_fetcher(cluster: &Cluster, not: Option<i32>) -> i32 {
    wait_for_backend(cluster, "mail_gateway fetcher", not)
}

/// Waits for the one backend of `backend_type` whose pid differs from `not`; a fresh
/// connection each time, as the cluster may be restarting.
fn wait_for_backend(cluster: &Cluster, backend_type: &str, not: Option<i32>) -> i32 {
    wait_for(
        &format!("the {backend_type}"),
        Duration::from_secs(60),
        || {
            let mut client = Client::connect(&cluster.url("postgres"), NoTls).ok()?;
            client
                .query_opt(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = $1",
                    &[&backend_type],
                )
                .ok()
                .flatten()
                .map(|row| row.get::<_, i32>(0))
                .filter(|pid| Some(*pid) != not)
        },
    )
}

/// The `mail-gateway-deliver` program, built beside the test binaries
/// (`cargo build -p mail_gateway_deliver`, done by scripts/test.sh).
pub fn deliver_program() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/<test> → target/debug/mail-gateway-deliver
    let program = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("mail-gateway-deliver");
    assert!(
        program.exists(),
        "{} is missing: run `cargo build -p mail_gateway_deliver` first",
        program.display()
    );
    program
}
