//! The parsed summary of a received message (mail-parser 0.11): what routing needs, stored as
//! jsonb next to the raw bytes. Malformed input never fails: what cannot be read is left out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_parser::{Address, HeaderValue, Message, MessageParser, MimeHeaders};
use serde_json::{Value, json};

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
    pub references: Vec<String>,
    pub attachments: Vec<Attachment>,
}

fn bracket(id: &str) -> String {
    format!(
        "<{}>",
        id.trim().trim_start_matches('<').trim_end_matches('>')
    )
}

fn ids(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(t) => vec![bracket(t)],
        HeaderValue::TextList(list) => list.iter().map(|t| bracket(t)).collect(),
        _ => vec![],
    }
}

fn addresses(address: Option<&Address<'_>>) -> Vec<String> {
    address
        .map(|a| {
            a.iter()
                .filter_map(|a| a.address())
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads what it can; never fails.
pub fn summarise(raw: &[u8]) -> Summary {
    match MessageParser::default().parse(raw) {
        Some(message) => summarise_parsed(&message),
        None => Summary::default(),
    }
}

/// The summary of a message parsed already.
pub fn summarise_parsed(message: &Message<'_>) -> Summary {
    let from = message.from().and_then(|a| a.first());
    let delivered_to = message
        .header_values("Delivered-To")
        .filter_map(|v| v.as_text())
        .map(|t| {
            t.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_lowercase()
        })
        .collect();
    let attachments = message
        .attachments()
        .map(|part| Attachment {
            filename: part.attachment_name().map(str::to_string),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into())
                .to_lowercase(),
            size: part.contents().len(),
        })
        .collect();
    Summary {
        message_id: message.message_id().map(bracket),
        from_name: from.and_then(|a| a.name()).map(str::to_string),
        from_address: from.and_then(|a| a.address()).map(str::to_lowercase),
        to: addresses(message.to()),
        cc: addresses(message.cc()),
        delivered_to,
        subject: message.subject().map(str::to_string),
        date: message.date().map(|d| d.to_rfc3339()),
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        attachments,
    }
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
    let body_text = parsed
        .as_ref()
        .and_then(|m| m.body_text(0))
        .map(|t| t.into_owned());
    let body_html = parsed
        .as_ref()
        .and_then(|m| m.body_html(0))
        .map(|t| t.into_owned());
    let mut attachments = Vec::new();
    if keep_attachments && let Some(m) = parsed {
        for part in m.attachments() {
            let content_type = part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{sub}", ct.ctype()),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into());
            attachments.push(json!({
                "filename": part.attachment_name().unwrap_or("attachment"),
                "content_type": content_type.to_lowercase(),
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
