//! One LMTP session, server side (RFC 2033): LHLO, MAIL FROM, RCPT TO, DATA with
//! dot-unstuffing, RSET, NOOP, QUIT; after DATA one reply per accepted recipient. Every read
//! has a deadline, command lines and messages are bounded, and a client that exceeds a bound
//! is answered (500/552) and disconnected.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::lines::{Got, Lines};

/// Longest command line, CRLF included (RFC 5321 allows 512; parameters make some longer).
pub const MAX_COMMAND_LINE: usize = 2048;
/// Bad commands a client may send before it is disconnected.
const MAX_ERRORS: u32 = 10;
/// DATA gets its command timeout plus the time to send the largest message at this rate.
const TRANSFER_RATE: u64 = 64 * 1024;

/// The bounds of a session.
#[derive(Clone, PartialEq)]
pub struct Limits {
    /// Largest message (after dot-unstuffing) that is taken.
    pub max_message_size: usize,
    /// Recipients per transaction; more get 452 (the MTA sends them in another one).
    pub max_recipients: usize,
    /// Each command, and any read that makes no progress.
    pub timeout: Duration,
    /// The name in the greeting and the LHLO answer.
    pub hostname: String,
}

/// What became of a message handed to the callback: it applies to every accepted recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Committed: 250 for each recipient.
    Stored,
    /// Not stored now (the database cannot take it): 451 4.3.0, the MTA keeps it and retries.
    TryLater(String),
    /// Never to be stored: 554 5.6.0, the MTA bounces it.
    Refused(String),
}

/// The envelope of one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    /// The reverse path, empty for a bounce (`MAIL FROM:<>`).
    pub from: String,
    pub recipients: Vec<String>,
}

impl Envelope {
    /// The trace lines a final delivery agent writes above a message (RFC 5321 §4.4), in the
    /// message's own line ending: `Return-Path` (`<>` marks a bounce or an automatic answer)
    /// and a `Delivered-To` per recipient (an alias reached by Bcc is only named there).
    /// Addresses hold no control characters or spaces: `path` refused those.
    pub fn trace(&self, message: &[u8]) -> Vec<u8> {
        let crlf = message
            .iter()
            .position(|&b| b == b'\n')
            .is_none_or(|i| i > 0 && message[i - 1] == b'\r');
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut trace = format!("Return-Path: <{}>{eol}", self.from);
        for recipient in &self.recipients {
            trace.push_str(&format!("Delivered-To: {recipient}{eol}"));
        }
        trace.into_bytes()
    }
}

/// Why a session ended.
#[derive(Debug)]
pub enum End {
    /// The client said QUIT.
    Quit,
    /// The client closed the connection.
    Closed,
    /// A read passed its deadline (answered 421 when possible).
    TimedOut,
    /// A command line over `MAX_COMMAND_LINE` (answered 500).
    LineTooLong,
    /// A message over the size limit (answered 552 per recipient).
    TooBig,
    /// Too many bad commands (answered 421).
    TooManyErrors,
    /// The server is stopping (answered 421).
    Stopping,
    /// The connection failed.
    Io(io::Error),
}

/// Speaks LMTP on `stream` until the client quits or a bound is hit. `deliver` gets each
/// complete message and decides the answer to DATA; `stopping` is asked while a read waits
/// (the stream should time out its reads now and then, e.g. every second, for it to be asked).
pub fn serve<S: Read + Write>(
    stream: S,
    limits: &Limits,
    stopping: &dyn Fn() -> bool,
    deliver: &mut dyn FnMut(&Envelope, Vec<u8>) -> Verdict,
) -> End {
    let mut session = Session {
        io: Lines::new(stream, limits.timeout, stopping),
        limits,
        greeted: false,
        envelope: None,
        errors: 0,
    };
    match session.run(deliver) {
        Ok(end) => end,
        Err(e) => {
            let end = match e.kind() {
                io::ErrorKind::TimedOut => End::TimedOut,
                io::ErrorKind::Interrupted => End::Stopping,
                _ => return End::Io(e),
            };
            let text = match end {
                End::TimedOut => "421 4.4.2 timed out, closing\r\n",
                _ => "421 4.3.2 shutting down\r\n",
            };
            let _ = session.io.send(text);
            end
        }
    }
}

struct Session<'a, S> {
    io: Lines<'a, S>,
    limits: &'a Limits,
    greeted: bool,
    envelope: Option<Envelope>,
    errors: u32,
}

