//! The parsed summary of a received message (mail-parser 0.11): what routing needs, stored as
//! jsonb next to the raw bytes. Malformed input never fails: what cannot be read is left out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_parser::{Address, HeaderValue, Message, MimeHeaders};
use serde_json::{Value, json};

use super::{clean, structure};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachment {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// With angle brackets, as we write our own: `<id@domain>`.
    pub message_id: Option<String>,
    pub from_name: Option<String>,
    /// Lower-case.
    pub from_address: Option<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub delivered_to: Vec<String>,
    pub subject: Option<String>,
    /// RFC 3339.
    pub date: Option<String>,
    pub in_reply_to: Vec<String>,
    /// The newest `clean::MAX_LISTED`.
    pub references: Vec<String>,
    pub attachments: Vec<Attachment>,
    /// What was cleaned or left out, in words (NUL removed, an id too long to be one …).
    pub notes: Vec<String>,
}

fn bracket(id: &str) -> String {
    format!(
        "<{}>",
        id.trim().trim_start_matches('<').trim_end_matches('>')
    )
}

/// Collects what cleaning did, once per kind of thing.
#[derive(Default)]
struct Notes(Vec<String>);

impl Notes {
    fn add(&mut self, note: String) {
        if !self.0.contains(&note) {
            self.0.push(note);
        }
    }

    /// `text` without NUL and cut to `max` characters, noting either.
    fn line(&mut self, what: &str, text: &str, max: usize) -> String {
        let cleaned = clean::bounded(text, max);
        if text.contains('\0') {
            self.add(format!("NUL characters in the {what} replaced"));
        }
        if cleaned.len() < text.len() {
            self.add(format!("{what} cut to {max} characters"));
        }
        cleaned
    }

    /// A Message-ID, unless it is too long or malformed to be one.
    fn id(&mut self, what: &str, id: &str) -> Option<String> {
        let id = bracket(id);
        if id.len() > clean::MAX_ID || id.contains(['\0', ' ', '\t', '\r', '\n']) {
            self.add(format!("a malformed or {}-byte {what} ignored", id.len()));
            return None;
        }
        Some(id)
    }

    fn ids(&mut self, what: &str, value: &HeaderValue<'_>) -> Vec<String> {
        let all: Vec<&str> = match value {
            HeaderValue::Text(t) => vec![t.as_ref()],
            HeaderValue::TextList(list) => list.iter().map(|t| t.as_ref()).collect(),
            _ => vec![],
        };
        let skip = all.len().saturating_sub(clean::MAX_LISTED);
        if skip > 0 {
            self.add(format!(
                "{} {what} ids: the oldest {skip} left out",
                all.len()
            ));
        }
        all[skip..]
            .iter()
            .filter_map(|id| self.id(what, id))
            .collect()
    }

    /// An address, lower-case, unless it is too long or holds NUL.
    fn address(&mut self, what: &str, address: &str) -> Option<String> {
        if address.len() > clean::MAX_ADDRESS || address.contains('\0') {
            self.add(format!(
                "a malformed or {}-byte {what} address ignored",
                address.len()
            ));
            return None;
        }
        Some(address.to_lowercase())
    }

    fn addresses(&mut self, what: &str, address: Option<&Address<'_>>) -> Vec<String> {
        let Some(address) = address else {
            return vec![];
        };
        let all: Vec<&str> = address.iter().filter_map(|a| a.address()).collect();
        if all.len() > clean::MAX_LISTED {
            self.add(format!(
                "{} {what} addresses: the first {} kept",
                all.len(),
                clean::MAX_LISTED
            ));
        }
        all.into_iter()
            .take(clean::MAX_LISTED)
            .filter_map(|a| self.address(what, a))
            .collect()
    }
}

/// Reads what it can, within bounds (`structure::parse`); never fails.
pub fn summarise(raw: &[u8]) -> Summary {
    let parsed = structure::parse(raw);
    let mut summary = parsed
        .message
        .as_ref()
        .map(summarise_parsed)
        .unwrap_or_default();
    summary.notes.extend(parsed.header_only);
    summary
}

