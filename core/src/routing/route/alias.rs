//! Mail to an alias: its contact policy and the loop limit first, then the record it creates
//! (or the one it is forced to), followed by the sender when that is safe.

use serde_json::{Value, json};

use super::{Alias, Gateway, Routed, Router, State, Thread};
use crate::authentication::Verdict;
use crate::model::ContactPolicy;
use crate::routing::address::Sender;

impl<G: Gateway> Router<'_, G> {
    pub(super) fn alias(&mut self, alias: &Alias, sender: &Sender) -> Routed {
        let from = sender.normalized();
        let route = format!("alias:{}", alias.name);
        if let Some(refused) = self
            .contact_refusal(alias, &from, &route)
            .or_else(|| self.loop_refusal(alias, &from, &route))
        {
            return refused;
        }
        let (res_id, created) = match alias.force_thread_id {
            Some(id) => (id, false),
            None => (self.create_record(alias, &from), true),
        };
        let thread = Thread {
            model: alias.model.clone(),
            res_id,
        };
        // The sender of a new record follows it (the ERP's answers reach him); a shared record
        // is followed only by a sender we know or could verify, and never by a robot — a
        // stranger's mail must not subscribe him to everyone else's.
        if !self.automatic()
            && (created
                || self.message.authentication == Verdict::Pass
                || self.gw.is_contact(&from))
        {
            self.gw.follow(&thread, sender);
        }
        let reason = if created {
            format!(
                "created {} #{res_id} through {}",
                alias.model, alias.address
            )
        } else {
            format!(
                "posted in {} #{res_id} through {}",
                alias.model, alias.address
            )
        };
        self.post(&thread, sender, &route, reason)
    }

    /// The alias's contact policy refusing `from`, answered with the alias's text.
    fn contact_refusal(&mut self, alias: &Alias, from: &str, route: &str) -> Option<Routed> {
        let allowed = match alias.contact_policy {
            ContactPolicy::Everyone => true,
            ContactPolicy::Partners => self.gw.is_contact(from),
            ContactPolicy::Followers => alias.force_thread_id.is_some_and(|id| {
                let thread = Thread {
                    model: alias.model.clone(),
                    res_id: id,
                };
                self.gw.is_follower(&thread, from)
            }),
        };
        if allowed {
            return None;
        }
        let text = alias.bounced_content.clone().unwrap_or_else(|| {
            format!(
                "Your message to {} was not accepted: this address only takes mail from known contacts.",
                alias.address
            )
        });
        let answered = self.answer(from, &text, "policy");
        Some(Routed::new(
            State::Rejected,
            Some(route),
            format!(
                "{} refuses {from} (contact policy '{}'); {answered}",
                alias.address, alias.contact_policy
            ),
        ))
    }

    /// Loop prevention: at most mail.incoming.limit.alias records per sender, alias and period.
    fn loop_refusal(&mut self, alias: &Alias, from: &str, route: &str) -> Option<Routed> {
        let s = self.settings;
        let recent = self.gw.records_created(route, from, s.loop_period_minutes);
        if recent < s.loop_limit {
            return None;
        }
        let text = format!(
            "We received too many messages from you at {} within {} minutes; later ones \
             are not processed until the period has passed.",
            alias.address, s.loop_period_minutes
        );
        let answered = self.answer(from, &text, "loop");
        Some(Routed::new(
            State::Loop,
            Some(route),
            format!(
                "{from} already created {recent} record(s) through {} within {} minutes (mail.incoming.limit.alias {}); {answered}",
                alias.address, s.loop_period_minutes, s.loop_limit
            ),
        ))
    }

    fn create_record(&mut self, alias: &Alias, from: &str) -> i64 {
        let s = self.summary().clone();
        let c = self.content();
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
        let mut message = s.to_json();
        if let Some(m) = message.as_object_mut() {
            m.insert("body_text".into(), json!(c.body_text));
            m.insert("body_html".into(), json!(c.body_html));
            m.insert("alias".into(), json!(alias.name));
            m.insert("defaults".into(), alias.defaults.clone());
            m.insert(
                "authentication".into(),
                json!(self.message.authentication.as_str()),
            );
        }
        self.gw.create_record(alias, message, Value::Object(fields))
    }
}
