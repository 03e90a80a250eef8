//! Automatic mail (RFC 3834 and the vendors' marks), and automatic replies among it.

use mail_parser::Message;

use super::{header, lower, sender};

/// Automatic mail, by RFC 3834 and the common vendor marks: never answered, never relayed.
pub(super) fn auto_submitted(message: &Message<'_>) -> bool {
    let auto = header(message, "Auto-Submitted").map(lower);
    if auto.as_deref().is_some_and(|a| !a.starts_with("no")) {
        return true;
    }
    let precedence = header(message, "Precedence").map(lower).unwrap_or_default();
    header(message, "X-Autoreply").is_some()
        || header(message, "X-Autorespond").is_some()
        || header(message, "X-Auto-Response-Suppress").is_some_and(|v| lower(v).contains("all"))
        || matches!(precedence.as_str(), "auto_reply" | "bulk" | "junk" | "list")
        // Mailing lists (RFC 2369, RFC 2919): a list's copy is never answered or relayed.
        || ["List-Id", "List-Unsubscribe", "List-Post"]
            .iter()
            .any(|h| header(message, h).is_some())
}

/// Subjects automatic replies start with (or carry after a prefix such as `Re: `).
const AUTO_REPLY_SUBJECTS: [&str; 10] = [
    "out of office",
    "out of the office",
    "automatic reply",
    "auto:",
    "autoreply",
    "auto reply",
    "auto-reply",
    "abwesenheit",
    "absence",
    "vacation",
];

/// An automatic reply (out of office, vacation …): marked as one by its headers, or with such a
/// subject when it also comes with a null envelope sender or Exchange's automatic-message mark
/// (a subject a person can write proves nothing alone).
pub(super) fn is_auto_reply(message: &Message<'_>) -> bool {
    let auto = header(message, "Auto-Submitted")
        .map(lower)
        .unwrap_or_default();
    if auto.starts_with("auto-replied")
        || header(message, "X-Autoreply").is_some()
        || header(message, "X-Autorespond").is_some()
        || lower(header(message, "Precedence").unwrap_or_default()) == "auto_reply"
    {
        return true;
    }
    let subject = lower(message.subject().unwrap_or_default());
    let says_so = AUTO_REPLY_SUBJECTS
        .iter()
        .any(|p| subject.starts_with(p) || subject.contains(&format!(": {p}")));
    says_so
        && (sender::null_sender(message) || header(message, "X-Auto-Response-Suppress").is_some())
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, analyse};

    #[test]
    fn an_out_of_office_is_an_auto_reply_not_a_bounce() {
        let raw = b"From: Ann <ann@customer.example>\r\nTo: sales@mycompany.com\r\n\
Subject: Automatic reply: your order\r\nAuto-Submitted: auto-replied\r\n\r\nI am away.\r\n";
        let r = analyse(raw);
        assert_eq!((r.kind, r.auto_submitted), (Kind::AutoReply, true));
    }
}