/// The summary of a message parsed already.
pub fn summarise_parsed(message: &Message<'_>) -> Summary {
    let mut notes = Notes::default();
    let from = message.from().and_then(|a| a.first());
    let delivered_to = message
        .header_values("Delivered-To")
        .filter_map(|v| v.as_text())
        .take(clean::MAX_LISTED)
        .filter_map(|t| {
            notes.address(
                "Delivered-To",
                t.trim().trim_start_matches('<').trim_end_matches('>'),
            )
        })
        .collect();
    let all_attachments = message.attachments().count();
    if all_attachments > clean::MAX_LISTED {
        notes.add(format!(
            "{all_attachments} attachments: the first {} listed",
            clean::MAX_LISTED
        ));
    }
    let attachments = message
        .attachments()
        .take(clean::MAX_LISTED)
        .map(|part| Attachment {
            filename: part
                .attachment_name()
                .map(|n| notes.line("attachment name", n, clean::MAX_LINE)),
            content_type: clean::bounded(&content_type_of(part), clean::MAX_LINE),
            size: part.contents().len(),
        })
        .collect();
    Summary {
        message_id: message
            .message_id()
            .and_then(|id| notes.id("Message-ID", id)),
        from_name: from
            .and_then(|a| a.name())
            .map(|n| notes.line("sender's name", n, clean::MAX_LINE)),
        from_address: from
            .and_then(|a| a.address())
            .and_then(|a| notes.address("From", a)),
        to: notes.addresses("To", message.to()),
        cc: notes.addresses("Cc", message.cc()),
        delivered_to,
        subject: message
            .subject()
            .map(|s| notes.line("subject", s, clean::MAX_LINE)),
        date: message.date().map(|d| d.to_rfc3339()),
        in_reply_to: notes.ids("In-Reply-To", message.in_reply_to()),
        references: notes.ids("References", message.references()),
        attachments,
        notes: notes.0,
    }
}

