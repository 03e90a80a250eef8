//! Complaints: ARF (RFC 5965) and the providers' own feedback loops.

use mail_parser::{Message, MimeHeaders};

use super::{header, lower};

/// ARF (RFC 5965), and the providers' own complaint loops: Microsoft's JMRP (a
/// "complaint about message from" with the message attached) and Apple's unsubscribe mark.
/// `part_types` are the content types of the message's parts.
pub(super) fn is_complaint(message: &Message<'_>, part_types: &[String]) -> bool {
    let report_type = message
        .content_type()
        .and_then(|ct| ct.attribute("report-type"))
        .map(lower)
        .unwrap_or_default();
    let subject = lower(message.subject().unwrap_or_default());
    report_type == "feedback-report"
        || part_types.iter().any(|k| k == "message/feedback-report")
        || header(message, "X-HmXmrOriginalRecipient").is_some()
        || (subject.starts_with("complaint about message")
            && part_types.iter().any(|k| k == "message/rfc822"))
        || header(message, "X-Apple-Unsubscribe").is_some_and(|v| lower(v) == "true")
}
