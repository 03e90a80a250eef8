//! SMTP client on lettre's low-level `SmtpConnection`: one connection per server and batch,
//! every recipient's answer kept (one refused recipient does not stop the others), timeouts on
//! every step. It knows nothing of PostgreSQL.

use std::net::ToSocketAddrs;
use std::sync::mpsc;
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Identity, SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    None,
    StartTls,
    Ssl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Login,
    Certificate,
    Xoauth2,
}

/// How to reach and log in to one server (the columns of `outgoing_server`).
#[derive(Clone)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub encryption: Encryption,
    pub auth: Auth,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub verify_tls: bool,
    pub ca_cert: Option<String>,
    pub timeout: Duration,
}

/// Which step failed: it tells the administrator what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Tls,
    Auth,
    Sender,
    Recipient,
    Message,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpError {
    pub stage: Stage,
    /// 4xx, timeouts and network failures: worth trying again later.
    pub transient: bool,
    /// The reply code when the server answered.
    pub code: Option<u16>,
    /// In words, with the server's reply text.
    pub message: String,
}

impl std::fmt::Display for SmtpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl SmtpError {
    fn new(stage: Stage, e: &lettre::transport::smtp::Error, what: &str) -> SmtpError {
        let code = e.status().map(u16::from);
        // A connection, TLS or login failure is the server's (or its settings'), not the mail's:
        // the mail waits and is tried again. After that, only a 5xx answer is final.
        let transient = match stage {
            Stage::Connect | Stage::Tls | Stage::Auth => true,
            Stage::Sender | Stage::Recipient | Stage::Message => !e.is_permanent(),
        };
        SmtpError {
            stage,
            transient,
            code,
            message: format!("{what}: {}", describe(e)),
        }
    }

    fn local(stage: Stage, message: String) -> SmtpError {
        SmtpError {
            stage,
            transient: true,
            code: None,
            message,
        }
    }
}

/// The server's own words for a reply error ("550 5.1.1 <x>: user unknown"), else lettre's
/// text with its chain of causes (OpenSSL's reason is in the source).
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let text = e.to_string();
    if let Some(code) = e.status()
        && let Some(at) = text.find("): ")
    {
        return crate::net::printable(format!("{} {}", u16::from(code), &text[at + 3..]));
    }
    let mut text = crate::net::with_causes(text, e);
    if is_timeout(e) && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    crate::net::printable(text)
}

/// lettre reports a socket timeout as a plain network error (EAGAIN on Linux).
fn is_timeout(e: &lettre::transport::smtp::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        source = cause.source();
    }
    e.is_timeout()
}

/// One recipient's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientResult {
    Accepted,
    Refused(SmtpError),
}

/// The outcome of one message on an open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub recipients: Vec<(String, RecipientResult)>,
    /// The answer to the message itself (after DATA); `None` when no recipient was accepted.
    pub data: Option<Result<String, SmtpError>>,
}

pub struct Client {
    conn: SmtpConnection,
    pub summary: String,
}

fn tls_parameters(config: &ServerConfig) -> Result<TlsParameters, SmtpError> {
    let tls_err = |what: &str, e: lettre::transport::smtp::Error| {
        SmtpError::local(Stage::Tls, format!("{what}: {}", describe(&e)))
    };
    let mut builder = TlsParameters::builder(config.host.clone());
    if let Some(ca) = &config.ca_cert {
        let cert =
            Certificate::from_pem(ca.as_bytes()).map_err(|e| tls_err("unreadable ca_cert", e))?;
        builder = builder.add_root_certificate(cert);
    }
    if !config.verify_tls {
        builder = builder
            .dangerous_accept_invalid_certs(true)
            .dangerous_accept_invalid_hostnames(true);
    }
    if config.auth == Auth::Certificate {
        let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) else {
            return Err(SmtpError::local(
                Stage::Auth,
                "certificate authentication needs client_cert and client_key".into(),
            ));
        };
        let identity = Identity::from_pem(cert.as_bytes(), key.as_bytes())
            .map_err(|e| tls_err("unreadable client_cert or client_key", e))?;
        builder = builder.identify_with(identity);
    }
    builder.build().map_err(|e| tls_err("TLS set-up failed", e))
}

