//! An outgoing mail with hostile values (CR/LF in the subject, names, addresses, custom
//! headers, file names): either refused with an error or built into a message whose headers
//! are exactly the ones we wrote — never one smuggled in.
#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mail_gateway_core::mime::build::{Attachment, Outgoing, build};
use mail_parser::MessageParser;

#[derive(Debug, Arbitrary)]
struct Mail {
    from_name: String,
    to: String,
    reply_to: Option<String>,
    subject: String,
    body_text: Option<String>,
    body_html: Option<String>,
    header_value: String,
    filename: Option<String>,
}

fuzz_target!(|m: Mail| {
    let from = format!(
        "\"{}\" <sender@example.com>",
        m.from_name.replace(['"', '\\'], "")
    );
    let to = vec![m.to.clone()];
    let headers = vec![("X-Ticket".to_string(), m.header_value.clone())];
    let attachments: Vec<Attachment> = m
        .filename
        .iter()
        .map(|name| Attachment {
            filename: name.clone(),
            content_type: "text/plain".into(),
            content: b"attached".to_vec(),
        })
        .collect();
    let mail = Outgoing {
        message_id: "<fuzz@example.com>",
        from: &from,
        to: &to,
        cc: &[],
        reply_to: m.reply_to.as_deref(),
        subject: &m.subject,
        body_text: m.body_text.as_deref(),
        body_html: m.body_html.as_deref(),
        headers: &headers,
        attachments: &attachments,
        date: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    let Ok(bytes) = build(&mail) else { return };
    let message = MessageParser::default()
        .parse(&bytes)
        .expect("what we build parses");
    let allowed = [
        "from",
        "to",
        "reply-to",
        "subject",
        "message-id",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "x-ticket",
    ];
    for header in message.headers() {
        let name = header.name().to_ascii_lowercase();
        assert!(allowed.contains(&name.as_str()), "smuggled header {name:?}");
    }
    let count = |n: &str| {
        message
            .headers()
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case(n))
            .count()
    };
    for single in ["from", "to", "subject", "message-id", "x-ticket"] {
        assert_eq!(count(single), 1, "{single} written once");
    }
    assert_eq!(
        message.message_id(),
        Some("fuzz@example.com"),
        "the Message-ID is ours"
    );
});
