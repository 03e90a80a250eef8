//! One fetching round: every due mailbox is fetched in bounded batches — list (no
//! transaction) → fetch a batch (no transaction) → store it and commit (short transaction) →
//! only then flag it \Seen (IMAP) or DELE it (POP3). A crash anywhere leaves at worst stored
//! messages unflagged; the next fetch finds them stored (by server UID) and only flags them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pgrx::prelude::*;

use super::{in_transaction, shutting_down, try_transaction};
use crate::mailbox::{self, FetchError, Fetched, Listed, Stage};
use crate::net::Limits;
use crate::store::inbound::IncomingServer;
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

/// Fetches every due server once, routing what each brought.
pub fn round() {
    route_pending();
    let servers = in_transaction("looking for due mailboxes", || {
        store::inbound::due_servers(limits())
    })
    .unwrap_or_default();
    for server in servers {
        if shutting_down() {
            return;
        }
        in_transaction("starting a fetch", || {
            store::inbound::fetch_started(server.id)
        });
        let result = catch_unwind(AssertUnwindSafe(|| fetch(&server))).unwrap_or_else(|_| {
            Err(FetchError::new(
                Stage::Fetch,
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
                    store::inbound::fetch_succeeded(server.id, cursor)
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
                    store::inbound::fetch_failed(server.id, &e.message)
                });
            }
        }
    }
}

/// Fetches one server; returns how many messages it stored and, when it went through the
/// whole list, the IMAP cursor to remember.
fn fetch(server: &IncomingServer) -> Result<(usize, Option<String>), FetchError> {
    let mut mailbox = mailbox::open(&server.config)?;
    let listed = mailbox.list(server.cursor.as_deref())?;
    let keys: Vec<String> = listed.iter().filter_map(|l| l.key.clone()).collect();
    let stored = in_transaction("reading fetched ids", || {
        store::inbound::stored_keys(server.id, keys)
    })
    .ok_or_else(|| FetchError::new(Stage::Fetch, "could not read the inbound table"))?;
    let max_size = gucs::max_message_size() as u64;
    let deletes = mailbox.deletes();
    // A message refused by the size limit stays in a POP3 maildrop: deleting it would lose it.
    let finished = |l: &&Listed| !(deletes && l.size > max_size);
    let (already, todo): (Vec<Listed>, Vec<Listed>) = listed
        .into_iter()
        .partition(|l| l.key.as_ref().is_some_and(|k| stored.contains(k)));
    // Stored by an earlier fetch that stopped before flagging them.
    let already: Vec<Listed> = already.iter().filter(finished).cloned().collect();
    mailbox.done(&already)?;

    let mut count = 0;
    let mut complete = true;
    // Messages of the batches just before that could not be stored at all.
    let mut failed_in_a_row = 0;
    for batch in mailbox::batches(&todo, gucs::fetch_batch_size(), BATCH_BYTES) {
        if shutting_down() {
            complete = false;
            break;
        }
        let mut committed = Vec::new();
        let mut failure = None;
        mailbox.fetch(batch, max_size, &mut |fetched| {
            (committed, failure) = store_batch(server.id, fetched);
        })?;
        if let (true, Some(e)) = (committed.is_empty(), failure) {
            // Nothing of the batch stored. Several messages (or two batches in a row of one
            // big message each) failing alike is the database (a full disk, say), not a bad
            // message: stop here and say so; all stays on the server, unflagged.
            failed_in_a_row += batch.len();
            if failed_in_a_row > 1 {
                let _ = mailbox.close();
                return Err(FetchError::new(
                    Stage::Store,
                    format!("storing fetched mail failed: {e}"),
                ));
            }
        } else {
            failed_in_a_row = 0;
        }
        count += committed.len();
        let committed: Vec<Listed> = committed.iter().filter(finished).cloned().collect();
        mailbox.done(&committed)?;
    }
    let cursor = if complete { mailbox.cursor() } else { None };
    mailbox.close()?;
    Ok((count, cursor))
}

/// Stores a batch in one transaction; if that fails, message by message, so that one bad
/// message costs only itself (it stays on the server and is tried again next time). A batch
/// of one (every big message) hands its bytes over, to be freed as soon as PostgreSQL has
/// its copy. Returns what was stored and the last error, if any.
fn store_batch(server_id: i64, mut fetched: Vec<Fetched<'_>>) -> (Vec<Listed>, Option<String>) {
    let receive = |raw: Cow<'_, [u8]>, listed: &Listed, header_only: bool| {
        let size = if header_only {
            listed.size
        } else {
            raw.len() as u64
        };
        store::inbound::receive(raw, size, Some(server_id), listed.key.as_deref());
    };
    if fetched.len() == 1 {
        let Fetched {
            listed,
            raw,
            header_only,
        } = fetched.remove(0);
        return match try_transaction("storing a fetched message", || {
            receive(Cow::Owned(raw), listed, header_only)
        }) {
            Ok(()) => (vec![listed.clone()], None),
            Err(e) => (vec![], Some(e)),
        };
    }
    let all = try_transaction("storing fetched mail", || {
        for f in &fetched {
            receive(Cow::Borrowed(&f.raw), f.listed, f.header_only);
        }
    });
    if all.is_ok() {
        return (fetched.iter().map(|f| f.listed.clone()).collect(), None);
    }
    let mut failure = all.err();
    let stored = fetched
        .iter()
        .filter(|f| {
            try_transaction("storing a fetched message", || {
                receive(Cow::Borrowed(&f.raw), f.listed, f.header_only)
            })
            .map_err(|e| failure = Some(e))
            .is_ok()
        })
        .map(|f| f.listed.clone())
        .collect();
    (stored, failure)
}
