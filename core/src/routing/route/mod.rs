//! The route of one received message, in the order of docs/REFERENCE.md, "Routes" (docs/ARCHITECTURE.md,
//! "Routing"): duplicate, loop, complaint, bounce (`bounce`), reply (`post`), alias (`alias`),
//! catchall (`answer`), the server's fallback alias, unroutable. Every decision is here, pure;
//! what it asks of the database and what it does there go through `Gateway`, which the
//! extension implements with SQL and the fuzz target with a few maps — so the whole route is
//! fuzzed, not only its parts.
//!
//! Everything in a received message is a stranger's word (docs/SECURITY.md): automatic mail
//! is stored but never relayed or answered, a bounce counts only when it is about mail we sent,
//! a sender who claims one of our domains is believed only when authenticated, and what one
//! sender or thread can make us send is bounded.

mod alias;
mod answer;
mod bounce;
mod gateway;
mod post;
mod state;

pub use gateway::{Alias, AutoAnswer, BounceRow, Gateway, Post, Posted, SentMail, Thread};
pub use state::{Routed, State};

use super::RoutingSettings;
use super::address::Sender;
use super::incoming::{self, Reading};
use super::thread::bounce_check;
use crate::authentication::Verdict;
use crate::mime::report::Kind;
use crate::mime::structure;
use crate::mime::summary::{Content, Summary, content};

/// A stored message to route, with what its row knows.
pub struct Incoming<'a> {
    pub raw: &'a [u8],
    /// The incoming server's `keep_attachments` / `keep_original`.
    pub keep_attachments: bool,
    pub keep_original: bool,
    /// The incoming server's fallback alias (docs/REFERENCE.md, "Routes").
    pub fallback_alias: Option<String>,
    /// Who wrote it, as verified when it was received.
    pub authentication: Verdict,
}

/// Routes one message (see the module doc).
pub fn route(message: &Incoming<'_>, settings: &RoutingSettings, gw: &mut impl Gateway) -> Routed {
    let parsed = structure::parse(message.raw);
    let reading = incoming::read(parsed.message.as_ref(), message.raw, settings);
    let mut router = Router {
        message,
        settings,
        reading: &reading,
        parsed: parsed.message.as_ref(),
        gw,
    };
    router.route()
}

/// One message being routed: what it is, what was read from it, and the gateway.
struct Router<'r, G: Gateway> {
    message: &'r Incoming<'r>,
    settings: &'r RoutingSettings,
    reading: &'r Reading,
    parsed: Option<&'r mail_parser::Message<'r>>,
    gw: &'r mut G,
}

impl<'r, G: Gateway> Router<'r, G> {
    fn summary(&self) -> &'r Summary {
        &self.reading.summary
    }

    fn content(&self) -> Content {
        content(
            self.parsed,
            self.message.raw,
            self.message.keep_attachments,
            self.message.keep_original,
        )
    }

    fn route(&mut self) -> Routed {
        if let Some(routed) = self.duplicate_or_loop() {
            return routed;
        }
        let r = self.reading;
        // 3. Complaints and bounces, decided by the report's structure.
        if r.report.kind == Kind::Complaint {
            return Routed::new(
                State::Complaint,
                Some("complaint"),
                format!(
                    "feedback report (complaint) from {}",
                    r.summary
                        .from_address
                        .as_deref()
                        .unwrap_or("an unknown sender")
                ),
            );
        }
        let tagged = self.tagged_mail();
        let mailer_without_report =
            r.to_bounce_address && r.report.kind == Kind::Normal && r.report.from_mailer;
        if r.report.kind == Kind::Bounce || mailer_without_report {
            return self.bounce(tagged);
        }
        let Some(sender) = r.sender.clone() else {
            return Routed::new(State::Unroutable, None, "no sender (From) to route by");
        };
        // Normal mail from the address shows it works again (docs/REFERENCE.md, "Routes") — not a robot's, and not
        // one that failed authentication: a forged message must not make us forget a dead address.
        if !self.automatic() && self.message.authentication != Verdict::Fail {
            self.gw.reset_bounces(&sender.normalized());
        }
        self.route_by_sender(tagged, &sender)
    }

    /// 1. Our own Message-ID coming back; 2. an answer to one of our automatic notices.
    fn duplicate_or_loop(&mut self) -> Option<Routed> {
        let r = self.reading;
        if let Some(mid) = &r.summary.message_id
            && self.gw.is_own_message_id(mid)
        {
            return Some(Routed::new(
                State::Duplicate,
                None,
                format!("Message-ID {mid} is already known"),
            ));
        }
        r.answers_loop_notice.then(|| {
            Routed::new(
                State::Loop,
                Some("loop"),
                "answers one of our automatic notices",
            )
        })
    }

    /// The mail a tracked bounce address names, when its check is right.
    fn tagged_mail(&mut self) -> Option<SentMail> {
        self.reading.tagged_bounce.as_ref().and_then(|(id, check)| {
            self.gw
                .sent_mail(Some(*id), None)
                .filter(|m| bounce_check(&m.message_id) == *check)
        })
    }

    /// Steps 4 to 7: a message from a person (or a robot that is not a mailer), routed by what
    /// it answers and whom it is written to.
    fn route_by_sender(&mut self, tagged: Option<SentMail>, sender: &Sender) -> Routed {
        let r = self.reading;
        // 4. A reply in a thread (an automatic reply to our bounce address finds its mail's).
        if let Some(thread) = self.thread_of(tagged) {
            return self.reply(&thread, sender);
        }
        // 5. An alias.
        if let Some(alias) = self.gw.find_alias(&r.recipients, None) {
            return self.alias(&alias, sender);
        }
        // 6. Written straight to the catchall: answered, no record.
        if r.to_catchall {
            return self.catchall(sender);
        }
        // 7. The server's fallback alias.
        if let Some(name) = &self.message.fallback_alias
            && let Some(alias) = self.gw.find_alias(&[], Some(name))
        {
            return self.alias(&alias, sender);
        }
        Routed::new(
            State::Unroutable,
            None,
            "no thread, alias or catchall address among its references and recipients",
        )
    }

    fn thread_of(&mut self, tagged: Option<SentMail>) -> Option<Thread> {
        let mut candidates = self.reading.reply_candidates.clone();
        if let Some(mail) = &tagged {
            candidates.push(mail.message_id.clone());
        }
        if candidates.is_empty() {
            return None;
        }
        self.gw
            .find_thread(&candidates)
            .or_else(|| tagged.and_then(|m| m.thread))
    }

    /// Whether the message is automatic (RFC 3834 marks, auto-replies, list mail): stored,
    /// never relayed, never answered, its sender never a follower.
    fn automatic(&self) -> bool {
        self.reading.auto_submitted
    }

    /// Whether the sender's From is believed: a From on one of our own domains only when
    /// authenticated; any other From is relayed encapsulated anyway.
    fn believed(&self, sender: &Sender) -> bool {
        !self.settings.is_own_domain(&sender.domain())
            || self.message.authentication == Verdict::Pass
    }
}
