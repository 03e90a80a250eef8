//! POP3's replies on the wire: status lines (`+OK`, `-ERR`, `+ ` during AUTH) and multi-line
//! bodies, each bounded in length.

use std::io::{BufRead, Read};

use crate::net;

/// Longest status or listing line accepted (RFC 1939 allows 512 octets).
pub(super) const MAX_LINE: u64 = 8 * 1024;

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
pub(super) fn read_line(reader: &mut impl BufRead, max: u64) -> std::io::Result<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read};

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
}
