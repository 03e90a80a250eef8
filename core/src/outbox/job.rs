//! A mail handed to a connection: its envelope and what it is made of. The connection thread
//! renders it (build, CRLF-normalise, DKIM-sign), so that building and signing run beside the
//! network and the database work instead of before them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lettre::Address;

use crate::dkim;
use crate::mime::build::{self, Attachment, Outgoing};
use crate::routing::address::Sender;
use crate::smtp::wire;

/// An active DKIM key of a domain.
pub struct DkimKey {
    pub selector: String,
    pub algorithm: String,
    pub private_pem: String,
}

/// The queued columns a message is built from.
pub struct Content {
    pub message_id: String,
    /// The From header, as the server choice wrote it.
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: String,
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    pub headers: Vec<(String, String)>,
    /// `[{"filename", "content_type", "content_base64"}, …]`, decoded when rendered.
    pub attachments: Option<serde_json::Value>,
    /// The active DKIM key of each domain: the From domain's signs the mail.
    pub dkim_keys: Arc<HashMap<String, DkimKey>>,
}

pub struct Job {
    pub mail_id: i64,
    pub server_id: i64,
    /// `None` is the null sender `<>`.
    pub from: Option<Address>,
    pub to: Vec<Address>,
    pub content: Content,
}

/// Why a mail cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("attachment \"{filename}\": {source}")]
    Attachment {
        filename: String,
        source: base64::DecodeError,
    },
    #[error("{0}")]
    Build(#[from] build::BuildError),
}

/// A message ready for the wire, and what the worker should log about it.
pub struct Rendered {
    pub message: Vec<u8>,
    pub warning: Option<String>,
}

impl Content {
    /// The bytes to send: built, CRLF-normalised, then signed (the signature covers exactly
    /// what goes on the wire). A key that cannot sign leaves the mail unsigned, with a warning:
    /// an unsigned mail may still arrive, a failed one would not.
    pub fn render(&self, date: SystemTime) -> Result<Rendered, RenderError> {
        // The pool's tests need a bug to catch.
        #[cfg(test)]
        if self.subject == "panic while rendering" {
            panic!("boom");
        }
        let attachments = attachments(self.attachments.as_ref())?;
        let built = build::build(&Outgoing {
            message_id: &self.message_id,
            from: &self.from,
            to: &self.to,
            cc: &self.cc,
            reply_to: self.reply_to.as_deref(),
            subject: &self.subject,
            body_text: self.body_text.as_deref(),
            body_html: self.body_html.as_deref(),
            headers: &self.headers,
            attachments: &attachments,
            date,
        })?;
        let message = wire::normalized(built);
        let domain = match self.dkim_keys.is_empty() {
            true => String::new(),
            false => Sender::parse(&self.from)
                .map(|s| s.domain())
                .unwrap_or_default(),
        };
        let Some(key) = self.dkim_keys.get(&domain) else {
            return Ok(Rendered {
                message,
                warning: None,
            });
        };
        let signed = key
            .algorithm
            .parse::<dkim::Algorithm>()
            .map_err(|_| dkim::SignError::UnknownAlgorithm(key.algorithm.clone()))
            .and_then(|alg| dkim::sign(&message, &domain, &key.selector, alg, &key.private_pem));
        Ok(match signed {
            Ok(signed) => Rendered {
                message: wire::normalized(signed),
                warning: None,
            },
            Err(e) => Rendered {
                message,
                warning: Some(format!(
                    "DKIM key of {domain} unusable, sending unsigned: {e}"
                )),
            },
        })
    }
}

fn attachments(value: Option<&serde_json::Value>) -> Result<Vec<Attachment>, RenderError> {
    let Some(list) = value.and_then(|v| v.as_array()) else {
        return Ok(vec![]);
    };
    list.iter()
        .map(|a| {
            let field = |k: &str| a.get(k).and_then(|v| v.as_str()).unwrap_or_default();
            let content = B64
                .decode(field("content_base64").as_bytes())
                .map_err(|source| RenderError::Attachment {
                    filename: field("filename").to_string(),
                    source,
                })?;
            Ok(Attachment {
                filename: field("filename").to_string(),
                content_type: field("content_type").to_string(),
                content,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn content(body: &str) -> Content {
        Content {
            message_id: "<t@mycompany.com>".into(),
            from: "a@mycompany.com".into(),
            to: vec!["b@customer.example".into()],
            cc: vec![],
            reply_to: None,
            subject: "s".into(),
            body_text: Some(body.into()),
            body_html: None,
            headers: vec![],
            attachments: None,
            dkim_keys: Arc::default(),
        }
    }

    #[test]
    fn rendered_mail_has_crlf_line_ends_only() {
        let r = content("a\rb\nc\r.\rd\n.\ne")
            .render(SystemTime::UNIX_EPOCH)
            .unwrap();
        let text = String::from_utf8(r.message).unwrap();
        assert!(!text.replace("\r\n", "").contains(['\r', '\n']), "{text:?}");
        assert!(text.ends_with("\r\n"));
    }

    #[test]
    fn the_signature_covers_the_normalised_bytes() {
        let key = dkim::generate(dkim::Algorithm::Ed25519).unwrap();
        let mut c = content("line one\nline two\r.\r");
        c.dkim_keys = Arc::new(HashMap::from([(
            "mycompany.com".to_string(),
            DkimKey {
                selector: "s".into(),
                algorithm: "ed25519".into(),
                private_pem: key.private_pem,
            },
        )]));
        let r = c.render(SystemTime::UNIX_EPOCH).unwrap();
        assert!(r.warning.is_none());
        let text = String::from_utf8(r.message).unwrap();
        assert!(text.starts_with("DKIM-Signature:"), "{text}");
        assert!(!text.replace("\r\n", "").contains(['\r', '\n']));
    }

    #[test]
    fn an_unusable_key_sends_unsigned_with_a_warning() {
        let mut c = content("x");
        c.dkim_keys = Arc::new(HashMap::from([(
            "mycompany.com".to_string(),
            DkimKey {
                selector: "s".into(),
                algorithm: "rsa".into(),
                private_pem: "not a key".into(),
            },
        )]));
        let r = c.render(SystemTime::UNIX_EPOCH).unwrap();
        assert!(r.warning.unwrap().contains("unusable"));
        assert!(
            !String::from_utf8(r.message)
                .unwrap()
                .contains("DKIM-Signature")
        );
    }
}
