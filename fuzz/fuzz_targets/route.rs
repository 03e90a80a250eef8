//! The whole route of a received message (routing::route), against an in-memory gateway: a
//! thread, a mail we sent, aliases, contacts. Whatever a stranger writes: nothing stored holds
//! a NUL, automatic mail is never relayed or answered, at most one automatic answer and
//! `report::MAX_FAILED` bounce rows per message, a bounce counts only when tied to our mail
//! and one of its recipients, a sender claiming our domain is believed only when
//! authenticated. scripts/fuzz.sh runs it with a tight -timeout: the work per message is bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_gateway_core::authentication::Verdict;
use mail_gateway_core::mime::report::MAX_FAILED;
use mail_gateway_core::routing::RoutingSettings;
use mail_gateway_core::routing::address::Sender;
use mail_gateway_core::routing::route::{
    Alias, AutoAnswer, BounceRow, Gateway, Incoming, Post, Posted, SentMail, Thread, route,
};
use serde_json::Value;

const OUR_MAIL: &str = "<0123456789abcdef@example.com>";

#[derive(Default)]
struct Memory {
    posts: usize,
    relayed_posts: usize,
    answers: usize,
    bounces: usize,
    trusted_bounces: usize,
    /// Posts whose author claims our domain and is believed.
    believed_colleagues: usize,
    texts: Vec<String>,
}

fn thread() -> Thread {
    Thread {
        model: "crm_lead".into(),
        res_id: 7,
    }
}

impl Gateway for Memory {
    fn is_own_message_id(&mut self, message_id: &str) -> bool {
        message_id == OUR_MAIL
    }
    fn find_thread(&mut self, candidates: &[String]) -> Option<Thread> {
        assert!(candidates.len() <= 40, "{} lookups", candidates.len());
        candidates.iter().any(|c| c.contains("thread")).then(thread)
    }
    fn sent_mail(&mut self, id: Option<i64>, message_id: Option<&str>) -> Option<SentMail> {
        (id == Some(42) || message_id == Some(OUR_MAIL)).then(|| SentMail {
            id: 42,
            message_id: OUR_MAIL.into(),
            recipients: vec!["customer@client.example".into()],
            thread: Some(thread()),
        })
    }
    fn find_alias(&mut self, recipients: &[String], name: Option<&str>) -> Option<Alias> {
        let hit = name.is_some() || recipients.iter().any(|r| r.starts_with("sales@"));
        hit.then(|| Alias {
            id: 1,
            name: "sales".into(),
            model: "crm_lead".into(),
            defaults: Value::Null,
            contact_policy: mail_gateway_core::model::ContactPolicy::Everyone,
            bounced_content: None,
            force_thread_id: recipients.iter().any(|r| r.contains("shared")).then_some(7),
            address: "sales@example.com".into(),
        })
    }
    fn is_contact(&mut self, email: &str) -> bool {
        email.starts_with("known")
    }
    fn is_follower(&mut self, _: &Thread, email: &str) -> bool {
        email.starts_with("follower")
    }
    fn records_created(&mut self, _: &str, _: &str, _: i64) -> i64 {
        0
    }
    fn relayed(&mut self, _: &Thread, _: &str, _: i64, _: (i64, i64)) -> (i64, i64) {
        (0, 0)
    }
    fn catchall_repeat(&mut self, _: &str, _: Option<&str>, _: i64) -> bool {
        false
    }
    fn answers_queued(&mut self, _: &str, _: &str, _: i64) -> (i64, i64, i64) {
        (0, 0, 0)
    }
    fn post(&mut self, post: Post<'_>) -> Posted {
        self.posts += 1;
        self.relayed_posts += usize::from(post.relay);
        let domain = post.author.domain();
        if (domain == "example.com" || domain.ends_with(".example.com")) && post.author_verified {
            self.believed_colleagues += 1;
        }
        self.texts.extend(post.subject.map(str::to_string));
        self.texts.extend(post.content.body_text.clone());
        self.texts.extend(post.content.body_html.clone());
        if let Some(a) = &post.content.attachments {
            self.texts.push(a.to_string());
        }
        Posted {
            message: 1,
            mails: i64::from(post.relay),
        }
    }
    fn follow(&mut self, _: &Thread, sender: &Sender) {
        self.texts.extend(sender.name.clone());
    }
    fn create_record(&mut self, _: &Alias, message: Value, fields: Value) -> i64 {
        self.texts.push(message.to_string());
        self.texts.push(fields.to_string());
        7
    }
    fn record_bounce(&mut self, row: BounceRow<'_>) -> bool {
        self.bounces += 1;
        if row.trusted {
            assert_eq!(row.mail_id, Some(42));
            assert_eq!(row.failed.email, "customer@client.example");
            self.trusted_bounces += 1;
        }
        self.texts.extend(row.failed.diagnostic.clone());
        self.texts.push(row.failed.status.clone());
        false
    }
    fn reset_bounces(&mut self, _: &str) {}
    fn auto_answer(&mut self, answer: AutoAnswer<'_>) {
        self.answers += 1;
        self.texts.extend(answer.subject.map(str::to_string));
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&choice, raw)) = input.split_first() else {
        return;
    };
    let authentication = [Verdict::Pass, Verdict::Fail, Verdict::None][usize::from(choice % 3)];
    let settings = RoutingSettings {
        catchall_domain: Some("example.com".into()),
        catchall_alias: "catchall".into(),
        bounce_alias: "bounce".into(),
        loop_period_minutes: 60,
        loop_limit: 5,
        relay_limit_thread: 20,
        relay_limit_sender: 10,
        auto_reply_limit_recipient: 1,
        auto_reply_daily_share: 10,
        daily_limit: 200,
        ..Default::default()
    };
    let message = Incoming {
        raw,
        keep_attachments: choice & 4 != 0,
        keep_original: choice & 8 != 0,
        fallback_alias: (choice & 16 != 0).then(|| "sales".into()),
        authentication,
    };
    let mut memory = Memory::default();
    let routed = route(&message, &settings, &mut memory);
    let reading = mail_gateway_core::routing::incoming::read_raw(raw, &settings);

    assert!(!routed.reason.contains('\0'), "NUL in the reason");
    for text in &memory.texts {
        assert!(!text.contains('\0'), "NUL stored: {text:?}");
    }
    assert!(memory.answers <= 1, "{} automatic answers", memory.answers);
    assert!(
        memory.bounces <= MAX_FAILED,
        "{} bounce rows",
        memory.bounces
    );
    assert!(memory.posts <= 1);
    if reading.auto_submitted {
        assert_eq!(memory.relayed_posts, 0, "automatic mail relayed");
        assert_eq!(memory.answers, 0, "automatic mail answered");
    }
    if authentication != Verdict::Pass {
        assert_eq!(memory.believed_colleagues, 0, "a forged colleague believed");
    }
});
