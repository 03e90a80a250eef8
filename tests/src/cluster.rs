//! A throw-away PostgreSQL cluster with `mail_gateway` in `shared_preload_libraries`, run as the
//! `postgres` user, reached over a real TCP connection.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use postgres::NoTls;

use crate::{Client, free_port, wait_for};

/// Where the PostgreSQL programs are: `MG_PG_BIN`, else Debian's PostgreSQL 15.
pub fn pg_bin() -> PathBuf {
    std::env::var_os("MG_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// A cluster in a fresh directory under /tmp; dropped, it stops at once and its directory goes,
/// unless the test panicked: then its log is printed and the directory kept.
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

    /// initdb and start a cluster, the library preloaded or not; `settings` as for `start`.
    pub(crate) fn start_with(preload: bool, settings: &[(&str, &str)]) -> Cluster {
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
