//! One sending round: claim due mail (short transaction) → deliver over SMTP (no transaction)
//! → record the results (short transaction). A crash anywhere leaves claimed mail `sending`;
//! it is sent again later, with the same Message-ID (at-least-once).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lettre::Address;
use pgrx::prelude::*;

use super::in_transaction;
use crate::delivery::{self, Outcome, RecipientState, RecipientStatus};
use crate::dkim;
use crate::mime::build::{self, Attachment, Outgoing};
use crate::routing::address::Sender;
use crate::routing::server::{Choice, SenderSettings, Server, choose};
use crate::routing::thread::envelope_sender;
use crate::smtp::{Client, SmtpError, Stage};
use crate::store::queue::{QueuedMail, Recorded, ServerRow};
use crate::{gucs, store};

/// Everything a round needs, read in the claim transaction.
struct Claimed {
    mails: Vec<QueuedMail>,
    blocked: HashSet<String>,
    settings: SenderSettings,
    configs: HashMap<i64, ServerRow>,
    dkim_keys: HashMap<String, (String, String, String)>,
}

/// A mail ready to go: its server choice and the recipients still to reach.
struct Ready {
    mail: QueuedMail,
    choice: Choice,
    envelope: Vec<Address>,
}

/// Runs one round for sender `worker`; returns how many mails it claimed.
pub fn round(worker: i32) -> usize {
    let batch = gucs::send_batch_size();
    let Some(Some(claimed)) = in_transaction("claiming mail", move || {
        let mails = store::queue::claim(worker, batch, gucs::send_lease());
        if mails.is_empty() {
            return None;
        }
        let addresses: Vec<String> = mails
            .iter()
            .flat_map(|m| m.to.iter().chain(&m.cc).chain(&m.bcc))
            .filter_map(|r| Sender::parse(r).ok())
            .map(|s| s.normalized())
            .collect();
        Some(Claimed {
            mails,
            blocked: store::queue::blocklisted(addresses),
            settings: store::config::sender_settings(),
            configs: store::queue::server_configs(gucs::smtp_timeout()),
            dkim_keys: store::queue::dkim_keys(),
        })
    }) else {
        return 0;
    };
    let count = claimed.mails.len();
    let (mut results, successes, errors) = deliver(claimed);
    // The retry schedule (1 min doubling to 1 h) scales with mail_gateway.retry_delay.
    let scale = gucs::retry_delay().as_secs_f64() / 60.0;
    for r in &mut results {
        if let delivery::MailState::Retry(delay) = r.outcome.state {
            r.outcome.state = delivery::MailState::Retry(delay.mul_f64(scale));
        }
    }
    in_transaction("recording results", move || {
        store::queue::record(worker, &results);
        store::queue::record_server_health(successes, errors);
    });
    count
}

/// Outside any transaction: chooses servers, connects once per server, sends.
fn deliver(claimed: Claimed) -> (Vec<Recorded>, Vec<i64>, Vec<(i64, String)>) {
    let Claimed {
        mails,
        blocked,
        settings,
        configs,
        dkim_keys,
    } = claimed;
    let servers: Vec<Server> = configs.values().map(|row| row.server.clone()).collect();
    let mut results = Vec::with_capacity(mails.len());
    let mut by_server: BTreeMap<Option<i64>, Vec<Ready>> = BTreeMap::new();
    for mail in mails {
        match prepare(mail, &blocked, &settings, &servers) {
            Ok(ready) => by_server
                .entry(ready.choice.server.as_ref().map(|s| s.0))
                .or_default()
                .push(ready),
            Err(done) => results.push(*done),
        }
    }
    let (mut successes, mut errors) = (vec![], vec![]);
    for (server_id, group) in by_server {
        let Some((server_id, row)) = server_id.and_then(|id| Some((id, configs.get(&id)?))) else {
            let reason = "no active outgoing server".to_string();
            results.extend(
                group
                    .into_iter()
                    .map(|r| fail(r, "no_server", reason.clone(), true)),
            );
            continue;
        };
        if gucs::port_blocked(row.config.port) {
            let reason = format!(
                "port {} of server \"{}\" is blocked on this host (mail_gateway.blocked_ports); use 465, 587 or 2525",
                row.config.port, row.server.name
            );
            errors.push((server_id, reason.clone()));
            results.extend(
                group
                    .into_iter()
                    .map(|r| fail(r, "blocked_port", reason.clone(), true)),
            );
            continue;
        }
        let mut client = match Client::connect(&row.config) {
            Ok(c) => c,
            Err(e) => {
                log!(
                    "mail_gateway: server \"{}\": {e}; {} mail(s) wait",
                    row.server.name,
                    group.len()
                );
                errors.push((server_id, e.message.clone()));
                results.extend(group.into_iter().map(|r| fail_smtp(r, &e)));
                continue;
            }
        };
        let mut sent_any = false;
        let mut broken: Option<SmtpError> = None;
        for ready in group {
            if let Some(e) = &broken {
                results.push(fail_smtp(ready, e));
                continue;
            }
            let message = match render(&ready, &dkim_keys) {
                Ok(m) => m,
                Err(reason) => {
                    results.push(fail(ready, "build", reason, false));
                    continue;
                }
            };
            // An empty envelope sender is the null sender (MAIL FROM:<>).
            let from = (!ready.choice.smtp_from.is_empty())
                .then(|| build::envelope_address(&ready.choice.smtp_from).ok())
                .flatten();
            let result = client.send(from.as_ref(), &ready.envelope, &message);
            if let Err(e) = &result
                && (client.is_broken()
                    || matches!(e.stage, Stage::Connect | Stage::Tls)
                    || e.code.is_none())
            {
                errors.push((server_id, e.message.clone()));
                broken = Some(e.clone());
            }
            let outcome = delivery::after_delivery(
                ready.mail.recipients.clone(),
                result,
                ready.mail.attempts,
                ready.mail.age,
            );
            sent_any |= outcome
                .recipients
                .values()
                .any(|r| r.state == RecipientState::Sent);
            results.push(recorded(ready, outcome));
        }
        if broken.is_none() {
            client.quit();
        }
        if sent_any {
            successes.push(server_id);
        }
    }
    (results, successes, errors)
}

