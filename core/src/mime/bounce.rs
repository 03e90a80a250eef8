//! What a received message reports: a bounce (with its failed recipients), a complaint (ARF),
//! an auto-reply (RFC 3834), or nothing. Structured reports come first — RFC 3464 DSNs
//! (`message/delivery-status`, `message/global-delivery-status`), ARF, `X-Failed-Recipients` —
//! and then the text every MTA writes in its own words, read by general rules (sender,
//! subject, status codes, failure phrases), never by a parser per MTA. Pure: no PostgreSQL.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::clean;

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

/// Automatic mail, by RFC 3834 and the common vendor marks: never answered, never relayed.
fn auto_submitted(message: &Message<'_>) -> bool {
    let auto = header(message, "Auto-Submitted").map(lower);
    if auto.as_deref().is_some_and(|a| !a.starts_with("no")) {
        return true;
    }
    let precedence = header(message, "Precedence").map(lower).unwrap_or_default();
    header(message, "X-Autoreply").is_some()
        || header(message, "X-Autorespond").is_some()
        || header(message, "X-Auto-Response-Suppress").is_some_and(|v| lower(v).contains("all"))
        || matches!(precedence.as_str(), "auto_reply" | "bulk" | "junk" | "list")
        // Mailing lists (RFC 2369, RFC 2919): a list's copy is never answered or relayed.
        || ["List-Id", "List-Unsubscribe", "List-Post"]
            .iter()
            .any(|h| header(message, h).is_some())
}

/// An automatic reply (out of office, vacation …): marked as one by its headers, or with such a
/// subject when it also comes with a null envelope sender or Exchange's automatic-message mark
/// (a subject a person can write proves nothing alone).
fn is_auto_reply(message: &Message<'_>) -> bool {
    let auto = header(message, "Auto-Submitted")
        .map(lower)
        .unwrap_or_default();
    if auto.starts_with("auto-replied")
        || header(message, "X-Autoreply").is_some()
        || header(message, "X-Autorespond").is_some()
        || lower(header(message, "Precedence").unwrap_or_default()) == "auto_reply"
    {
        return true;
    }
    let subject = lower(message.subject().unwrap_or_default());
    let says_so = [
        "out of office",
        "out of the office",
        "automatic reply",
        "auto:",
        "autoreply",
        "auto reply",
        "auto-reply",
        "abwesenheit",
        "absence",
        "vacation",
    ]
    .iter()
    .any(|p| subject.starts_with(p) || subject.contains(&format!(": {p}")));
    says_so && (null_sender(message) || header(message, "X-Auto-Response-Suppress").is_some())
}

/// Sent with a null envelope sender (`Return-Path: <>`), as bounces and RFC 3834 answers are.
/// The topmost Return-Path is the one the delivery agent wrote (the LMTP listener, Dovecot,
/// Postfix's pipe); a sender may write their own further down, and that one says nothing.
fn null_sender(message: &Message<'_>) -> bool {
    message
        .headers_raw()
        .find(|(name, _)| name.eq_ignore_ascii_case("Return-Path"))
        .is_some_and(|(_, value)| value.trim() == "<>")
}

/// ARF (RFC 5965), and the providers' own complaint loops: Microsoft's JMRP (a
/// "complaint about message from" with the message attached) and Apple's unsubscribe mark.
fn is_complaint(message: &Message<'_>, report_type: &str, kinds: &[String]) -> bool {
    let subject = lower(message.subject().unwrap_or_default());
    report_type == "feedback-report"
        || kinds.iter().any(|k| k == "message/feedback-report")
        || header(message, "X-HmXmrOriginalRecipient").is_some()
        || (subject.starts_with("complaint about message")
            && kinds.iter().any(|k| k == "message/rfc822"))
        || header(message, "X-Apple-Unsubscribe").is_some_and(|v| lower(v) == "true")
}

/// `x@y` from `rfc822; <X@Y>`, `<x@y>`, `x@y`.
fn address_of(value: &str) -> Option<String> {
    let value = value.split_once(';').map_or(value, |(_, v)| v);
    let value = value.trim().trim_start_matches('<');
    let value = value.split(['>', ' ', '\t', ',', '(']).next()?.trim();
    let value = value.trim_matches(|c: char| c == '"' || c == '\'' || c == '.');
    // An address has no control character (a NUL would not even fit a text column) and is
    // not a screenful long.
    (value.contains('@')
        && !value.starts_with('@')
        && !value.ends_with('@')
        && value.len() <= clean::MAX_ADDRESS
        && !value.chars().any(char::is_control))
    .then(|| lower(value))
}

