//! A private Postfix (Debian's postfix package) in front of the gateway, as a company's MTA:
//! its own configuration, queue and data directories under /tmp, smtpd on 127.0.0.1 and a free
//! port, the domain `mycompany.com` relayed through a transport map to the gateway, no chroot, no
//! DNS, retries every second, and its log in a file of its own. Several run at once. Needs root
//! (`postfix start`); the instance stops when dropped.
//!
//! The lines that route the domain to the gateway are the ones docs/OPERATIONS.md shows (push
//! delivery): `ROUTING_MAIN_CF`, then `LMTP_*` or `PIPE_*`; the test `postfix.rs` holds the two
//! equal. Only paths, ports, the database and pipe(8)'s user differ, replaced where they occur.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{free_port, is_root, temp_dir, wait_for};

mod config;
pub use config::{
    LMTP_MAIN_CF, LMTP_MASTER_CF, LMTP_TRANSPORT, PIPE_MAIN_CF, PIPE_MASTER_CF, PIPE_ROLE_SQL,
    PIPE_TRANSPORT, ROUTING_MAIN_CF, Transport,
};
use config::{MASTER_CF, TEST_MAIN_CF};

pub struct Postfix {
    pub dir: PathBuf,
    /// smtpd's port on 127.0.0.1.
    pub smtp_port: u16,
    transport: Transport,
    running: bool,
}

/// One message in Postfix's queue (`postqueue -j`).
#[derive(Debug)]
pub struct Queued {
    pub queue_name: String,
    pub queue_id: String,
    /// Per recipient: the address and why it waits ("" when not tried yet).
    pub recipients: Vec<(String, String)>,
}

