//! Outgoing messages as RFC 5322 bytes, built with lettre's message builder: it encodes
//! non-ASCII headers (RFC 2047), folds long lines, picks the transfer encoding of each part and
//! writes CRLF line endings. Bcc never appears: recipients travel in the envelope only.

use std::time::SystemTime;

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{
    Attachment as AttachmentPart, Mailbox, MessageBuilder, MultiPart, SinglePart,
};
use lettre::{Address, Message, address::Envelope};

/// A file attached to a mail.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// What a mail is made of, as queued.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub message_id: &'a str,
    /// The From header, already rewritten by the server choice.
    pub from: &'a str,
    pub to: &'a [String],
    pub cc: &'a [String],
    pub reply_to: Option<&'a str>,
    pub subject: &'a str,
    pub body_text: Option<&'a str>,
    pub body_html: Option<&'a str>,
    pub headers: &'a [(String, String)],
    pub attachments: &'a [Attachment],
    pub date: SystemTime,
}

/// Headers the gateway writes itself; a caller may not set them through `headers`.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "sender",
    "return-path",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "dkim-signature",
];

/// Why a message cannot be built (or a custom header queued): the offending value, named.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid header name \"{0}\"")]
    HeaderName(String),
    #[error("header \"{0}\" is set by mail_gateway itself")]
    ReservedHeader(String),
    #[error("header \"{0}\" contains a line break")]
    LineBreak(String),
    #[error("malformed address \"{0}\"")]
    Address(String),
    #[error("invalid content type \"{content_type}\" of attachment \"{filename}\"")]
    ContentType {
        content_type: String,
        filename: String,
    },
    /// lettre's own refusal.
    #[error("{0}")]
    Lettre(#[from] lettre::error::Error),
}

/// Checks a custom header before it is queued: a valid field name (RFC 5322 §3.6.8), not one
/// the gateway writes itself, and a value without line breaks (no header injection).
pub fn check_header(name: &str, value: &str) -> Result<(), BuildError> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(BuildError::HeaderName(name.to_string()));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(BuildError::ReservedHeader(name.to_string()));
    }
    if value.contains(['\r', '\n', '\0']) {
        return Err(BuildError::LineBreak(name.to_string()));
    }
    Ok(())
}

fn mailbox(text: &str) -> Result<Mailbox, BuildError> {
    text.trim()
        .parse::<Mailbox>()
        .map_err(|_| BuildError::Address(text.to_string()))
}

/// Renders the message. Errors name the offending value.
pub fn build(mail: &Outgoing<'_>) -> Result<Vec<u8>, BuildError> {
    let builder = headers(mail)?;
    // Line ends are made CRLF here, in one pass: lettre would insert each missing CR one by
    // one (quadratic in a long body), and a bare CR would push it to quoted-printable.
    let text = crlf_lines(&match (mail.body_text, mail.body_html) {
        (Some(text), _) => text.to_string(),
        (None, Some(html)) => html_to_text(html),
        (None, None) => String::new(),
    });
    let body = match mail.body_html {
        Some(html) => MultiPart::alternative_plain_html(text, crlf_lines(html)),
        None if mail.attachments.is_empty() => {
            return builder
                .singlepart(SinglePart::plain(text))
                .map(|m| m.formatted())
                .map_err(BuildError::from);
        }
        None => MultiPart::mixed().singlepart(SinglePart::plain(text)),
    };
    let message: Message = if mail.attachments.is_empty() {
        builder.multipart(body)
    } else {
        let mixed = if mail.body_html.is_some() {
            MultiPart::mixed().multipart(body)
        } else {
            body
        };
        builder.multipart(with_attachments(mixed, mail.attachments)?)
    }?;
    Ok(message.formatted())
}

/// The builder with every header: From, Subject, Message-ID, Date, the recipients, Reply-To
/// and the custom headers.
fn headers(mail: &Outgoing<'_>) -> Result<MessageBuilder, BuildError> {
    let from = mailbox(mail.from)?;
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(mail.subject)
        .message_id(Some(mail.message_id.to_string()))
        .date(mail.date)
        // The real envelope is given to the SMTP client; this one only satisfies the builder.
        .envelope(Envelope::new(
            Some(from.email.clone()),
            vec![from.email.clone()],
        )?);
    for to in mail.to {
        builder = builder.to(mailbox(to)?);
    }
    for cc in mail.cc {
        builder = builder.cc(mailbox(cc)?);
    }
    if let Some(reply_to) = mail.reply_to {
        builder = builder.reply_to(mailbox(reply_to)?);
    }
    for (name, value) in mail.headers {
        check_header(name, value)?;
        let name = HeaderName::new_from_ascii(name.clone())
            .map_err(|_| BuildError::HeaderName(name.clone()))?;
        builder = builder.raw_header(HeaderValue::new(name, value.clone()));
    }
    Ok(builder)
}

/// `mixed` with each attachment as a part of its own.
fn with_attachments(
    mut mixed: MultiPart,
    attachments: &[Attachment],
) -> Result<MultiPart, BuildError> {
    for a in attachments {
        let content_type =
            ContentType::parse(&a.content_type).map_err(|_| BuildError::ContentType {
                content_type: a.content_type.clone(),
                filename: a.filename.clone(),
            })?;
        mixed = mixed.singlepart(
            AttachmentPart::new(a.filename.clone()).body(a.content.clone(), content_type),
        );
    }
    Ok(mixed)
}

