//! The outgoing queue's SQL API (docs/REFERENCE.md, "States"): `send_mail`, `retry_mail`, `cancel_mail`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use pgrx::JsonB;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::error::ApiError;
use crate::mime::build::check_header;
use crate::model::{MailKind, MailState};
use crate::routing::address::Sender;
use crate::store::queue::{self, NewMail};
use crate::worker::wake;

pub(crate) fn parse_sender(what: &'static str, text: &str) -> Sender {
    Sender::parse(text).unwrap_or_else(|_| {
        ApiError::MalformedAddress {
            what,
            text: text.to_string(),
        }
        .raise()
    })
}

/// Recipients as given (trimmed), each checked.
fn recipients(what: &'static str, list: Option<Vec<Option<String>>>) -> Vec<String> {
    list.unwrap_or_default()
        .into_iter()
        .map(|r| {
            let r = r.unwrap_or_else(|| ApiError::NullAddress { what }.raise());
            parse_sender(what, &r);
            r.trim().to_string()
        })
        .collect()
}

fn check_headers(headers: &Option<JsonB>) {
    let Some(JsonB(value)) = headers else { return };
    let Some(map) = value.as_object() else {
        ApiError::invalid(
            "headers must be a JSON object",
            "Example: '{\"X-Order\": \"SO042\"}'",
        )
        .raise();
    };
    for (name, value) in map {
        let Some(value) = value.as_str() else {
            ApiError::invalid(
                format!("header \"{name}\" must be a string"),
                "Header values are JSON strings.",
            )
            .raise();
        };
        if let Err(e) = check_header(name, value) {
            ApiError::invalid(
                e.to_string(),
                "Custom headers are X-… and the like; From, To, Subject and the rest have their own arguments.",
            ).raise();
        }
    }
}

pub(crate) fn check_attachments(attachments: &Option<JsonB>) {
    let Some(JsonB(value)) = attachments else {
        return;
    };
    let Some(list) = value.as_array() else {
        ApiError::Attachments("attachments must be a JSON array".into()).raise();
    };
    for (i, a) in list.iter().enumerate() {
        let field = |name: &str| a.get(name).and_then(|v| v.as_str());
        let (Some(filename), Some(content_type), Some(content)) = (
            field("filename"),
            field("content_type"),
            field("content_base64"),
        ) else {
            ApiError::Attachments(format!(
                "attachment {} lacks filename, content_type or content_base64",
                i + 1
            ))
            .raise();
        };
        if lettre::message::header::ContentType::parse(content_type).is_err() {
            ApiError::invalid(
                format!("attachment \"{filename}\" has an invalid content_type \"{content_type}\""),
                "Example: application/pdf",
            )
            .raise();
        }
        if B64.decode(content.as_bytes()).is_err() {
            ApiError::invalid(
                format!("attachment \"{filename}\" is not valid base64"),
                "Encode the file with encode(bytes, 'base64').",
            )
            .raise();
        }
    }
}

/// Queues one mail in the caller's transaction and returns its id; the worker is woken when
/// the transaction commits, and nothing is sent if it rolls back.
#[allow(clippy::too_many_arguments)]
#[pg_extern]
pub fn send_mail(
    email_from: &str,
    email_to: Option<Vec<Option<String>>>,
    subject: Option<&str>,
    body_text: default!(Option<&str>, "NULL"),
    body_html: default!(Option<&str>, "NULL"),
    cc: default!(Option<Vec<Option<String>>>, "NULL"),
    bcc: default!(Option<Vec<Option<String>>>, "NULL"),
    reply_to: default!(Option<&str>, "NULL"),
    headers: default!(Option<JsonB>, "NULL"),
    attachments: default!(Option<JsonB>, "NULL"),
    scheduled_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    kind: default!(&str, "'transactional'"),
    model: default!(Option<&str>, "NULL"),
    res_id: default!(Option<i64>, "NULL"),
) -> i64 {
    let from = parse_sender("From", email_from);
    let to = recipients("email_to", email_to);
    let cc = recipients("cc", cc);
    let bcc = recipients("bcc", bcc);
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        ApiError::invalid(
            "a mail needs at least one recipient",
            "Give email_to, cc or bcc.",
        )
        .raise();
    }
    if let Some(r) = reply_to {
        parse_sender("Reply-To", r);
    }
    // auto_reply is the gateway's own kind, never the caller's.
    let kind = match kind.parse() {
        Ok(kind @ (MailKind::Transactional | MailKind::Mass)) => kind,
        _ => ApiError::UnknownMailKind(kind.to_string()).raise(),
    };
    check_headers(&headers);
    check_attachments(&attachments);
    let id = queue::enqueue(NewMail {
        message_token: crate::store::random_token(),
        from_domain: from.domain(),
        email_from: email_from.trim(),
        to,
        cc,
        bcc,
        reply_to: reply_to.map(str::trim),
        subject: subject.unwrap_or_default(),
        body_text,
        body_html,
        headers,
        attachments,
        scheduled_at,
        kind,
        model,
        res_id,
        message_ref: None,
    });
    wake::at_commit(wake::Target::Senders);
    id
}

/// Puts a failed or cancelled mail back in the queue, due now. Returns its new state.
#[pg_extern]
pub fn retry_mail(id: i64) -> String {
    match queue::retry(id) {
        None => ApiError::NoMail(id).raise(),
        Some(MailState::Exception | MailState::Cancel | MailState::Outgoing) => {
            wake::at_commit(wake::Target::Senders);
            MailState::Outgoing.as_str().into()
        }
        Some(state) => ApiError::NotRetryable { id, state }.raise(),
    }
}

/// Cancels a mail that has not been sent. Returns its new state.
#[pg_extern]
pub fn cancel_mail(id: i64) -> String {
    match queue::cancel(id) {
        None => ApiError::NoMail(id).raise(),
        Some(
            MailState::Outgoing | MailState::Sending | MailState::Exception | MailState::Cancel,
        ) => MailState::Cancel.as_str().into(),
        Some(state) => ApiError::NotCancellable { id, state }.raise(),
    }
}
