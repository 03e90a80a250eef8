//! A small POP3 client (RFC 1939, STLS of RFC 2595, XOAUTH2): no crate is usable (see
//! docs/DECISIONS.md). Messages are listed by UIDL, read with RETR, and deleted with DELE only
//! after the caller has committed them; deletions take effect at QUIT, so a dropped
//! connection deletes nothing. It knows nothing of PostgreSQL.

use std::io::{BufRead, BufReader, Read, Write};

use base64::Engine;

use crate::mailbox::{Encryption, FetchError, Fetched, Listed, Mailbox, MailboxConfig, Stage};
use crate::net::{self, Deadline, Stream};

/// Longest status or listing line accepted (RFC 1939 allows 512 octets).
const MAX_LINE: u64 = 8 * 1024;

pub struct Pop3Mailbox {
    reader: BufReader<Stream>,
    deadline: Deadline,
    config: MailboxConfig,
    count: u64,
    tls: bool,
}

/// A server's reply: `+OK text` or `-ERR text`.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Err(String),
    /// `+ challenge` during AUTH.
    Continue(String),
}

/// The server's text ends up in `last_error` and the log: kept printable (`net::printable`).
pub fn parse_reply(line: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\r', '\n']);
    let rest = |prefix: &str| net::printable(text[prefix.len()..].trim_start().to_string());
    if text.starts_with("+OK") {
        Some(Reply::Ok(rest("+OK")))
    } else if text.starts_with("-ERR") {
        Some(Reply::Err(rest("-ERR")))
    } else if text.starts_with('+') {
        Some(Reply::Continue(rest("+")))
    } else {
        None
    }
}

/// Reads one line (with its CRLF), refusing lines longer than `max`.
fn read_line(reader: &mut impl BufRead, max: u64) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    reader.take(max).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the server sent an overlong line",
        ));
    }
    Ok(line)
}

/// The body of a multi-line reply, up to the terminating `.` line, with dot-stuffing removed.
/// More than `max` bytes is an error: the server sent more than it announced.
pub fn read_multiline(reader: &mut impl BufRead, max: u64) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let left = max.saturating_sub(body.len() as u64);
        let line = read_line(reader, left.max(MAX_LINE) + 2)?;
        if line == b".\r\n" || line == b".\n" {
            return Ok(body);
        }
        let line = if line.starts_with(b"..") {
            &line[1..]
        } else {
            &line[..]
        };
        if (body.len() + line.len()) as u64 > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the server sent more than the {max} bytes it announced"),
            ));
        }
        body.extend_from_slice(line);
    }
}

fn reject_line_breaks(what: &str, value: &str) -> Result<(), FetchError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(FetchError::new(
            Stage::Login,
            format!("the {what} contains a line break or NUL"),
        ));
    }
    Ok(())
}