impl Client {
    /// Connects, says EHLO, secures the connection and logs in, each step bounded by the
    /// server's timeout.
    pub fn connect(config: &ServerConfig) -> Result<Client, SmtpError> {
        let hello = ClientId::default();
        let address = (config.host.as_str(), config.port)
            .to_socket_addrs()
            .map_err(|e| SmtpError {
                stage: Stage::Connect,
                transient: true,
                code: None,
                message: format!("unknown host {}: {e}", config.host),
            })?
            .next()
            .ok_or_else(|| {
                SmtpError::local(Stage::Connect, format!("unknown host {}", config.host))
            })?;
        let tls = match config.encryption {
            Encryption::None => None,
            _ => Some(tls_parameters(config)?),
        };
        let where_ = format!("{}:{}", config.host, config.port);
        let mut conn = match config.encryption {
            // lettre performs an implicit-TLS handshake before it sets the socket timeouts:
            // run it on a helper thread so a server that never answers costs one timeout.
            Encryption::Ssl => {
                let (tx, rx) = mpsc::channel();
                let (tls, hello, timeout) = (tls.clone(), hello.clone(), config.timeout);
                std::thread::spawn(move || {
                    let _ = tx.send(SmtpConnection::connect(
                        address,
                        Some(timeout),
                        &hello,
                        tls.as_ref(),
                        None,
                    ));
                });
                match rx.recv_timeout(config.timeout + Duration::from_secs(1)) {
                    Ok(result) => result.map_err(|e| connect_error(&e, &where_, true))?,
                    Err(_) => {
                        return Err(SmtpError {
                            stage: Stage::Tls,
                            transient: true,
                            code: None,
                            message: format!(
                                "TLS handshake with {where_} timed out after {:?}",
                                config.timeout
                            ),
                        });
                    }
                }
            }
            _ => SmtpConnection::connect(address, Some(config.timeout), &hello, None, None)
                .map_err(|e| connect_error(&e, &where_, false))?,
        };
        if let (Encryption::StartTls, Some(tls)) = (config.encryption, &tls) {
            if !conn.can_starttls() {
                return Err(SmtpError::local(
                    Stage::Tls,
                    format!(
                        "{where_} does not offer STARTTLS; use encryption 'ssl' or 'none' for this server"
                    ),
                ));
            }
            conn.starttls(tls, &hello).map_err(|e| {
                SmtpError::new(Stage::Tls, &e, &format!("STARTTLS with {where_} failed"))
            })?;
        }
        match config.auth {
            Auth::None | Auth::Certificate => {}
            Auth::Login | Auth::Xoauth2 => {
                let credentials = Credentials::new(
                    config.username.clone().unwrap_or_default(),
                    config.password.clone().unwrap_or_default(),
                );
                let mechanisms: &[Mechanism] = match config.auth {
                    Auth::Xoauth2 => &[Mechanism::Xoauth2],
                    _ => &[Mechanism::Plain, Mechanism::Login],
                };
                conn.auth(mechanisms, &credentials).map_err(|e| {
                    let mut err = SmtpError::new(
                        Stage::Auth,
                        &e,
                        &format!("authentication on {where_} failed"),
                    );
                    // Wrong credentials do not fix themselves; a 4xx here is a server hiccup.
                    err.transient = e.is_transient();
                    err
                })?;
            }
        }
        let summary = format!(
            "{where_}{}{}",
            if conn.is_encrypted() {
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
        );
        Ok(Client { conn, summary })
    }

    fn mail_from(&mut self, from: Option<&Address>, eight_bit: bool) -> Result<(), SmtpError> {
        let mut params = vec![];
        if eight_bit
            && self
                .conn
                .server_info()
                .supports_feature(Extension::EightBitMime)
        {
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        self.conn
            .command(Mail::new(from.cloned(), params))
            .map(|_| ())
            .map_err(|e| SmtpError::new(Stage::Sender, &e, "sender refused"))
    }

    /// Sends one message to each of `recipients`; `from = None` is the null sender `<>`.
    /// An `Err` means the connection or the sender failed: nobody received the message.
    pub fn send(
        &mut self,
        from: Option<&Address>,
        recipients: &[Address],
        message: &[u8],
    ) -> Result<Delivery, SmtpError> {
        self.mail_from(from, !message.is_ascii())?;
        let mut results = Vec::with_capacity(recipients.len());
        let mut accepted = 0;
        for rcpt in recipients {
            let result = match self.conn.command(Rcpt::new(rcpt.clone(), vec![])) {
                Ok(_) => {
                    accepted += 1;
                    RecipientResult::Accepted
                }
                Err(e) if e.is_transient() || e.is_permanent() => RecipientResult::Refused(
                    SmtpError::new(Stage::Recipient, &e, &format!("recipient {rcpt} refused")),
                ),
                // No answer at all: the connection is gone.
                Err(e) => return Err(SmtpError::new(Stage::Recipient, &e, "connection lost")),
            };
            results.push((rcpt.to_string(), result));
        }
        if accepted == 0 {
            let _ = self.conn.command(Rset);
            return Ok(Delivery {
                recipients: results,
                data: None,
            });
        }
        let data = self
            .conn
            .command(Data)
            .and_then(|_| match std::str::from_utf8(message) {
                // One write for the whole message and its terminator: lettre's `message()`
                // writes the final ".\r\n" separately, and Nagle's algorithm then waits for a
                // delayed ACK (40 ms) on every mail.
                Ok(text) => self.conn.command(DotStuffed(text)),
                Err(_) => self.conn.message(message),
            })
            .map(|r| r.message().collect::<Vec<_>>().join(" "))
            .map_err(|e| SmtpError::new(Stage::Message, &e, "message refused"));
        if let Err(e) = &data
            && e.code.is_none()
        {
            return Err(e.clone());
        }
        Ok(Delivery {
            recipients: results,
            data: Some(data),
        })
    }

    /// "Test Connection": MAIL FROM and RCPT TO, then RSET before any message is sent.
    pub fn probe(&mut self, from: &Address, rcpt: &Address) -> Result<(), SmtpError> {
        self.mail_from(Some(from), false)?;
        let result = self
            .conn
            .command(Rcpt::new(rcpt.clone(), vec![]))
            .map(|_| ())
            .map_err(|e| {
                SmtpError::new(Stage::Recipient, &e, &format!("recipient {rcpt} refused"))
            });
        let _ = self.conn.command(Rset);
        result
    }

    pub fn is_broken(&self) -> bool {
        self.conn.has_broken()
    }

    pub fn quit(mut self) {
        let _ = self.conn.quit();
    }
}

/// A message as it travels after DATA (RFC 5321 §4.5.2): CRLF line ends, a leading dot
/// doubled, and the terminating ".".
struct DotStuffed<'a>(&'a str);

impl std::fmt::Display for DotStuffed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0;
        while !text.is_empty() {
            let (line, rest) = match text.find('\n') {
                Some(i) => (&text[..i], &text[i + 1..]),
                None => (text, ""),
            };
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with('.') {
                f.write_str(".")?;
            }
            f.write_str(line)?;
            f.write_str("\r\n")?;
            text = rest;
        }
        f.write_str(".\r\n")
    }
}

fn connect_error(e: &lettre::transport::smtp::Error, where_: &str, tls: bool) -> SmtpError {
    let stage = if tls && e.is_tls() {
        Stage::Tls
    } else {
        Stage::Connect
    };
    let what = if stage == Stage::Tls {
        format!(
            "TLS handshake with {where_} failed (wrong encryption setting, or an untrusted certificate: set ca_cert)"
        )
    } else if is_timeout(e) {
        format!("{where_} did not answer in time")
    } else {
        format!("cannot connect to {where_}")
    };
    SmtpError::new(stage, e, &what)
}

#[cfg(test)]
mod tests {
    use super::DotStuffed;

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            DotStuffed("a\r\n.b\r\n..c\r\n").to_string(),
            "a\r\n..b\r\n...c\r\n.\r\n"
        );
        assert_eq!(DotStuffed("no end\n.").to_string(), "no end\r\n..\r\n.\r\n");
        assert_eq!(DotStuffed("").to_string(), ".\r\n");
    }
}