/// Chooses the server and the recipients still to reach; a mail with nobody left to reach
/// is finished here.
fn prepare(
    mut mail: QueuedMail,
    blocked: &HashSet<String>,
    settings: &SenderSettings,
    servers: &[Server],
) -> Result<Ready, Box<Recorded>> {
    let Ok(sender) = Sender::parse(&mail.email_from) else {
        let outcome = delivery::failed(
            mail.recipients.clone(),
            "build",
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
        mail.kind == "mass",
    );
    choice.smtp_from = envelope_sender(
        &choice.smtp_from,
        settings.bounce_address.as_deref(),
        mail.kind == "auto_reply",
        mail.id,
        &mail.message_id,
    );
    let mut envelope = Vec::new();
    let mut seen = HashSet::new();
    for r in mail.to.iter().chain(&mail.cc).chain(&mail.bcc) {
        let Ok(r) = Sender::parse(r) else { continue };
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

/// The bytes to send: built, then signed when the From domain has a DKIM key. A bug here
/// fails one mail, never the worker.
fn render(
    ready: &Ready,
    dkim_keys: &HashMap<String, (String, String, String)>,
) -> Result<Vec<u8>, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let mail = &ready.mail;
        let headers: Vec<(String, String)> = mail
            .headers
            .as_ref()
            .and_then(|h| h.as_object())
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let attachments = attachments(mail.attachments.as_ref())?;
        let message = build::build(&Outgoing {
            message_id: &mail.message_id,
            from: &ready.choice.header_from,
            to: &mail.to,
            cc: &mail.cc,
            reply_to: mail.reply_to.as_deref(),
            subject: &mail.subject,
            body_text: mail.body_text.as_deref(),
            body_html: mail.body_html.as_deref(),
            headers: &headers,
            attachments: &attachments,
            date: SystemTime::now(),
        })?;
        let domain = Sender::parse(&ready.choice.header_from)
            .map(|s| s.domain())
            .unwrap_or_default();
        match dkim_keys.get(&domain) {
            Some((selector, algorithm, key)) => {
                let Some(alg) = dkim::Algorithm::parse(algorithm) else {
                    return Ok(message);
                };
                dkim::sign(&message, &domain, selector, alg, key).or_else(|e| {
                    // Unsigned mail may still arrive; a lost mail would not.
                    warning!("mail_gateway: DKIM key of {domain} unusable, sending unsigned: {e}");
                    Ok(message)
                })
            }
            None => Ok(message),
        }
    }))
    .unwrap_or_else(|_| Err("internal error while building the message".into()))
}

fn attachments(value: Option<&serde_json::Value>) -> Result<Vec<Attachment>, String> {
    let Some(list) = value.and_then(|v| v.as_array()) else {
        return Ok(vec![]);
    };
    list.iter()
        .map(|a| {
            let field = |k: &str| {
                a.get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let content = B64
                .decode(field("content_base64").as_bytes())
                .map_err(|e| format!("attachment \"{}\": {e}", field("filename")))?;
            Ok(Attachment {
                filename: field("filename"),
                content_type: field("content_type"),
                content,
            })
        })
        .collect()
}

fn recorded(ready: Ready, outcome: Outcome) -> Recorded {
    Recorded {
        id: ready.mail.id,
        outcome,
        server_id: ready.choice.server.map(|s| s.0),
        smtp_from: Some(ready.choice.smtp_from),
        header_from: Some(ready.choice.header_from),
    }
}

fn fail(ready: Ready, failure_type: &str, reason: String, transient: bool) -> Recorded {
    let outcome = delivery::failed(
        ready.mail.recipients.clone(),
        failure_type,
        reason,
        transient,
        ready.mail.attempts,
        ready.mail.age,
    );
    recorded(ready, outcome)
}

fn fail_smtp(ready: Ready, e: &SmtpError) -> Recorded {
    fail(
        ready,
        delivery::failure_type(e.stage),
        e.message.clone(),
        e.transient,
    )
}
