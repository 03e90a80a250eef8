//! One fetching round: every due mailbox is fetched in bounded batches — list (no
//! transaction) → fetch a batch (no transaction) → store it and commit (short transaction) →
//! only then flag it \Seen (IMAP) or DELE it (POP3). A crash anywhere leaves at worst stored
//! messages unflagged; the next fetch finds them stored (by server UID) and only flags them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pgrx::prelude::*;

use super::{in_transaction, shutting_down, try_transaction};
use crate::access_token::{self, Ask, Caller};
use crate::authentication::{self, Authentication, Verifier};
use crate::error::Caught;
use crate::mailbox::{self, FetchError, FetchStage, Fetched, Listed};
use crate::net::Limits;
use crate::store::incoming::IncomingServer;
use crate::{gucs, router, store};

/// A batch holds at most this many bytes (a bigger message goes alone).
const BATCH_BYTES: u64 = 32 * 1024 * 1024;

fn limits() -> Limits {
    Limits {
        timeout: gucs::fetch_timeout(),
        cancelled: shutting_down,
    }
}

/// Routes what was stored but not routed yet: just fetched, or left by a crash between the
/// two. Each message in its own transaction; one that fails is recorded in state `error`.
pub fn route_pending() {
    let mut tried = HashSet::new();
    loop {
        if shutting_down() {
            return;
        }
        let ids: Vec<i64> =
            in_transaction("listing unrouted mail", || store::routing::new_ids(100))
                .unwrap_or_default()
                .into_iter()
                .filter(|id| tried.insert(*id))
                .collect();
        if ids.is_empty() {
            return;
        }
        for id in ids {
            if in_transaction("routing a message", || router::route_stored(id)).is_none() {
                // Not even its error could be recorded with it: record it alone, so that it
                // is not tried again every round.
                in_transaction("recording a routing failure", || {
                    router::record_failure(id, "routing failed; see the server log")
                });
            }
        }
    }
}

/// Fetches every due server once, routing what each brought; `between` runs between servers
/// (mail pushed over LMTP waits for its commit no longer than one server's fetch).
pub fn round(between: &mut dyn FnMut()) {
    route_pending();
    let servers = in_transaction("looking for due mailboxes", || {
        store::incoming::due_servers(limits())
    })
    .unwrap_or_default();
    for server in servers {
        between();
        if shutting_down() {
            return;
        }
        in_transaction("starting a fetch", || {
            store::incoming::fetch_started(server.id)
        });
        let result = catch_unwind(AssertUnwindSafe(|| fetch(&server))).unwrap_or_else(|_| {
            Err(FetchError::new(
                FetchStage::Fetch,
                "internal error while fetching (see the server log)",
            ))
        });
        match result {
            Ok((stored, cursor)) => {
                if stored > 0 {
                    log!(
                        "mail_gateway fetcher: {stored} message(s) stored from \"{}\"",
                        server.name
                    );
                }
                in_transaction("recording a fetch", || {
                    store::incoming::fetch_succeeded(server.id, cursor)
                });
                route_pending();
            }
            Err(e) => {
                warning!(
                    "mail_gateway fetcher: server \"{}\": {}",
                    server.name,
                    e.message
                );
                in_transaction("recording a fetch error", || {
                    store::incoming::fetch_failed(
                        server.id,
                        &crate::provider_hints::with_hint(&e.message),
                    )
                });
            }
        }
    }
}

/// What the fetcher knows while it fetches one server: who to believe about senders, and our
/// own DKIM check (made on first use: most mail of a round may need none).
struct Authenticating {
    trusted: Vec<String>,
    verifier: Option<Option<Verifier>>,
}

impl Authenticating {
    /// The verdict on a fetched message, outside any transaction. A message fetched without
    /// its body (over the size limit) is judged by trusted results only.
    fn judge(&mut self, raw: &[u8], header_only: bool) -> Authentication {
        let verifier = if header_only {
            None
        } else {
            self.verifier
                .get_or_insert_with(|| {
                    Verifier::new(gucs::dns_server().as_deref())
                        .map_err(|e| warning!("mail_gateway fetcher: no DKIM checks: {e}"))
                        .ok()
                })
                .as_ref()
        };
        authentication::authenticate(raw, &self.trusted, verifier)
    }
}

