//! IMAP mailbox on the `imap` crate over our own socket (timeouts, CA, cancel): messages are
//! read with `BODY.PEEK[]` (which leaves them unseen) and flagged `\Seen` only after the
//! caller has committed them. It knows nothing of PostgreSQL.

use std::collections::BTreeSet;
use std::io::Write;

use super::{FetchError, FetchStage, Fetched, Listed, Mailbox, MailboxConfig};
use crate::net::{self, Deadline, Encryption, Stream};
use crate::sasl;

/// UIDs per command when listing sizes or flagging: keeps command lines short.
const UIDS_PER_COMMAND: usize = 500;

pub struct ImapMailbox {
    session: imap::Session<Stream>,
    deadline: Deadline,
    config: MailboxConfig,
    uid_validity: u32,
    /// Highest UID the server had assigned when the mailbox was opened.
    uid_last: u32,
    exists: u32,
    tls: bool,
}

struct XOAuth2<'a> {
    user: &'a str,
    token: &'a str,
}

impl imap::Authenticator for XOAuth2<'_> {
    type Response = String;
    fn process(&self, challenge: &[u8]) -> String {
        // A non-empty challenge is the server's error report (JSON): an empty answer lets
        // it finish with NO.
        if challenge.is_empty() {
            sasl::xoauth2(self.user, self.token)
        } else {
            String::new()
        }
    }
}

fn failed(stage: FetchStage, what: &str, e: imap::Error) -> FetchError {
    let text = match &e {
        imap::Error::No(no) => format!("the server answered NO: {}", no.information),
        imap::Error::Bad(bad) => format!("the server answered BAD: {}", bad.information),
        imap::Error::Bye(bye) => format!("the server closed the session: {}", bye.information),
        imap::Error::ConnectionLost => "the server closed the connection".to_string(),
        imap::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    };
    FetchError::new(stage, format!("{what}: {text}"))
}

/// `1:3,7,9:10` from sorted UIDs.
fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// `"<uidvalidity>:<uid>"` → the last UID taken, if it belongs to this UIDVALIDITY.
fn cursor_uid(cursor: Option<&str>, uid_validity: u32) -> Option<u32> {
    let (validity, uid) = cursor?.split_once(':')?;
    (validity.parse::<u32>().ok()? == uid_validity)
        .then(|| uid.parse().ok())
        .flatten()
}

/// An IMAP server is ready when it greets with an untagged `* OK`; anything else (`* BYE`,
/// `* PREAUTH`) is not taken.
fn imap_greeting_ok(line: &[u8]) -> Result<(), FetchError> {
    if line.starts_with(b"* OK") {
        return Ok(());
    }
    Err(FetchError::unexpected_greeting(line))
}

/// STARTTLS before the `imap` crate takes the stream: greeting, STARTTLS, handshake.
fn start_tls(mut tcp: net::TimedStream, config: &MailboxConfig) -> Result<Stream, FetchError> {
    let io = |e: std::io::Error| FetchError::new(FetchStage::Connect, format!("STARTTLS: {e}"));
    imap_greeting_ok(&net::read_line_unbuffered(&mut tcp, 4096).map_err(io)?)?;
    tcp.write_all(b"s0 STARTTLS\r\n").map_err(io)?;
    loop {
        let line = net::read_line_unbuffered(&mut tcp, 4096).map_err(io)?;
        if line.starts_with(b"s0 OK") {
            break;
        }
        if line.starts_with(b"s0 ") {
            return Err(FetchError::new(
                FetchStage::Tls,
                format!(
                    "the server refused STARTTLS: {}",
                    String::from_utf8_lossy(&line[3..]).trim_end()
                ),
            ));
        }
    }
    Ok(net::secure(tcp, &config.tls())?)
}

fn read_greeting(
    client: &mut imap::Client<Stream>,
    config: &MailboxConfig,
) -> Result<(), FetchError> {
    let greeting = client.read_greeting().map_err(|e| {
        // A TLS server's port read as plain text gives no line, or binary.
        let e = failed(FetchStage::Connect, "reading the greeting", e);
        if config.encryption == Encryption::None {
            FetchError::new(FetchStage::Tls, format!("{e} (does this port expect TLS?)"))
        } else {
            e
        }
    })?;
    imap_greeting_ok(&greeting)
}

/// LOGIN, or AUTHENTICATE XOAUTH2 with the access token in `password`.
fn login(
    client: imap::Client<Stream>,
    config: &MailboxConfig,
) -> Result<imap::Session<Stream>, FetchError> {
    let session = if config.xoauth2 {
        let auth = XOAuth2 {
            user: &config.username,
            token: &config.password,
        };
        client.authenticate("XOAUTH2", &auth)
    } else {
        client.login(&config.username, &config.password)
    };
    session.map_err(|(e, _)| {
        failed(
            FetchStage::Login,
            &format!("login as \"{}\" failed", config.username),
            e,
        )
    })
}

impl ImapMailbox {
    pub fn open(config: &MailboxConfig) -> Result<ImapMailbox, FetchError> {
        let (tcp, deadline) = net::connect(&config.host, config.port, config.limits)?;
        let stream = match config.encryption {
            Encryption::None => Stream::Plain(tcp),
            Encryption::Ssl => net::secure(tcp, &config.tls())?,
            Encryption::StartTls => start_tls(tcp, config)?,
        };
        let tls = stream.is_tls();
        let mut client = imap::Client::new(stream);
        if config.encryption == Encryption::StartTls {
            // `start_tls` has read it before the handshake.
            client.greeting_read = true;
        } else {
            read_greeting(&mut client, config)?;
        }
        deadline.start(config.limits.timeout);
        let mut session = login(client, config)?;
        deadline.start(config.limits.timeout);
        let mailbox = session.select(&config.mailbox).map_err(|e| {
            failed(
                FetchStage::Mailbox,
                &format!("cannot open mailbox \"{}\"", config.mailbox),
                e,
            )
        })?;
        Ok(ImapMailbox {
            session,
            deadline,
            config: config.clone(),
            uid_validity: mailbox.uid_validity.unwrap_or(0),
            uid_last: mailbox.uid_next.map(|n| n.saturating_sub(1)).unwrap_or(0),
            exists: mailbox.exists,
            tls,
        })
    }