/// `type/subtype`, lower-case (`application/octet-stream` when the part does not say).
fn content_type_of(part: &mail_parser::MessagePart<'_>) -> String {
    part.content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{sub}", ct.ctype()),
            None => ct.ctype().to_string(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
        .to_lowercase()
}

/// What is stored of a received message of `size` bytes (`raw` may hold only its header when
/// the fetcher did not download the rest): its summary, and — over `limit` — the reason its
/// bytes are refused. A refused message is summarised from its header alone.
pub fn admit(raw: &[u8], size: u64, limit: u64) -> (Summary, Option<String>) {
    if size <= limit {
        return (summarise(raw), None);
    }
    let head_end = [&b"\r\n\r\n"[..], &b"\n\n"[..]]
        .iter()
        .filter_map(|end| {
            raw.windows(end.len())
                .position(|w| w == *end)
                .map(|p| p + end.len())
        })
        .min()
        .unwrap_or(raw.len().min(64 * 1024));
    let reason = format!(
        "message of {size} bytes is over mail_gateway.max_message_size ({limit} bytes); not stored"
    );
    let mut summary = summarise(&raw[..head_end]);
    // The parts are not read: a multipart header alone would list itself as an attachment.
    summary.attachments.clear();
    (summary, Some(reason))
}

impl Summary {
    pub fn to_json(&self) -> Value {
        json!({
            "message_id": self.message_id,
            "from": { "name": self.from_name, "address": self.from_address },
            "to": self.to,
            "cc": self.cc,
            "delivered_to": self.delivered_to,
            "subject": self.subject,
            "date": self.date,
            "in_reply_to": self.in_reply_to,
            "references": self.references,
            "attachments": self.attachments.iter().map(|a| json!({
                "filename": a.filename, "content_type": a.content_type, "size": a.size
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// What a received message brings to the chatter: its text and HTML bodies and, as the
/// server keeps them, its attachments and the original (base64 in jsonb).
#[derive(Debug, Default)]
pub struct Content {
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    pub attachments: Option<Value>,
}

pub fn content(
    parsed: Option<&Message<'_>>,
    raw: &[u8],
    keep_attachments: bool,
    keep_original: bool,
) -> Content {
    // Bodies and names go into text and jsonb columns: no NUL.
    let body_text = parsed
        .as_ref()
        .and_then(|m| m.body_text(0))
        .map(|t| clean::text(&t).into_owned());
    let body_html = parsed
        .as_ref()
        .and_then(|m| m.body_html(0))
        .map(|t| clean::text(&t).into_owned());
    let mut attachments = Vec::new();
    if keep_attachments && let Some(m) = parsed {
        for part in m.attachments() {
            attachments.push(json!({
                "filename": clean::bounded(part.attachment_name().unwrap_or("attachment"), clean::MAX_LINE),
                "content_type": clean::bounded(&content_type_of(part), clean::MAX_LINE),
                "content_base64": B64.encode(part.contents()),
            }));
        }
    }
    if keep_original {
        attachments.push(json!({
            "filename": "original.eml",
            "content_type": "message/rfc822",
            "content_base64": B64.encode(raw),
        }));
    }
    Content {
        body_text,
        body_html,
        attachments: (!attachments.is_empty()).then(|| json!(attachments)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &[u8] = b"Delivered-To: catchall@mycompany.com\r\n\
From: =?utf-8?q?J=C3=A9r=C3=B4me?= <Jerome@Customer.Example>\r\n\
To: Sales <sales@mycompany.com>, b@x.com\r\n\
Cc: c@x.com\r\n\
Subject: =?utf-8?q?Re:_Devis_=C3=A9t=C3=A9?=\r\n\
Date: Sat, 21 Nov 2026 10:00:00 +0100\r\n\
Message-ID: <reply-1@customer.example>\r\n\
In-Reply-To: <abc@mycompany.com>\r\n\
References: <root@mycompany.com> <abc@mycompany.com>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nHello\r\n\
--b\r\nContent-Type: application/pdf; name=\"devis.pdf\"\r\nContent-Disposition: attachment; filename=\"devis.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n\
--b--\r\n";

    #[test]
    fn a_reply_is_summarised() {
        let s = summarise(REPLY);
        assert_eq!(s.message_id.as_deref(), Some("<reply-1@customer.example>"));
        assert_eq!(s.from_name.as_deref(), Some("Jérôme"));
        assert_eq!(s.from_address.as_deref(), Some("jerome@customer.example"));
        assert_eq!(s.to, ["sales@mycompany.com", "b@x.com"]);
        assert_eq!(s.cc, ["c@x.com"]);
        assert_eq!(s.delivered_to, ["catchall@mycompany.com"]);
        assert_eq!(s.subject.as_deref(), Some("Re: Devis été"));
        assert_eq!(s.date.as_deref(), Some("2026-11-21T10:00:00+01:00"));
        assert_eq!(s.in_reply_to, ["<abc@mycompany.com>"]);
        assert_eq!(
            s.references,
            ["<root@mycompany.com>", "<abc@mycompany.com>"]
        );
        assert_eq!(
            s.attachments,
            [Attachment {
                filename: Some("devis.pdf".into()),
                content_type: "application/pdf".into(),
                size: 3
            }]
        );
        assert_eq!(s.to_json()["from"]["address"], "jerome@customer.example");
    }

    #[test]
    fn an_oversized_message_is_summarised_from_its_header() {
        let (summary, refused) = admit(REPLY, REPLY.len() as u64, 100);
        assert_eq!(summary.subject.as_deref(), Some("Re: Devis été"));
        assert!(summary.attachments.is_empty(), "the body is not read");
        assert!(
            refused
                .unwrap()
                .contains("over mail_gateway.max_message_size (100 bytes)")
        );
        let (summary, refused) = admit(REPLY, REPLY.len() as u64, 1 << 20);
        assert_eq!((summary.attachments.len(), refused), (1, None));
    }

    #[test]
    fn garbage_gives_an_empty_summary_not_a_failure() {
        assert_eq!(summarise(b""), Summary::default());
        let s = summarise(&[0xff, 0xfe, 0x00, b'\n', b':', 0x80]);
        assert_eq!(s.message_id, None);
        let s = summarise(b"Subject: no id\r\n\r\nbody");
        assert_eq!((s.message_id, s.subject.as_deref()), (None, Some("no id")));
    }
}