/// The first enhanced status code (`5.1.1`) in `text`.
pub fn find_status(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        if !matches!(c, b'2' | b'4' | b'5') || bytes.get(i + 1) != Some(&b'.') {
            continue;
        }
        if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'.') {
            continue;
        }
        let rest = &text[i + 2..];
        let sub: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if sub.is_empty() || sub.len() > 3 || !rest[sub.len()..].starts_with('.') {
            continue;
        }
        let rest = &rest[sub.len() + 1..];
        let detail: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if detail.is_empty() || detail.len() > 3 {
            continue;
        }
        let after = rest[detail.len()..].chars().next();
        if after.is_some_and(|a| a.is_ascii_alphanumeric() || a == '.') {
            continue;
        }
        return Some(format!("{}.{sub}.{detail}", c as char));
    }
    None
}

/// The first basic SMTP reply code (`550`) in `text`, as a status class.
fn find_reply_code(text: &str) -> Option<char> {
    let bytes = text.as_bytes();
    (0..bytes.len().saturating_sub(2)).find_map(|i| {
        let code = &bytes[i..i + 3];
        let before_ok = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let after_ok = bytes
            .get(i + 3)
            .is_none_or(|b| matches!(b, b' ' | b'-' | b',' | b':' | b'\r' | b'\n'));
        (before_ok
            && after_ok
            && matches!(code[0], b'4' | b'5')
            && matches!(code[1], b'0'..=b'5')
            && code[2].is_ascii_digit())
        .then_some(code[0] as char)
    })
}

const HARD_STATUSES: [&str; 6] = ["5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.4.4"];

/// Words MTAs use when the address itself is wrong.
const HARD_PHRASES: [&str; 33] = [
    "user unknown",
    "unknown user",
    "no such user",
    "no such mailbox",
    "no such recipient",
    "no such account",
    "user not found",
    "mailbox not found",
    "mailbox unavailable",
    "recipient not found",
    "unknown recipient",
    "invalid recipient",
    "address rejected: access denied",
    "address rejected.",
    "does not exist",
    "doesn't exist",
    "not a valid mailbox",
    "no mailbox here",
    "did not reach the following recipient",
    "host unknown",
    "host not found",
    "domain not found",
    "no such domain",
    "invalid domain",
    "unrouteable address",
    "name or service not known",
    "no mx record",
    "indicated no smtp service",
    "does not accept mail",
    "has moved",
    "address no longer",
    "invalid final delivery userid",
    "not listed in",
];

/// Words that say the failure is about the message, the sender, the account's state or the
/// moment, not the address.
const SOFT_PHRASES: [&str; 33] = [
    "quota",
    "mailbox full",
    "mailbox is full",
    "insufficient",
    "too large",
    "size limit",
    "spam",
    "blocked",
    "blacklist",
    "block list",
    "policy",
    "dmarc",
    "spf",
    "rate limit",
    "too many",
    "try again",
    "temporar",
    "timed out",
    "greylist",
    "command output",
    "relaying",
    "relay access",
    "reputation",
    "disabled",
    "suspended",
    "inactive",
    "sender address",
    "sender domain",
    "after mail from",
    "after end of data",
    "final data",
    "after data",
    "content rejected",
];

/// Hard when the status says the address is wrong and the words do not say otherwise, or when
/// the words say the address is wrong. A 4xx is hard only for an unknown user or host that the
/// server chose to answer temporarily (4.1.1, 4.1.2).
pub fn is_hard(status: &str, diagnostic: &str) -> bool {
    if !(status.starts_with('5') || status == "4.1.1" || status == "4.1.2") {
        return false;
    }
    let text = lower(diagnostic);
    if SOFT_PHRASES.iter().any(|p| text.contains(p)) {
        return false;
    }
    HARD_STATUSES.contains(&status)
        || status == "4.1.1"
        || status == "4.1.2"
        || HARD_PHRASES.iter().any(|p| text.contains(p))
}

