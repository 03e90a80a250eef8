//! The `inbound` table: received messages, stored once.

use pgrx::JsonB;
use pgrx::prelude::*;

use super::spi;
use crate::mime::summary::Summary;

/// Stores `raw` unless it is already stored (same Message-ID, or the same bytes when it has
/// none), and returns its id. Concurrent stores of the same message are
/// serialised by an advisory lock on its identity, so it is stored once whoever comes first.
/// `refused` stores the row without its bytes, with that reason and state `error`.
pub fn store(
    raw: &[u8],
    server_id: Option<i64>,
    summary: &Summary,
    refused: Option<String>,
) -> i64 {
    let stored_raw: &[u8] = if refused.is_some() { &[] } else { raw };
    spi(Spi::connect_mut(|client| {
        let sha = client
            .update("SELECT sha256($1)", None, &[raw.into()])?
            .first()
            .get_one::<Vec<u8>>()?
            .unwrap_or_default();
        let identity = summary.message_id.clone().unwrap_or_else(|| hex(&sha));
        client.update(
            "SELECT pg_advisory_xact_lock(hashtextextended('mail_gateway.inbound:' || $1, 0))",
            None,
            &[identity.into()],
        )?;
        let existing = client
            .select(
                "SELECT id FROM mail_gateway.inbound
                 WHERE CASE WHEN $1::text IS NULL THEN message_id IS NULL AND raw_sha256 = $2
                            ELSE message_id = $1 END
                 ORDER BY id LIMIT 1",
                None,
                &[summary.message_id.clone().into(), sha.clone().into()],
            )?
            .next()
            .map(|row| row.get::<i64>(1))
            .transpose()?
            .flatten();
        if let Some(id) = existing {
            return Ok(id);
        }
        let state = if refused.is_some() { "error" } else { "new" };
        let id = client
            .update(
                "INSERT INTO mail_gateway.inbound (server_id, raw, raw_size, raw_sha256, message_id, email_from,
                     subject, summary, state, reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                None,
                &[
                    server_id.into(),
                    stored_raw.into(),
                    (raw.len() as i64).into(),
                    sha.into(),
                    summary.message_id.clone().into(),
                    summary.from_address.clone().into(),
                    summary.subject.clone().into(),
                    JsonB(summary.to_json()).into(),
                    state.into(),
                    refused.into(),
                ],
            )?
            .first()
            .get_one::<i64>()?
            .unwrap_or_default();
        Ok(id)
    }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of an incoming server by name.
pub fn server_id(name: &str) -> Option<i64> {
    super::first_text(
        "SELECT id::text FROM mail_gateway.incoming_server WHERE name = $1",
        &[name.into()],
    )
    .and_then(|id| id.parse().ok())
}
