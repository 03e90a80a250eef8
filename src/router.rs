//! The route of one stored message, in the order of SPEC §2.8: duplicate, loop, bounce (and
//! complaint), reply, alias, catchall, the server's fallback alias, unroutable. Reads and
//! writes through `store`, decides with `routing` and `mime`; the result is recorded on the
//! `inbound` row (state, route, reason, model, res_id, message).

use mail_parser::MessageParser;
use serde_json::json;

use crate::chatter::{self, Post};
use crate::mime::bounce::{self, Kind};
use crate::mime::summary::{Content, Summary, content};
use crate::routing::RoutingSettings;
use crate::routing::address::Sender;
use crate::routing::incoming;
use crate::routing::thread::bounce_check;
use crate::store::{self, routing::Route};

/// States a message may be routed again from (`reprocess`): the others created something
/// (a record, a post, bounce rows) that routing again would create twice.
pub const REROUTABLE: [&str; 6] = [
    "new",
    "error",
    "unroutable",
    "rejected",
    "loop",
    "duplicate",
];

/// Routes one stored message inside a subtransaction: a failing alias handler or a bad
/// message leaves the message stored, in state `error` with the reason.
pub fn route_stored(id: i64) {
    if let Err(error) = store::subtransaction(|| route(id)) {
        record_failure(id, &format!("routing failed: {error}"));
    }
}

pub fn record_failure(id: i64, reason: &str) {
    record(id, "error", None, reason);
}

fn record(id: i64, state: &str, route: Option<&str>, reason: impl AsRef<str>) {
    store::routing::record_route(
        id,
        Route {
            state,
            route,
            reason: Some(reason.as_ref()),
            model: None,
            res_id: None,
            message_ref: None,
        },
    );
}

/// Routes a stored message (see the module doc). Errors propagate: `route_stored` records them.
pub fn route(id: i64) {
    let Some(pending) = store::routing::pending(id) else {
        return;
    };
    if pending.raw.is_empty() {
        // Refused by the size limit: nothing to route; its reason stays.
        return;
    }
    let settings = store::config::routing_settings();
    let raw = &pending.raw;
    // Parsed once for everything below.
    let parsed = MessageParser::default().parse(raw.as_slice());
    let reading = incoming::read(parsed.as_ref(), raw, &settings);
    let s = &reading.summary;
    let to = &reading.recipients;

    // 1. Our own Message-ID coming back.
    if let Some(mid) = &s.message_id
        && store::chatter::is_known_message_id(mid)
    {
        return record(
            id,
            "duplicate",
            None,
            format!("Message-ID {mid} is already known"),
        );
    }
    // 2. An answer to one of our automatic notices.
    if reading.answers_loop_notice {
        return record(
            id,
            "loop",
            Some("loop"),
            "answers one of our automatic notices",
        );
    }
    // 3. Bounces and complaints.
    let report = &reading.report;
    if report.kind == Kind::Complaint {
        return record(
            id,
            "complaint",
            Some("complaint"),
            format!(
                "feedback report (complaint) from {}",
                s.from_address.as_deref().unwrap_or("an unknown sender")
            ),
        );
    }
    if report.kind == Kind::Bounce || reading.to_bounce_address {
        return route_bounce(id, report, reading.tagged_bounce.clone(), &settings);
    }
    let auto_submitted = reading.auto_submitted;
    let Some(sender) = reading.sender.clone() else {
        return record(id, "unroutable", None, "no sender (From) to route by");
    };
    let sender_address = sender.address.clone();
    let keep = store::inbound::server_keeps(pending.server_id);

    // 4. A reply in a thread.
    if let Some((model, res_id, _)) = store::chatter::find_thread(reading.reply_candidates.clone())
    {
        let c = content(parsed.as_ref(), raw, keep.attachments, keep.original);
        let posted = post_received(&model, res_id, &sender, s, c, id, &settings);
        store::routing::reset_bounces(&sender_address);
        return store::routing::record_route(
            id,
            Route {
                state: "routed",
                route: Some("reply"),
                reason: Some(&format!(
                    "reply in {model} #{res_id}, relayed to {} follower(s)",
                    posted.mails
                )),
                model: Some(&model),
                res_id: Some(res_id),
                message_ref: Some(posted.message),
            },
        );
    }
    // 5. An alias.
    if let Some(alias) = store::routing::find_alias(to, None) {
        let c = content(parsed.as_ref(), raw, keep.attachments, keep.original);
        return route_alias(id, c, s, &sender, &alias, auto_submitted, &settings);
    }
    // 6. Written straight to the catchall: answered, no record.
    if reading.to_catchall {
        if store::routing::catchall_repeat(
            id,
            &sender_address,
            s.subject.as_deref(),
            settings.loop_period_minutes,
        ) {
            return record(
                id,
                "loop",
                Some("catchall"),
                "the same message reached the catchall address within mail.incoming.limit.period",
            );
        }
        if !auto_submitted {
            chatter::auto_answer(
                &sender_address,
                s.subject.as_deref(),
                "This address only collects replies to our messages: your message was not delivered \
                 to anyone. Please answer one of our messages, or write to the address you were given.",
                s.message_id.as_deref(),
                "catchall",
                &settings,
            );
        }
        return record(
            id,
            "unroutable",
            Some("catchall"),
            if auto_submitted {
                "written to the catchall address, not in reply to anything; automatic, so not answered"
            } else {
                "written to the catchall address, not in reply to anything; answered automatically"
            },
        );
    }
    // 7. The server's fallback alias.
    if let Some(name) = &pending.fallback_alias
        && let Some(alias) = store::routing::find_alias(&[], Some(name))
    {
        let c = content(parsed.as_ref(), raw, keep.attachments, keep.original);
        return route_alias(id, c, s, &sender, &alias, auto_submitted, &settings);
    }
    record(
        id,
        "unroutable",
        None,
        "no thread, alias or catchall address among its references and recipients",
    )
}