/// The blocks of a delivery-status body: `Name: value` fields, continuation lines joined.
fn field_blocks(body: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks = Vec::new();
    let mut block: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        if line.trim().is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = block.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            block.push((lower(name), value.trim().to_string()));
        }
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

/// Failed recipients of an RFC 3464 delivery-status body.
pub fn parse_delivery_status(body: &str) -> Vec<Failed> {
    let mut failed = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for block in field_blocks(body) {
        if failed.len() == MAX_FAILED {
            break;
        }
        crate::interrupt::check();
        let get = |name: &str| {
            block
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let Some(email) = get("original-recipient")
            .and_then(address_of)
            .or_else(|| get("final-recipient").and_then(address_of))
            .or_else(|| get("x-actual-recipient").and_then(address_of))
        else {
            continue;
        };
        let action = get("action").map(lower).unwrap_or_default();
        if matches!(
            action.as_str(),
            "delivered" | "relayed" | "expanded" | "delayed"
        ) {
            continue;
        }
        let diagnostic = get("diagnostic-code").map(|d| {
            d.split_once(';')
                .map_or(d, |(_, text)| text)
                .trim()
                .to_string()
        });
        let status = get("status")
            .and_then(find_status)
            .or_else(|| diagnostic.as_deref().and_then(find_status))
            .or_else(|| {
                diagnostic
                    .as_deref()
                    .and_then(find_reply_code)
                    .map(|c| format!("{c}.0.0"))
            })
            .unwrap_or_else(|| "5.0.0".to_string());
        if status.starts_with('2') {
            continue;
        }
        let hard = is_hard(&status, diagnostic.as_deref().unwrap_or_default());
        if seen.insert(email.clone()) {
            failed.push(Failed {
                email,
                status,
                hard,
                diagnostic: diagnostic.map(|d| clean::bounded(&d, clean::MAX_DIAGNOSTIC)),
            });
        }
    }
    failed
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

/// Where the returned original starts in a plain-text bounce.
const ORIGINAL_MARKERS: [&str; 13] = [
    "this is a copy of the message",
    "this is a copy of your message",
    "original message follows",
    "- original message",
    "message headers follow",
    "- returned message",
    "headers of the original",
    "below this line is a copy",
    "text of the message follows",
    "undelivered message",
    "the header of the original",
    "content-type: message/rfc822",
    "\nreceived: ",
];

fn notification_text(text: &str) -> &str {
    let low = text.to_lowercase();
    let end = ORIGINAL_MARKERS
        .iter()
        .filter_map(|m| low.find(m))
        .min()
        .unwrap_or(text.len());
    // `to_lowercase` can change byte lengths; fall back to the whole text then.
    text.get(..end).unwrap_or(text)
}

const NOT_RECIPIENTS: [&str; 6] = [
    "mailer-daemon",
    "postmaster",
    "abuse",
    "noreply",
    "no-reply",
    "root",
];

/// Lines that name someone other than a failed recipient.
const OTHER_PEOPLE: [&str; 7] = [
    "message-id",
    "message id",
    "contact",
    "assistance",
    "please send mail to",
    "mail from",
    "envelope-from",
];

/// Addresses written in a notification, in order, without duplicates; at most `MAX_NAMED`.
fn addresses_in(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for line in text.lines() {
        if out.len() == MAX_NAMED {
            break;
        }
        crate::interrupt::check();
        let low = line.to_lowercase();
        if OTHER_PEOPLE.iter().any(|p| low.contains(p)) {
            continue;
        }
        addresses_in_line(line, &mut out, &mut seen);
    }
    out
}

fn addresses_in_line(
    text: &str,
    out: &mut Vec<String>,
    seen: &mut std::collections::HashSet<String>,
) {
    for token in text.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '<' | '>' | '(' | ')' | '[' | ']' | '"' | '\'' | ',' | ';' | '='
            )
    }) {
        let token = token.trim_matches(|c: char| matches!(c, '.' | ':' | '!' | '?'));
        let Some((local, domain)) = token.split_once('@') else {
            continue;
        };
        if local.is_empty()
            || !domain.contains('.')
            || domain.contains('@')
            || !token.chars().all(|c| c.is_ascii_graphic())
        {
            continue;
        }
        let address = lower(token);
        let local = address.split('@').next().unwrap_or_default();
        if out.len() == MAX_NAMED
            || NOT_RECIPIENTS.contains(&local)
            || !seen.insert(address.clone())
        {
            continue;
        }
        out.push(address);
    }
}

