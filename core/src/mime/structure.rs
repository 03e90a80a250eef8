//! Parsing a stranger's message with bounded work. mail-parser reads any structure, but a
//! message nesting thousands of multiparts makes it seek each boundary to the end of the
//! message again (quadratic), and hundreds of thousands of part lines make as many parts. Such a
//! message is read from its header alone, with the reason: still stored, never routed by its
//! body (docs/SECURITY.md).

use mail_parser::{Message, MessageParser};

/// More multiparts than this (`boundary=` parameters) is not a real message: a real one nests
/// three or four, a forwarded chain a few dozen.
pub const MAX_MULTIPARTS: usize = 100;
/// More lines starting with `--` (boundary delimiters) than this is not a real message either.
pub const MAX_PART_LINES: usize = 5000;

/// A message parsed within bounds.
pub struct Parsed<'a> {
    /// None when not even a header could be read.
    pub message: Option<Message<'a>>,
    /// Why only the header was read, when the structure was absurd.
    pub header_only: Option<String>,
}

/// Why `raw` is too absurd to read past its header, if it is.
pub fn absurd(raw: &[u8]) -> Option<String> {
    let mut multiparts = 0;
    let mut part_lines = 0;
    let mut at_line_start = true;
    for (i, &b) in raw.iter().enumerate() {
        if at_line_start && b == b'-' && raw.get(i + 1) == Some(&b'-') {
            part_lines += 1;
        }
        if (b == b'b' || b == b'B')
            && raw.len() - i >= 9
            && raw[i..i + 9].eq_ignore_ascii_case(b"boundary=")
        {
            multiparts += 1;
        }
        at_line_start = b == b'\n';
        if i % (1 << 20) == 0 {
            crate::interrupt::check();
        }
    }
    if multiparts > MAX_MULTIPARTS {
        return Some(format!(
            "absurd structure: {multiparts} multipart boundaries (at most {MAX_MULTIPARTS} are read); only the header was read"
        ));
    }
    if part_lines > MAX_PART_LINES {
        return Some(format!(
            "absurd structure: {part_lines} boundary lines (at most {MAX_PART_LINES} are read); only the header was read"
        ));
    }
    None
}

/// Parses `raw`, whole or — when its structure is absurd — its header only.
pub fn parse(raw: &[u8]) -> Parsed<'_> {
    match absurd(raw) {
        Some(reason) => Parsed {
            message: MessageParser::default().parse_headers(raw),
            header_only: Some(reason),
        },
        None => Parsed {
            message: MessageParser::default().parse(raw),
            header_only: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_multiparts_are_read_from_the_header() {
        let mut raw = String::from("From: a@b.example\r\nSubject: deep\r\n");
        for i in 0..200 {
            raw.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
            ));
        }
        let parsed = parse(raw.as_bytes());
        assert!(
            parsed
                .header_only
                .unwrap()
                .contains("200 multipart boundaries")
        );
        assert_eq!(parsed.message.unwrap().subject(), Some("deep"));
    }

    #[test]
    fn an_ordinary_multipart_is_read_whole() {
        let raw = b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
Content-Type: text/plain\r\n\r\nhello\r\n--x--\r\n";
        let parsed = parse(raw);
        assert!(parsed.header_only.is_none());
        assert_eq!(
            parsed.message.unwrap().body_text(0).as_deref(),
            Some("hello")
        );
    }
}
