//! One SMTP connection: connect (plain, STARTTLS or implicit TLS over `net`), EHLO and what
//! the server offers, AUTH, then commands written in groups and their replies read in order.
//! Every read is bounded by the server's timeout (and, for a message, the time to send it).

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::reply::{Replies, Reply};
use super::{Auth, ServerConfig, SmtpError, Stage};
use crate::net::{self, Deadline, Encryption, Limits, NetError, Stream, Tls};
use crate::sasl;

/// What the server offered in its EHLO answer. A server that answers only HELO offers nothing,
/// and is spoken to one command at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub pipelining: bool,
    pub chunking: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub size: bool,
    pub auth: Vec<String>,
}

impl Extensions {
    fn parse(ehlo: &Reply) -> Extensions {
        let mut offered = Extensions::default();
        // The first line is the server's name; each further line is one extension.
        for line in ehlo.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => offered.pipelining = true,
                "CHUNKING" => offered.chunking = true,
                "8BITMIME" => offered.eight_bit_mime = true,
                "SMTPUTF8" => offered.smtputf8 = true,
                "STARTTLS" => offered.starttls = true,
                "SIZE" => offered.size = true,
                "AUTH" => offered.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        offered
    }
}

pub struct Session {
    stream: Stream,
    deadline: Deadline,
    replies: Replies,
    out: Vec<u8>,
    timeout: Duration,
    pub offered: Extensions,
    /// "host:port, encrypted, logged in as …", for "Test Connection".
    pub summary: String,
    /// A read or write failed, or the server said 421: nothing more goes over this connection.
    pub broken: bool,
    /// The last transaction did not finish: RSET before the next MAIL.
    pub(super) needs_reset: bool,
    /// The mail whose envelope was written ahead of its content (`send`'s `next`).
    pub(super) ahead: Option<i64>,
}

/// How long a reply may take after `bytes` were written: the timeout, plus the transfer at a
/// slow 64 KiB/s (a big attachment to a distant server).
fn allowance(timeout: Duration, bytes: usize) -> Duration {
    timeout + Duration::from_secs((bytes / (64 * 1024)) as u64)
}

impl Session {
    /// Connects, reads the greeting, says EHLO, secures the connection and logs in.
    pub fn open(config: &ServerConfig) -> Result<Session, SmtpError> {
        let place = format!("{}:{}", config.host, config.port);
        let (tcp, deadline) = net::connect(&config.host, config.port, Limits::new(config.timeout))
            .map_err(|e| match e {
                NetError::Connect(m) | NetError::Tls(m) => SmtpError::local(Stage::Connect, m),
            })?;
        let tls = Tls {
            host: &config.host,
            verify: config.verify_tls,
            ca_cert: config.ca_cert.as_deref(),
        };
        let stream = if config.encryption == Encryption::Ssl {
            net::secure_as(tcp, &tls, identity(config)?).map_err(|e| {
                tls_error(&format!(
                    "TLS handshake with {place} failed (wrong encryption setting, or an untrusted certificate: set ca_cert)"
                ), e)
            })?
        } else {
            Stream::Plain(tcp)
        };
        let mut session = Session {
            stream,
            deadline,
            replies: Replies::default(),
            out: Vec::with_capacity(8 * 1024),
            timeout: config.timeout,
            offered: Extensions::default(),
            summary: String::new(),
            broken: false,
            needs_reset: false,
            ahead: None,
        };
        let greeting = session.read(Stage::Connect, &place)?;
        if !greeting.is_positive() {
            return Err(SmtpError::reply(
                Stage::Connect,
                &greeting,
                &format!("{place} refused the connection"),
            ));
        }
        session.hello(&place)?;
        if config.encryption == Encryption::StartTls {
            session = session.starttls(config, &tls, &place)?;
        }
        session.login(config, &place)?;
        session.summary = session.describe(config, &place);
        Ok(session)
    }

