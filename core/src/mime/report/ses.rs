//! Amazon SES notifications, as SNS mails them: JSON in the body.

use super::address::address_of;
use super::status::{find_status, is_hard};
use super::{Failed, MAX_FAILED};
use crate::mime::clean;

/// Amazon SES bounce notifications (JSON, as SNS mails them); a complaint gives no recipient.
pub(super) fn notification(body: &str) -> Option<Vec<Failed>> {
    let start = body.find('{')?;
    if !body.contains("bouncedRecipients") {
        return None;
    }
    let end = body.rfind('}')?;
    // SNS folds long lines: the JSON is whole again without the line breaks.
    let json: String = body
        .get(start..=end)?
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    let mut value: serde_json::Value = serde_json::from_str(&json).ok()?;
    // SNS wraps SES's notification in its own, as a string.
    if let Some(inner) = value.get("Message").and_then(|m| m.as_str()) {
        value = serde_json::from_str(inner).ok()?;
    }
    if value.get("notificationType").and_then(|t| t.as_str()) == Some("Complaint") {
        return Some(vec![]);
    }
    let bounce = value.get("bounce")?;
    let permanent = bounce.get("bounceType").and_then(|t| t.as_str()) == Some("Permanent");
    let failed: Vec<Failed> = bounce
        .get("bouncedRecipients")?
        .as_array()?
        .iter()
        .take(MAX_FAILED)
        .filter_map(|r| bounced_recipient(r, permanent))
        .collect();
    (!failed.is_empty()).then_some(failed)
}

/// One of `bouncedRecipients`; None without an address.
fn bounced_recipient(recipient: &serde_json::Value, permanent: bool) -> Option<Failed> {
    let email = address_of(recipient.get("emailAddress")?.as_str()?)?;
    let diagnostic = recipient
        .get("diagnosticCode")
        .and_then(|d| d.as_str())
        .map(|d| clean::bounded(d, clean::MAX_DIAGNOSTIC));
    let status = recipient
        .get("status")
        .and_then(|s| s.as_str())
        .and_then(find_status)
        .unwrap_or_else(|| if permanent { "5.0.0" } else { "4.0.0" }.to_string());
    Some(Failed {
        hard: is_hard(&status, diagnostic.as_deref().unwrap_or_default()),
        email,
        status,
        diagnostic,
    })
}

#[cfg(test)]
mod tests {
    use super::super::analyse;

    /// Found by the `bounce_report` fuzz target: an SES notification with an empty
    /// `emailAddress` made "" a failed recipient.
    #[test]
    fn an_ses_recipient_without_an_address_is_left_out() {
        let raw = br#"
{"Message":"{\"bounce\":{\"bouncedRecipients\":[{\"emailAddress\":\"\"}]}}"}
"#;
        assert!(analyse(raw).failed.is_empty());
        let raw = br#"
{"Message":"{\"bounce\":{\"bounceType\":\"Permanent\",\"bouncedRecipients\":[{\"emailAddress\":\"Bob@Example.com\"}]}}"}
"#;
        let failed = analyse(raw).failed;
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].email.as_str(), failed[0].status.as_str()),
            ("bob@example.com", "5.0.0")
        );
    }
}
