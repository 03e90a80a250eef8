//! What the router reads from a received message before it looks anything up (docs/REFERENCE.md, "Routes"):
//! its summary and recipients, what it reports (bounce, complaint, auto-reply), whether it
//! answers one of our loop notices, the tracked bounce address it came back to, and where a
//! reply would belong. Pure: the router (`src/router.rs`) then asks the database.

use mail_parser::Message;

use super::RoutingSettings;
use super::address::Sender;
use super::thread::{answers_a_loop_notice, parse_tagged_bounce, reply_candidates};
use crate::mime::report::{self, Kind, Report};
use crate::mime::summary::{Summary, summarise_parsed};

#[derive(Debug)]
pub struct Reading {
    pub summary: Summary,
    /// To, Cc and Delivered-To, each once, lower-case.
    pub recipients: Vec<String>,
    pub report: Report,
    /// In-Reply-To or References name one of our loop notices.
    pub answers_loop_notice: bool,
    /// Sent to the bounce alias (or a `bounce+…` address of it).
    pub to_bounce_address: bool,
    /// The outgoing mail a tracked bounce address names: (mail id, check).
    pub tagged_bounce: Option<(i64, String)>,
    /// Written to the catchall address itself.
    pub to_catchall: bool,
    /// Message-IDs that may name the thread, best first.
    pub reply_candidates: Vec<String>,
    /// Never answered automatically: auto-submitted or an auto-reply.
    pub auto_submitted: bool,
    /// The From, when there is one.
    pub sender: Option<Sender>,
}

/// Reads a message; `parsed` is `raw` parsed already (None when it could not be).
pub fn read(parsed: Option<&Message<'_>>, raw: &[u8], settings: &RoutingSettings) -> Reading {
    let summary = parsed.map(summarise_parsed).unwrap_or_default();
    // `parsed` is None only when not even a header could be read: nothing to analyse then.
    let report = match parsed {
        Some(message) => report::analyse_parsed(message),
        None => report::analyse(raw),
    };
    let mut recipients: Vec<String> = Vec::new();
    for a in summary
        .to
        .iter()
        .chain(&summary.cc)
        .chain(&summary.delivered_to)
    {
        if !recipients.contains(a) {
            recipients.push(a.clone());
        }
    }
    let to_bounce: Vec<&String> = recipients
        .iter()
        .filter(|a| settings.is_local(a, &settings.bounce_alias))
        .collect();
    let tagged_bounce = to_bounce
        .iter()
        .find_map(|a| parse_tagged_bounce(a, &settings.bounce_alias));
    let to_catchall = recipients
        .iter()
        .any(|a| settings.is_local(a, &settings.catchall_alias));
    Reading {
        answers_loop_notice: answers_a_loop_notice(&summary.in_reply_to, &summary.references),
        to_bounce_address: !to_bounce.is_empty(),
        tagged_bounce,
        to_catchall,
        reply_candidates: reply_candidates(&summary.in_reply_to, &summary.references),
        auto_submitted: report.auto_submitted || report.kind == Kind::AutoReply,
        sender: summary.from_address.clone().map(|address| Sender {
            name: summary.from_name.clone(),
            address,
        }),
        recipients,
        report,
        summary,
    }
}

/// Parses and reads in one step (tests and fuzzing; the router keeps the parsed message for
/// the content it posts).
pub fn read_raw(raw: &[u8], settings: &RoutingSettings) -> Reading {
    let parsed = crate::mime::structure::parse(raw);
    read(parsed.message.as_ref(), raw, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RoutingSettings {
        RoutingSettings {
            catchall_domain: Some("example.com".into()),
            catchall_alias: "catchall".into(),
            bounce_alias: "bounce".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_reply_names_its_thread_and_sender() {
        let raw = b"From: Bob <BOB@Client.example>\r\nTo: sales@example.com, catchall@example.com\r\n\
Cc: sales@example.com\r\nIn-Reply-To: <b@x>\r\nReferences: <a@x> <b@x>\r\nSubject: Re\r\n\r\nhi\r\n";
        let r = read_raw(raw, &settings());
        assert_eq!(r.recipients, ["sales@example.com", "catchall@example.com"]);
        assert!(r.to_catchall && !r.to_bounce_address && !r.answers_loop_notice);
        assert_eq!(r.reply_candidates[0], "<b@x>");
        assert!(r.reply_candidates.contains(&"<a@x>".to_string()));
        let sender = r.sender.unwrap();
        assert_eq!(sender.address, "bob@client.example");
        assert_eq!(sender.name.as_deref(), Some("Bob"));
        assert!(!r.auto_submitted);
    }

    #[test]
    fn a_bounce_to_a_tracked_address_names_its_mail() {
        let check = super::super::thread::bounce_check("<m@example.com>");
        let raw = format!(
            "From: MAILER-DAEMON@mx.example\r\nTo: bounce+42-{check}@example.com\r\n\
Auto-Submitted: auto-replied\r\nSubject: Undelivered\r\n\r\nno\r\n"
        );
        let r = read_raw(raw.as_bytes(), &settings());
        assert!(r.to_bounce_address);
        assert_eq!(r.tagged_bounce, Some((42, check)));
        assert!(r.auto_submitted);
    }

    #[test]
    fn garbage_reads_as_nothing_in_particular() {
        let r = read_raw(b"\xff\xfe\0\0:::\r\n\r\n", &settings());
        assert!(r.sender.is_none() && r.recipients.is_empty() && !r.to_bounce_address);
    }
}