    /// "host:port, encrypted, logged in as user", for the administrator.
    fn describe(&self, config: &ServerConfig, place: &str) -> String {
        format!(
            "{place}{}{}",
            if self.stream.is_tls() {
                ", encrypted"
            } else {
                ", not encrypted"
            },
            match config.auth {
                Auth::None => String::new(),
                Auth::Certificate => ", client certificate".into(),
                _ => format!(
                    ", logged in as {}",
                    config.username.as_deref().unwrap_or_default()
                ),
            }
        )
    }

    /// EHLO, or HELO from a server that does not know EHLO (it then offers nothing).
    fn hello(&mut self, place: &str) -> Result<(), SmtpError> {
        let name = lettre::transport::smtp::extension::ClientId::default().to_string();
        let ehlo = self.command(Stage::Connect, &format!("EHLO {name}"), place)?;
        if ehlo.is_positive() {
            self.offered = Extensions::parse(&ehlo);
            return Ok(());
        }
        let helo = self.command(Stage::Connect, &format!("HELO {name}"), place)?;
        if !helo.is_positive() {
            return Err(SmtpError::reply(
                Stage::Connect,
                &helo,
                &format!("{place} refused HELO"),
            ));
        }
        self.offered = Extensions::default();
        Ok(())
    }

    fn starttls(
        mut self,
        config: &ServerConfig,
        tls: &Tls<'_>,
        place: &str,
    ) -> Result<Session, SmtpError> {
        if !self.offered.starttls {
            return Err(SmtpError::local(
                Stage::Tls,
                format!(
                    "{place} does not offer STARTTLS; use encryption 'ssl' or 'none' for this server"
                ),
            ));
        }
        let what = format!("STARTTLS with {place} failed");
        let reply = self.command(Stage::Tls, "STARTTLS", place)?;
        if reply.code != 220 {
            return Err(SmtpError::reply(Stage::Tls, &reply, &what));
        }
        // Anything the server sent after its 220 would be read as if it came over TLS.
        if self.replies.has_unread() {
            return Err(SmtpError::local(
                Stage::Tls,
                format!("{what}: the server sent data before the TLS handshake"),
            ));
        }
        let Stream::Plain(tcp) = self.stream else {
            return Err(SmtpError::local(
                Stage::Tls,
                format!("{what}: already encrypted"),
            ));
        };
        self.stream =
            net::secure_as(tcp, tls, identity(config)?).map_err(|e| tls_error(&what, e))?;
        self.hello(place)?;
        Ok(self)
    }

    fn login(&mut self, config: &ServerConfig, place: &str) -> Result<(), SmtpError> {
        let user = config.username.as_deref().unwrap_or_default();
        let secret = config.password.as_deref().unwrap_or_default();
        let what = format!("authentication on {place} failed");
        let offers = |m: &str| self.offered.auth.iter().any(|a| a == m);
        let mut reply = match config.auth {
            Auth::None | Auth::Certificate => return Ok(()),
            Auth::Xoauth2 => {
                let token = sasl::xoauth2_base64(user, secret);
                self.command(Stage::Auth, &format!("AUTH XOAUTH2 {token}"), place)?
            }
            Auth::Login if offers("PLAIN") || !offers("LOGIN") => {
                let token = sasl::plain_base64(user, secret);
                self.command(Stage::Auth, &format!("AUTH PLAIN {token}"), place)?
            }
            Auth::Login => {
                let mut reply = self.command(Stage::Auth, "AUTH LOGIN", place)?;
                for answer in [user, secret] {
                    if reply.code != 334 {
                        break;
                    }
                    reply = self.command(Stage::Auth, &B64.encode(answer), place)?;
                }
                reply
            }
        };
        if reply.code == 334 {
            // XOAUTH2 sends its error as a challenge; an empty answer gets the final reply.
            reply = self.command(Stage::Auth, "", place)?;
        }
        if reply.code == 235 {
            return Ok(());
        }
        // Transient, even for a 5xx: wrong credentials are the server's settings, not the
        // mail's; the mail waits while the administrator fixes them (docs/DECISIONS.md,
        // "Server problems are not the mail's").
        Err(SmtpError::reply(Stage::Auth, &reply, &what))
    }

