//! Routing a stored message: `routing::route` decides (pure, in the core crate); this module
//! is its `Gateway` on our tables — every question and effect goes through `store` and
//! `chatter` — and records the outcome on the `inbound` row (state, route, reason, model,
//! res_id, message, relayed).

use serde_json::Value;

use crate::chatter;
use crate::model::MessageKind;
use crate::routing::RoutingSettings;
use crate::routing::address::Sender;
use crate::routing::route::{
    self, Alias, AutoAnswer, BounceRow, Gateway, Incoming, Post, Posted, Routed, SentMail, State,
    Thread,
};
use crate::store;

/// Routes one stored message inside a subtransaction: a failing alias handler or a bad
/// message leaves the message stored, in state `error` with the reason.
/// Routing writes as the gateway, whoever calls (`process_message`, `reprocess`, the fetcher).
pub fn route_stored(id: i64) {
    store::as_gateway(|| {
        if let Err(error) = store::subtransaction(|| route(id)) {
            record_failure(id, &format!("routing failed: {error}"));
        }
    })
}

pub fn record_failure(id: i64, reason: &str) {
    store::routing::record_route(
        id,
        &Routed {
            state: State::Error,
            route: None,
            reason: reason.to_string(),
            thread: None,
            message: None,
            relayed: 0,
        },
    );
}

/// Routes a stored message. Errors propagate: `route_stored` records them.
pub fn route(id: i64) {
    let Some(pending) = store::routing::pending(id) else {
        return;
    };
    if pending.raw.is_empty() {
        // Refused by the size limit: nothing to route; its reason stays.
        return;
    }
    let settings = store::config::routing_settings();
    let keep = store::incoming::server_keeps(pending.server_id);
    let incoming = Incoming {
        raw: &pending.raw,
        keep_attachments: keep.attachments,
        keep_original: keep.original,
        fallback_alias: pending.fallback_alias.clone(),
        authentication: pending.authentication,
    };
    let mut tables = Tables {
        inbound_id: id,
        settings: &settings,
    };
    let routed = route::route(&incoming, &settings, &mut tables);
    store::routing::record_route(id, &routed);
}

/// The routing gateway on our tables, for message `inbound_id`.
struct Tables<'a> {
    inbound_id: i64,
    settings: &'a RoutingSettings,
}

impl Gateway for Tables<'_> {
    fn is_own_message_id(&mut self, message_id: &str) -> bool {
        store::chatter::is_known_message_id(message_id)
    }

    fn find_thread(&mut self, candidates: &[String]) -> Option<Thread> {
        store::chatter::find_thread(candidates.to_vec())
            .map(|(model, res_id, _)| Thread { model, res_id })
    }

    fn sent_mail(&mut self, id: Option<i64>, message_id: Option<&str>) -> Option<SentMail> {
        store::routing::sent_mail(id, message_id)
    }

    fn find_alias(&mut self, recipients: &[String], name: Option<&str>) -> Option<Alias> {
        store::routing::find_alias(recipients, name)
    }

    fn is_contact(&mut self, email: &str) -> bool {
        store::routing::is_contact(email)
    }

    fn is_follower(&mut self, thread: &Thread, email: &str) -> bool {
        store::chatter::is_follower(&thread.model, thread.res_id, email)
    }

    fn records_created(&mut self, route: &str, sender: &str, minutes: i64) -> i64 {
        store::routing::recent_routes(route, sender, minutes)
    }

    fn relayed(
        &mut self,
        thread: &Thread,
        sender: &str,
        minutes: i64,
        caps: (i64, i64),
    ) -> (i64, i64) {
        store::routing::relayed(thread, sender, minutes, caps)
    }

    fn catchall_repeat(&mut self, sender: &str, subject: Option<&str>, minutes: i64) -> bool {
        store::routing::catchall_repeat(self.inbound_id, sender, subject, minutes)
    }

    fn answers_queued(&mut self, to: &str, notice: &str, minutes: i64) -> (i64, i64, i64) {
        store::routing::answers_queued(to, notice, minutes)
    }

    fn post(&mut self, post: Post<'_>) -> Posted {
        chatter::post(
            chatter::Post {
                model: &post.thread.model,
                res_id: post.thread.res_id,
                author: post.author,
                author_verified: post.author_verified,
                subject: post.subject,
                body_text: post.content.body_text.as_deref(),
                body_html: post.content.body_html.as_deref(),
                attachments: post.content.attachments,
                kind: MessageKind::Email,
                message_id: post.message_id,
                inbound_id: Some(self.inbound_id),
                relay: post.relay,
            },
            self.settings,
        )
    }

    fn follow(&mut self, thread: &Thread, sender: &Sender) {
        store::chatter::follow(
            &thread.model,
            thread.res_id,
            &sender.normalized(),
            sender.name.as_deref(),
        );
    }

    fn create_record(&mut self, alias: &Alias, mut message: Value, fields: Value) -> i64 {
        if let Some(m) = message.as_object_mut() {
            m.insert("inbound_id".into(), self.inbound_id.into());
        }
        store::records::create_record(alias, message, fields)
    }

    fn record_bounce(&mut self, row: BounceRow<'_>) -> bool {
        store::routing::record_bounce(self.inbound_id, row, self.settings)
    }

    fn reset_bounces(&mut self, email: &str) {
        store::routing::reset_bounces(email)
    }

    fn auto_answer(&mut self, answer: AutoAnswer<'_>) {
        chatter::auto_answer(
            answer.to,
            answer.subject,
            answer.body,
            answer.answers,
            answer.notice,
            self.settings,
        );
    }
}
