//! Posting in a thread and notifying its followers (docs/REFERENCE.md, "Chatter"), and the gateway's automatic
//! answers (docs/REFERENCE.md, "Routes"). Used by `post_message` and by the router; reads and writes through
//! `store`, decides with `routing`.

use pgrx::JsonB;
use serde_json::json;

use crate::model::{MailKind, MessageKind};
use crate::routing::RoutingSettings;
use crate::routing::address::{Sender, format_mailbox};
use crate::routing::thread::{LOOP_TAG, notification_from, thread_headers};
use crate::store::{self, chatter::NewMessage, queue::NewMail, queue::Notification};
use crate::worker::wake;

pub struct Post<'a> {
    pub model: &'a str,
    pub res_id: i64,
    pub author: &'a Sender,
    /// False when a received message claims one of our domains without passing
    /// authentication: relayed encapsulated and marked, never under our From.
    pub author_verified: bool,
    pub subject: Option<&'a str>,
    pub body_text: Option<&'a str>,
    pub body_html: Option<&'a str>,
    pub attachments: Option<serde_json::Value>,
    pub kind: MessageKind,
    /// A received message keeps its Message-ID; a posted one gets one of ours.
    pub message_id: Option<&'a str>,
    pub inbound_id: Option<i64>,
    /// Mail the followers (false: stored in the thread only).
    pub relay: bool,
}

pub use crate::routing::route::Posted;

fn own_domain(settings: &RoutingSettings, author: &Sender) -> String {
    settings
        .catchall_domain
        .clone()
        .unwrap_or_else(|| author.domain())
}

/// Stores the message in its thread and queues one mail to each follower except its author.
/// The mails carry the thread's `In-Reply-To`/`References` (with this message's own
/// Message-ID, so a reply finds the thread even when a provider rewrote the mail's), and
/// `Reply-To` the thread's alias or the catchall address.
pub fn post(p: Post<'_>, settings: &RoutingSettings) -> Posted {
    let thread = store::chatter::thread_state(p.model, p.res_id);
    let domain = own_domain(settings, p.author);
    let message_id = p
        .message_id
        .map(str::to_string)
        .unwrap_or_else(|| format!("<{}@{domain}>", store::random_token()));
    let subject = p.subject.map(str::to_string).or(thread.subject.clone());
    let id = store::chatter::insert_message(NewMessage {
        model: p.model,
        res_id: p.res_id,
        message_id: &message_id,
        parent_id: thread.last_id,
        author_email: Some(&p.author.normalized()),
        author_name: p.author.name.as_deref(),
        subject: subject.as_deref(),
        body_text: p.body_text,
        body_html: p.body_html,
        attachments: p.attachments.clone().map(JsonB),
        kind: p.kind,
        inbound_id: p.inbound_id,
    });

    let author = p.author.normalized();
    let followers: Vec<(String, Option<String>)> = store::chatter::followers(p.model, p.res_id)
        .into_iter()
        .filter(|(email, _)| *email != author)
        .collect();
    if followers.is_empty() || !p.relay {
        return Posted {
            message: id,
            mails: 0,
        };
    }
    notify(
        &p,
        settings,
        &Stored {
            id,
            message_id,
            subject,
            domain,
            thread,
        },
        &followers,
    );
    wake::at_commit(wake::Target::Senders);
    Posted {
        message: id,
        mails: followers.len() as i64,
    }
}

/// A message just stored in its thread.
struct Stored {
    id: i64,
    message_id: String,
    subject: Option<String>,
    /// The domain of the Message-IDs we write.
    domain: String,
    thread: store::chatter::ThreadState,
}

/// Queues the notification of a stored message to `followers`, in the thread's headers.
fn notify(
    p: &Post<'_>,
    settings: &RoutingSettings,
    stored: &Stored,
    followers: &[(String, Option<String>)],
) {
    let mut headers = serde_json::Map::new();
    let mut ids = stored.thread.message_ids.clone();
    ids.push(stored.message_id.clone());
    if let Some((_, references)) = thread_headers(&ids) {
        headers.insert("References".into(), json!(references));
    }
    if let Some(previous) = stored.thread.message_ids.last() {
        headers.insert("In-Reply-To".into(), json!(previous));
    }
    let default_from = settings
        .sender
        .default_from
        .clone()
        .unwrap_or_else(|| p.author.address.clone());
    let from = notification_from(
        p.author,
        settings.catchall_domain.as_deref(),
        &default_from,
        p.author_verified,
    );
    let reply_to = store::chatter::thread_alias(p.model, p.res_id).or(settings.catchall_address());
    let subject = stored
        .subject
        .clone()
        .unwrap_or_else(|| format!("{} #{}", p.model, p.res_id));
    let recipients: Vec<String> = followers
        .iter()
        .map(|(email, name)| match name {
            Some(name) => format_mailbox(name, email),
            None => email.clone(),
        })
        .collect();
    store::queue::enqueue_notifications(
        Notification {
            from_domain: &stored.domain,
            email_from: &from,
            reply_to: reply_to.as_deref(),
            subject: &subject,
            body_text: p.body_text,
            body_html: p.body_html,
            headers: Some(JsonB(serde_json::Value::Object(headers))),
            attachments: p.attachments.clone().map(JsonB),
            model: p.model,
            res_id: p.res_id,
            message_ref: stored.id,
            priority: if p.inbound_id.is_some() { 1 } else { 0 },
        },
        recipients,
    );
}

/// An automatic answer (a refused sender, mail to the catchall, a loop notice): from the
/// default sender, with an empty envelope sender and `Auto-Submitted: auto-replied`, and a
/// Message-ID with the loop tag so that an answer to it is recognised as a loop.
pub fn auto_answer(
    to: &str,
    subject: Option<&str>,
    body: &str,
    answers: Option<&str>,
    notice: &str,
    settings: &RoutingSettings,
) {
    let Some(from) = settings.sender.default_from.clone() else {
        return;
    };
    let mut headers = serde_json::Map::new();
    headers.insert("Auto-Submitted".into(), json!("auto-replied"));
    headers.insert("X-Mail-Gateway-Notice".into(), json!(notice));
    if let Some(id) = answers {
        headers.insert("In-Reply-To".into(), json!(id));
        headers.insert("References".into(), json!(id));
    }
    let subject = match subject {
        Some(s) if !s.to_lowercase().starts_with("re:") => format!("Re: {s}"),
        Some(s) => s.to_string(),
        None => "Your message".to_string(),
    };
    let domain = settings.catchall_domain.clone().unwrap_or_default();
    store::queue::enqueue(NewMail {
        message_token: format!("{LOOP_TAG}{}", store::random_token()),
        from_domain: domain,
        email_from: &from,
        to: vec![to.to_string()],
        cc: vec![],
        bcc: vec![],
        reply_to: None,
        subject: &subject,
        body_text: Some(body),
        body_html: None,
        headers: Some(JsonB(serde_json::Value::Object(headers))),
        attachments: None,
        scheduled_at: None,
        kind: MailKind::AutoReply,
        model: None,
        res_id: None,
        message_ref: None,
    });
    wake::at_commit(wake::Target::Senders);
}
