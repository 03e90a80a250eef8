//! What a received message reports: a bounce (with its failed recipients), a complaint (ARF),
//! an auto-reply (RFC 3834), or nothing. Structured reports come first — RFC 3464 DSNs
//! (`dsn`), complaints (`complaint`), `X-Failed-Recipients`, Amazon SES (`ses`) — and then the
//! text every MTA writes in its own words (`text`), read by general rules (sender, subject,
//! status codes (`status`), failure phrases), never by a parser per MTA. Pure: no PostgreSQL.

mod address;
mod auto_reply;
mod complaint;
mod corpus;
mod dsn;
mod original;
mod sender;
mod ses;
mod status;
mod text;

use mail_parser::{Message, MimeHeaders, PartType};

pub use corpus::{CorpusScore, score_corpus};
pub use dsn::parse_delivery_status;
pub use status::{find_status, is_hard};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bounce,
    Complaint,
    AutoReply,
    Normal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Lower-case: the address we sent to (Original-Recipient) when the report gives it.
    pub email: String,
    /// Enhanced status code, e.g. `5.1.1`; from a basic SMTP code `5.0.0`/`4.0.0` at least.
    pub status: String,
    /// A permanent failure of the address itself (unknown user or domain, moved, null MX):
    /// sending again cannot succeed.
    pub hard: bool,
    pub diagnostic: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: Kind,
    pub failed: Vec<Failed>,
    /// The Message-ID of the returned original, when it is attached.
    pub original_message_id: Option<String>,
    /// `Auto-Submitted` other than `no`, or another auto-responder mark: never answered.
    pub auto_submitted: bool,
    /// Sent by a mailer daemon, or with a null envelope sender and not as an automatic reply:
    /// where bounces come from.
    pub from_mailer: bool,
}

/// Work per report is bounded whatever a stranger writes (docs/SECURITY.md): at most this many
/// failed recipients are taken from one report (a real one names a handful; our mails have
/// few recipients each) …
pub const MAX_FAILED: usize = 100;
/// … at most this many addresses are collected from its words …
const MAX_NAMED: usize = 1000;
/// … only the first 256 KiB of its notification text are read (a real one is a few KiB) …
const MAX_NOTICE: usize = 256 * 1024;
/// … and around a recipient's first mention, at most this much text is read for its status.
const AROUND: usize = 2048;

/// Reads what a message reports. Never fails: an unreadable message is `Normal`.
pub fn analyse(raw: &[u8]) -> Report {
    match super::structure::parse(raw).message {
        Some(message) => analyse_parsed(&message),
        None => Report {
            kind: Kind::Normal,
            failed: vec![],
            original_message_id: None,
            auto_submitted: false,
            from_mailer: false,
        },
    }
}

/// What a message parsed already reports: a complaint, else the failures of its
/// delivery-status parts, else an SES notification's, else what its words say.
pub fn analyse_parsed(message: &Message<'_>) -> Report {
    let parts = Parts::of(message);
    let mailer = sender::from_mailer(message)
        || (sender::null_sender(message) && !auto_reply::is_auto_reply(message));
    let facts = Facts {
        original_message_id: original::message_id(message),
        auto_submitted: auto_reply::auto_submitted(message),
        from_mailer: mailer,
    };
    if complaint::is_complaint(message, &parts.types) {
        return facts.report(Kind::Complaint, vec![]);
    }
    let from_dsn = dsn::failed_in_parts(message);
    let has_dsn = from_dsn.is_some();
    if let Some(failed) = from_dsn.filter(|failed| !failed.is_empty()) {
        return facts.report(Kind::Bounce, failed);
    }
    let body = text::body(message);
    if let Some(failed) = ses::notification(&body) {
        let kind = if failed.is_empty() {
            Kind::Complaint
        } else {
            Kind::Bounce
        };
        return facts.report(kind, failed);
    }
    text::analyse(message, &body, &parts, has_dsn, &facts)
}

/// What every report on one message says, whatever its kind.
struct Facts {
    original_message_id: Option<String>,
    auto_submitted: bool,
    from_mailer: bool,
}

impl Facts {
    fn report(&self, kind: Kind, failed: Vec<Failed>) -> Report {
        Report {
            kind,
            failed,
            original_message_id: self.original_message_id.clone(),
            auto_submitted: self.auto_submitted,
            from_mailer: self.from_mailer,
        }
    }

    /// An automatic reply or an ordinary message: nothing failed.
    fn not_a_bounce(&self, message: &Message<'_>) -> Report {
        let kind = if auto_reply::is_auto_reply(message) {
            Kind::AutoReply
        } else {
            Kind::Normal
        };
        self.report(kind, vec![])
    }
}

/// The content types of a message's parts, lower-case (`message/rfc822`).
struct Parts {
    types: Vec<String>,
}

impl Parts {
    fn of(message: &Message<'_>) -> Parts {
        Parts {
            types: message.parts.iter().map(content_type).collect(),
        }
    }

    /// The failed mail comes back attached, whole or its header.
    fn returns_original(&self) -> bool {
        self.types
            .iter()
            .any(|k| k == "message/rfc822" || k == "text/rfc822-headers")
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn lower(s: &str) -> String {
    s.trim().to_lowercase()
}

fn header<'a>(message: &'a Message<'_>, name: &'a str) -> Option<&'a str> {
    message.header_raw(name).map(str::trim)
}

fn content_type(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{sub}", ct.ctype()),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_default()
        .to_lowercase()
}

fn text_of(part: &mail_parser::MessagePart<'_>) -> String {
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => t.to_string(),
        PartType::Binary(b) | PartType::InlineBinary(b) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_reply_is_normal() {
        let raw = b"From: Ann <ann@customer.example>\r\nTo: catchall@mycompany.com\r\n\
Subject: Re: Quote\r\nIn-Reply-To: <x@mycompany.com>\r\n\r\nThe mail was undelivered to my boss, please resend to boss@customer.example\r\n";
        let r = analyse(raw);
        assert_eq!((r.kind, r.auto_submitted), (Kind::Normal, false));
    }

    #[test]
    fn garbage_is_normal() {
        assert_eq!(analyse(b"").kind, Kind::Normal);
        assert_eq!(analyse(&[0xff, 0, 0x80]).kind, Kind::Normal);
    }
}
