//! A small POP3 client (RFC 1939, STLS of RFC 2595, XOAUTH2): no crate is usable (see
//! docs/DECISIONS.md). Messages are listed by UIDL, read with RETR, and deleted with DELE only
//! after the caller has committed them; deletions take effect at QUIT, so a dropped
//! connection deletes nothing. It knows nothing of PostgreSQL.

mod reply;

use std::io::{BufReader, Write};

pub use reply::{Reply, parse_reply, read_multiline};

use super::{FetchError, FetchStage, Fetched, Listed, Mailbox, MailboxConfig};
use crate::net::{self, Deadline, Encryption, Stream};
use crate::sasl;
use reply::{MAX_LINE, read_line};

pub struct Pop3Mailbox {
    reader: BufReader<Stream>,
    deadline: Deadline,
    config: MailboxConfig,
    count: u64,
    tls: bool,
}

fn reject_line_breaks(what: &str, value: &str) -> Result<(), FetchError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(FetchError::new(
            FetchStage::Login,
            format!("the {what} contains a line break or NUL"),
        ));
    }
    Ok(())
}

impl Pop3Mailbox {
    pub fn open(config: &MailboxConfig) -> Result<Pop3Mailbox, FetchError> {
        let (tcp, deadline) = net::connect(&config.host, config.port, config.limits)?;
        let stream = match config.encryption {
            Encryption::Ssl => net::secure(tcp, &config.tls())?,
            Encryption::None => Stream::Plain(tcp),
            Encryption::StartTls => start_tls(tcp, config)?,
        };
        let tls = stream.is_tls();
        let mut pop = Pop3Mailbox {
            reader: BufReader::with_capacity(64 * 1024, stream),
            deadline,
            config: config.clone(),
            count: 0,
            tls,
        };
        if config.encryption != Encryption::StartTls {
            let greeting = read_line(&mut pop.reader, MAX_LINE).map_err(|e| {
                let hint = if config.encryption == Encryption::None {
                    " (does this port expect TLS?)"
                } else {
                    ""
                };
                FetchError::new(FetchStage::Tls, format!("reading the greeting: {e}{hint}"))
            })?;
            pop3_greeting_ok(&greeting)?;
        }
        pop.login()?;
        let stat = pop.command("STAT", FetchStage::Mailbox)?;
        pop.count = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok(pop)
    }

    fn login(&mut self) -> Result<(), FetchError> {
        let user = self.config.username.clone();
        let password = self.config.password.clone();
        reject_line_breaks("username", &user)?;
        reject_line_breaks("password", &password)?;
        let failed = |text: String| {
            FetchError::new(
                FetchStage::Login,
                format!("login as \"{user}\" failed: {text}"),
            )
        };
        if self.config.xoauth2 {
            let token = sasl::xoauth2_base64(&user, &password);
            self.send(&format!("AUTH XOAUTH2 {token}"))?;
            match self.reply()? {
                Reply::Ok(_) => Ok(()),
                Reply::Err(text) => Err(failed(text)),
                Reply::Continue(_) => {
                    // The error report as a challenge: answer empty, then read the -ERR.
                    self.send("")?;
                    match self.reply()? {
                        Reply::Ok(_) => Ok(()),
                        Reply::Err(text) | Reply::Continue(text) => Err(failed(text)),
                    }
                }
            }
        } else {
            self.command(&format!("USER {user}"), FetchStage::Login)
                .map_err(|e| failed(e.message))?;
            self.command(&format!("PASS {password}"), FetchStage::Login)
                .map_err(|e| failed(e.message))?;
            Ok(())
        }
    }

    fn send(&mut self, line: &str) -> Result<(), FetchError> {
        self.deadline.start(self.config.limits.timeout);
        let stream = self.reader.get_mut();
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .and_then(|_| stream.flush())
            .map_err(|e| FetchError::new(FetchStage::Fetch, format!("writing to the server: {e}")))
    }

    fn reply(&mut self) -> Result<Reply, FetchError> {
        let line = read_line(&mut self.reader, MAX_LINE).map_err(|e| {
            FetchError::new(FetchStage::Fetch, format!("reading from the server: {e}"))
        })?;
        parse_reply(&line).ok_or_else(|| {
            FetchError::new(
                FetchStage::Fetch,
                format!(
                    "not a POP3 reply: {}",
                    String::from_utf8_lossy(&line).trim_end()
                ),
            )
        })
    }

    /// Sends a command; `+OK` gives its text, `-ERR` an error of `stage`.
    fn command(&mut self, line: &str, stage: FetchStage) -> Result<String, FetchError> {
        self.send(line)?;
        match self.reply()? {
            Reply::Ok(text) => Ok(text),
            Reply::Err(text) | Reply::Continue(text) => Err(FetchError::new(stage, text)),
        }
    }

