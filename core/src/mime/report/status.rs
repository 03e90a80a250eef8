//! Status codes in a report's words (`5.1.1`, `550`), and whether a failure is hard: the
//! address itself is wrong and sending again cannot succeed.

use super::lower;

/// The first enhanced status code (`5.1.1`) in `text`.
pub fn find_status(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        if !matches!(c, b'2' | b'4' | b'5') || bytes.get(i + 1) != Some(&b'.') {
            continue;
        }
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.') {
            continue;
        }
        let rest = &text[i + 2..];
        let sub: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if sub.is_empty() || sub.len() > 3 || !rest[sub.len()..].starts_with('.') {
            continue;
        }
        let rest = &rest[sub.len() + 1..];
        let detail: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if detail.is_empty() || detail.len() > 3 {
            continue;
        }
        let after = rest[detail.len()..].chars().next();
        if after.is_some_and(|a| a.is_ascii_alphanumeric() || a == '.') {
            continue;
        }
        return Some(format!("{}.{sub}.{detail}", c as char));
    }
    None
}

/// The first basic SMTP reply code (`550`) in `text`, as a status class.
pub(super) fn find_reply_code(text: &str) -> Option<char> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(2)).find_map(|i| {
        let code = &bytes[i..i + 3];
        let before_ok = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let after_ok = bytes
            .get(i + 3)
            .is_none_or(|b| matches!(b, b' ' | b'-' | b',' | b':' | b'\r' | b'\n'));
        (before_ok
            && after_ok
            && matches!(code[0], b'4' | b'5')
            && matches!(code[1], b'0'..=b'5')
            && code[2].is_ascii_digit())
        .then_some(code[0] as char)
    })
}

/// The status of the first basic SMTP reply code in `text`: `5.0.0` for a `550`.
pub(super) fn reply_code_status(text: &str) -> Option<String> {
    find_reply_code(text).map(|c| format!("{c}.0.0"))
}

const HARD_STATUSES: [&str; 6] = ["5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.4.4"];

/// Words MTAs use when the address itself is wrong.
pub(super) const HARD_PHRASES: [&str; 33] = [
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "no such recipient",
    "no such account",
    "user not found",
    "mailbox not found",
    "mailbox unavailable",
    "recipient not found",
    "unknown recipient",
    "invalid recipient",
    "address rejected: access denied",
    "address rejected.",
    "does not exist",
    "doesn't exist",
    "not a valid mailbox",
    "no mailbox here",
    "did not reach the following recipient",
    "host unknown",
    "host not found",
    "domain not found",
    "no such domain",
    "invalid domain",
    "unrouteable address",
    "name or service not known",
    "no mx record",
    "indicated no smtp service",
    "does not accept mail",
    "has moved",
    "address no longer",
    "invalid final delivery userid",
    "not listed in",
];

/// Words that say the failure is about the message, the sender, the account's state or the
/// moment, not the address.
const SOFT_PHRASES: [&str; 33] = [
    "quota",
    "mailbox full",
    "mailbox is full",
    "insufficient",
    "too large",
    "size limit",
    "spam",
    "blocked",
    "blacklist",
    "block list",
    "policy",
    "dmarc",
    "spf",
    "rate limit",
    "too many",
    "try again",
    "temporar",
    "timed out",
    "greylist",
    "command output",
    "relaying",
    "relay access",
    "reputation",
    "disabled",
    "suspended",
    "inactive",
    "sender address",
    "sender domain",
    "after mail from",
    "after end of data",
    "final data",
    "after data",
    "content rejected",
];

/// Hard when the status says the address is wrong and the words do not say otherwise, or when
/// the words say the address is wrong. A 4xx is hard only for an unknown user or host that the
/// server chose to answer temporarily (4.1.1, 4.1.2).
pub fn is_hard(status: &str, diagnostic: &str) -> bool {
    if !(status.starts_with('5') || status == "4.1.1" || status == "4.1.2") {
        return false;
    }
    let text = lower(diagnostic);
    if SOFT_PHRASES.iter().any(|p| text.contains(p)) {
        return false;
    }
    HARD_STATUSES.contains(&status)
        || status == "4.1.1"
        || status == "4.1.2"
        || HARD_PHRASES.iter().any(|p| text.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_found_in_words() {
        assert_eq!(
            find_status("550 5.1.1 <a@b>: user unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            find_status("smtp; 550-5.7.26 Unauthenticated").as_deref(),
            Some("5.7.26")
        );
        assert_eq!(find_status("version 1.2.3 and 10.5.1.1 and 5.1"), None);
        assert_eq!(find_reply_code("host said: 552 too big"), Some('5'));
        assert_eq!(find_reply_code("port 25000 and 4500ms"), None);
    }

    #[test]
    fn hard_means_the_address_is_wrong() {
        assert!(is_hard("5.1.1", "550 user unknown"));
        assert!(is_hard("5.0.0", "550 No such user here"));
        assert!(!is_hard("5.2.2", "552 mailbox full"));
        assert!(
            !is_hard("5.1.1", "procmail: Command output: no such user"),
            "a local delivery program failed"
        );
        assert!(
            !is_hard("4.2.2", "user unknown"),
            "a 4xx is hard only as 4.1.1/4.1.2"
        );
        assert!(is_hard(
            "4.1.1",
            "450 4.1.1 Recipient address rejected: User unknown"
        ));
        assert!(
            !is_hard("5.0.0", "550 user unknown (after end of data)"),
            "a content filter"
        );
        assert!(!is_hard("5.7.1", "blocked by policy"));
    }
}
