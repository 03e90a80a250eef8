//! Bounces in words: what a notification without a delivery-status part says — whether it is
//! a bounce at all, who failed, and why — read by general rules, never per MTA.

use std::collections::HashSet;

use mail_parser::Message;

use super::address::{address_of, addresses_in, addresses_of};
use super::status::{HARD_PHRASES, find_status, is_hard, reply_code_status};
use super::{AROUND, Facts, Failed, Kind, MAX_FAILED, MAX_NOTICE, Parts, Report};
use super::{lower, original, prefix, sender, text_of};
use crate::mime::clean;

const BOUNCE_SUBJECTS: [&str; 22] = [
    "undeliver",
    "undelivered",
    "delivery status notification",
    "delivery failure",
    "delivery failed",
    "delivery has failed",
    "failure notice",
    "returned mail",
    "mail delivery failed",
    "delivery notification",
    "non remis",
    "unzustellbar",
    "nondeliverable",
    "non-deliverable",
    "could not be delivered",
    "mail system error",
    "rejected",
    "delivery problem",
    "message not delivered",
    "warning: message",
    "mail failure",
    "permanent error",
];

/// What a notification says when delivery failed.
const FAILURE_PHRASES: [&str; 14] = [
    "could not be delivered",
    "couldn't be delivered",
    "was not delivered",
    "delivery to the following recipient",
    "delivery has failed",
    "undeliverable",
    "permanent fatal error",
    "permanent error",
    "had delivery errors",
    "delivery problems",
    "following address",
    "user unknown",
    "unable to deliver",
    "failed to deliver",
];

/// Words that say delivery failed for now and is tried again.
const TEMPORARY_PHRASES: [&str; 8] = [
    "temporar",
    "will retry",
    "will be retried",
    "retry timeout exceeded",
    "have been failing",
    "delayed",
    "deferred",
    "still trying",
];

/// The text of a message, where a plain-text bounce writes its notification, with `\n` line
/// ends.
pub(super) fn body(message: &Message<'_>) -> String {
    message
        .text_bodies()
        .next()
        .map(text_of)
        .or_else(|| message.parts.first().map(text_of))
        .unwrap_or_default()
        .replace("\r\n", "\n")
}

/// What a message without failures in a delivery-status part reports: a bounce when it comes
/// from where bounces come from (or has a delivery-status part or `X-Failed-Recipients`), names
/// whom it failed for and gives evidence of a failure; else an auto-reply or nothing.
pub(super) fn analyse(
    message: &Message<'_>,
    body: &str,
    parts: &Parts,
    has_dsn: bool,
    facts: &Facts,
) -> Report {
    let failed_header = x_failed_recipients(message);
    let whole_notice = original::notification_text(body);
    // A pasted original: the notice stops before the end of the text.
    let pasted_original = whole_notice.len() < body.len();
    let notice = prefix(whole_notice, MAX_NOTICE);
    let returns_original = parts.returns_original();
    let bounce_like = has_dsn
        || !failed_header.is_empty()
        || looks_like_bounce(message, facts.from_mailer, notice, returns_original);
    if !bounce_like {
        return facts.not_a_bounce(message);
    }
    // Reads like a bounce but names nobody, or gives neither a reply code nor the returned
    // mail: a notice, not a failure report (nothing to act on).
    let evidence =
        !failed_header.is_empty() || returns_original || pasted_original || says_it_failed(notice);
    let recipients = failed_recipients(message, body, notice, failed_header);
    if recipients.is_empty() || !evidence {
        return facts.not_a_bounce(message);
    }
    facts.report(Kind::Bounce, failures_in_words(recipients, notice))
}

/// The addresses of `X-Failed-Recipients` (Exim's), at most `MAX_FAILED`.
fn x_failed_recipients(message: &Message<'_>) -> Vec<String> {
    message
        .header_values("X-Failed-Recipients")
        .filter_map(|v| v.as_text())
        .flat_map(|t| t.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|a| address_of(&a))
        .take(MAX_FAILED)
        .collect()
}

/// A status code, a reply code, or words of a failure in the notice.
fn says_it_failed(notice: &str) -> bool {
    let low_notice = notice.to_lowercase();
    find_status(notice).is_some()
        || reply_code_status(notice).is_some()
        || FAILURE_PHRASES
            .iter()
            .chain(HARD_PHRASES.iter())
            .any(|p| low_notice.contains(p))
}

/// A notice without a delivery-status part is a bounce only when it comes from where bounces
/// come from — a mailer daemon; a null envelope sender that is not an automatic reply; or a
/// provider's no-reply address returning the original (KDDI's au one net does) — and says so:
/// words alone, which anyone can write, decide nothing.
fn looks_like_bounce(
    message: &Message<'_>,
    mailer: bool,
    notice: &str,
    returns_original: bool,
) -> bool {
    if sender::from_mailer(message) {
        return true;
    }
    let subject = lower(message.subject().unwrap_or_default());
    let low = notice.to_lowercase();
    let says_failed = FAILURE_PHRASES.iter().any(|p| low.contains(p));
    if mailer {
        return says_failed || BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s));
    }
    let address = sender::from_address(message);
    let no_reply = ["no-reply", "noreply", "do-not-reply", "donotreply"]
        .iter()
        .any(|l| address.starts_with(&format!("{l}@")));
    no_reply && returns_original && says_failed
}