    fn multiline(&mut self, max: u64) -> Result<Vec<u8>, FetchError> {
        read_multiline(&mut self.reader, max).map_err(|e| {
            FetchError::new(FetchStage::Fetch, format!("reading from the server: {e}"))
        })
    }

    /// `n value` lines of UIDL or LIST.
    fn listing(&mut self, command: &str) -> Result<Option<Vec<(u64, String)>>, FetchError> {
        self.send(command)?;
        if let Reply::Err(_) = self.reply()? {
            return Ok(None);
        }
        let body = self.multiline(MAX_LINE * (self.count + 1))?;
        Ok(Some(
            String::from_utf8_lossy(&body)
                .lines()
                .filter_map(|line| {
                    let (n, value) = line.trim().split_once(' ')?;
                    Some((n.parse().ok()?, value.trim().to_string()))
                })
                .collect(),
        ))
    }
}

/// A POP3 server is ready when it greets with `+OK` (RFC 1939 §4).
fn pop3_greeting_ok(line: &[u8]) -> Result<(), FetchError> {
    match parse_reply(line) {
        Some(Reply::Ok(_)) => Ok(()),
        _ => Err(FetchError::unexpected_greeting(line)),
    }
}

/// STLS (RFC 2595) on the plain connection: greeting, STLS, handshake.
fn start_tls(mut tcp: net::TimedStream, config: &MailboxConfig) -> Result<Stream, FetchError> {
    let io = |e: std::io::Error| FetchError::new(FetchStage::Connect, format!("STLS: {e}"));
    let greeting = net::read_line_unbuffered(&mut tcp, MAX_LINE as usize).map_err(io)?;
    pop3_greeting_ok(&greeting)?;
    tcp.write_all(b"STLS\r\n").map_err(io)?;
    let reply = net::read_line_unbuffered(&mut tcp, MAX_LINE as usize).map_err(io)?;
    match parse_reply(&reply) {
        Some(Reply::Ok(_)) => Ok(net::secure(tcp, &config.tls())?),
        _ => Err(FetchError::new(
            FetchStage::Tls,
            format!(
                "the server refused STLS: {}",
                String::from_utf8_lossy(&reply).trim_end()
            ),
        )),
    }
}

impl Mailbox for Pop3Mailbox {
    fn describe(&self) -> String {
        self.config.describe(
            self.tls,
            &format!("the maildrop holds {} message(s)", self.count),
        )
    }

    fn list(&mut self, _cursor: Option<&str>) -> Result<Vec<Listed>, FetchError> {
        let sizes = self.listing("LIST")?.ok_or_else(|| {
            FetchError::new(FetchStage::Fetch, "the server refused LIST".to_string())
        })?;
        let uids: std::collections::HashMap<u64, String> = self
            .listing("UIDL")?
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(sizes
            .into_iter()
            .map(|(n, size)| Listed {
                key: uids.get(&n).cloned(),
                size: size.parse().unwrap_or(0),
                handle: n,
            })
            .collect())
    }

    fn cursor(&self) -> Option<String> {
        None
    }

    fn fetch(
        &mut self,
        batch: &[Listed],
        max_size: u64,
        store: &mut dyn FnMut(Vec<Fetched<'_>>),
    ) -> Result<(), FetchError> {
        let mut fetched = Vec::with_capacity(batch.len());
        for listed in batch {
            let header_only = listed.size > max_size;
            let command = if header_only {
                format!("TOP {} 0", listed.handle)
            } else {
                format!("RETR {}", listed.handle)
            };
            self.send(&command)?;
            self.deadline.start(self.config.allowance(listed.size));
            match self.reply()? {
                Reply::Ok(_) => {}
                // Gone meanwhile (another client deleted it): nothing to store.
                Reply::Err(_) | Reply::Continue(_) => continue,
            }
            // LIST sizes count CRLF line ends; a little slack for servers that count LF.
            let limit = if header_only {
                1024 * 1024
            } else {
                listed.size + listed.size / 10 + 1024
            };
            fetched.push(Fetched {
                listed,
                raw: self.multiline(limit)?,
                header_only,
            });
        }
        store(fetched);
        Ok(())
    }

    fn deletes(&self) -> bool {
        true
    }

    fn done(&mut self, batch: &[Listed]) -> Result<(), FetchError> {
        for listed in batch {
            self.command(&format!("DELE {}", listed.handle), FetchStage::Fetch)?;
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<(), FetchError> {
        self.command("QUIT", FetchStage::Fetch).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_cannot_inject_commands() {
        assert!(reject_line_breaks("password", "secret\r\nDELE 1").is_err());
        assert!(reject_line_breaks("password", "fine pass").is_ok());
    }
}