/// Senders that write bounces.
fn from_mailer(message: &Message<'_>) -> bool {
    let from = message.from().and_then(|a| a.first());
    let address = from
        .and_then(|a| a.address())
        .map(lower)
        .unwrap_or_default();
    let name = from.and_then(|a| a.name()).map(lower).unwrap_or_default();
    let local = address.split('@').next().unwrap_or_default();
    address.is_empty()
        && header(message, "From").is_some_and(|f| lower(f).contains("mailer-daemon"))
        || [
            "mailer-daemon",
            "postmaster",
            "mail-daemon",
            "mailerdaemon",
            "mdaemon",
        ]
        .iter()
        .any(|m| local.starts_with(m))
        || name.contains("mail delivery")
        || name.contains("mailer-daemon")
        || name.contains("mail administrator")
}

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
    if from_mailer(message) {
        return true;
    }
    let subject = lower(message.subject().unwrap_or_default());
    let low = notice.to_lowercase();
    let says_failed = FAILURE_PHRASES.iter().any(|p| low.contains(p));
    if mailer {
        return says_failed || BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s));
    }
    let address = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(lower)
        .unwrap_or_default();
    let no_reply = ["no-reply", "noreply", "do-not-reply", "donotreply"]
        .iter()
        .any(|l| address.starts_with(&format!("{l}@")));
    no_reply && returns_original && says_failed
}

/// Amazon SES bounce notifications (JSON, as SNS mails them); a complaint gives no recipient.
fn ses_notification(body: &str) -> Option<Vec<Failed>> {
    let start = body.find('{')?;
    if !body.contains("bouncedRecipients") {
        return None;
    }
    let end = body.rfind('}')?;
    // SNS folds long lines: the JSON is whole again without the line breaks.
    let json: String = body
        .get(start..=end)?
        .chars()
        .filter(|c| !matches!(c, '\r' | '\n'))
        .collect();
    let mut value: serde_json::Value = serde_json::from_str(&json).ok()?;
    // SNS wraps SES's notification in its own, as a string.
    if let Some(inner) = value.get("Message").and_then(|m| m.as_str()) {
        value = serde_json::from_str(inner).ok()?;
    }
    if value.get("notificationType").and_then(|t| t.as_str()) == Some("Complaint") {
        return Some(vec![]);
    }
    let bounce = value.get("bounce")?;
    let permanent = bounce.get("bounceType").and_then(|t| t.as_str()) == Some("Permanent");
    let failed: Vec<Failed> = bounce
        .get("bouncedRecipients")?
        .as_array()?
        .iter()
        .take(MAX_FAILED)
        .filter_map(|r| {
            let email = address_of(r.get("emailAddress")?.as_str()?)?;
            let diagnostic = r
                .get("diagnosticCode")
                .and_then(|d| d.as_str())
                .map(|d| clean::bounded(d, clean::MAX_DIAGNOSTIC));
            let status = r
                .get("status")
                .and_then(|s| s.as_str())
                .and_then(find_status)
                .unwrap_or_else(|| if permanent { "5.0.0" } else { "4.0.0" }.to_string());
            Some(Failed {
                hard: is_hard(&status, diagnostic.as_deref().unwrap_or_default()),
                email,
                status,
                diagnostic,
            })
        })
        .collect();
    (!failed.is_empty()).then_some(failed)
}