/// `text` with every line end written CR LF (`smtp::wire::crlf_lines`).
fn crlf_lines(text: &str) -> String {
    match crate::smtp::wire::crlf_lines(text.as_bytes()) {
        std::borrow::Cow::Borrowed(_) => text.to_string(),
        // Only ASCII line ends were touched: still UTF-8.
        std::borrow::Cow::Owned(bytes) => String::from_utf8(bytes).unwrap_or_default(),
    }
}

/// A plain-text alternative for an HTML-only body: tags dropped, block ends as line breaks,
/// the common entities decoded.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            rest = "";
            break;
        };
        let tag = rest[start + 1..start + end]
            .trim_start_matches('/')
            .to_ascii_lowercase();
        let name: String = tag
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if matches!(
            name.as_str(),
            "br" | "p" | "div" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
        ) {
            out.push('\n');
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    let decoded = out
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    let lines: Vec<&str> = decoded.lines().map(str::trim).collect();
    let mut text = lines.join("\n");
    while text.contains("\n\n\n") {
        text = text.replace("\n\n\n", "\n\n");
    }
    text.trim().to_string()
}

/// The address of a mailbox text, for the envelope.
pub fn envelope_address(text: &str) -> Result<Address, BuildError> {
    mailbox(text).map(|m| m.email)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base<'a>() -> Outgoing<'a> {
        Outgoing {
            message_id: "<abc@mycompany.com>",
            from: "\"Jérôme\" <notifications@mycompany.com>",
            to: &[],
            cc: &[],
            reply_to: None,
            subject: "Hello",
            body_text: Some("Hi"),
            body_html: None,
            headers: &[],
            attachments: &[],
            date: SystemTime::UNIX_EPOCH,
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn headers_are_encoded_and_lines_end_in_crlf() {
        let to = vec!["Ann <ann@customer.example>".to_string()];
        let mail = Outgoing {
            to: &to,
            subject: "Devis n° 42 — été",
            ..base()
        };
        let out = text(&build(&mail).unwrap());
        assert!(out.contains("Message-ID: <abc@mycompany.com>\r\n"), "{out}");
        assert!(
            out.contains("Date: Thu, 01 Jan 1970 00:00:00 +0000\r\n"),
            "{out}"
        );
        assert!(out.contains("From: =?utf-8?"), "{out}");
        assert!(out.contains("Subject: Devis =?utf-8?"), "{out}");
        assert!(!out.contains("été"), "non-ASCII headers are encoded: {out}");
        assert!(
            !out.replace("\r\n", "").contains('\n'),
            "only CRLF line ends"
        );
        assert!(out.is_ascii());
    }

    #[test]
    fn html_gets_a_text_alternative() {
        let mail = Outgoing {
            body_text: None,
            body_html: Some("<p>Hello <b>Ann</b></p><p>Total: 5 &amp; 6</p>"),
            ..base()
        };
        let out = text(&build(&mail).unwrap());
        assert!(out.contains("multipart/alternative"), "{out}");
        assert!(out.contains("Content-Type: text/plain"), "{out}");
        assert!(out.contains("Content-Type: text/html"), "{out}");
        assert_eq!(
            html_to_text("<p>Hello <b>Ann</b></p><p>Total: 5 &amp; 6</p>"),
            "Hello Ann\n\nTotal: 5 & 6"
        );
    }

    #[test]
    fn attachments_and_custom_headers() {
        let headers = vec![("X-Erp-Record".to_string(), "sale.order,42".to_string())];
        let attachments = vec![Attachment {
            filename: "facture été.pdf".into(),
            content_type: "application/pdf".into(),
            content: vec![0, 1, 2, 255],
        }];
        let mail = Outgoing {
            headers: &headers,
            attachments: &attachments,
            ..base()
        };
        let out = text(&build(&mail).unwrap());
        assert!(out.contains("X-Erp-Record: sale.order,42\r\n"), "{out}");
        assert!(out.contains("multipart/mixed"), "{out}");
        assert!(out.contains("Content-Type: application/pdf"), "{out}");
        assert!(out.contains("AAEC/w=="), "base64 of the content: {out}");
    }

    #[test]
    fn long_lines_are_folded_or_encoded() {
        let long = "word ".repeat(400);
        let mail = Outgoing {
            subject: &long,
            body_text: Some(&long),
            ..base()
        };
        let out = text(&build(&mail).unwrap());
        assert!(
            out.split("\r\n").all(|l| l.len() <= 998),
            "no line over 998 octets"
        );
    }

    #[test]
    fn reserved_and_injected_headers_are_refused() {
        assert!(check_header("X-Ok", "fine").is_ok());
        assert!(check_header("Bcc", "x@y.com").is_err());
        assert!(check_header("x-ok", "a\r\nBcc: x@y.com").is_err());
        assert!(check_header("Bad Name", "v").is_err());
        assert!(check_header("", "v").is_err());
    }

    #[test]
    fn bare_line_ends_in_bodies_become_crlf() {
        assert_eq!(crlf_lines("a\rb\nc\r\nd\r"), "a\r\nb\r\nc\r\nd\r\n");
        let mail = Outgoing {
            body_text: Some("one\rtwo\nthree"),
            ..base()
        };
        let out = text(&build(&mail).unwrap());
        assert!(out.ends_with("\r\n\r\none\r\ntwo\r\nthree\r\n"), "{out:?}");
        assert!(out.contains("Content-Transfer-Encoding: 7bit"), "{out}");
    }

    #[test]
    fn bcc_is_never_written() {
        let to = vec!["a@x.com".to_string()];
        let mail = Outgoing { to: &to, ..base() };
        let out = text(&build(&mail).unwrap());
        assert!(!out.to_ascii_lowercase().contains("bcc"));
    }
}
