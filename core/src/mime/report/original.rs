//! The returned original a bounce carries — attached (`message/rfc822`,
//! `text/rfc822-headers`) or pasted below the notification — and what it tells: its
//! Message-ID and whom it was for.

use mail_parser::{Message, MessageParser};

use super::address::{addresses_in, addresses_of};
use super::{content_type, text_of};

/// Where the returned original starts in a plain-text bounce.
const ORIGINAL_MARKERS: [&str; 13] = [
    "this is a copy of the message",
    "this is a copy of your message",
    "original message follows",
    "- original message",
    "message headers follow",
    "- returned message",
    "headers of the original",
    "below this line is a copy",
    "text of the message follows",
    "undelivered message",
    "the header of the original",
    "content-type: message/rfc822",
    "\nreceived: ",
];

/// The notification of a plain-text bounce: its text before a pasted original.
pub(super) fn notification_text(text: &str) -> &str {
    let low = text.to_lowercase();
    let end = ORIGINAL_MARKERS
        .iter()
        .filter_map(|m| low.find(m))
        .min()
        .unwrap_or(text.len());
    // `to_lowercase` can change byte lengths; fall back to the whole text then.
    text.get(..end).unwrap_or(text)
}

/// The recipients of the returned original: who the failed mail was for.
pub(super) fn recipients(message: &Message<'_>, body: &str) -> Vec<String> {
    let from_part = message.parts.iter().skip(1).find_map(|part| {
        let inner = part.message()?;
        let to = addresses_of([inner.to(), inner.cc()]);
        (!to.is_empty()).then_some(to)
    });
    from_part.unwrap_or_else(|| {
        // A copy pasted into the text: its `To:` line.
        body.lines()
            .skip_while(|l| {
                !ORIGINAL_MARKERS
                    .iter()
                    .any(|m| l.to_lowercase().contains(m.trim_start_matches('\n')))
            })
            .find(|l| l.to_lowercase().starts_with("to:"))
            .map(|l| addresses_in(&l[3..]))
            .unwrap_or_default()
    })
}

/// The Message-ID of the returned original (`message/rfc822` or `text/rfc822-headers`).
pub(super) fn message_id(message: &Message<'_>) -> Option<String> {
    let bracketed = |id: &str| format!("<{}>", id.trim_matches(['<', '>']));
    for part in message.parts.iter().skip(1) {
        if let Some(inner) = part.message()
            && let Some(id) = inner.message_id()
        {
            return Some(bracketed(id));
        }
        if content_type(part) == "text/rfc822-headers" {
            let text = text_of(part);
            if let Some(id) = MessageParser::default()
                .parse_headers(text.as_bytes())
                .and_then(|m| m.message_id().map(str::to_string))
            {
                return Some(bracketed(&id));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::analyse;

    /// Found by the `bounce_report` fuzz target: the returned original's `To: k(S` made "k" a
    /// failed recipient.
    #[test]
    fn a_returned_original_without_an_address_names_no_recipient() {
        let raw = b"Subject:Delivery failed0\nContent-type:multipart/\n boundary=Bo\n\n\
--Bocontent-type:message/rfc822\n\nTo:k(S\n\n";
        assert!(analyse(raw).failed.iter().all(|f| f.email.contains('@')));
        // (From a mailer daemon: words in a subject alone no longer make a bounce.)
        let raw = b"From: MAILER-DAEMON@mx.example\nSubject: Delivery failed\nContent-Type: multipart/report; boundary=b\n\n\
--b\nContent-Type: message/rfc822\n\nTo: K@Example.COM\n\nhi\n--b--\n";
        let emails: Vec<String> = analyse(raw).failed.into_iter().map(|f| f.email).collect();
        assert_eq!(emails, ["k@example.com"]);
    }
}
