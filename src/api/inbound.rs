//! Receiving (docs/REFERENCE.md, "Receiving"): `process_message`, the entry point of an MTA pipe and of tests.

use std::borrow::Cow;

use pgrx::prelude::*;

use crate::error::ApiError;
use crate::net::Limits;
use crate::routing::route::State;
use crate::worker::wake;
use crate::{authentication, gucs, mailbox, router, store};

/// Stores one raw message (exactly as given) with its parsed summary and returns its `inbound`
/// id. A message already stored (same Message-ID, or same bytes when it has none) is not stored
/// again: its existing id is returned. A message over `mail_gateway.max_message_size` is
/// recorded without its bytes, in state `error` with the reason.
#[pg_extern]
pub fn process_message(raw: &[u8], server: default!(Option<&str>, "NULL")) -> i64 {
    // Everything below writes as the gateway: a caller (an MTA's role) needs only EXECUTE.
    store::as_gateway(|| receive_and_route(raw, server))
}

fn receive_and_route(raw: &[u8], server: Option<&str>) -> i64 {
    let server_id = server.map(|name| {
        store::incoming::server_id(name)
            .unwrap_or_else(|| ApiError::NoIncomingServer(name.to_string()).raise())
    });
    let trusted = store::config::trusted_authserv_ids();
    // No DNS lookups here, inside the caller's transaction: only the Authentication-Results of
    // a trusted server (the MTA that pipes the message in) can verify its sender.
    let auth = authentication::authenticate(raw, &trusted, None);
    let id = store::inbound::receive(Cow::Borrowed(raw), raw.len() as u64, server_id, None, &auth);
    if store::routing::state(id) == Some(State::New) {
        router::route_stored(id);
    }
    id
}

/// Routes a stored message again (after fixing an alias, a handler or a parameter) and
/// returns its new state. Messages whose route created something — a record, a post, bounce
/// rows — are not routed twice.
#[pg_extern]
pub fn reprocess(inbound_id: i64) -> String {
    let Some(pending) = store::routing::pending(inbound_id) else {
        ApiError::NoReceivedMessage(inbound_id).raise();
    };
    if !pending.state.is_some_and(State::reroutable) {
        ApiError::NotReroutable {
            id: inbound_id,
            state: pending.state.map_or("", State::as_str),
        }
        .raise();
    }
    if pending.raw.is_empty() {
        ApiError::NotStored(inbound_id).raise();
    }
    router::route_stored(inbound_id);
    store::routing::state(inbound_id)
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// "TEST & CONFIRM" of an incoming server (docs/REFERENCE.md, "Receiving"): connects, logs in and opens the
/// mailbox from the caller's session (like the button it stands for, bounded by
/// `mail_gateway.fetch_timeout`), then confirms the server so that the worker fetches it.
/// On failure the server stays in `draft` and the error says what to fix.
#[pg_extern]
pub fn test_incoming_server(name: &str) -> String {
    let limits = Limits::new(gucs::fetch_timeout());
    let Some(server) = store::incoming::incoming_server(name, limits) else {
        ApiError::NoIncomingServer(name.to_string()).raise();
    };
    let mut config = server.config.clone();
    let token = server.oauth_account.as_deref().map(|account| {
        super::servers::oauth_token(&format!("incoming server \"{name}\""), account)
    });
    if let Some(token) = &token {
        config.password = token.access_token.clone();
    }
    let opened = mailbox::open(&config).and_then(|mailbox| {
        let summary = mailbox.describe();
        mailbox.close()?;
        Ok(summary)
    });
    match opened {
        Ok(summary) => {
            store::incoming::confirm(server.id);
            format!(
                "OK: {summary}{}; server confirmed",
                super::servers::oauth_summary(server.oauth_account.as_deref(), token.as_ref())
            )
        }
        Err(e) => ApiError::Connection {
            message: format!("incoming server \"{name}\": {e}"),
            hint: Some(
                match e.stage {
                    _ if let Some(hint) = crate::provider_hints::hint(&e.message) => hint,
                    mailbox::FetchStage::Login if token.is_some() => {
                        super::servers::OAUTH_LOGIN_HINT
                    }
                    _ => e.hint(),
                }
                .to_string(),
            ),
        }
        .raise(),
    }
}

/// Asks the worker to fetch one incoming server (or every confirmed, active one) as soon as
/// this transaction commits, without waiting for the fetch interval. Returns how many servers
/// will be fetched.
#[pg_extern]
pub fn fetch_now(name: default!(Option<&str>, "NULL")) -> i64 {
    if let Some(name) = name
        && store::incoming::server_id(name).is_none()
    {
        ApiError::NoIncomingServer(name.to_string()).raise();
    }
    let count = store::incoming::request_fetch(name);
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
