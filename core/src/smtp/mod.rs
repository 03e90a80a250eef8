//! Our SMTP client, over `net`'s sockets (timeouts, TLS with verification, a deadline per
//! reply): plain, STARTTLS or implicit TLS; AUTH PLAIN/LOGIN/XOAUTH2 or a client certificate;
//! PIPELINING and CHUNKING when offered, one command at a time otherwise; every recipient's
//! answer kept (one refused recipient does not stop the others). It knows nothing of
//! PostgreSQL.

mod reply;
mod session;
mod transaction;
pub mod wire;

use std::time::Duration;

use crate::net::Encryption;

pub use session::{Extensions, Session};
pub use transaction::Outbound;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Login,
    Certificate,
    Xoauth2,
}

/// How to reach and log in to one server (the columns of `outgoing_server`).
#[derive(Clone, PartialEq)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub encryption: Encryption,
    pub auth: Auth,
    pub username: Option<String>,
    pub password: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub verify_tls: bool,
    pub ca_cert: Option<String>,
    pub timeout: Duration,
}

/// Which step failed: it tells the administrator what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Tls,
    Auth,
    Sender,
    Recipient,
    Message,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SmtpError {
    pub stage: Stage,
    /// 4xx, timeouts and network failures: worth trying again later.
    pub transient: bool,
    /// The reply code when the server answered.
    pub code: Option<u16>,
    /// In words, with the server's reply text.
    pub message: String,
}

impl SmtpError {
    /// The server answered `reply` where it should have agreed.
    fn reply(stage: Stage, reply: &reply::Reply, what: &str) -> SmtpError {
        SmtpError {
            stage,
            // A connection, TLS or login failure is the server's (or its settings'), not the
            // mail's: the mail waits and is tried again. After that, only a 5xx is final.
            transient: match stage {
                Stage::Connect | Stage::Tls | Stage::Auth => true,
                // A provider's "daily sending limit reached" is a 550 that stops being true
                // tomorrow: the mail waits.
                Stage::Sender | Stage::Recipient | Stage::Message => {
                    reply.code < 500 || crate::provider_hints::quota_exhausted(&reply.words())
                }
            },
            code: Some(reply.code),
            message: format!("{what}: {}", reply.words()),
        }
    }

    /// A failure without an answer: network, timeout, local set-up.
    fn local(stage: Stage, message: String) -> SmtpError {
        SmtpError {
            stage,
            transient: true,
            code: None,
            message: crate::net::printable(message),
        }
    }

    /// A bug in our own code, caught: the mail waits and is tried again.
    pub fn internal(message: String) -> SmtpError {
        SmtpError::local(Stage::Connect, message)
    }

    /// The server asks us to slow down rather than refusing this mail: 421 (closing, "too
    /// many connections / messages"), a 4xx to MAIL FROM ("rate limit exceeded"), or a
    /// provider's answer that the account's sending quota is used up (Google's 550 5.4.5).
    pub fn is_pushback(&self) -> bool {
        match self.code {
            Some(421) => true,
            Some(code) => {
                (self.stage == Stage::Sender && (400..500).contains(&code))
                    || crate::provider_hints::quota_exhausted(&self.message)
            }
            None => false,
        }
    }
}

/// One recipient's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientResult {
    Accepted,
    Refused(SmtpError),
}

/// The outcome of one message on an open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub recipients: Vec<(String, RecipientResult)>,
    /// The answer to the message itself (after DATA); `None` when no recipient was accepted.
    pub data: Option<Result<String, SmtpError>>,
}