/// Posts a received message in a thread (kind `email`, its own Message-ID, linked to its
/// `inbound` row), which relays it to the thread's other followers.
fn post_received(
    model: &str,
    res_id: i64,
    sender: &Sender,
    s: &Summary,
    c: Content,
    inbound_id: i64,
    settings: &RoutingSettings,
) -> chatter::Posted {
    chatter::post(
        Post {
            model,
            res_id,
            author: sender,
            subject: s.subject.as_deref(),
            body_text: c.body_text.as_deref(),
            body_html: c.body_html.as_deref(),
            attachments: c.attachments,
            kind: "email",
            message_id: s.message_id.as_deref(),
            inbound_id: Some(inbound_id),
        },
        settings,
    )
}

fn route_alias(
    id: i64,
    c: Content,
    s: &Summary,
    sender: &Sender,
    alias: &store::routing::Alias,
    auto_submitted: bool,
    settings: &RoutingSettings,
) {
    let from = sender.normalized();
    let route_name = format!("alias:{}", alias.name);
    // Contact policy.
    let allowed = match alias.contact_policy.as_str() {
        "partners" => store::routing::is_contact(&from),
        "followers" => alias
            .force_thread_id
            .is_some_and(|t| store::chatter::is_follower(&alias.model, t, &from)),
        _ => true,
    };
    if !allowed {
        if !auto_submitted {
            let text = alias.bounced_content.clone().unwrap_or_else(|| {
                format!(
                    "Your message to {} was not accepted: this address only takes mail from known contacts.",
                    alias.address
                )
            });
            chatter::auto_answer(
                &from,
                s.subject.as_deref(),
                &text,
                s.message_id.as_deref(),
                "policy",
                settings,
            );
        }
        return record(
            id,
            "rejected",
            Some(&route_name),
            format!(
                "{} refuses {from} (contact policy '{}')",
                alias.address, alias.contact_policy
            ),
        );
    }
    // Loop prevention: at most mail.incoming.limit.alias records per sender, alias and period.
    let recent = store::routing::recent_routes(&route_name, &from, settings.loop_period_minutes);
    if recent >= settings.loop_limit {
        if !auto_submitted
            && !store::routing::notice_sent(&from, "loop", settings.loop_period_minutes)
        {
            chatter::auto_answer(
                &from,
                s.subject.as_deref(),
                &format!(
                    "We received too many messages from you at {} within {} minutes; later ones \
                     are not processed until the period has passed.",
                    alias.address, settings.loop_period_minutes
                ),
                s.message_id.as_deref(),
                "loop",
                settings,
            );
        }
        return record(
            id,
            "loop",
            Some(&route_name),
            format!(
                "{from} already created {recent} record(s) through {} within {} minutes (mail.incoming.limit.alias {})",
                alias.address, settings.loop_period_minutes, settings.loop_limit
            ),
        );
    }
    let (res_id, created) = match alias.force_thread_id {
        Some(thread) => (thread, false),
        None => {
            let mut message = s.to_json();
            let mut fields = serde_json::Map::new();
            if let Some(defaults) = alias.defaults.as_object() {
                fields.extend(defaults.clone());
            }
            if let Some(subject) = &s.subject {
                fields.insert("name".into(), json!(subject));
            }
            fields.insert("email_from".into(), json!(from));
            if let Some(text) = &c.body_text {
                fields.insert("description".into(), json!(text));
            }
            if let Some(m) = message.as_object_mut() {
                m.insert("body_text".into(), json!(c.body_text));
                m.insert("body_html".into(), json!(c.body_html));
                m.insert("alias".into(), json!(alias.name));
                m.insert("defaults".into(), alias.defaults.clone());
                m.insert("inbound_id".into(), json!(id));
            }
            let record =
                store::routing::create_record(alias, message, serde_json::Value::Object(fields));
            (record, true)
        }
    };
    store::chatter::follow(&alias.model, res_id, &from, sender.name.as_deref());
    let posted = post_received(&alias.model, res_id, sender, s, c, id, settings);
    store::routing::reset_bounces(&from);
    store::routing::record_route(
        id,
        Route {
            state: "routed",
            route: Some(&route_name),
            reason: Some(&if created {
                format!(
                    "created {} #{res_id} through {}",
                    alias.model, alias.address
                )
            } else {
                format!(
                    "posted in {} #{res_id} through {}",
                    alias.model, alias.address
                )
            }),
            model: Some(&alias.model),
            res_id: Some(res_id),
            message_ref: Some(posted.message),
        },
    );
}

