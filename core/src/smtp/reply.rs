//! SMTP replies (RFC 5321 §4.2): a three-digit code and one or more lines of text, read from a
//! buffer that may hold several pipelined replies at once.

use std::io::{self, Read};

/// Longest reply line we accept (the RFC says 512; real servers write longer EHLO lines).
const MAX_LINE: usize = 4096;
/// Most lines in one reply (an EHLO answer lists one extension per line).
const MAX_LINES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Every line's text after the code, in order.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// The server's words on one line, for errors and logs: "550 5.1.1 <x>: user unknown".
    pub fn words(&self) -> String {
        crate::net::printable(format!("{} {}", self.code, self.lines.join(" ")))
            .trim_end()
            .to_string()
    }
}

/// A read buffer over a connection: replies are parsed from it without losing what follows.
#[derive(Default)]
pub struct Replies {
    buf: Vec<u8>,
    start: usize,
}

impl Replies {
    /// Whether bytes the server sent are waiting unread (nothing may follow a STARTTLS reply).
    pub fn has_unread(&self) -> bool {
        self.start < self.buf.len()
    }

    /// Reads one complete reply.
    pub fn read(&mut self, stream: &mut impl Read) -> io::Result<Reply> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            let line = self.line(stream)?;
            let (this_code, last, text) = parse_line(&line)?;
            if *code.get_or_insert(this_code) != this_code {
                return Err(invalid("reply lines with different codes"));
            }
            lines.push(text);
            if last {
                return Ok(Reply {
                    code: this_code,
                    lines,
                });
            }
            if lines.len() >= MAX_LINES {
                return Err(invalid("a reply of too many lines"));
            }
        }
    }

    /// One line without its line end.
    fn line(&mut self, stream: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut searched = self.start;
        loop {
            if let Some(at) = self.buf[searched..].iter().position(|&b| b == b'\n') {
                let end = searched + at;
                let mut line = self.buf[self.start..end].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.start = end + 1;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(line);
            }
            searched = self.buf.len();
            if searched - self.start > MAX_LINE {
                return Err(invalid("an overlong reply line"));
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                searched -= self.start;
                self.start = 0;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the server sent {what}"),
    )
}

/// `250-PIPELINING` → (250, not last, "PIPELINING"); `250 OK` and `250` are last lines.
fn parse_line(line: &[u8]) -> io::Result<(u16, bool, String)> {
    let digits = line.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
    let Some(digits) = digits.filter(|d| (b'2'..=b'5').contains(&d[0])) else {
        return Err(invalid("a malformed reply"));
    };
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let last = match line.get(3) {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => return Err(invalid("a malformed reply")),
    };
    let text = String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned();
    Ok((code, last, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_replies_are_read_one_by_one() {
        let mut input: &[u8] = b"250-smtp.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n250 2.1.0 Ok\r\n550 5.1.1 <x@y>: no\r\n354 go\n";
        let mut r = Replies::default();
        let ehlo = r.read(&mut input).unwrap();
        assert_eq!(ehlo.code, 250);
        assert_eq!(ehlo.lines, ["smtp.example", "PIPELINING", "CHUNKING"]);
        assert_eq!(r.read(&mut input).unwrap().words(), "250 2.1.0 Ok");
        let refused = r.read(&mut input).unwrap();
        assert!(!refused.is_positive() && refused.code >= 500);
        assert_eq!(refused.words(), "550 5.1.1 <x@y>: no");
        assert_eq!(r.read(&mut input).unwrap().code, 354);
        assert!(!r.has_unread());
        let eof = r.read(&mut input).unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_reply_split_over_reads_is_joined() {
        struct Drip<'a>(&'a [u8]);
        impl Read for Drip<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(3).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = Replies::default();
        let reply = r.read(&mut Drip(b"421 4.7.0 too many\r\n")).unwrap();
        assert_eq!(reply.code, 421);
        assert_eq!(r.read(&mut &b"250\r\n"[..]).unwrap().lines, [""]);
    }

    #[test]
    fn garbage_is_an_error_not_a_reply() {
        let mut r = Replies::default();
        assert!(r.read(&mut &b"hello\r\n"[..]).is_err());
        assert!(r.read(&mut &b"250-a\r\n550 b\r\n"[..]).is_err());
        let long = vec![b'2'; MAX_LINE * 2];
        assert!(Replies::default().read(&mut &long[..]).is_err());
        assert_eq!(
            Reply {
                code: 550,
                lines: vec!["no\x1b[2J".into()]
            }
            .words(),
            "550 no [2J"
        );
    }
}
