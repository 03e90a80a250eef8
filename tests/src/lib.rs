//! Integration harness: a throw-away PostgreSQL cluster with `mail_gateway` in
//! `shared_preload_libraries`, run as the `postgres` user, reached over a real TCP connection.
//!
//! The extension must be installed first (`cargo pgrx install`, done by `scripts/test.sh`) into
//! the PostgreSQL whose programs are in `MG_PG_BIN` (default: Debian's PostgreSQL 15).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub mod dns;
pub mod dovecot;
mod fixture;
pub mod oauth;
pub mod postfix;
pub mod proxy;
pub mod smtp;

pub use fixture::{Gateway, post_quotation, wait_for_lmtp_listener};
pub use postgres::Client;
use postgres::NoTls;

/// Where the PostgreSQL programs are: `MG_PG_BIN`, else Debian's PostgreSQL 15.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("MG_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    stopped: bool,
}

/// Whether the tests run as root (clusters then run as `postgres`, Postfix may start).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL program as `postgres` when we are root (PostgreSQL refuses root).
fn pg_command(program: &str) -> Command {
    let path = pg_bin().join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(path)
    }
}

fn check(what: &str, output: std::io::Result<Output>) -> Output {
    let output = output.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A fresh directory under /tmp (short paths: they hold Unix sockets).
pub fn temp_dir(prefix: &str) -> PathBuf {
    let out = Command::new("mktemp")
        .args(["-d", &format!("/tmp/{prefix}.XXXXXX")])
        .output()
        .expect("mktemp");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A fresh directory that the `postgres` user owns (a cluster's home).
fn postgres_dir(prefix: &str) -> PathBuf {
    let dir = temp_dir(prefix);
    if is_root() {
        check(
            "chown",
            Command::new("chown")
                .args(["postgres:", dir.to_str().unwrap()])
                .output(),
        );
    }
    dir
}

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

impl Cluster {
    /// initdb and start a cluster with mail_gateway preloaded; `settings` are extra
    /// `name = value` lines of postgresql.conf.
    pub fn start(settings: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(true, settings)
    }

    /// A cluster where the library is not preloaded: no worker, the SQL API only.
    pub fn start_without_preload() -> Cluster {
        Cluster::start_with(false, &[])
    }

    fn start_with(preload: bool, settings: &[(&str, &str)]) -> Cluster {
        let dir = postgres_dir("mgtest");
        let data = dir.join("data");
        check(
            "initdb",
            pg_command("initdb")
                .args([
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                ])
                .args(["--no-locale", "-E", "UTF8", "--no-sync"])
                .output(),
        );
        let mut cluster = Cluster {
            dir,
            port: free_port(),
            stopped: true,
        };
        let mut conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\n",
            cluster.port,
            cluster.dir.display()
        );
        if preload {
            conf.push_str("shared_preload_libraries = 'mail_gateway'\n");
        }
        for (name, value) in settings {
            conf.push_str(&format!("{name} = '{value}'\n"));
        }
        let conf_path = data.join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("write postgresql.auto.conf");
        cluster.pg_ctl_start();
        cluster
    }

    fn pg_ctl_start(&mut self) {
        check(
            "pg_ctl start",
            pg_command("pg_ctl")
                .args([
                    "-D",
                    self.data().to_str().unwrap(),
                    "-l",
                    self.log_path().to_str().unwrap(),
                ])
                .args(["-w", "-t", "60", "start"])
                .output(),
        );
        self.stopped = false;
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={database} connect_timeout=10",
            self.port
        )
    }

    pub fn connect(&self, database: &str) -> Client {
        Client::connect(&self.url(database), NoTls)
            .unwrap_or_else(|e| panic!("connect to {database}: {e}\n{}", self.log()))
    }

    /// A connection to database `postgres` as `role` (which logs in without a password).
    pub fn connect_as(&self, role: &str) -> Client {
        let url = self
            .url("postgres")
            .replace("user=postgres", &format!("user={role}"));
        Client::connect(&url, NoTls).unwrap()
    }

    /// `pg_ctl stop` in the given mode (`fast`, `immediate`); returns how long it took.
    pub fn stop(&mut self, mode: &str) -> Duration {
        let started = Instant::now();
        check(
            "pg_ctl stop",
            pg_command("pg_ctl")
                .args([
                    "-D",
                    self.data().to_str().unwrap(),
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ])
                .output(),
        );
        self.stopped = true;
        started.elapsed()
    }

    /// A hot standby of this cluster (pg_basebackup, streaming), started.
    pub fn standby(&self) -> Cluster {
        let dir = postgres_dir("mgstandby");
        let data = dir.join("data");
        check(
            "pg_basebackup",
            pg_command("pg_basebackup")
                .args(["-D", data.to_str().unwrap(), "-h", "127.0.0.1"])
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-R",
                    "-X",
                    "stream",
                ])
                .output(),
        );
        let mut standby = Cluster {
            dir,
            port: free_port(),
            stopped: true,
        };
        // The copied settings name the primary's port and socket directory: the later lines win.
        let conf_path = data.join("postgresql.auto.conf");
        let mut conf = std::fs::read_to_string(&conf_path).unwrap_or_default();
        conf.push_str(&format!(
            "port = {}\nunix_socket_directories = '{}'\n",
            standby.port,
            standby.dir.display()
        ));
        std::fs::write(&conf_path, conf).unwrap();
        standby.pg_ctl_start();
        standby
    }

    /// Promotes a standby to a primary and waits until it accepts writes.
    pub fn promote(&self) {
        check(
            "pg_ctl promote",
            pg_command("pg_ctl")
                .args(["-D", self.data().to_str().unwrap(), "-w", "promote"])
                .output(),
        );
    }

    /// SIGKILL to the postmaster and every child at once: a power cut, as far as PostgreSQL
    /// knows. Returns when the postmaster is gone.
    pub fn crash(&mut self) {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let postmaster = pid_file.lines().next().unwrap().trim().to_string();
        let children = Command::new("pgrep")
            .args(["-P", &postmaster])
            .output()
            .unwrap();
        let mut pids: Vec<String> = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        pids.push(postmaster.clone());
        // A child may exit on its own between pgrep and kill: only the postmaster must be hit.
        Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .status()
            .unwrap();
        wait_for("the cluster to be gone", Duration::from_secs(30), || {
            (!Path::new(&format!("/proc/{postmaster}")).exists()).then_some(())
        });
    }

    /// Starts the cluster again after its processes were killed (crash recovery runs).
    pub fn start_after_crash(&mut self) {
        self.stopped = true;
        self.pg_ctl_start();
    }

    pub fn restart(&mut self) {
        if !self.stopped {
            self.stop("fast");
        }
        self.pg_ctl_start();
    }

    /// Runs a PostgreSQL client program (pg_dump, psql …) against this cluster.
    pub fn client_program(&self, program: &str, args: &[&str]) -> Output {
        let port = self.port.to_string();
        check(
            program,
            Command::new(pg_bin().join(program))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .args(args)
                .output(),
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = pg_command("pg_ctl")
                .args([
                    "-D",
                    self.data().to_str().unwrap(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ])
                .output();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- server log ({}) ----\n{}",
                self.log_path().display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
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

/// A TCP proxy on 127.0.0.1 that cuts every connection once the server has sent `limit` bytes
/// through it: a server that drops the line in the middle of an answer.
pub struct CuttingProxy {
    pub port: u16,
}

impl CuttingProxy {
    pub fn start(upstream: u16, limit: usize) -> CuttingProxy {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(Shutdown::Both);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let mut sent = 0;
                    let mut buf = [0u8; 4096];
                    while sent < limit {
                        match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let n = n.min(limit - sent);
                                if c_write.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                sent += n;
                            }
                        }
                    }
                    let _ = c_write.shutdown(Shutdown::Both);
                    let _ = s_read.shutdown(Shutdown::Both);
                });
            }
        });
        CuttingProxy { port }
    }
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