/// Who a bounce without a delivery-status part says failed: `X-Failed-Recipients`; else those
/// the returned original was sent to, when the notice names any of them; else whom the notice
/// names; else, when it names nobody, the original's recipients. At most `MAX_FAILED`.
fn failed_recipients(
    message: &Message<'_>,
    body: &str,
    notice: &str,
    failed_header: Vec<String>,
) -> Vec<String> {
    if !failed_header.is_empty() {
        return failed_header;
    }
    let own: HashSet<String> = addresses_of([message.to(), message.from()])
        .into_iter()
        .collect();
    let original: Vec<String> = original::recipients(message, body)
        .into_iter()
        .filter(|a| !own.contains(a))
        .collect();
    let named: Vec<String> = addresses_in(notice)
        .into_iter()
        .filter(|a| !own.contains(a))
        .collect();
    let in_original: HashSet<&String> = original.iter().collect();
    let both: Vec<String> = named
        .iter()
        .filter(|a| in_original.contains(a))
        .cloned()
        .collect();
    let mut chosen = if !both.is_empty() {
        both
    } else if !named.is_empty() {
        named
    } else {
        original
    };
    chosen.truncate(MAX_FAILED);
    chosen
}

/// Each recipient's status, hard flag and diagnostic, read from the words around its first
/// mention in the notice (at most `AROUND` bytes each side), else from the whole notice.
fn failures_in_words(recipients: Vec<String>, notice: &str) -> Vec<Failed> {
    let notice = Notice::new(notice);
    // A lone recipient's failure is what the whole notice says.
    let alone = recipients.len() == 1;
    recipients
        .into_iter()
        .map(|email| {
            crate::interrupt::check();
            notice.failure(email, alone)
        })
        .collect()
}

/// A bounce's notification, with what is read from it once for all its recipients.
struct Notice<'a> {
    text: &'a str,
    low: String,
    /// `to_lowercase` can change byte lengths; positions are then looked up in the text itself.
    positions_match: bool,
    status: Option<String>,
    reply_code_status: Option<String>,
}

impl<'a> Notice<'a> {
    fn new(text: &'a str) -> Notice<'a> {
        let low = text.to_lowercase();
        Notice {
            positions_match: low.len() == text.len(),
            low,
            text,
            status: find_status(text),
            reply_code_status: reply_code_status(text),
        }
    }

    /// `email`'s failure: the status written near its mention, else the notice's, else what
    /// the words say; hard by the words about it (all of them when it is `alone`).
    fn failure(&self, email: String, alone: bool) -> Failed {
        let around = self.around(&email);
        let status = find_status(around)
            .or_else(|| self.status.clone())
            .or_else(|| reply_code_status(around))
            .or_else(|| self.reply_code_status.clone())
            .unwrap_or_else(|| self.status_in_words());
        let diagnostic = around
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(6)
            .collect::<Vec<_>>()
            .join(" ");
        let words = if alone { self.text } else { around };
        Failed {
            hard: is_hard(&status, words),
            email,
            status,
            diagnostic: (!diagnostic.is_empty())
                .then(|| clean::bounded(&diagnostic, clean::MAX_DIAGNOSTIC)),
        }
    }

    /// The words about this recipient: the paragraph of its first mention and the next.
    fn around(&self, email: &str) -> &'a str {
        let notice = self.text;
        let at = if self.positions_match {
            self.low.find(email).unwrap_or(0)
        } else {
            0
        };
        let before = notice
            .get(at.saturating_sub(AROUND)..at)
            .unwrap_or_default();
        let start = before
            .rfind("\n\n")
            .map_or(at - before.len(), |p| at - before.len() + p + 2);
        let rest = prefix(notice.get(at..).unwrap_or_default(), AROUND);
        let end = rest
            .match_indices("\n\n")
            .map(|(i, _)| i)
            .find(|&i| rest[..i].trim().contains('\n') || i > 80)
            .map_or(at + rest.len(), |i| at + i);
        notice.get(start..end).unwrap_or_default()
    }

    /// Without a code: a temporary failure when the words say so, else a permanent one.
    fn status_in_words(&self) -> String {
        if TEMPORARY_PHRASES.iter().any(|w| self.low.contains(w)) {
            "4.0.0".to_string()
        } else {
            "5.0.0".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Kind, analyse};

    #[test]
    fn an_exim_text_bounce_uses_x_failed_recipients() {
        let raw = b"From: Mail Delivery System <Mailer-Daemon@e1.example.org>\r\n\
To: shironeko@example.jp\r\nX-Failed-Recipients: kijitora@example.ed.jp\r\n\
Subject: Mail delivery failed: returning message to sender\r\nAuto-Submitted: auto-replied\r\n\r\n\
A message that you sent could not be delivered to one or more of its\r\nrecipients. This is a permanent error. The following address(es) failed:\r\n\r\n\
  kijitora@example.ed.jp\r\n    SMTP error from remote mail server after RCPT TO:<kijitora@example.ed.jp>:\r\n    host mx.example.jp [192.0.2.20]: 550 5.1.1 <kijitora@example.ed.jp>... User unknown\r\n";
        let r = analyse(raw);
        assert_eq!(r.kind, Kind::Bounce);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(
            (
                r.failed[0].email.as_str(),
                r.failed[0].status.as_str(),
                r.failed[0].hard
            ),
            ("kijitora@example.ed.jp", "5.1.1", true)
        );
    }
}