impl Postfix {
    /// Writes the configuration and starts the instance; returns once smtpd answers.
    pub fn start(transport: Transport) -> Postfix {
        assert!(
            is_root(),
            "the Postfix fixture runs `postfix start`, which needs root: run the tests as root"
        );
        let dir = temp_dir("mgpostfix");
        // The daemons run as `postfix` and must reach the queue below it.
        set_mode(&dir, 0o755);
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir(dir.join(sub)).expect("the instance's directories");
        }
        run(Command::new("chown").arg("postfix:").arg(dir.join("data")));
        let smtp_port = free_port();
        let mut postfix = Postfix {
            dir,
            smtp_port,
            transport: transport.clone(),
            running: false,
        };
        postfix.write_config(&transport);
        let out = postfix.tool("postfix", &["start"]);
        assert!(
            out.status.success(),
            "postfix start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            postfix.maillog()
        );
        postfix.running = true;
        wait_for("Postfix's smtpd", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", smtp_port)).ok()
        });
        postfix
    }

    /// The LMTP listener's port Postfix delivers to (LMTP only).
    pub fn lmtp_port(&self) -> Option<u16> {
        match self.transport {
            Transport::Lmtp(port) => Some(port),
            Transport::Pipe { .. } => None,
        }
    }

    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    fn write_config(&self, transport: &Transport) {
        let etc = self.etc();
        let etc_s = etc.to_str().unwrap();
        let mut main = format!(
            "queue_directory = {queue}\ndata_directory = {data}\n\
             maillog_file = {log}\nmaillog_file_prefixes = {dir}\n{TEST_MAIN_CF}",
            queue = self.dir.join("queue").display(),
            data = self.dir.join("data").display(),
            log = self.maillog_path().display(),
            dir = self.dir.display(),
        );
        let mut master = format!(
            "127.0.0.1:{} inet  n       -       n       -       -       smtpd\n{MASTER_CF}",
            self.smtp_port
        );
        let (main_cf, master_cf, map) = match transport {
            Transport::Lmtp(port) => (
                LMTP_MAIN_CF,
                LMTP_MASTER_CF.join("\n"),
                LMTP_TRANSPORT.replace("2424", &port.to_string()),
            ),
            Transport::Pipe { program, conninfo } => {
                let bin = self.dir.join("bin");
                std::fs::create_dir(&bin).expect("the instance's bin directory");
                let copy = bin.join("mail-gateway-deliver");
                std::fs::copy(program, &copy)
                    .unwrap_or_else(|e| panic!("copy {}: {e}", program.display()));
                set_mode(&copy, 0o755);
                let lines = PIPE_MASTER_CF.join("\n");
                let replaced = replace_all(
                    &lines,
                    &[
                        ("user=mailgateway argv=", "user=nobody argv="),
                        (
                            "/usr/lib/postgresql/15/bin/mail-gateway-deliver",
                            copy.to_str().unwrap(),
                        ),
                        (
                            "host=/var/run/postgresql dbname=erp user=mailgateway",
                            conninfo,
                        ),
                    ],
                );
                (PIPE_MAIN_CF, replaced, PIPE_TRANSPORT.to_string())
            }
        };
        for line in ROUTING_MAIN_CF.iter().chain(main_cf) {
            main.push_str(&line.replace("/etc/postfix", etc_s));
            main.push('\n');
        }
        write(&etc.join("main.cf"), &main);
        master.push_str(&master_cf);
        master.push('\n');
        write(&etc.join("master.cf"), &master);
        write(&etc.join("transport"), &format!("{map}\n"));
        let out = Command::new("postmap")
            .args(["-c", etc_s])
            .arg(format!("hash:{}", etc.join("transport").display()))
            .output()
            .expect("postmap");
        assert!(out.status.success(), "postmap: {}", self.tool_error(&out));
    }

    /// Runs a Postfix command on this instance (`-c` its configuration directory).
    pub fn tool(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .arg("-c")
            .arg(self.etc())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    }

    fn tool_error(&self, out: &Output) -> String {
        format!(
            "{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.maillog()
        )
    }

    pub fn maillog_path(&self) -> PathBuf {
        self.dir.join("maillog")
    }

    /// Everything Postfix logged so far (for assertion messages).
    pub fn maillog(&self) -> String {
        format!(
            "---- Postfix log ({}) ----\n{}",
            self.maillog_path().display(),
            std::fs::read_to_string(self.maillog_path()).unwrap_or_default()
        )
    }

    /// What waits in the queue (`postqueue -j`).
    pub fn queue(&self) -> Vec<Queued> {
        let out = self.tool("postqueue", &["-j"]);
        assert!(
            out.status.success(),
            "postqueue -j: {}",
            self.tool_error(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("postqueue -j printed {line:?}: {e}"));
                let text = |v: &serde_json::Value, key: &str| {
                    v[key].as_str().unwrap_or_default().to_string()
                };
                Queued {
                    queue_name: text(&v, "queue_name"),
                    queue_id: text(&v, "queue_id"),
                    recipients: v["recipients"]
                        .as_array()
                        .map(|rs| {
                            rs.iter()
                                .map(|r| (text(r, "address"), text(r, "delay_reason")))
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The queue as `postqueue -p` shows it (for messages).
    pub fn queue_listing(&self) -> String {
        String::from_utf8_lossy(&self.tool("postqueue", &["-p"]).stdout).into_owned()
    }

    /// Tries every deferred message now (`postqueue -f`).
    pub fn flush(&self) {
        let out = self.tool("postqueue", &["-f"]);
        assert!(
            out.status.success(),
            "postqueue -f: {}",
            self.tool_error(&out)
        );
    }

    /// Waits until nothing is left in the queue: everything was delivered.
    /// With retries a second apart, qmgr can find a deferred message still locked by the
    /// delivery agent that just tried it ("skipped, still being delivered") and then leaves it
    /// alone for 60 s: waiting flushes the queue every 2 s, as an impatient operator would.
    pub fn wait_empty(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut flushed = Instant::now();
        while !self.queue().is_empty() {
            assert!(
                Instant::now() < deadline,
                "Postfix's queue is not empty after {timeout:?}:\n{}\n{}",
                self.queue_listing(),
                self.maillog()
            );
            if flushed.elapsed() > Duration::from_secs(2) {
                self.flush();
                flushed = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many delivery attempts Postfix logged as deferred so far.
    pub fn deferrals(&self) -> usize {
        std::fs::read_to_string(self.maillog_path())
            .unwrap_or_default()
            .matches("status=deferred")
            .count()
    }

    /// Sends one message to smtpd and returns its final reply (250 when Postfix took it).
    pub fn send(&self, from: &str, to: &[&str], message: &[u8]) -> String {
        let tcp = TcpStream::connect(("127.0.0.1", self.smtp_port)).expect("connect to smtpd");
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut smtp = Smtp {
            reader: BufReader::new(tcp.try_clone().unwrap()),
            writer: tcp,
        };
        smtp.expect(None, "220");
        smtp.expect(Some("EHLO client.test.example"), "250");
        smtp.expect(Some(&format!("MAIL FROM:<{from}>")), "250");
        for rcpt in to {
            smtp.expect(Some(&format!("RCPT TO:<{rcpt}>")), "250");
        }
        smtp.expect(Some("DATA"), "354");
        let mut data = Vec::with_capacity(message.len() + 64);
        for line in message.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        if !data.ends_with(b"\r\n") {
            data.extend_from_slice(b"\r\n");
        }
        data.extend_from_slice(b".\r\n");
        smtp.writer.write_all(&data).unwrap();
        let reply = smtp.reply();
        let _ = smtp.writer.write_all(b"QUIT\r\n");
        reply
    }

    /// The master's pid, while it runs.
    fn master_pid(&self) -> Option<String> {
        let pid = std::fs::read_to_string(self.dir.join("queue/pid/master.pid")).ok()?;
        let pid = pid.trim().to_string();
        // A master that exited may linger as a zombie nobody reaps: that is gone too.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit(')').next()?.split_whitespace().next()?;
        (state != "Z").then_some(pid)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if self.running {
            let pid = self.master_pid();
            let _ = self.tool("postfix", &["stop"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.master_pid().is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if let (Some(pid), Some(_)) = (pid, self.master_pid()) {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.maillog());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    /// The whole of one reply.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("smtpd's reply");
            assert!(!line.is_empty(), "smtpd closed the connection: {all}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all.trim_end().to_string();
            }
        }
    }

    fn expect(&mut self, command: Option<&str>, code: &str) {
        if let Some(command) = command {
            self.writer
                .write_all(format!("{command}\r\n").as_bytes())
                .unwrap();
        }
        let reply = self.reply();
        assert!(
            reply.starts_with(code),
            "smtpd answered {command:?} with {reply:?}"
        );
    }
}

/// `text` with each `(from, to)` replaced; each `from` must occur.
fn replace_all(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (from, to) in pairs {
        assert!(text.contains(from), "{from:?} is not in {text:?}");
        text = text.replace(from, to);
    }
    text
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a command");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