impl Pop3Mailbox {
    pub fn open(config: &MailboxConfig) -> Result<Pop3Mailbox, FetchError> {
        let (mut tcp, deadline) = net::connect(&config.host, config.port, config.limits)?;
        let stream = match config.encryption {
            Encryption::Ssl => net::secure(tcp, &config.tls())?,
            Encryption::None => Stream::Plain(tcp),
            Encryption::StartTls => {
                let io = |e: std::io::Error| FetchError::new(Stage::Connect, format!("STLS: {e}"));
                let greeting =
                    net::read_line_unbuffered(&mut tcp, MAX_LINE as usize).map_err(io)?;
                greeting_ok(&greeting)?;
                tcp.write_all(b"STLS\r\n").map_err(io)?;
                let reply = net::read_line_unbuffered(&mut tcp, MAX_LINE as usize).map_err(io)?;
                match parse_reply(&reply) {
                    Some(Reply::Ok(_)) => net::secure(tcp, &config.tls())?,
                    _ => {
                        return Err(FetchError::new(
                            Stage::Tls,
                            format!(
                                "the server refused STLS: {}",
                                String::from_utf8_lossy(&reply).trim_end()
                            ),
                        ));
                    }
                }
            }
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
                FetchError::new(Stage::Tls, format!("reading the greeting: {e}{hint}"))
            })?;
            greeting_ok(&greeting)?;
        }
        pop.login()?;
        let stat = pop.command("STAT", Stage::Mailbox)?;
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
            FetchError::new(Stage::Login, format!("login as \"{user}\" failed: {text}"))
        };
        if self.config.xoauth2 {
            let token = base64::engine::general_purpose::STANDARD
                .encode(crate::imap::xoauth2_token(&user, &password));
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
            self.command(&format!("USER {user}"), Stage::Login)
                .map_err(|e| failed(e.message))?;
            self.command(&format!("PASS {password}"), Stage::Login)
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
            .map_err(|e| FetchError::new(Stage::Fetch, format!("writing to the server: {e}")))
    }

    fn reply(&mut self) -> Result<Reply, FetchError> {
        let line = read_line(&mut self.reader, MAX_LINE)
            .map_err(|e| FetchError::new(Stage::Fetch, format!("reading from the server: {e}")))?;
        parse_reply(&line).ok_or_else(|| {
            FetchError::new(
                Stage::Fetch,
                format!(
                    "not a POP3 reply: {}",
                    String::from_utf8_lossy(&line).trim_end()
                ),
            )
        })
    }

    /// Sends a command; `+OK` gives its text, `-ERR` an error of `stage`.
    fn command(&mut self, line: &str, stage: Stage) -> Result<String, FetchError> {
        self.send(line)?;
        match self.reply()? {
            Reply::Ok(text) => Ok(text),
            Reply::Err(text) | Reply::Continue(text) => Err(FetchError::new(stage, text)),
        }
    }

    fn multiline(&mut self, max: u64) -> Result<Vec<u8>, FetchError> {
        read_multiline(&mut self.reader, max)
            .map_err(|e| FetchError::new(Stage::Fetch, format!("reading from the server: {e}")))
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

fn greeting_ok(line: &[u8]) -> Result<(), FetchError> {
    match parse_reply(line) {
        Some(Reply::Ok(_)) => Ok(()),
        _ => Err(FetchError::new(
            Stage::Connect,
            format!(
                "unexpected greeting: {}",
                String::from_utf8_lossy(line).trim_end()
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
        let sizes = self
            .listing("LIST")?
            .ok_or_else(|| FetchError::new(Stage::Fetch, "the server refused LIST".to_string()))?;
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
            self.command(&format!("DELE {}", listed.handle), Stage::Fetch)?;
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<(), FetchError> {
        self.command("QUIT", Stage::Fetch).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply(b"+OK 2 320\r\n"),
            Some(Reply::Ok("2 320".into()))
        );
        assert_eq!(
            parse_reply(b"-ERR no such message\r\n"),
            Some(Reply::Err("no such message".into()))
        );
        assert_eq!(
            parse_reply(b"+ eyJzdGF0dXMiOiI0MDEifQ==\r\n"),
            Some(Reply::Continue("eyJzdGF0dXMiOiI0MDEifQ==".into()))
        );
        assert_eq!(parse_reply(b"* OK imap\r\n"), None);
        assert_eq!(parse_reply(b""), None);
    }

    /// Found by the `pop3_reply` fuzz target: a CR inside the text reached `last_error`.
    #[test]
    fn control_characters_in_a_reply_become_spaces() {
        assert_eq!(
            parse_reply(b"+OK\xb7 8\r+\0\0\xc2\r\r"),
            Some(Reply::Ok("\u{fffd} 8 +  \u{fffd}".into()))
        );
        assert_eq!(
            parse_reply(b"-ERR bad\x1b[2Jpassword\r\n"),
            Some(Reply::Err("bad [2Jpassword".into()))
        );
    }

    #[test]
    fn multiline_unstuffs_dots_and_stops_at_the_end_line() {
        let mut input: &[u8] = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nnext";
        let body = read_multiline(&mut input, 1000).unwrap();
        assert_eq!(body, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(input, b"next");
    }

    #[test]
    fn multiline_refuses_more_than_announced() {
        let mut input: &[u8] = b"aaaaaaaaaa\r\nbbbbbbbbbb\r\n.\r\n";
        assert!(read_multiline(&mut input, 15).is_err());
        let mut truncated: &[u8] = b"aaaa\r\n";
        assert!(read_multiline(&mut truncated, 100).is_err(), "no end line");
        let mut endless = std::io::repeat(b'x').take(10 * 1024 * 1024);
        let mut reader = BufReader::new(&mut endless);
        assert!(
            read_multiline(&mut reader, 1024).is_err(),
            "a line without end is bounded"
        );
    }

    #[test]
    fn credentials_cannot_inject_commands() {
        assert!(reject_line_breaks("password", "secret\r\nDELE 1").is_err());
        assert!(reject_line_breaks("password", "fine pass").is_ok());
    }
}