    fn key(&self, uid: u32) -> String {
        format!(
            "{};UIDVALIDITY={};UID={uid}",
            self.config.mailbox, self.uid_validity
        )
    }
}

impl Mailbox for ImapMailbox {
    fn describe(&self) -> String {
        self.config.describe(
            self.tls,
            &format!(
                "mailbox \"{}\" holds {} message(s)",
                self.config.mailbox, self.exists
            ),
        )
    }

    fn list(&mut self, cursor: Option<&str>) -> Result<Vec<Listed>, FetchError> {
        let fetch_err = |e| failed(FetchStage::Fetch, "listing messages", e);
        self.deadline.start(self.config.limits.timeout);
        let mut uids: BTreeSet<u32> = self
            .session
            .uid_search("UNSEEN")
            .map_err(fetch_err)?
            .into_iter()
            .collect();
        if let Some(last) = cursor_uid(cursor, self.uid_validity) {
            // `UID n:*` always matches the highest UID, even when it is below n.
            self.deadline.start(self.config.limits.timeout);
            let newer = self
                .session
                .uid_search(format!("UID {}:*", last as u64 + 1))
                .map_err(fetch_err)?;
            uids.extend(newer.into_iter().filter(|uid| *uid > last));
        }
        let uids: Vec<u32> = uids.into_iter().collect();
        let mut listed = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(UIDS_PER_COMMAND) {
            self.deadline.start(self.config.limits.timeout);
            let sizes = self
                .session
                .uid_fetch(uid_set(chunk), "RFC822.SIZE")
                .map_err(fetch_err)?;
            for fetch in sizes.iter() {
                if let Some(uid) = fetch.uid {
                    listed.push(Listed {
                        key: Some(self.key(uid)),
                        size: fetch.size.unwrap_or(0) as u64,
                        handle: uid as u64,
                    });
                }
            }
        }
        listed.sort_by_key(|l| l.handle);
        listed.dedup_by_key(|l| l.handle);
        Ok(listed)
    }

    fn cursor(&self) -> Option<String> {
        Some(format!("{}:{}", self.uid_validity, self.uid_last))
    }

    fn fetch(
        &mut self,
        batch: &[Listed],
        max_size: u64,
        store: &mut dyn FnMut(Vec<Fetched<'_>>),
    ) -> Result<(), FetchError> {
        let fetch_err = |e| failed(FetchStage::Fetch, "fetching messages", e);
        let (big, whole): (Vec<&Listed>, Vec<&Listed>) =
            batch.iter().partition(|l| l.size > max_size);
        let uids = |items: &[&Listed]| {
            let mut uids: Vec<u32> = items.iter().map(|l| l.handle as u32).collect();
            uids.sort_unstable();
            uid_set(&uids)
        };
        let bytes: u64 = whole.iter().map(|l| l.size).sum();
        self.deadline.start(self.config.allowance(bytes));
        let bodies = self
            .session
            .uid_fetch(uids(&whole), "BODY.PEEK[]")
            .map_err(fetch_err)?;
        self.deadline.start(self.config.limits.timeout);
        let heads = self
            .session
            .uid_fetch(uids(&big), "BODY.PEEK[HEADER]")
            .map_err(fetch_err)?;
        // Owned copies, and the response buffers freed, before anything is stored: the
        // buffers grow by doubling, and a big message should not sit in memory twice while
        // PostgreSQL makes its own copies.
        let mut fetched = Vec::with_capacity(batch.len());
        for listed in batch {
            let uid = Some(listed.handle as u32);
            let header_only = listed.size > max_size;
            let found = if header_only {
                heads.iter().find(|f| f.uid == uid).and_then(|f| f.header())
            } else {
                bodies.iter().find(|f| f.uid == uid).and_then(|f| f.body())
            };
            if let Some(raw) = found {
                fetched.push(Fetched {
                    listed,
                    raw: raw.to_vec(),
                    header_only,
                });
            }
        }
        drop((bodies, heads));
        store(fetched);
        Ok(())
    }

    fn done(&mut self, batch: &[Listed]) -> Result<(), FetchError> {
        let mut uids: Vec<u32> = batch.iter().map(|l| l.handle as u32).collect();
        uids.sort_unstable();
        for chunk in uids.chunks(UIDS_PER_COMMAND) {
            self.deadline.start(self.config.limits.timeout);
            self.session
                .uid_store(uid_set(chunk), "+FLAGS.SILENT (\\Seen)")
                .map_err(|e| failed(FetchStage::Fetch, "flagging messages \\Seen", e))?;
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<(), FetchError> {
        self.deadline.start(self.config.limits.timeout);
        self.session
            .logout()
            .map_err(|e| failed(FetchStage::Fetch, "logging out", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compressed() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn the_cursor_belongs_to_one_uidvalidity() {
        assert_eq!(cursor_uid(Some("17:42"), 17), Some(42));
        assert_eq!(cursor_uid(Some("17:42"), 18), None);
        assert_eq!(cursor_uid(Some("junk"), 17), None);
        assert_eq!(cursor_uid(None, 17), None);
    }
}
