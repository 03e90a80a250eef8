//! Receiving (SPEC §2.7): `process_message`, the entry point of an MTA pipe and of tests.

use pgrx::PgSqlErrorCode::{ERRCODE_CONNECTION_FAILURE, ERRCODE_UNDEFINED_OBJECT};
use std::borrow::Cow;

use pgrx::prelude::*;

use crate::error::raise;
use crate::net::Limits;
use crate::worker::wake;
use crate::{gucs, mailbox, store};

/// Stores one raw message (exactly as given) with its parsed summary and returns its `inbound`
/// id. A message already stored (same Message-ID, or same bytes when it has none) is not stored
/// again: its existing id is returned. A message over `mail_gateway.max_message_size` is
/// recorded without its bytes, in state `error` with the reason.
#[pg_extern]
pub fn process_message(raw: &[u8], server: default!(Option<&str>, "NULL")) -> i64 {
    let server_id = server.map(|name| {
        store::inbound::server_id(name).unwrap_or_else(|| {
            raise(
                ERRCODE_UNDEFINED_OBJECT,
                format!("no incoming server named \"{name}\""),
                None,
            )
        })
    });
    store::inbound::receive(Cow::Borrowed(raw), raw.len() as u64, server_id, None)
}

/// "TEST & CONFIRM" of an incoming server (SPEC §2.7): connects, logs in and opens the
/// mailbox from the caller's session (like the button it stands for, bounded by
/// `mail_gateway.fetch_timeout`), then confirms the server so that the worker fetches it.
/// On failure the server stays in `draft` and the error says what to fix.
#[pg_extern]
pub fn test_incoming_server(name: &str) -> String {
    let limits = Limits::new(gucs::fetch_timeout());
    let Some(server) = store::inbound::incoming_server(name, limits) else {
        raise(
            ERRCODE_UNDEFINED_OBJECT,
            format!("no incoming server named \"{name}\""),
            None,
        );
    };
    let opened = mailbox::open(&server.config).and_then(|mailbox| {
        let summary = mailbox.describe();
        mailbox.close()?;
        Ok(summary)
    });
    match opened {
        Ok(summary) => {
            store::inbound::confirm(server.id);
            format!("OK: {summary}; server confirmed")
        }
        Err(e) => raise(
            ERRCODE_CONNECTION_FAILURE,
            format!("incoming server \"{name}\": {e}"),
            Some(e.hint()),
        ),
    }
}

/// Asks the worker to fetch one incoming server (or every confirmed, active one) as soon as
/// this transaction commits, without waiting for the fetch interval. Returns how many servers
/// will be fetched.
#[pg_extern]
pub fn fetch_now(name: default!(Option<&str>, "NULL")) -> i64 {
    if let Some(name) = name
        && store::inbound::server_id(name).is_none()
    {
        raise(
            ERRCODE_UNDEFINED_OBJECT,
            format!("no incoming server named \"{name}\""),
            None,
        );
    }
    let count = store::inbound::request_fetch(name);
    if count == 0 {
        notice!(
            "no confirmed, active incoming server to fetch{}",
            name.map(|n| format!(" named \"{n}\"")).unwrap_or_default()
        );
    } else {
        wake::at_commit(wake::Target::Fetcher);
    }
    count
}