/// The addresses of header fields, lower-case; what is not an address (`To: k(S`, a bare
/// group name) is left out.
fn addresses_of(fields: [Option<&mail_parser::Address<'_>>; 2]) -> Vec<String> {
    fields
        .into_iter()
        .flatten()
        .flat_map(|a| {
            a.iter()
                .take(MAX_NAMED)
                .filter_map(|a| a.address())
                .filter_map(address_of)
                .collect::<Vec<_>>()
        })
        .take(MAX_NAMED)
        .collect()
}

/// The recipients of the returned original: who the failed mail was for.
fn original_recipients(message: &Message<'_>, body: &str) -> Vec<String> {
    let from_part = message.parts.iter().skip(1).find_map(|part| {
        let inner = part.message()?;
        let to = addresses_of([inner.to(), inner.cc()]);
        (!to.is_empty()).then_some(to)
    });
    from_part.unwrap_or_else(|| {
        // A copy pasted into the text: its `To:` line.
        body.lines()
            .skip_while(|l| {
                !ORIGINAL_MARKERS
                    .iter()
                    .any(|m| l.to_lowercase().contains(m.trim_start_matches('\n')))
            })
            .find(|l| l.to_lowercase().starts_with("to:"))
            .map(|l| addresses_in(&l[3..]))
            .unwrap_or_default()
    })
}

/// The Message-ID of the returned original (`message/rfc822` or `text/rfc822-headers`).
fn original_message_id(message: &Message<'_>) -> Option<String> {
    for part in message.parts.iter().skip(1) {
        if let Some(inner) = part.message()
            && let Some(id) = inner.message_id()
        {
            return Some(format!("<{}>", id.trim_matches(['<', '>'])));
        }
        if content_type(part) == "text/rfc822-headers" {
            let text = text_of(part);
            if let Some(id) = MessageParser::default()
                .parse_headers(text.as_bytes())
                .and_then(|m| m.message_id().map(str::to_string))
            {
                return Some(format!("<{}>", id.trim_matches(['<', '>'])));
            }
        }
    }
    None
}

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

/// What a message parsed already reports.
pub fn analyse_parsed(message: &Message<'_>) -> Report {
    let auto = auto_submitted(message);
    let report_type = message
        .content_type()
        .and_then(|ct| ct.attribute("report-type"))
        .map(lower)
        .unwrap_or_default();
    let kinds: Vec<String> = message.parts.iter().map(content_type).collect();
    let original = original_message_id(message);
    let mailer = from_mailer(message) || (null_sender(message) && !is_auto_reply(message));
    let report = |kind, failed| Report {
        kind,
        failed,
        original_message_id: original.clone(),
        auto_submitted: auto,
        from_mailer: mailer,
    };

    if is_complaint(message, &report_type, &kinds) {
        return report(Kind::Complaint, vec![]);
    }

    // RFC 3464 (and RFC 6533 for internationalised addresses).
    let mut failed = Vec::new();
    let mut has_dsn = false;
    for part in &message.parts {
        if matches!(
            content_type(part).as_str(),
            "message/delivery-status" | "message/global-delivery-status"
        ) {
            has_dsn = true;
            failed.extend(parse_delivery_status(&text_of(part)));
        }
    }
    if has_dsn && !failed.is_empty() {
        return report(Kind::Bounce, failed);
    }

    let failed_header: Vec<String> = message
        .header_values("X-Failed-Recipients")
        .filter_map(|v| v.as_text())
        .flat_map(|t| t.split(',').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|a| address_of(&a))
        .take(MAX_FAILED)
        .collect();
    // Plain-text bounces: the notification before the returned original.
    let body = message
        .text_bodies()
        .next()
        .map(text_of)
        .or_else(|| message.parts.first().map(text_of))
        .unwrap_or_default()
        .replace("\r\n", "\n");
    if let Some(failed) = ses_notification(&body) {
        let kind = if failed.is_empty() {
            Kind::Complaint
        } else {
            Kind::Bounce
        };
        return report(kind, failed);
    }
    let whole_notice = notification_text(&body);
    // A pasted original: the notice stops before the end of the text.
    let pasted_original = whole_notice.len() < body.len();
    let notice = prefix(whole_notice, MAX_NOTICE);
    let returns_original = kinds
        .iter()
        .any(|k| k == "message/rfc822" || k == "text/rfc822-headers");
    let bounce_like = has_dsn
        || !failed_header.is_empty()
        || looks_like_bounce(message, mailer, notice, returns_original);
    let not_a_bounce = |message: &Message<'_>| {
        report(
            if is_auto_reply(message) {
                Kind::AutoReply
            } else {
                Kind::Normal
            },
            vec![],
        )
    };
    if !bounce_like {
        return not_a_bounce(message);
    }
    let recipients = failed_recipients(message, &body, notice, failed_header.clone());
    // Reads like a bounce but names nobody, or gives neither a reply code nor the returned
    // mail: a notice, not a failure report (nothing to act on).
    let low_notice = notice.to_lowercase();
    let evidence = !failed_header.is_empty()
        || returns_original
        || pasted_original
        || find_status(notice).is_some()
        || find_reply_code(notice).is_some()
        || FAILURE_PHRASES
            .iter()
            .chain(HARD_PHRASES.iter())
            .any(|p| low_notice.contains(p));
    if recipients.is_empty() || !evidence {
        return not_a_bounce(message);
    }
    report(Kind::Bounce, failures_in_words(recipients, notice))
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
    let own: std::collections::HashSet<String> = addresses_of([message.to(), message.from()])
        .into_iter()
        .collect();
    let original: Vec<String> = original_recipients(message, body)
        .into_iter()
        .filter(|a| !own.contains(a))
        .collect();
    let named: Vec<String> = addresses_in(notice)
        .into_iter()
        .filter(|a| !own.contains(a))
        .collect();
    let in_original: std::collections::HashSet<&String> = original.iter().collect();
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
    let low_notice = notice.to_lowercase();
    // `to_lowercase` can change byte lengths; positions are then looked up in the notice itself.
    let positions_match = low_notice.len() == notice.len();
    let notice_status = find_status(notice);
    let notice_code = find_reply_code(notice).map(|c| format!("{c}.0.0"));
    let in_words = || {
        if [
            "temporar",
            "will retry",
            "will be retried",
            "retry timeout exceeded",
            "have been failing",
            "delayed",
            "deferred",
            "still trying",
        ]
        .iter()
        .any(|w| low_notice.contains(w))
        {
            "4.0.0".to_string()
        } else {
            "5.0.0".to_string()
        }
    };
    let alone = recipients.len() == 1;
    recipients
        .into_iter()
        .map(|email| {
            crate::interrupt::check();
            // The words about this recipient: the paragraph of its first mention and the next.
            let at = if positions_match {
                low_notice.find(&email).unwrap_or(0)
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
            let around = notice.get(start..end).unwrap_or_default();
            let status = find_status(around)
                .or_else(|| notice_status.clone())
                .or_else(|| find_reply_code(around).map(|c| format!("{c}.0.0")))
                .or_else(|| notice_code.clone())
                .unwrap_or_else(in_words);
            let diagnostic = around
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .take(6)
                .collect::<Vec<_>>()
                .join(" ");
            // A lone recipient's failure is what the whole notice says.
            let words = if alone { notice } else { around };
            Failed {
                hard: is_hard(&status, words),
                email,
                status,
                diagnostic: (!diagnostic.is_empty())
                    .then(|| clean::bounded(&diagnostic, clean::MAX_DIAGNOSTIC)),
            }
        })
        .collect()
}

/// How the analyser does on a corpus laid out like `tests/corpora/bounces` (an
/// `expected.json` of kinds and failed recipients) plus a directory of ordinary messages.
#[derive(Debug, Default)]
pub struct CorpusScore {
    pub bounces: usize,
    pub recognised: usize,
    pub reports: usize,
    pub reports_recognised: usize,
    pub with_recipients: usize,
    pub right_count: usize,
    pub right_class: usize,
    pub right_hard: usize,
    pub right_status_and_hard: usize,
    /// Complaints, auto-replies and ordinary messages taken for bounces.
    pub false_bounces: Vec<String>,
}

pub fn score_corpus(
    bounces: &std::path::Path,
    ordinary: &std::path::Path,
) -> std::io::Result<CorpusScore> {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bounces.join("expected.json"))?)
            .map_err(std::io::Error::other)?;
    let mut score = CorpusScore::default();
    for (file, want) in expected.as_object().into_iter().flatten() {
        let got = analyse(&std::fs::read(bounces.join(file))?);
        match want["kind"].as_str().unwrap_or_default() {
            "bounce" => {
                score.bounces += 1;
                score.recognised += (got.kind == Kind::Bounce) as usize;
                let Some(want) = want["recipients"].as_array().filter(|r| !r.is_empty()) else {
                    continue;
                };
                score.with_recipients += 1;
                if got.failed.len() != want.len() {
                    continue;
                }
                score.right_count += 1;
                let pairs = || want.iter().zip(&got.failed);
                let class = pairs().all(|(w, g)| {
                    w["status"].as_str().unwrap_or_default().get(..1) == g.status.get(..1)
                });
                let hard = pairs().all(|(w, g)| w["hard"].as_bool() == Some(g.hard));
                score.right_class += class as usize;
                score.right_hard += hard as usize;
                score.right_status_and_hard += (class && hard) as usize;
            }
            kind => {
                score.reports += 1;
                let right = match kind {
                    "complaint" => got.kind == Kind::Complaint,
                    _ => got.kind == Kind::AutoReply,
                };
                score.reports_recognised += right as usize;
                if got.kind == Kind::Bounce {
                    score.false_bounces.push(file.clone());
                }
            }
        }
    }
    for entry in std::fs::read_dir(ordinary)? {
        let path = entry?.path();
        if analyse(&std::fs::read(&path)?).kind == Kind::Bounce {
            score.false_bounces.push(path.display().to_string());
        }
    }
    Ok(score)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delivery agent's Return-Path is the topmost; one a sender wrote lower down is theirs.
    #[test]
    fn only_the_topmost_return_path_says_null_sender() {
        let away = |header: &str| {
            format!(
                "{header}From: dan@customer.example\r\nSubject: Out of office\r\n\r\nBack on Monday.\r\n"
            )
        };
        let parse = |raw: &str| analyse(raw.as_bytes()).kind;
        assert_eq!(
            parse(&away(
                "Return-Path: <>\r\nReturn-Path: <dan@customer.example>\r\n"
            )),
            Kind::AutoReply
        );
        assert_ne!(
            parse(&away(
                "Return-Path: <dan@customer.example>\r\nReturn-Path: <>\r\n"
            )),
            Kind::AutoReply
        );
    }

    /// Found by the `bounce_report` fuzz target: the returned original's `To: k(S` made "k" a
    /// failed recipient.
    #[test]
    fn a_returned_original_without_an_address_names_no_recipient() {
        let raw = b"Subject:Delivery failed0\nContent-type:multipart/\n boundary=Bo\n\n\
--Bocontent-type:message/rfc822\n\nTo:k(S\n\n";
        assert!(analyse(raw).failed.iter().all(|f| f.email.contains('@')));
        // (From a mailer daemon: words in a subject alone no longer make a bounce.)
        let raw = b"From: MAILER-DAEMON@mx.example\nSubject: Delivery failed\nContent-Type: multipart/report; boundary=b\n\n\
--b\nContent-Type: message/rfc822\n\nTo: K@Example.COM\n\nhi\n--b--\n";
        let emails: Vec<String> = analyse(raw).failed.into_iter().map(|f| f.email).collect();
        assert_eq!(emails, ["k@example.com"]);
    }

    /// Found by the `bounce_report` fuzz target: an SES notification with an empty
    /// `emailAddress` made "" a failed recipient.
    #[test]
    fn an_ses_recipient_without_an_address_is_left_out() {
        let raw = br#"
{"Message":"{\"bounce\":{\"bouncedRecipients\":[{\"emailAddress\":\"\"}]}}"}
"#;
        assert!(analyse(raw).failed.is_empty());
        let raw = br#"
{"Message":"{\"bounce\":{\"bounceType\":\"Permanent\",\"bouncedRecipients\":[{\"emailAddress\":\"Bob@Example.com\"}]}}"}
"#;
        let failed = analyse(raw).failed;
        assert_eq!(failed.len(), 1);
        assert_eq!(
            (failed[0].email.as_str(), failed[0].status.as_str()),
            ("bob@example.com", "5.0.0")
        );
    }

    #[test]
    fn status_codes_are_found_in_words() {
        assert_eq!(
            find_status("550 5.1.1 <a@b>: user unknown").as_deref(),
            Some("5.1.1")
        );
        assert_eq!(
            find_status("smtp; 550-5.7.26 Unauthenticated").as_deref(),
            Some("5.7.26")
        );
        assert_eq!(find_status("version 1.2.3 and 10.5.1.1 and 5.1"), None);
        assert_eq!(find_reply_code("host said: 552 too big"), Some('5'));
        assert_eq!(find_reply_code("port 25000 and 4500ms"), None);
    }

    #[test]
    fn a_dsn_names_the_recipient_we_sent_to() {
        let body = "Reporting-MTA: dns; mx.example\n\n\
            Final-Recipient: rfc822; r@final.example\n\
            Original-Recipient: rfc822;Kiji@Example.org\nAction: failed\nStatus: 5.1.1\n\
            Diagnostic-Code: smtp; 550 5.1.1 <r@final.example>: Recipient address\n    rejected: User unknown\n\n\
            Final-Recipient: rfc822; ok@example.org\nAction: delivered\nStatus: 2.0.0\n";
        let failed = parse_delivery_status(body);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].email, "kiji@example.org");
        assert_eq!(failed[0].status, "5.1.1");
        assert!(failed[0].hard);
        assert!(
            failed[0]
                .diagnostic
                .as_deref()
                .unwrap()
                .contains("User unknown")
        );
    }

    #[test]
    fn hard_means_the_address_is_wrong() {
        assert!(is_hard("5.1.1", "550 user unknown"));
        assert!(is_hard("5.0.0", "550 No such user here"));
        assert!(!is_hard("5.2.2", "552 mailbox full"));
        assert!(
            !is_hard("5.1.1", "procmail: Command output: no such user"),
            "a local delivery program failed"
        );
        assert!(
            !is_hard("4.2.2", "user unknown"),
            "a 4xx is hard only as 4.1.1/4.1.2"
        );
        assert!(is_hard(
            "4.1.1",
            "450 4.1.1 Recipient address rejected: User unknown"
        ));
        assert!(
            !is_hard("5.0.0", "550 user unknown (after end of data)"),
            "a content filter"
        );
        assert!(!is_hard("5.7.1", "blocked by policy"));
    }

    #[test]
    fn an_out_of_office_is_an_auto_reply_not_a_bounce() {
        let raw = b"From: Ann <ann@customer.example>\r\nTo: sales@mycompany.com\r\n\
Subject: Automatic reply: your order\r\nAuto-Submitted: auto-replied\r\n\r\nI am away.\r\n";
        let r = analyse(raw);
        assert_eq!((r.kind, r.auto_submitted), (Kind::AutoReply, true));
    }

    #[test]
    fn a_plain_reply_is_normal() {
        let raw = b"From: Ann <ann@customer.example>\r\nTo: catchall@mycompany.com\r\n\
Subject: Re: Quote\r\nIn-Reply-To: <x@mycompany.com>\r\n\r\nThe mail was undelivered to my boss, please resend to boss@customer.example\r\n";
        let r = analyse(raw);
        assert_eq!((r.kind, r.auto_submitted), (Kind::Normal, false));
    }

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

    #[test]
    fn the_shared_bounce_corpus_is_read_by_general_rules() {
        let corpora = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpora");
        let s = score_corpus(&corpora.join("bounces"), &corpora.join("not-bounces")).unwrap();
        let pct = |n: usize, of: usize| 100.0 * n as f64 / of.max(1) as f64;
        println!("{s:?}");
        assert!(
            s.bounces > 300 && s.with_recipients > 250,
            "the corpus is there: {s:?}"
        );
        assert!(
            s.false_bounces.is_empty(),
            "taken for bounces: {:?}",
            s.false_bounces
        );
        assert!(pct(s.recognised, s.bounces) >= 98.0, "{s:?}");
        assert!(pct(s.right_count, s.with_recipients) >= 95.0, "{s:?}");
        // Measured 94 % (class) and 86 % (hard flag): see docs/DECISIONS.md. These floors
        // catch a regression; they are not the target.
        assert!(pct(s.right_class, s.with_recipients) >= 93.0, "{s:?}");
        assert!(pct(s.right_hard, s.with_recipients) >= 84.0, "{s:?}");
        assert_eq!(
            s.reports_recognised, s.reports,
            "complaints and auto-replies: {s:?}"
        );
    }

    /// Found by the `route` fuzz target: a DSN's Final-Recipient with NULs in it became a
    /// failed recipient (and would have failed to store).
    #[test]
    fn a_recipient_with_control_characters_is_no_address() {
        let raw = b"From: MAILER-DAEMON@mx.example\r\nSubject: failure\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n\
Final-Recipient: rfc822; kijitora@y.exampl\x7f\x00\x00\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n";
        assert!(analyse(raw).failed.iter().all(|f| !f.email.contains('\0')));
    }

    #[test]
    fn garbage_is_normal() {
        assert_eq!(analyse(b"").kind, Kind::Normal);
        assert_eq!(analyse(&[0xff, 0, 0x80]).kind, Kind::Normal);
    }
}
