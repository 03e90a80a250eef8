//! What the route asks of the database and does there, and the rows it passes: implemented by
//! the extension with SQL and by the fuzz target with a few maps.

use serde_json::Value;

use crate::mime::report::Failed;
use crate::mime::summary::Content;
use crate::routing::address::Sender;

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
    pub contact_policy: crate::model::ContactPolicy,
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
    pub failed: &'a Failed,
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
