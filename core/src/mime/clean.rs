//! What a stranger's message brings into our tables is cleaned first: PostgreSQL's `text` and
//! `jsonb` refuse NUL, and an index refuses a key over about 2.7 KB, so a NUL in an encoded
//! Subject or a Message-ID of a megabyte must not make a message unstorable (docs/SECURITY.md).

use std::borrow::Cow;

/// A Message-ID longer than this is not taken as one (RFC 5322 ids are short; ours are 60).
pub const MAX_ID: usize = 250;
/// An address longer than this is not taken as one (RFC 5321 limits a path to 256 octets).
pub const MAX_ADDRESS: usize = 254;
/// Subjects and display names are cut to this many characters.
pub const MAX_LINE: usize = 1000;
/// A bounce's diagnostic is cut to this many characters.
pub const MAX_DIAGNOSTIC: usize = 1000;
/// Addresses per header field, references and attachments kept in a summary.
pub const MAX_LISTED: usize = 100;

/// `text` without NUL (each becomes U+FFFD, so that the reader sees something was there).
pub fn text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `text` cleaned and cut to `max` characters.
pub fn bounded(text: &str, max: usize) -> String {
    let cleaned = self::text(text);
    match cleaned.char_indices().nth(max) {
        Some((end, _)) => cleaned[..end].to_string(),
        None => cleaned.into_owned(),
    }
}

/// Cleans a JSON value in place: every string (and key) without NUL.
pub fn json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        serde_json::Value::Array(items) => items.iter_mut().for_each(json),
        serde_json::Value::Object(map) if map.keys().any(|k| k.contains('\0')) => {
            let entries = std::mem::take(map);
            for (key, mut v) in entries {
                json(&mut v);
                map.insert(key.replace('\0', "\u{FFFD}"), v);
            }
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_goes_and_length_is_bounded() {
        assert_eq!(text("x\0y"), "x\u{FFFD}y");
        assert!(matches!(text("plain"), Cow::Borrowed(_)));
        assert_eq!(bounded("ééé", 2), "éé");
        assert_eq!(bounded("a\0", 10), "a\u{FFFD}");
        let mut v = serde_json::json!({"a\0": ["b\0", {"c": "d\0"}], "e": 1});
        json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a\u{FFFD}": ["b\u{FFFD}", {"c": "d\u{FFFD}"}], "e": 1})
        );
    }
}
