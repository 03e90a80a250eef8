//! Addresses in a report: in a header or report field, and written anywhere in its words.

use std::collections::HashSet;

use super::{MAX_NAMED, lower};
use crate::mime::clean;

/// `x@y` from `rfc822; <X@Y>`, `<x@y>`, `x@y`.
pub(super) fn address_of(value: &str) -> Option<String> {
    let value = value.split_once(';').map_or(value, |(_, v)| v);
    let value = value.trim().trim_start_matches('<');
    let value = value.split(['>', ' ', '\t', ',', '(']).next()?.trim();
    let value = value.trim_matches(|c: char| c == '"' || c == '\'' || c == '.');
    // An address has no control character (a NUL would not even fit a text column) and is
    // not a screenful long.
    (value.contains('@')
        && !value.starts_with('@')
        && !value.ends_with('@')
        && value.len() <= clean::MAX_ADDRESS
        && !value.chars().any(char::is_control))
    .then(|| lower(value))
}

/// The addresses of header fields, lower-case; what is not an address (`To: k(S`, a bare
/// group name) is left out.
pub(super) fn addresses_of(fields: [Option<&mail_parser::Address<'_>>; 2]) -> Vec<String> {
    fields
        .into_iter()
        .flatten()
        .flat_map(|a| {
            a.iter()
                .take(MAX_NAMED)
                .filter_map(|a| a.address())
                .filter_map(address_of)
                .collect::<Vec<_>>()
        })
        .take(MAX_NAMED)
        .collect()
}

/// Local parts that never name a failed recipient.
const NOT_RECIPIENTS: [&str; 6] = [
    "mailer-daemon",
    "postmaster",
    "abuse",
    "noreply",
    "no-reply",
    "root",
];

/// Lines that name someone other than a failed recipient.
const OTHER_PEOPLE: [&str; 7] = [
    "message-id",
    "message id",
    "contact",
    "assistance",
    "please send mail to",
    "mail from",
    "envelope-from",
];

/// Addresses written in a notification, in order, without duplicates; at most `MAX_NAMED`.
pub(super) fn addresses_in(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for line in text.lines() {
        if out.len() == MAX_NAMED {
            break;
        }
        crate::interrupt::check();
        let low = line.to_lowercase();
        if OTHER_PEOPLE.iter().any(|p| low.contains(p)) {
            continue;
        }
        addresses_in_line(line, &mut out, &mut seen);
    }
    out
}

fn addresses_in_line(text: &str, out: &mut Vec<String>, seen: &mut HashSet<String>) {
    for token in text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '(' | ')' | '[' | ']' | '"' | '\'' | ',' | ';' | '='
            )
    }) {
        let token = token.trim_matches(|c: char| matches!(c, '.' | ':' | '!' | '?'));
        let Some((local, domain)) = token.split_once('@') else {
            continue;
        };
        if local.is_empty()
            || !domain.contains('.')
            || domain.contains('@')
            || !token.chars().all(|c| c.is_ascii_graphic())
        {
            continue;
        }
        let address = lower(token);
        let local = address.split('@').next().unwrap_or_default();
        if out.len() == MAX_NAMED
            || NOT_RECIPIENTS.contains(&local)
            || !seen.insert(address.clone())
        {
            continue;
        }
        out.push(address);
    }
}

#[cfg(test)]
mod tests {
    use super::super::analyse;

    /// Found by the `route` fuzz target: a DSN's Final-Recipient with NULs in it became a
    /// failed recipient (and would have failed to store).
    #[test]
    fn a_recipient_with_control_characters_is_no_address() {
        let raw = b"From: MAILER-DAEMON@mx.example\r\nSubject: failure\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
Final-Recipient: rfc822; kijitora@y.exampl\x7f\x00\x00\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n";
        assert!(analyse(raw).failed.iter().all(|f| !f.email.contains('\0')));
    }
}
