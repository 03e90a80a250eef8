//! RFC 3464 delivery status notifications (and RFC 6533's for internationalised addresses):
//! the failed recipients of a `message/delivery-status` part.

use std::collections::HashSet;

use mail_parser::Message;

use super::address::address_of;
use super::status::{find_status, is_hard, reply_code_status};
use super::{Failed, MAX_FAILED, content_type, lower, text_of};
use crate::mime::clean;

/// The failed recipients of a message's delivery-status parts; None without such a part.
pub(super) fn failed_in_parts(message: &Message<'_>) -> Option<Vec<Failed>> {
    let mut failed = None;
    for part in &message.parts {
        if matches!(
            content_type(part).as_str(),
            "message/delivery-status" | "message/global-delivery-status"
        ) {
            failed
                .get_or_insert_with(Vec::new)
                .extend(parse_delivery_status(&text_of(part)));
        }
    }
    failed
}

/// The blocks of a delivery-status body: `Name: value` fields, continuation lines joined.
fn field_blocks(body: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut block: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            block.push((lower(name), value.trim().to_string()));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

/// Failed recipients of an RFC 3464 delivery-status body.
pub fn parse_delivery_status(body: &str) -> Vec<Failed> {
    let mut failed = Vec::new();
    let mut seen = HashSet::new();
    for block in field_blocks(body) {
        if failed.len() == MAX_FAILED {
            break;
        }
        crate::interrupt::check();
        if let Some(recipient) = failed_recipient(&block)
            && seen.insert(recipient.email.clone())
        {
            failed.push(recipient);
        }
    }
    failed
}

/// The recipient a block of fields reports as failed; None for a delivery, a delay or a
/// block that names nobody.
fn failed_recipient(block: &[(String, String)]) -> Option<Failed> {
    let get = |name: &str| {
        block
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let email = get("original-recipient")
        .and_then(address_of)
        .or_else(|| get("final-recipient").and_then(address_of))
        .or_else(|| get("x-actual-recipient").and_then(address_of))?;
    let action = get("action").map(lower).unwrap_or_default();
    if matches!(
        action.as_str(),
        "delivered" | "relayed" | "expanded" | "delayed"
    ) {
        return None;
    }
    let diagnostic = get("diagnostic-code").map(|d| {
        d.split_once(';')
            .map_or(d, |(_, text)| text)
            .trim()
            .to_string()
    });
    let status = get("status")
        .and_then(find_status)
        .or_else(|| diagnostic.as_deref().and_then(find_status))
        .or_else(|| diagnostic.as_deref().and_then(reply_code_status))
        .unwrap_or_else(|| "5.0.0".to_string());
    if status.starts_with('2') {
        return None;
    }
    Some(Failed {
        hard: is_hard(&status, diagnostic.as_deref().unwrap_or_default()),
        email,
        status,
        diagnostic: diagnostic.map(|d| clean::bounded(&d, clean::MAX_DIAGNOSTIC)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dsn_names_the_recipient_we_sent_to() {
        let body = "Reporting-MTA: dns; mx.example\n\n\
            Final-Recipient: rfc822; r@final.example\n\
            Original-Recipient: rfc822;Kiji@Example.org\nAction: failed\nStatus: 5.1.1\n\
            Diagnostic-Code: smtp; 550 5.1.1 <r@final.example>: Recipient address\n    rejected: User unknown\n\n\
            Final-Recipient: rfc822; ok@example.org\nAction: delivered\nStatus: 2.0.0\n";
        let failed = parse_delivery_status(body);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].email, "kiji@example.org");
        assert_eq!(failed[0].status, "5.1.1");
        assert!(failed[0].hard);
        assert!(
            failed[0]
                .diagnostic
                .as_deref()
                .unwrap()
                .contains("User unknown")
        );
    }
}
