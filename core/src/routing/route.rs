//! The route of one received message, in the order of docs/REFERENCE.md, "Routes" (docs/ARCHITECTURE.md,
//! "Routing"): duplicate, loop, complaint, bounce, reply, alias, catchall, the server's
//! fallback alias, unroutable. Every decision is here, pure; what it asks of the database and
//! what it does there go through `Gateway`, which the extension implements with SQL and the
//! fuzz target with a few maps — so the whole route is fuzzed, not only its parts.
//!
//! Everything in a received message is a stranger's word (docs/SECURITY.md): automatic mail
//! is stored but never relayed or answered, a bounce counts only when it is about mail we sent,
//! a sender who claims one of our domains is believed only when authenticated, and what one
//! sender or thread can make us send is bounded.

use serde_json::{Value, json};

use super::RoutingSettings;
use super::address::Sender;
use super::incoming::{self, Reading};
use super::thread::bounce_check;
use crate::authentication::Verdict;
use crate::mime::report::{self, Kind};
use crate::mime::structure;
use crate::mime::summary::{Content, Summary, content};

/// The states of a received message (`inbound.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    New,
    Routed,
    Duplicate,
    Bounce,
    Complaint,
    Loop,
    Rejected,
    Unroutable,
    Error,
}

impl State {
    pub const ALL: [State; 9] = [
        State::New,
        State::Routed,
        State::Duplicate,
        State::Bounce,
        State::Complaint,
        State::Loop,
        State::Rejected,
        State::Unroutable,
        State::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::Routed => "routed",
            State::Duplicate => "duplicate",
            State::Bounce => "bounce",
            State::Complaint => "complaint",
            State::Loop => "loop",
            State::Rejected => "rejected",
            State::Unroutable => "unroutable",
            State::Error => "error",
        }
    }

    /// States a message may be routed again from (`reprocess`): the others created something
    /// (a record, a post, bounce rows) that routing again would create twice.
    pub fn reroutable(self) -> bool {
        matches!(
            self,
            State::New
                | State::Error
                | State::Unroutable
                | State::Rejected
                | State::Loop
                | State::Duplicate
        )
    }
}

impl std::str::FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<State, String> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown inbound state \"{s}\""))
    }
}

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

/// A thread a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub model: String,
    pub res_id: i64,
}

/// A mail we sent, as a bounce or an automatic reply finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMail {
    pub id: i64,
    pub message_id: String,
    /// To, Cc and Bcc, lower-case addresses.
    pub recipients: Vec<String>,
    pub thread: Option<Thread>,
}

/// An alias a message is addressed to.
#[derive(Debug, Clone)]
pub struct Alias {
    pub id: i64,
    pub name: String,
    pub model: String,
    pub defaults: Value,
    /// `everyone` | `partners` | `followers`.
    pub contact_policy: String,
    pub bounced_content: Option<String>,
    pub force_thread_id: Option<i64>,
    /// `name@domain`.
    pub address: String,
}

/// A received message to store in a thread.
pub struct Post<'a> {
    pub thread: &'a Thread,
    pub author: &'a Sender,
    /// Whether the author's From is believed (see `believed`).
    pub author_verified: bool,
    pub subject: Option<&'a str>,
    pub content: Content,
    pub message_id: Option<&'a str>,
    /// Mail the thread's other followers (false: stored only).
    pub relay: bool,
}

/// What posting did: the chatter message and the mails it queued.
pub struct Posted {
    pub message: i64,
    pub mails: i64,
}

/// One failed recipient of a bounce.
pub struct BounceRow<'a> {
    pub mail_id: Option<i64>,
    pub failed: &'a report::Failed,
    /// Tied to a mail we sent and naming one of its recipients: only then it counts towards the
    /// blocklist and marks the mail (docs/SECURITY.md).
    pub trusted: bool,
}

/// An automatic answer of ours (a refused sender, mail to the catchall, a loop notice).
pub struct AutoAnswer<'a> {
    pub to: &'a str,
    pub subject: Option<&'a str>,
    pub body: &'a str,
    /// The Message-ID it answers.
    pub answers: Option<&'a str>,
    /// `policy`, `catchall`, `loop`: the kind of notice.
    pub notice: &'a str,
}

