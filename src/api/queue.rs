//! The outgoing queue's SQL API (docs/REFERENCE.md, "States"): `send_mail`, `retry_mail`, `cancel_mail`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use pgrx::JsonB;
use pgrx::PgSqlErrorCode::{
    ERRCODE_INVALID_PARAMETER_VALUE, ERRCODE_NO_DATA_FOUND,
    ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::error::raise;
use crate::mime::build::check_header;
use crate::routing::address::Sender;
use crate::store::queue::{self, NewMail};
use crate::worker::wake;

fn invalid(message: String, hint: &str) -> ! {
    raise(ERRCODE_INVALID_PARAMETER_VALUE, message, Some(hint))
}

const ADDRESS_HINT: &str = "Write addresses as name@example.com or \"Name\" <name@example.com>.";

fn parse_sender(what: &str, text: &str) -> Sender {
    Sender::parse(text)
        .unwrap_or_else(|_| invalid(format!("malformed {what} address \"{text}\""), ADDRESS_HINT))
}

/// Recipients as given (trimmed), each checked.
fn recipients(what: &str, list: Option<Vec<Option<String>>>) -> Vec<String> {
    list.unwrap_or_default()
        .into_iter()
        .map(|r| {
            let r = r.unwrap_or_else(|| invalid(format!("{what} contains NULL"), ADDRESS_HINT));
            parse_sender(what, &r);
            r.trim().to_string()
        })
        .collect()
}

fn check_headers(headers: &Option<JsonB>) {
    let Some(JsonB(value)) = headers else { return };
    let Some(map) = value.as_object() else {
        invalid(
            "headers must be a JSON object".into(),
            "Example: '{\"X-Order\": \"SO042\"}'",
        );
    };
    for (name, value) in map {
        let Some(value) = value.as_str() else {
            invalid(
                format!("header \"{name}\" must be a string"),
                "Header values are JSON strings.",
            );
        };
        if let Err(e) = check_header(name, value) {
            invalid(
                e.to_string(),
                "Custom headers are X-… and the like; From, To, Subject and the rest have their own arguments.",
            );
        }
    }
}

const ATTACHMENT_HINT: &str =
    "attachments is a JSON array of {\"filename\": …, \"content_type\": …, \"content_base64\": …}.";

pub(crate) fn check_attachments(attachments: &Option<JsonB>) {
    let Some(JsonB(value)) = attachments else {
        return;
    };
    let Some(list) = value.as_array() else {
        invalid("attachments must be a JSON array".into(), ATTACHMENT_HINT);
    };
    for (i, a) in list.iter().enumerate() {
        let field = |name: &str| a.get(name).and_then(|v| v.as_str());
        let (Some(filename), Some(content_type), Some(content)) = (
            field("filename"),
            field("content_type"),
            field("content_base64"),
        ) else {
            invalid(
                format!(
                    "attachment {} lacks filename, content_type or content_base64",
                    i + 1
                ),
                ATTACHMENT_HINT,
            );
        };
        if lettre::message::header::ContentType::parse(content_type).is_err() {
            invalid(
                format!("attachment \"{filename}\" has an invalid content_type \"{content_type}\""),
                "Example: application/pdf",
            );
        }
        if B64.decode(content.as_bytes()).is_err() {
            invalid(
                format!("attachment \"{filename}\" is not valid base64"),
                "Encode the file with encode(bytes, 'base64').",
            );
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
        invalid(
            "a mail needs at least one recipient".into(),
            "Give email_to, cc or bcc.",
        );
    }
    if let Some(r) = reply_to {
        parse_sender("Reply-To", r);
    }
    if !matches!(kind, "transactional" | "mass") {
        invalid(
            format!("unknown mail kind \"{kind}\""),
            "Use 'transactional' or 'mass'.",
        );
    }
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
    match queue::retry(id).as_deref() {
        None => raise(ERRCODE_NO_DATA_FOUND, format!("no mail with id {id}"), None),
        Some("exception" | "cancel" | "outgoing") => {
            wake::at_commit(wake::Target::Senders);
            "outgoing".into()
        }
        Some(state) => raise(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("mail {id} is {state}; only mail in exception or cancel can be retried"),
            Some("A sent mail is not sent again; queue a new one with send_mail()."),
        ),
    }
}

/// Cancels a mail that has not been sent. Returns its new state.
#[pg_extern]
pub fn cancel_mail(id: i64) -> String {
    match queue::cancel(id).as_deref() {
        None => raise(ERRCODE_NO_DATA_FOUND, format!("no mail with id {id}"), None),
        Some("outgoing" | "sending" | "exception") => "cancel".into(),
        Some("cancel") => "cancel".into(),
        Some(state) => raise(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("mail {id} is {state} and cannot be cancelled"),
            None,
        ),
    }
}
