//! A real Dovecot (Debian's dovecot-imapd and dovecot-pop3d) on 127.0.0.1: IMAP and POP3,
//! each plain (with STARTTLS/STLS) and with implicit TLS, a self-signed certificate, one user
//! `mg` with password `secret`, maildir storage in a temporary directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::smtp::SelfSigned;
use crate::{free_port, temp_dir, wait_for};

pub const USER: &str = "mg";
pub const PASSWORD: &str = "secret";
/// The OAuth2 access token Dovecot accepts for `USER` (XOAUTH2), checked by a token-info
/// endpoint the harness runs.
pub const TOKEN: &str = "ya29.valid-access-token";

pub struct Dovecot {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub cert: SelfSigned,
    pub imap: u16,
    pub imaps: u16,
    pub pop3: u16,
    pub pop3s: u16,
    child: Child,
    tokeninfo: Child,
    seq: std::cell::Cell<u64>,
}

impl Dovecot {
    pub fn start() -> Dovecot {
        Dovecot::start_with(None)
    }

    /// A Dovecot whose oauth2 passdb asks `introspection_url` (RFC 7662, POST) whether an
    /// access token is active and whose it is: the test OAuth2 provider (`oauth::Provider`).
    pub fn with_introspection(introspection_url: &str) -> Dovecot {
        Dovecot::start_with(Some(introspection_url))
    }

    fn start_with(introspection_url: Option<&str>) -> Dovecot {
        let dir = temp_dir("mgdovecot");
        // mktemp makes it 0700; Dovecot's mail processes (user dovecot) must get through.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let cert = SelfSigned::new();
        let (imap, imaps, pop3, pop3s) = (free_port(), free_port(), free_port(), free_port());
        let tokeninfo_port = free_port();
        let tokeninfo = Command::new("/usr/bin/python3")
            .arg(crate::smtp::servers_dir().join("oauth2_tokeninfo.py"))
            .args([&tokeninfo_port.to_string(), USER, TOKEN])
            .stdout(Stdio::null())
            .spawn()
            .expect("python3");
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(
            dir.join("users"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"),
        )
        .unwrap();
        let d = dir.display();
        let oauth2 = match introspection_url {
            None => format!(
                "tokeninfo_url = http://127.0.0.1:{tokeninfo_port}/tokeninfo?access_token=\n\
                 username_attribute = email\n"
            ),
            Some(url) => format!(
                "introspection_url = {url}\nintrospection_mode = post\nforce_introspection = yes\n\
                 username_attribute = username\nactive_attribute = active\nactive_value = true\n"
            ),
        };
        std::fs::write(dir.join("oauth2.conf.ext"), oauth2).unwrap();
        let config = dir.join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                r#"protocols = imap pop3
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
instance_name = mgtest-{imap}
log_path = {d}/dovecot.log
auth_mechanisms = plain login xoauth2 oauthbearer
disable_plaintext_auth = no
auth_failure_delay = 0
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
mail_location = maildir:{d}/mail/%u
mail_fsync = never
first_valid_uid = 1
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/users
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {d}/oauth2.conf.ext
}}
userdb {{
  driver = static
  # doveadm looks users up without a password: the oauth2 passdb cannot answer that.
  args = uid=dovecot gid=dovecot home={d}/mail/%u allow_all_users=yes
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
protocol pop3 {{
  pop3_uidl_format = %08Xu%08Xv
}}
"#,
                cert = cert.cert.display(),
                key = cert.key.display(),
            ),
        )
        .unwrap();
        let child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dovecot (apt-get install dovecot-imapd dovecot-pop3d)");
        let dovecot = Dovecot {
            dir,
            config,
            cert,
            imap,
            imaps,
            pop3,
            pop3s,
            child,
            tokeninfo,
            seq: std::cell::Cell::new(0),
        };
        // The mail processes run as `dovecot`; the certificate is read by the master (root).
        dovecot.chown_mail();
        for port in [imap, imaps, pop3, pop3s] {
            wait_for("dovecot to listen", Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            });
        }
        dovecot
    }

    pub fn maildir(&self) -> PathBuf {
        self.dir.join("mail").join(USER)
    }

    /// Delivers a message into INBOX, unseen, as an MTA would (a file in the maildir's `new/`).
    pub fn deliver(&self, raw: &[u8]) {
        self.deliver_many([raw.to_vec()])
    }

    /// Delivers messages into INBOX. The maildir belongs to `dovecot` before a message shows
    /// up in it (Dovecot must be able to move it to `cur/`), and the files after.
    pub fn deliver_many(&self, raws: impl IntoIterator<Item = Vec<u8>>) {
        let base = self.maildir();
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(base.join(sub)).unwrap();
        }
        self.chown_mail();
        for raw in raws {
            let n = self.seq.get() + 1;
            self.seq.set(n);
            let name = format!("{}.M{n}P{}.mgtest", 1_700_000_000 + n, std::process::id());
            // tmp/ then a rename: Dovecot never sees half a message.
            std::fs::write(base.join("tmp").join(&name), raw).unwrap();
            std::fs::rename(base.join("tmp").join(&name), base.join("new").join(&name)).unwrap();
        }
        self.chown_mail();
    }

    fn chown_mail(&self) {
        let status = Command::new("chown")
            .args(["-R", "dovecot:dovecot"])
            .arg(self.dir.join("mail"))
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn doveadm(&self, args: &[&str]) -> String {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("doveadm");
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds this Dovecot's INBOX to `db` as incoming server `name` (IMAP without TLS on the
    /// loopback), confirmed: the fetcher takes it at once.
    pub fn add_confirmed(&self, db: &mut crate::Client, name: &str, protocol: &str) {
        let port = if protocol == "pop3" {
            self.pop3
        } else {
            self.imap
        };
        db.execute(
            "INSERT INTO mail_gateway.incoming_server (name, protocol, host, port, encryption, username, password, state)
             VALUES ($1, $2, '127.0.0.1', $3, 'none', $4, $5, 'confirmed')",
            &[&name, &protocol, &(port as i32), &USER, &PASSWORD],
        )
        .unwrap_or_else(|e| panic!("adding {name}: {}", crate::error_text(&e)));
    }

    /// How many messages INBOX holds, and how many of them are \Seen.
    pub fn counts(&self) -> (usize, usize) {
        let all = self.doveadm(&["search", "-u", USER, "mailbox", "INBOX", "ALL"]);
        let seen = self.doveadm(&["search", "-u", USER, "mailbox", "INBOX", "SEEN"]);
        (all.lines().count(), seen.lines().count())
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("dovecot")
            .arg("-c")
            .arg(&self.config)
            .arg("stop")
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.tokeninfo.kill();
        let _ = self.tokeninfo.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