/// What the route asks of the database and does there.
pub trait Gateway {
    /// Whether a message or mail of ours has this Message-ID.
    fn is_own_message_id(&mut self, message_id: &str) -> bool;
    /// The thread of the first candidate Message-ID that is known.
    fn find_thread(&mut self, candidates: &[String]) -> Option<Thread>;
    /// A mail we sent, by id (a tracked bounce address) or by Message-ID (a returned original).
    fn sent_mail(&mut self, id: Option<i64>, message_id: Option<&str>) -> Option<SentMail>;
    /// The first active alias that one of `recipients` names, or the alias called `name`.
    fn find_alias(&mut self, recipients: &[String], name: Option<&str>) -> Option<Alias>;
    fn is_contact(&mut self, email: &str) -> bool;
    fn is_follower(&mut self, thread: &Thread, email: &str) -> bool;
    /// Records `sender` created through `route` within the last `minutes`.
    fn records_created(&mut self, route: &str, sender: &str, minutes: i64) -> i64;
    /// Received messages relayed within the last `minutes`: in `thread`, and from `sender`,
    /// each counted up to its cap (the limit it is compared with: counting further would make
    /// a busy thread cost more per message the busier it is).
    fn relayed(
        &mut self,
        thread: &Thread,
        sender: &str,
        minutes: i64,
        caps: (i64, i64),
    ) -> (i64, i64);
    /// Whether `sender` wrote `subject` to the catchall within the last `minutes`.
    fn catchall_repeat(&mut self, sender: &str, subject: Option<&str>, minutes: i64) -> bool;
    /// Automatic answers queued: to `to` within `minutes` of this `notice` kind, to `to` within
    /// `minutes` of any kind, and since 00:00 UTC in all.
    fn answers_queued(&mut self, to: &str, notice: &str, minutes: i64) -> (i64, i64, i64);

