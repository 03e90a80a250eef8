//! What a message looks like on the wire (RFC 5321 §2.3.8, §4.5.2): every line ends in CRLF —
//! a bare CR or a bare LF becomes CRLF — and, after DATA, a line that starts with a dot gets a
//! second one and the message ends with `.` on its own line. A body or relayed content holding
//! `\n.\n` or `\r.\r` can therefore never end the DATA early on a lenient relay (SMTP
//! smuggling): what the server reads as the end is only the terminator we write.
//!
//! The message is normalised once, before DKIM signs it, so that the signature covers exactly
//! the bytes that are sent. BDAT (RFC 3030) frames the message by its length and is not
//! dot-stuffed; it gets the same normalised bytes.

use std::borrow::Cow;

use memchr::{memchr, memchr2};

/// `message` with CRLF line ends only, ending in CRLF (an empty message stays empty).
pub fn normalize(message: &[u8]) -> Cow<'_, [u8]> {
    if is_normal(message) {
        return Cow::Borrowed(message);
    }
    let mut out = crlf_lines(message).into_owned();
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    Cow::Owned(out)
}

/// `normalize`, keeping the buffer when it is already clean.
pub fn normalized(message: Vec<u8>) -> Vec<u8> {
    if is_normal(&message) {
        message
    } else {
        normalize(&message).into_owned()
    }
}

/// `text` with every line end — CR LF, a bare CR, a bare LF — written CR LF; nothing added at
/// the end.
pub fn crlf_lines(text: &[u8]) -> Cow<'_, [u8]> {
    if bare_line_end(text).is_none() {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + text.len() / 32 + 2);
    let mut rest = text;
    while let Some(at) = memchr2(b'\r', b'\n', rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"\r\n");
        let crlf = rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n');
        rest = &rest[at + if crlf { 2 } else { 1 }..];
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

/// Where the first CR without LF, or LF without CR, is.
fn bare_line_end(text: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = memchr2(b'\r', b'\n', &text[from..]).map(|i| from + i) {
        if text[at] == b'\n' || text.get(at + 1) != Some(&b'\n') {
            return Some(at);
        }
        from = at + 2;
    }
    None
}

/// Whether every line ends in CRLF, the last one included.
fn is_normal(message: &[u8]) -> bool {
    (message.is_empty() || message.ends_with(b"\r\n")) && bare_line_end(message).is_none()
}

/// Appends a normalised message as it travels after DATA: dot-stuffed, then `.` CRLF.
pub fn push_dot_stuffed(out: &mut Vec<u8>, normalized: &[u8]) {
    out.reserve(normalized.len() + normalized.len() / 64 + 3);
    let mut rest = normalized;
    loop {
        if rest.first() == Some(&b'.') {
            out.push(b'.');
        }
        match memchr(b'\n', rest) {
            Some(at) => {
                out.extend_from_slice(&rest[..=at]);
                rest = &rest[at + 1..];
            }
            None => {
                out.extend_from_slice(rest);
                break;
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_dot_stuffed(&mut out, &normalize(message));
        out
    }

    #[test]
    fn bare_cr_and_bare_lf_become_crlf() {
        assert_eq!(&*normalize(b"a\rb\nc\r\nd"), b"a\r\nb\r\nc\r\nd\r\n");
        assert_eq!(&*normalize(b"\n\n"), b"\r\n\r\n");
        assert_eq!(&*normalize(b"\r\r\n\n"), b"\r\n\r\n\r\n");
        assert_eq!(&*normalize(b""), b"");
    }

    #[test]
    fn a_clean_message_is_not_copied() {
        assert!(matches!(normalize(b"a\r\nb\r\n"), Cow::Borrowed(_)));
        assert!(matches!(normalize(b"a\r\nb"), Cow::Owned(_)));
    }

    #[test]
    fn smuggling_sequences_cannot_end_the_data() {
        // Each sequence a lenient server might take for the end of DATA arrives as a line
        // holding one dot, doubled on the wire; the only terminator is the last line.
        for (body, expected) in [
            (&b"x\n.\ny"[..], &b"x\r\n..\r\ny\r\n.\r\n"[..]),
            (b"x\r.\ry", b"x\r\n..\r\ny\r\n.\r\n"),
            (b"x\r\n.\r\ny", b"x\r\n..\r\ny\r\n.\r\n"),
            (b"x\n.\r\ny", b"x\r\n..\r\ny\r\n.\r\n"),
            (b"x\r\n.\ny", b"x\r\n..\r\ny\r\n.\r\n"),
        ] {
            let out = wire(body);
            assert_eq!(out, expected, "{:?}", String::from_utf8_lossy(body));
            let terminators = out.windows(5).filter(|w| w == b"\r\n.\r\n").count();
            assert_eq!(terminators, 1, "one end of data");
        }
    }

    #[test]
    fn leading_dots_are_doubled() {
        assert_eq!(wire(b".a\r\n..b\r\nc.\r\n"), b"..a\r\n...b\r\nc.\r\n.\r\n");
        assert_eq!(wire(b"."), b"..\r\n.\r\n");
        assert_eq!(wire(b""), b".\r\n");
    }

    #[test]
    fn no_bare_cr_or_lf_survives_any_input() {
        let inputs: [&[u8]; 4] = [b"\r", b"\n\r", b"a\r\r\r\nb\n\n\r", b"\r\n.\r\n\r.\n.\r"];
        for input in inputs {
            let out = normalize(input);
            for (i, &b) in out.iter().enumerate() {
                if b == b'\r' {
                    assert_eq!(out.get(i + 1), Some(&b'\n'));
                }
                if b == b'\n' {
                    assert!(i > 0 && out[i - 1] == b'\r');
                }
            }
        }
    }
}
