//! A real SMTP server for the tests: aiosmtpd (Debian's python3-aiosmtpd) running
//! `tests/servers/smtp_server.py`, which records what it receives.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::{free_port, wait_for};

/// Debian's interpreter, where the apt-installed test peers live.
pub const PYTHON: &str = "/usr/bin/python3";

pub fn servers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("servers")
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written to a temporary directory.
pub struct SelfSigned {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for SelfSigned {
    fn default() -> Self {
        Self::new()
    }
}

impl SelfSigned {
    pub fn new() -> SelfSigned {
        SelfSigned::with_cn("localhost")
    }

    /// A certificate with this common name (a client certificate, say).
    pub fn with_cn(cn: &str) -> SelfSigned {
        let dir = crate::temp_dir("mgcert");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            ])
            .arg(format!("/CN={cn}"))
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl req failed");
        SelfSigned { dir, cert, key }
    }

    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.cert).unwrap()
    }

    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(&self.key).unwrap()
    }
}

impl Drop for SelfSigned {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Default, Clone)]
pub struct SmtpOptions<'a> {
    /// `starttls` or `ssl`, with this certificate.
    pub tls: Option<(&'a str, &'a SelfSigned)>,
    /// Required login, `user:password`.
    pub auth: Option<&'a str>,
    /// Also accept XOAUTH2 with `user:token`.
    pub xoauth2: Option<&'a str>,
    /// With `xoauth2`: accept any token this introspection URL calls active (the test OAuth2
    /// provider, `oauth::Provider`) instead of the one given.
    pub xoauth2_introspect: Option<&'a str>,
    /// Require a client certificate issued by this one.
    pub client_ca: Option<&'a SelfSigned>,
    /// Accept connections and never answer.
    pub hang: bool,
    /// Answer 4xx at random with this probability (and drop or delay some sessions).
    pub flaky: f64,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Advertise CHUNKING and take messages with BDAT.
    pub chunking: bool,
    /// Refuse EHLO: the client falls back to HELO, with no extension at all.
    pub no_ehlo: bool,
    /// Seconds to wait before answering each message.
    pub delay: f64,
    /// `(n, seconds)`: after `n` messages, 421 to every MAIL FROM for `seconds`.
    pub rate_limit: Option<(u32, f64)>,
    /// With `auth`: refuse every login with this reply (a provider's own words).
    pub auth_reply: Option<&'a str>,
    /// After this many messages, Google's "550 5.4.5 Daily user sending limit exceeded" to
    /// every MAIL FROM.
    pub quota_after: Option<u32>,
}

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: Vec<u8>,
    pub tls: bool,
    pub auth: Option<String>,
    /// The common name of the client certificate, when one was presented.
    pub peer: Option<String>,
    /// The client's port: one value per connection.
    pub session: u64,
    /// Connections open on the server when it took this message.
    pub open_sessions: u64,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The value of the first header `name` (unfolded), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .replace("\r\n ", " ")
            .replace("\r\n\t", " ");
        let prefix = format!("{}:", name.to_ascii_lowercase());
        head.split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
    }
}

pub struct SmtpServer {
    pub port: u16,
    out: PathBuf,
    child: Child,
}

impl SmtpServer {
    pub fn start(options: SmtpOptions<'_>) -> SmtpServer {
        let port = free_port();
        let out = crate::temp_dir("mgsmtp").join("received.jsonl");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(servers_dir().join("smtp_server.py"))
            .args(["--port", &port.to_string()])
            .arg("--out")
            .arg(&out);
        if let Some((mode, cert)) = options.tls {
            cmd.args(["--tls", mode])
                .arg("--cert")
                .arg(&cert.cert)
                .arg("--key")
                .arg(&cert.key);
        }
        if let Some(auth) = options.auth {
            cmd.args(["--auth", auth]);
        }
        if let Some(reply) = options.auth_reply {
            cmd.args(["--auth-reply", reply]);
        }
        if let Some(n) = options.quota_after {
            cmd.arg("--quota-after").arg(n.to_string());
        }
        if let Some(x) = options.xoauth2 {
            cmd.args(["--xoauth2", x]);
        }
        if let Some(url) = options.xoauth2_introspect {
            cmd.args(["--xoauth2-introspect", url]);
        }
        if let Some(ca) = options.client_ca {
            cmd.arg("--client-ca").arg(&ca.cert);
        }
        if options.flaky > 0.0 {
            cmd.arg("--flaky").arg(options.flaky.to_string());
        }
        if options.hang {
            cmd.arg("--hang");
        }
        for (on, flag) in [
            (options.pipelining, "--pipelining"),
            (options.chunking, "--chunking"),
            (options.no_ehlo, "--no-ehlo"),
        ] {
            if on {
                cmd.arg(flag);
            }
        }
        if options.delay > 0.0 {
            cmd.arg("--delay").arg(options.delay.to_string());
        }
        if let Some((n, seconds)) = options.rate_limit {
            cmd.arg("--rate-limit").arg(format!("{n}:{seconds}"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP test server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "READY", "SMTP test server did not start");
        SmtpServer { port, out, child }
    }

    pub fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        // Complete records only: the server may be writing the last line as we read.
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        complete
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON record");
                let text = |k: &str| v[k].as_str().map(str::to_string);
                Received {
                    mail_from: text("mail_from").unwrap_or_default(),
                    rcpt_tos: v["rcpt_tos"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|r| r.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                    data: B64
                        .decode(text("data").unwrap_or_default())
                        .expect("base64 data"),
                    tls: v["tls"].as_bool().unwrap_or(false),
                    auth: text("auth"),
                    peer: text("peer"),
                    session: v["session"].as_u64().unwrap_or_default(),
                    open_sessions: v["open_sessions"].as_u64().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Waits until at least `n` messages have arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        wait_for(
            &format!("{n} message(s) on the SMTP server"),
            timeout,
            || {
                let got = self.received();
                (got.len() >= n).then_some(got)
            },
        )
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.out.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Verifies a message's DKIM signature with dkimpy, given the DNS TXT value.
pub fn dkim_verifies(message: &[u8], txt: &str) -> bool {
    let dir = crate::temp_dir("mgdkim");
    let file = dir.join("message.eml");
    std::fs::write(&file, message).unwrap();
    let out = Command::new(PYTHON)
        .arg(servers_dir().join("dkim_verify.py"))
        .arg(&file)
        .arg(txt)
        .output()
        .expect("dkim_verify.py");
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8_lossy(&out.stdout).trim() == "PASS"
}
