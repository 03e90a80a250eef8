//! Receiving (SPEC §2.7): `process_message`, the entry point of an MTA pipe and of tests.

use pgrx::PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT;
use pgrx::prelude::*;

use crate::error::raise;
use crate::mime::summary::summarise;
use crate::{gucs, store};

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
    let limit = gucs::max_message_size();
    let (summary, refused) = if raw.len() > limit {
        // Only the head is read: enough to know who sent what, without holding the body twice.
        let head_end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(raw.len().min(64 * 1024));
        let reason = format!(
            "message of {} bytes is over mail_gateway.max_message_size ({limit} bytes); not stored",
            raw.len()
        );
        (summarise(&raw[..head_end.min(raw.len())]), Some(reason))
    } else {
        (summarise(raw), None)
    };
    store::inbound::store(raw, server_id, &summary, refused)
}