impl<S: Read + Write> Session<'_, S> {
    fn run(&mut self, deliver: &mut dyn FnMut(&Envelope, Vec<u8>) -> Verdict) -> io::Result<End> {
        let greeting = format!("220 {} LMTP mail_gateway ready\r\n", self.limits.hostname);
        self.io.send(&greeting)?;
        let mut line = Vec::new();
        loop {
            line.clear();
            let deadline = Instant::now() + self.limits.timeout;
            match self.io.line(&mut line, MAX_COMMAND_LINE, deadline)? {
                Got::Eof => return Ok(End::Closed),
                Got::TooLong => {
                    self.io.send("500 5.5.2 line too long, closing\r\n")?;
                    return Ok(End::LineTooLong);
                }
                Got::Line => {}
            }
            let text = String::from_utf8_lossy(trim_eol(&line)).into_owned();
            let (verb, arg) = match text.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim()),
                None => (text.trim().to_ascii_uppercase(), ""),
            };
            let reply: String = match verb.as_str() {
                "LHLO" if arg.is_empty() => self.error("501 5.5.4 LHLO needs a domain"),
                "LHLO" => {
                    self.greeted = true;
                    self.envelope = None;
                    format!(
                        "250-{}\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE {}",
                        self.limits.hostname, self.limits.max_message_size
                    )
                }
                "HELO" | "EHLO" => self.error("500 5.5.1 this is LMTP: say LHLO"),
                "MAIL" => self.mail(arg),
                "RCPT" => self.rcpt(arg),
                "DATA" => match &self.envelope {
                    Some(e) if !e.recipients.is_empty() => {
                        self.io
                            .send("354 2.0.0 go ahead, end with <CRLF>.<CRLF>\r\n")?;
                        return match self.data(deliver)? {
                            Some(end) => Ok(end),
                            None => continue,
                        };
                    }
                    _ => self.error("503 5.5.1 no valid recipients"),
                },
                "RSET" => {
                    self.envelope = None;
                    "250 2.0.0 ok".into()
                }
                "NOOP" => "250 2.0.0 ok".into(),
                "QUIT" => {
                    self.io.send("221 2.0.0 bye\r\n")?;
                    return Ok(End::Quit);
                }
                _ => self.error("500 5.5.2 command not recognised"),
            };
            if self.errors >= MAX_ERRORS {
                self.io.send("421 4.7.0 too many errors, closing\r\n")?;
                return Ok(End::TooManyErrors);
            }
            self.io.send(&format!("{reply}\r\n"))?;
        }
    }

    fn error(&mut self, reply: &str) -> String {
        self.errors += 1;
        reply.to_string()
    }

    fn mail(&mut self, arg: &str) -> String {
        if !self.greeted {
            return self.error("503 5.5.1 say LHLO first");
        }
        if self.envelope.is_some() {
            return self.error("503 5.5.1 nested MAIL command");
        }
        let Some((from, params)) = path(arg, "FROM:") else {
            return self.error("501 5.5.4 syntax: MAIL FROM:<address>");
        };
        for param in params.split_ascii_whitespace() {
            if let Some(size) = param.to_ascii_uppercase().strip_prefix("SIZE=")
                && size
                    .parse::<u64>()
                    .is_ok_and(|s| s > self.limits.max_message_size as u64)
            {
                return format!(
                    "552 5.3.4 message too big (limit {} bytes)",
                    self.limits.max_message_size
                );
            }
        }
        self.envelope = Some(Envelope {
            from,
            recipients: Vec::new(),
        });
        "250 2.1.0 ok".into()
    }

    fn rcpt(&mut self, arg: &str) -> String {
        let max = self.limits.max_recipients;
        let Some(envelope) = self.envelope.as_mut() else {
            return self.error("503 5.5.1 say MAIL first");
        };
        let Some((to, _)) = path(arg, "TO:").filter(|(to, _)| !to.is_empty()) else {
            return self.error("501 5.5.4 syntax: RCPT TO:<address>");
        };
        if envelope.recipients.len() >= max {
            return "452 4.5.3 too many recipients".into();
        }
        envelope.recipients.push(to);
        "250 2.1.5 ok".into()
    }

    /// Reads the message to the final dot and answers once per recipient; `Some` ends the
    /// session.
    fn data(
        &mut self,
        deliver: &mut dyn FnMut(&Envelope, Vec<u8>) -> Verdict,
    ) -> io::Result<Option<End>> {
        let envelope = self.envelope.take().unwrap_or_default();
        let max = self.limits.max_message_size;
        let transfer = Duration::from_secs(max as u64 / TRANSFER_RATE);
        let deadline = Instant::now() + self.limits.timeout + transfer;
        let mut message = Vec::new();
        let mut line = Vec::new();
        let mut over = false;
        loop {
            line.clear();
            // Room for what is left of the limit, a stuffed dot and the line end: a longer line
            // is over the limit, read on (and dropped) to the final dot.
            let room = max.saturating_sub(message.len()) + 3;
            match self.io.line(&mut line, room, deadline)? {
                Got::Eof => return Ok(Some(End::Closed)),
                Got::TooLong => {
                    over = true;
                    message = Vec::new();
                    continue;
                }
                Got::Line => {}
            }
            if trim_eol(&line) == b"." {
                break;
            }
            let content = line.strip_prefix(b".").unwrap_or(&line);
            if over {
                continue;
            }
            if message.len() + content.len() > max {
                over = true;
                message = Vec::new();
                continue;
            }
            message.extend_from_slice(content);
        }
        if over {
            let reply = format!("552 5.3.4 message too big (limit {max} bytes)\r\n");
            self.io.send(&reply.repeat(envelope.recipients.len()))?;
            return Ok(Some(End::TooBig));
        }
        let verdict = deliver(&envelope, message);
        let reply = match &verdict {
            Verdict::Stored => "250 2.0.0 stored".to_string(),
            Verdict::TryLater(why) => format!("451 4.3.0 {}", one_line(why)),
            Verdict::Refused(why) => format!("554 5.6.0 {}", one_line(why)),
        };
        self.io
            .send(&format!("{reply}\r\n").repeat(envelope.recipients.len()))?;
        Ok(None)
    }
}

/// `<address>` after `keyword` (case-insensitive), and the parameters after it.
fn path(arg: &str, keyword: &str) -> Option<(String, String)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let (address, params) = rest.split_once('>')?;
    if address.chars().any(|c| c.is_control() || c == ' ') {
        return None;
    }
    Some((address.to_string(), params.trim().to_string()))
}

/// A reason fit for a reply line: one line, printable, bounded.
fn one_line(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    if clean.trim().is_empty() {
        "try again later".into()
    } else {
        clean
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
