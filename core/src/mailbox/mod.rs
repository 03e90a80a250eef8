//! What the fetcher needs from a mailbox, whatever its protocol: list what waits, fetch raw
//! messages in batches, and mark them done (IMAP: \Seen; POP3: DELE) only once they are
//! committed. The IMAP (`imap`, on the `imap` crate) and POP3 (`pop3`, our own) clients
//! implement it; neither knows PostgreSQL.

mod imap;
pub mod pop3;

use std::time::Duration;

use crate::net::{self, Encryption, NetError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    Pop3,
}

/// How to reach and log in to one mailbox (the columns of `incoming_server`).
#[derive(Clone)]
pub struct MailboxConfig {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub encryption: Encryption,
    /// Log in with XOAUTH2, `password` holding the access token.
    pub xoauth2: bool,
    pub username: String,
    pub password: String,
    pub verify_tls: bool,
    pub ca_cert: Option<String>,
    /// IMAP folder; POP3 has only one.
    pub mailbox: String,
    pub limits: net::Limits,
}

impl MailboxConfig {
    pub fn tls(&self) -> net::Tls<'_> {
        net::Tls {
            host: &self.host,
            verify: self.verify_tls,
            ca_cert: self.ca_cert.as_deref(),
        }
    }

    /// "IMAP host:993 (TLS): logged in as "user"; <contents>", for the administrator.
    pub fn describe(&self, tls: bool, contents: &str) -> String {
        format!(
            "{} {}:{}{}: logged in as \"{}\"; {contents}",
            match self.protocol {
                Protocol::Imap => "IMAP",
                Protocol::Pop3 => "POP3",
            },
            self.host,
            self.port,
            if tls { " (TLS)" } else { "" },
            self.username,
        )
    }

    /// Time allowed for a command that transfers `bytes`: the timeout, plus the transfer at a
    /// slow but honest 64 KiB/s. A server that drips slower costs one fetch, not the worker.
    pub fn allowance(&self, bytes: u64) -> Duration {
        self.limits.timeout + Duration::from_secs(bytes / (64 * 1024))
    }
}

/// Which step of a fetch failed: it tells the administrator what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchStage {
    Connect,
    Tls,
    Login,
    Mailbox,
    Fetch,
    /// Storing in PostgreSQL failed for a whole batch (a full disk, say): the messages stay
    /// on the server, unflagged.
    Store,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    pub stage: FetchStage,
    pub message: String,
}

impl FetchError {
    /// `message` often carries the server's own words: kept printable (`net::printable`).
    pub fn new(stage: FetchStage, message: impl Into<String>) -> FetchError {
        FetchError {
            stage,
            message: net::printable(message.into()),
        }
    }

    /// The server's greeting was not the protocol's "ready".
    fn unexpected_greeting(line: &[u8]) -> FetchError {
        FetchError::new(
            FetchStage::Connect,
            format!(
                "unexpected greeting: {}",
                String::from_utf8_lossy(line).trim_end()
            ),
        )
    }

    pub fn hint(&self) -> &'static str {
        match self.stage {
            FetchStage::Connect => {
                "Check host and port, and that this machine may reach them (firewall)."
            }
            FetchStage::Tls => {
                "Check the encryption setting (ssl for 993/995, starttls or none for 143/110) and, for a self-signed server, ca_cert."
            }
            FetchStage::Login => "Check username and password (for xoauth2, a fresh access token).",
            FetchStage::Mailbox => {
                "Check the mailbox name (IMAP folder names are case-sensitive except INBOX)."
            }
            FetchStage::Fetch => {
                "The server failed while sending mail; the next fetch tries again."
            }
            FetchStage::Store => {
                "The messages stay on the server, unflagged; see PostgreSQL's message (disk space, a quota) — the next fetch tries again."
            }
        }
    }
}

impl From<NetError> for FetchError {
    fn from(e: NetError) -> FetchError {
        match e {
            NetError::Connect(m) => FetchError::new(FetchStage::Connect, m),
            NetError::Tls(m) => FetchError::new(FetchStage::Tls, m),
        }
    }
}

/// A message waiting in the mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Stable across sessions: IMAP `INBOX;UIDVALIDITY=v;UID=u` (RFC 5092 style), POP3 UIDL.
    /// `None` when the server has no stable ids (POP3 without UIDL): dedupe by content then.
    pub key: Option<String>,
    pub size: u64,
    /// Protocol-specific handle (IMAP UID, POP3 message number).
    pub(crate) handle: u64,
}

/// One fetched message: its bytes, or only its header when it is over the size limit.
pub struct Fetched<'a> {
    pub listed: &'a Listed,
    /// Owned, so that the store can free it as soon as PostgreSQL has its copy.
    pub raw: Vec<u8>,
    pub header_only: bool,
}

pub trait Mailbox {
    /// A line for the administrator: server, user, mailbox and how many messages it holds.
    fn describe(&self) -> String;
    /// Messages to consider: everything in a POP3 maildrop; on IMAP the unseen messages and
    /// those above `cursor` (the highest UID already taken, `"<uidvalidity>:<uid>"`).
    fn list(&mut self, cursor: Option<&str>) -> Result<Vec<Listed>, FetchError>;
    /// The cursor to remember once everything listed is stored (IMAP), else `None`.
    fn cursor(&self) -> Option<String>;
    /// Fetches a batch and hands it to `store` in one call; messages over `max_size` come as
    /// their header only. A message the server no longer has is left out.
    fn fetch(
        &mut self,
        batch: &[Listed],
        max_size: u64,
        store: &mut dyn FnMut(Vec<Fetched<'_>>),
    ) -> Result<(), FetchError>;
    /// Whether `done` deletes (POP3) rather than flags (IMAP).
    fn deletes(&self) -> bool {
        false
    }
    /// Marks committed messages done: \Seen on IMAP, DELE on POP3 (effective at `close`).
    fn done(&mut self, batch: &[Listed]) -> Result<(), FetchError>;
    /// Logs out (POP3: QUIT commits the deletions).
    fn close(self: Box<Self>) -> Result<(), FetchError>;
}

/// Connects, logs in and opens the mailbox.
pub fn open(config: &MailboxConfig) -> Result<Box<dyn Mailbox>, FetchError> {
    match config.protocol {
        Protocol::Imap => Ok(Box::new(imap::ImapMailbox::open(config)?)),
        Protocol::Pop3 => Ok(Box::new(pop3::Pop3Mailbox::open(config)?)),
    }
}

/// Splits listed messages into batches of at most `count` messages and about `bytes` bytes
/// (a bigger message goes alone).
pub fn batches(listed: &[Listed], count: usize, bytes: u64) -> Vec<&[Listed]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0u64;
    for (i, item) in listed.iter().enumerate() {
        if i > start && (i - start >= count || size + item.size > bytes) {
            out.push(&listed[start..i]);
            start = i;
            size = 0;
        }
        size += item.size;
    }
    if start < listed.len() {
        out.push(&listed[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(size: u64) -> Listed {
        Listed {
            key: None,
            size,
            handle: 0,
        }
    }

    #[test]
    fn batches_bound_count_and_bytes() {
        let listed: Vec<Listed> = [10, 10, 10, 10, 10].map(item).to_vec();
        let sizes: Vec<usize> = batches(&listed, 2, 1000).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let listed: Vec<Listed> = [10, 500, 10, 10].map(item).to_vec();
        let sizes: Vec<usize> = batches(&listed, 50, 100).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 1, 2], "a big message goes alone");
        assert!(batches(&[], 5, 5).is_empty());
    }
}