    /// Adds a command to the group being written.
    pub(super) fn queue(&mut self, command: &str) {
        self.out.extend_from_slice(command.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// The group being written, for message content.
    pub(super) fn queue_bytes(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Writes the group in one go (one TCP segment train, no Nagle delay) and starts the
    /// deadline of its replies.
    pub(super) fn flush(&mut self, stage: Stage) -> Result<(), SmtpError> {
        self.deadline.start(allowance(self.timeout, self.out.len()));
        let result = self
            .stream
            .write_all(&self.out)
            .and_then(|_| self.stream.flush());
        self.out.clear();
        result.map_err(|e| {
            self.broken = true;
            SmtpError::local(stage, format!("connection lost: {e}"))
        })
    }

    /// Reads the next reply. A 421 closes the connection (RFC 5321 §3.8): it is returned as an
    /// error of `stage`, and the session is broken.
    pub(super) fn read(&mut self, stage: Stage, what: &str) -> Result<Reply, SmtpError> {
        match self.replies.read(&mut self.stream) {
            Ok(reply) if reply.code == 421 => {
                self.broken = true;
                Err(SmtpError::reply(stage, &reply, what))
            }
            Ok(reply) => Ok(reply),
            Err(e) => {
                self.broken = true;
                let mut text = net::printable(e.to_string());
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) && !text.contains("timed out")
                {
                    text.push_str(" (timed out)");
                }
                Err(SmtpError::local(stage, format!("{what}: {text}")))
            }
        }
    }

    /// One command, one reply (set-up and the servers without PIPELINING).
    pub(super) fn command(
        &mut self,
        stage: Stage,
        command: &str,
        what: &str,
    ) -> Result<Reply, SmtpError> {
        self.queue(command);
        self.flush(stage)?;
        self.deadline.start(self.timeout);
        self.read(stage, what)
    }

    /// Starts the deadline of replies that were written earlier (pipelined ahead).
    pub(super) fn await_replies(&mut self) {
        self.deadline.start(self.timeout);
    }

    /// Whether this kept connection can carry another mail: not broken, and the server has not
    /// closed it or said anything unasked (an idle-timeout 421). Replies to an envelope written
    /// ahead are expected, not unasked.
    pub fn is_usable(&self) -> bool {
        !self.broken
            && (self.ahead.is_some()
                || (!self.replies.has_unread() && !self.stream.has_unsolicited_input()))
    }

    /// QUIT, politely; errors do not matter any more. With an envelope written ahead the
    /// server waits for content: closing without a word ends that transaction undelivered.
    pub fn quit(mut self) {
        if !self.broken && self.ahead.is_none() {
            let _ = self.command(Stage::Connect, "QUIT", "QUIT");
        }
    }
}

fn identity(config: &ServerConfig) -> Result<Option<native_tls::Identity>, SmtpError> {
    if config.auth != Auth::Certificate {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) else {
        return Err(SmtpError::local(
            Stage::Auth,
            "certificate authentication needs client_cert and client_key".into(),
        ));
    };
    native_tls::Identity::from_pkcs8(cert.as_bytes(), key.as_bytes())
        .map(Some)
        .map_err(|e| {
            SmtpError::local(
                Stage::Tls,
                format!("unreadable client_cert or client_key (PEM, PKCS#8 key): {e}"),
            )
        })
}

fn tls_error(what: &str, e: NetError) -> SmtpError {
    match e {
        NetError::Tls(m) | NetError::Connect(m) => {
            SmtpError::local(Stage::Tls, format!("{what}: {m}"))
        }
    }
}
