//! What a claimed mail becomes before it goes to a connection: its server, From and
//! envelope (`prepare`), the job a connection renders and sends (`job`), and the results of
//! mail that needs no network (nobody left to reach, no server, a blocked port).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use lettre::Address;

use crate::delivery::{self, Outcome, RecipientState, RecipientStatus};
use crate::mime::build;
use crate::model::{FailureType, MailKind};
use crate::outbox::{Content, DkimKey, Job};
use crate::routing::address::Sender as Mailbox;
use crate::routing::server::{Choice, SenderSettings, Server, choose};
use crate::routing::thread::envelope_sender;
use crate::store::claim::{QueuedMail, Recorded};
use crate::store::servers::ServerRow;

/// What the sender remembers of a mail handed to the pool, to turn its attempt into an outcome.
pub(super) struct InFlight {
    pub recipients: delivery::Recipients,
    pub attempts: i32,
    pub age: Duration,
    pub server_id: i64,
    pub smtp_from: String,
    pub header_from: String,
}

/// The job for a connection, and what the sender keeps to record its outcome.
pub(super) fn job(
    ready: Ready,
    server_id: i64,
    keys: &Arc<HashMap<String, DkimKey>>,
) -> (Job, InFlight) {
    let Ready {
        mail,
        choice,
        envelope,
    } = ready;
    // An empty envelope sender is the null sender (MAIL FROM:<>).
    let from = (!choice.smtp_from.is_empty())
        .then(|| build::envelope_address(&choice.smtp_from).ok())
        .flatten();
    let in_flight = InFlight {
        recipients: mail.recipients,
        attempts: mail.attempts,
        age: mail.age,
        server_id,
        smtp_from: choice.smtp_from,
        header_from: choice.header_from.clone(),
    };
    let headers = mail
        .headers
        .as_ref()
        .and_then(|h| h.as_object())
        .map(|h| {
            h.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let job = Job {
        mail_id: mail.id,
        server_id,
        from,
        to: envelope,
        content: Content {
            message_id: mail.message_id,
            from: choice.header_from,
            to: mail.to,
            cc: mail.cc,
            reply_to: mail.reply_to,
            subject: mail.subject,
            body_text: mail.body_text,
            body_html: mail.body_html,
            headers,
            attachments: mail.attachments,
            dkim_keys: keys.clone(),
        },
    };
    (job, in_flight)
}

/// A mail ready to go: its server choice and the recipients still to reach.
pub(super) struct Ready {
    pub mail: QueuedMail,
    pub choice: Choice,
    pub envelope: Vec<Address>,
}

pub(super) fn blocked_port(row: &ServerRow) -> String {
    format!(
        "port {} of server \"{}\" is blocked on this host (mail_gateway.blocked_ports); use 465, 587 or 2525",
        row.config.port, row.server.name
    )
}

/// Chooses the server and the recipients still to reach; a mail with nobody left to reach
/// is finished here.
pub(super) fn prepare(
    mut mail: QueuedMail,
    blocked: &HashSet<String>,
    settings: &SenderSettings,
    servers: &[Server],
) -> Result<Ready, Box<Recorded>> {
    let Ok(sender) = Mailbox::parse(&mail.email_from) else {
        let outcome = delivery::failed(
            mail.recipients.clone(),
            FailureType::Build,
            format!("malformed From \"{}\"", mail.email_from),
            false,
            mail.attempts,
            mail.age,
        );
        return Err(Box::new(Recorded {
            id: mail.id,
            outcome,
            server_id: None,
            smtp_from: None,
            header_from: None,
        }));
    };
    let mut choice = choose(
        servers,
        settings,
        &sender,
        &mail.email_from,
        mail.kind == MailKind::Mass,
    );
    choice.smtp_from = envelope_sender(
        &choice.smtp_from,
        settings.bounce_address.as_deref(),
        mail.kind == MailKind::AutoReply,
        mail.id,
        &mail.message_id,
    );
    let envelope = envelope(&mut mail, blocked);
    if envelope.is_empty() {
        let outcome = delivery::summarise(mail.recipients.clone(), mail.attempts, mail.age);
        return Err(Box::new(Recorded {
            id: mail.id,
            outcome,
            server_id: choice.server.as_ref().map(|s| s.0),
            smtp_from: Some(choice.smtp_from),
            header_from: Some(choice.header_from),
        }));
    }
    Ok(Ready {
        mail,
        choice,
        envelope,
    })
}

/// The recipients still to reach, each once; the blocklisted and the malformed are finished
/// in `mail.recipients`.
fn envelope(mail: &mut QueuedMail, blocked: &HashSet<String>) -> Vec<Address> {
    let mut envelope = Vec::new();
    let mut seen = HashSet::new();
    for r in mail.to.iter().chain(&mail.cc).chain(&mail.bcc) {
        let Ok(r) = Mailbox::parse(r) else { continue };
        let key = r.normalized();
        if !seen.insert(key.clone())
            || mail
                .recipients
                .get(&key)
                .is_some_and(|s| s.state.is_final())
        {
            continue;
        }
        if blocked.contains(&key) {
            mail.recipients.insert(
                key,
                RecipientStatus {
                    state: RecipientState::Blacklisted,
                    reason: Some("on the blocklist".into()),
                },
            );
            continue;
        }
        match key.parse::<Address>() {
            Ok(address) => envelope.push(address),
            Err(_) => {
                mail.recipients.insert(
                    key,
                    RecipientStatus {
                        state: RecipientState::Exception,
                        reason: Some("malformed address".into()),
                    },
                );
            }
        }
    }
    envelope
}

pub(super) fn recorded(id: i64, mail: InFlight, outcome: Outcome) -> Recorded {
    Recorded {
        id,
        outcome,
        server_id: Some(mail.server_id),
        smtp_from: Some(mail.smtp_from),
        header_from: Some(mail.header_from),
    }
}

pub(super) fn fail(
    ready: Ready,
    failure_type: FailureType,
    reason: String,
    transient: bool,
) -> Recorded {
    let outcome = delivery::failed(
        ready.mail.recipients.clone(),
        failure_type,
        reason,
        transient,
        ready.mail.attempts,
        ready.mail.age,
    );
    Recorded {
        id: ready.mail.id,
        outcome,
        server_id: ready.choice.server.map(|s| s.0),
        smtp_from: Some(ready.choice.smtp_from),
        header_from: Some(ready.choice.header_from),
    }
}