fn route_bounce(
    id: i64,
    report: &bounce::Report,
    tagged: Option<(i64, String)>,
    settings: &RoutingSettings,
) {
    let mail = store::routing::bounced_mail(tagged.clone(), report.original_message_id.as_deref())
        // A tracking token counts only with the check of the mail's own Message-ID.
        .filter(|(mail_id, message_id, _)| match &tagged {
            Some((tag_id, check)) if tag_id == mail_id => *check == bounce_check(message_id),
            _ => report.original_message_id.as_deref() == Some(message_id.as_str()),
        });
    let mut failed = report.failed.clone();
    if failed.is_empty()
        && let Some((_, _, recipients)) = &mail
    {
        // Sent to our bounce address, but no report we can read: every recipient of the mail.
        failed = recipients
            .iter()
            .filter_map(|r| Sender::parse(r).ok())
            .map(|r| bounce::Failed {
                email: r.normalized(),
                status: "5.0.0".into(),
                hard: false,
                diagnostic: Some("bounce without a readable report".into()),
            })
            .collect();
    }
    if failed.is_empty() {
        return record(
            id,
            "bounce",
            Some("bounce"),
            "a bounce that names no recipient and no mail of ours",
        );
    }
    let mut words = Vec::new();
    for f in &failed {
        let mail_id = mail.as_ref().map(|m| m.0);
        let blocked = store::routing::record_bounce(
            store::routing::BounceRow {
                inbound_id: id,
                mail_id,
                email: &f.email,
                status: &f.status,
                hard: f.hard,
                diagnostic: f.diagnostic.as_deref(),
            },
            settings.bounce_limit,
            &settings.bounce_period,
            &settings.bounce_spread,
        );
        words.push(format!(
            "{} ({}{}{})",
            f.email,
            f.status,
            if f.hard { ", hard" } else { "" },
            if blocked { ", now blocklisted" } else { "" }
        ));
    }
    let about = match &mail {
        Some((mail_id, _, _)) => format!(" of mail {mail_id}"),
        None => String::new(),
    };
    record(
        id,
        "bounce",
        Some("bounce"),
        format!("bounce{about}: {}", words.join(", ")),
    )
}
