//! The chatter's SQL API (docs/REFERENCE.md, "Chatter"): `follow`, `unfollow`, `post_message`.

use pgrx::JsonB;
use pgrx::prelude::*;

use crate::chatter::{self, Post};
use crate::error::ApiError;
use crate::model::MessageKind;
use crate::store;

fn check_thread(model: &str) {
    if model.trim().is_empty() {
        ApiError::invalid(
            "model must not be empty",
            "A thread is (model, res_id): the record's table and id.",
        )
        .raise();
    }
}

use super::queue::parse_sender as parse_address;

/// Makes `email` a follower of the record (`name` updates a follower's name); followers get a
/// mail for every message posted in its thread. The address also becomes a known contact.
#[pg_extern]
pub fn follow(model: &str, res_id: i64, email: &str, name: default!(Option<&str>, "NULL")) {
    check_thread(model);
    let address = parse_address("follower", email);
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .or(address.name.as_deref());
    store::chatter::follow(model, res_id, &address.normalized(), name);
}

/// Stops `email` following the record; returns whether it did.
#[pg_extern]
pub fn unfollow(model: &str, res_id: i64, email: &str) -> bool {
    check_thread(model);
    let address = parse_address("follower", email);
    store::chatter::unfollow(model, res_id, &address.normalized())
}

/// Stores a message in the record's thread and queues one mail to each follower except the
/// author, when this transaction commits. Returns the message id.
#[pg_extern]
pub fn post_message(
    model: &str,
    res_id: i64,
    author: &str,
    body: Option<&str>,
    subject: default!(Option<&str>, "NULL"),
    body_html: default!(Option<&str>, "NULL"),
    attachments: default!(Option<JsonB>, "NULL"),
) -> i64 {
    check_thread(model);
    let author = parse_address("author", author);
    if body.is_none() && body_html.is_none() {
        ApiError::invalid("a message needs a body", "Give body (text) or body_html.").raise();
    }
    if let Some(subject) = subject
        && subject.contains(['\r', '\n'])
    {
        ApiError::invalid(
            "the subject contains a line break",
            "A subject is one line.",
        )
        .raise();
    }
    super::queue::check_attachments(&attachments);
    let settings = store::config::routing_settings();
    chatter::post(
        Post {
            model,
            res_id,
            author: &author,
            // ERP code speaks for its users.
            author_verified: true,
            subject,
            body_text: body,
            body_html,
            attachments: attachments.map(|a| a.0),
            kind: MessageKind::Comment,
            message_id: None,
            inbound_id: None,
            relay: true,
        },
        &settings,
    )
    .message
}