/// Fetches one server; returns how many messages it stored and, when it went through the
/// whole list, the IMAP cursor to remember.
fn fetch(server: &IncomingServer) -> Result<(usize, Option<String>), FetchError> {
    let mut mailbox = open(server)?;
    let listed = mailbox.list(server.cursor.as_deref())?;
    let keys: Vec<String> = listed.iter().filter_map(|l| l.key.clone()).collect();
    let (stored, trusted) = in_transaction("reading fetched ids", || {
        (
            store::inbound::stored_keys(server.id, keys),
            store::config::trusted_authserv_ids(),
        )
    })
    .ok_or_else(|| FetchError::new(FetchStage::Fetch, "could not read the inbound table"))?;
    let mut auth = Authenticating {
        trusted,
        verifier: None,
    };
    let max_size = gucs::max_message_size() as u64;
    // A message over the size limit is neither flagged nor deleted: it is recorded from its
    // header, and fetched whole once the limit allows (deleting it would lose it).
    let finished = |l: &&Listed| l.size <= max_size;
    let (already, todo): (Vec<Listed>, Vec<Listed>) = listed
        .into_iter()
        .partition(|l| l.key.as_ref().is_some_and(|k| stored.contains(k)));
    // Stored by an earlier fetch that stopped before flagging them.
    let already: Vec<Listed> = already.iter().filter(finished).cloned().collect();
    mailbox.done(&already)?;

    let mut count = 0;
    let mut complete = true;
    for batch in mailbox::batches(&todo, gucs::fetch_batch_size(), BATCH_BYTES) {
        if shutting_down() {
            complete = false;
            break;
        }
        let mut stored = Stored::default();
        mailbox.fetch(batch, max_size, &mut |fetched| {
            stored = store_batch(server.id, fetched, &mut auth);
        })?;
        count += stored.messages.len();
        let done: Vec<Listed> = stored.messages.iter().filter(finished).cloned().collect();
        mailbox.done(&done)?;
        if let Some(e) = stored.stopped_by {
            // The database cannot take mail now (a full disk, a read-only standby …): stop
            // here and say so; the rest stays on the server, unflagged.
            let _ = mailbox.close();
            return Err(FetchError::new(
                FetchStage::Store,
                format!("storing fetched mail failed: {e}"),
            ));
        }
    }
    let cursor = if complete { mailbox.cursor() } else { None };
    mailbox.close()?;
    Ok((count, cursor))
}

/// Connects and logs in; with an OAuth2 account, with its access token (refreshed when due,
/// outside any transaction), and once more with a new one should the server refuse it.
fn open(server: &IncomingServer) -> Result<Box<dyn mailbox::Mailbox>, FetchError> {
    let Some(account) = server.oauth_account.as_deref() else {
        return mailbox::open(&server.config);
    };
    let mut rejected: Option<String> = None;
    loop {
        let ask = Ask {
            account,
            caller: Caller::Worker,
            limits: limits(),
            rejected: rejected.as_deref(),
        };
        // No token, no login: the reason and what to do go to last_error; mail waits on the
        // server.
        let token = access_token::get(&ask)
            .map_err(|p| FetchError::new(FetchStage::Login, p.with_hint()))?;
        let mut config = server.config.clone();
        config.password = token.access_token;
        match mailbox::open(&config) {
            Err(e) if e.stage == FetchStage::Login && rejected.is_none() => {
                rejected = Some(config.password);
            }
            opened => return opened,
        }
    }
}

/// What storing a batch did: the messages stored (committed), and the failure of the database
/// itself that stopped it, if one did.
#[derive(Default)]
struct Stored {
    messages: Vec<Listed>,
    stopped_by: Option<Caught>,
}

/// Stores a batch in one transaction; if that fails, message by message, so that a message the
/// database refuses for its data costs only itself (it stays on the server, is logged, and is
/// tried again next time), while a failure of the database itself stops the batch. A batch of
/// one (every big message) hands its bytes over, to be freed as soon as PostgreSQL has its copy.
fn store_batch(server_id: i64, mut fetched: Vec<Fetched<'_>>, auth: &mut Authenticating) -> Stored {
    // Verdicts first, outside any transaction: our own DKIM check may ask DNS.
    let verdicts: Vec<Authentication> = fetched
        .iter()
        .map(|f| auth.judge(&f.raw, f.header_only))
        .collect();
    let receive = |raw: Cow<'_, [u8]>, listed: &Listed, header_only: bool, a: &Authentication| {
        let size = if header_only {
            listed.size
        } else {
            raw.len() as u64
        };
        store::inbound::receive(raw, size, Some(server_id), listed.key.as_deref(), a);
    };
    if fetched.len() == 1 {
        let Fetched {
            listed,
            raw,
            header_only,
        } = fetched.remove(0);
        return match try_transaction("storing a fetched message", || {
            receive(Cow::Owned(raw), listed, header_only, &verdicts[0])
        }) {
            Ok(()) => Stored {
                messages: vec![listed.clone()],
                stopped_by: None,
            },
            Err(e) => Stored {
                messages: vec![],
                stopped_by: (!e.is_the_data()).then_some(e),
            },
        };
    }
    let all = try_transaction("storing fetched mail", || {
        for (f, a) in fetched.iter().zip(&verdicts) {
            receive(Cow::Borrowed(&f.raw), f.listed, f.header_only, a);
        }
    });
    if all.is_ok() {
        return Stored {
            messages: fetched.iter().map(|f| f.listed.clone()).collect(),
            stopped_by: None,
        };
    }
    let mut stored = Stored::default();
    for (f, a) in fetched.iter().zip(&verdicts) {
        match try_transaction("storing a fetched message", || {
            receive(Cow::Borrowed(&f.raw), f.listed, f.header_only, a)
        }) {
            Ok(()) => stored.messages.push(f.listed.clone()),
            Err(e) if e.is_the_data() => {}
            Err(e) => {
                stored.stopped_by = Some(e);
                break;
            }
        }
    }
    stored
}