    fn post(&mut self, post: Post<'_>) -> Posted;
    fn follow(&mut self, thread: &Thread, sender: &Sender);
    /// Creates the alias's record (its handler, or the default insert); returns its id.
    fn create_record(&mut self, alias: &Alias, message: Value, fields: Value) -> i64;
    /// Records one failed recipient; returns whether the address was blocklisted now.
    fn record_bounce(&mut self, row: BounceRow<'_>) -> bool;
    /// Normal mail from an address: its bounce counter starts again.
    fn reset_bounces(&mut self, email: &str);
    fn auto_answer(&mut self, answer: AutoAnswer<'_>);
}

/// What routing decided, to be recorded on the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub state: State,
    pub route: Option<String>,
    pub reason: String,
    pub thread: Option<Thread>,
    pub message: Option<i64>,
    /// Mails queued to followers by relaying it.
    pub relayed: i64,
}

impl Routed {
    fn new(state: State, route: Option<&str>, reason: impl Into<String>) -> Routed {
        Routed {
            state,
            route: route.map(str::to_string),
            reason: reason.into(),
            thread: None,
            message: None,
            relayed: 0,
        }
    }
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
        let r = self.reading;
        // 1. Our own Message-ID coming back.
        if let Some(mid) = &r.summary.message_id
            && self.gw.is_own_message_id(mid)
        {
            return Routed::new(
                State::Duplicate,
                None,
                format!("Message-ID {mid} is already known"),
            );
        }
        // 2. An answer to one of our automatic notices.
        if r.answers_loop_notice {
            return Routed::new(
                State::Loop,
                Some("loop"),
                "answers one of our automatic notices",
            );
        }
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
        // The mail a tracked bounce address names, when its check is right.
        let tagged = r.tagged_bounce.as_ref().and_then(|(id, check)| {
            self.gw
                .sent_mail(Some(*id), None)
                .filter(|m| bounce_check(&m.message_id) == *check)
        });
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
        // 4. A reply in a thread (an automatic reply to our bounce address finds its mail's).
        if let Some(thread) = self.thread_of(tagged) {
            return self.reply(&thread, &sender);
        }
        // 5. An alias.
        if let Some(alias) = self.gw.find_alias(&r.recipients, None) {
            return self.alias(&alias, &sender);
        }
        // 6. Written straight to the catchall: answered, no record.
        if r.to_catchall {
            return self.catchall(&sender);
        }
        // 7. The server's fallback alias.
        if let Some(name) = &self.message.fallback_alias
            && let Some(alias) = self.gw.find_alias(&[], Some(name))
        {
            return self.alias(&alias, &sender);
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

    /// Why a received message is not relayed to `thread`'s followers, if it is not.
    fn relay_refusal(&mut self, thread: &Thread, sender: &Sender) -> Option<String> {
        if self.automatic() {
            return Some("automatic message (RFC 3834): stored, not relayed".into());
        }
        let s = self.settings;
        let (in_thread, from_sender) = self.gw.relayed(
            thread,
            &sender.normalized(),
            s.loop_period_minutes,
            (s.relay_limit_thread, s.relay_limit_sender),
        );
        if in_thread >= s.relay_limit_thread {
            return Some(format!(
                "not relayed: {in_thread} messages were relayed in this thread within {} minutes (mail.relay.limit.thread {})",
                s.loop_period_minutes, s.relay_limit_thread
            ));
        }
        if from_sender >= s.relay_limit_sender {
            return Some(format!(
                "not relayed: {from_sender} messages of {} were relayed within {} minutes (mail.relay.limit.sender {})",
                sender.normalized(),
                s.loop_period_minutes,
                s.relay_limit_sender
            ));
        }
        None
    }

    /// Stores the message in `thread`, relayed unless automatic or over a limit; returns the
    /// recorded route with `reason` completed.
    fn post(&mut self, thread: &Thread, sender: &Sender, route: &str, reason: String) -> Routed {
        let refusal = self.relay_refusal(thread, sender);
        let content = self.content();
        let s = self.summary().clone();
        let posted = self.gw.post(Post {
            thread,
            author: sender,
            author_verified: self.believed(sender),
            subject: s.subject.as_deref(),
            content,
            message_id: s.message_id.as_deref(),
            relay: refusal.is_none(),
        });
        let said = match refusal {
            Some(why) => format!("{reason}; {why}"),
            None => format!("{reason}, relayed to {} follower(s)", posted.mails),
        };
        Routed {
            state: State::Routed,
            route: Some(route.to_string()),
            reason: said,
            thread: Some(thread.clone()),
            message: Some(posted.message),
            relayed: posted.mails,
        }
    }

    fn reply(&mut self, thread: &Thread, sender: &Sender) -> Routed {
        let reason = format!("reply in {} #{}", thread.model, thread.res_id);
        self.post(thread, sender, "reply", reason)
    }

    fn alias(&mut self, alias: &Alias, sender: &Sender) -> Routed {
        let from = sender.normalized();
        let route = format!("alias:{}", alias.name);
        let s = self.settings;
        // Contact policy.
        let allowed = match alias.contact_policy.as_str() {
            "partners" => self.gw.is_contact(&from),
            "followers" => alias.force_thread_id.is_some_and(|id| {
                let thread = Thread {
                    model: alias.model.clone(),
                    res_id: id,
                };
                self.gw.is_follower(&thread, &from)
            }),
            _ => true,
        };
        if !allowed {
            let text = alias.bounced_content.clone().unwrap_or_else(|| {
                format!(
                    "Your message to {} was not accepted: this address only takes mail from known contacts.",
                    alias.address
                )
            });
            let answered = self.answer(&from, &text, "policy");
            return Routed::new(
                State::Rejected,
                Some(&route),
                format!(
                    "{} refuses {from} (contact policy '{}'); {answered}",
                    alias.address, alias.contact_policy
                ),
            );
        }
        // Loop prevention: at most mail.incoming.limit.alias records per sender, alias and period.
        let recent = self
            .gw
            .records_created(&route, &from, s.loop_period_minutes);
        if recent >= s.loop_limit {
            let text = format!(
                "We received too many messages from you at {} within {} minutes; later ones \
                 are not processed until the period has passed.",
                alias.address, s.loop_period_minutes
            );
            let answered = self.answer(&from, &text, "loop");
            return Routed::new(
                State::Loop,
                Some(&route),
                format!(
                    "{from} already created {recent} record(s) through {} within {} minutes (mail.incoming.limit.alias {}); {answered}",
                    alias.address, s.loop_period_minutes, s.loop_limit
                ),
            );
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

    fn catchall(&mut self, sender: &Sender) -> Routed {
        let from = sender.normalized();
        let s = self.settings;
        let subject = self.summary().subject.clone();
        if self
            .gw
            .catchall_repeat(&from, subject.as_deref(), s.loop_period_minutes)
        {
            return Routed::new(
                State::Loop,
                Some("catchall"),
                "the same message reached the catchall address within mail.incoming.limit.period",
            );
        }
        let answered = self.answer(
            &from,
            "This address only collects replies to our messages: your message was not delivered \
             to anyone. Please answer one of our messages, or write to the address you were given.",
            "catchall",
        );
        Routed::new(
            State::Unroutable,
            Some("catchall"),
            format!("written to the catchall address, not in reply to anything; {answered}"),
        )
    }

    /// Queues an automatic answer when the message is not automatic itself and the answers'
    /// allowance permits; returns what happened, in words for the reason.
    fn answer(&mut self, to: &str, body: &str, notice: &str) -> String {
        if self.automatic() {
            return "automatic, so not answered".into();
        }
        let s = self.settings;
        let (same_notice, to_recipient, today) =
            self.gw.answers_queued(to, notice, s.loop_period_minutes);
        if notice == "loop" && same_notice > 0 {
            return "a notice was sent within the period already".into();
        }
        if to_recipient >= s.auto_reply_limit_recipient {
            return format!(
                "not answered: {to_recipient} automatic answer(s) to {to} within {} minutes (mail.auto_reply.limit.recipient {})",
                s.loop_period_minutes, s.auto_reply_limit_recipient
            );
        }
        if let Some(allowance) = s.auto_reply_daily_allowance()
            && today >= allowance
        {
            return format!(
                "not answered: automatic answers used today's share of mail.send.daily_limit ({allowance}, mail.auto_reply.daily_share {} %)",
                s.auto_reply_daily_share
            );
        }
        let summary = self.reading.summary.clone();
        self.gw.auto_answer(AutoAnswer {
            to,
            subject: summary.subject.as_deref(),
            body,
            answers: summary.message_id.as_deref(),
            notice,
        });
        "answered automatically".into()
    }

    /// One `bounce` row per failed recipient (at most `report::MAX_FAILED`); a row counts only
    /// when the bounce is tied to a mail we sent and names one of its recipients.
    fn bounce(&mut self, tagged: Option<SentMail>) -> Routed {
        let report = &self.reading.report;
        let mail = tagged.or_else(|| {
            report
                .original_message_id
                .as_deref()
                .and_then(|id| self.gw.sent_mail(None, Some(id)))
        });
        let mut failed = report.failed.clone();
        if failed.is_empty()
            && let Some(m) = &mail
        {
            // A mailer's notice to our tracked address, with no report we can read: every
            // recipient of the mail.
            failed = m
                .recipients
                .iter()
                .map(|email| report::Failed {
                    email: email.clone(),
                    status: "5.0.0".into(),
                    hard: false,
                    diagnostic: Some("bounce without a readable report".into()),
                })
                .collect();
        }
        failed.truncate(report::MAX_FAILED);
        if failed.is_empty() {
            return Routed::new(
                State::Bounce,
                Some("bounce"),
                "a bounce that names no recipient and no mail of ours",
            );
        }
        let mut words = Vec::new();
        let mut untrusted = 0;
        for f in &failed {
            let trusted = mail
                .as_ref()
                .is_some_and(|m| m.recipients.contains(&f.email));
            untrusted += usize::from(!trusted);
            let blocked = self.gw.record_bounce(BounceRow {
                mail_id: mail.as_ref().map(|m| m.id),
                failed: f,
                trusted,
            });
            words.push(format!(
                "{} ({}{}{}{})",
                f.email,
                f.status,
                if f.hard { ", hard" } else { "" },
                if trusted { "" } else { ", untrusted" },
                if blocked { ", now blocklisted" } else { "" }
            ));
        }
        let about = match &mail {
            Some(m) => format!(" of mail {}", m.id),
            None => " naming no mail of ours".to_string(),
        };
        let note = if untrusted > 0 {
            "; untrusted rows are kept and count for nothing"
        } else {
            ""
        };
        Routed::new(
            State::Bounce,
            Some("bounce"),
            format!("bounce{about}: {}{note}", words.join(", ")),
        )
    }
}
