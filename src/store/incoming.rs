//! The `incoming_server` table: the servers as the fetcher, the API and `check_domain` read
//! them, and what the fetcher records of each fetch.

use pgrx::prelude::*;
use pgrx::spi::{SpiHeapTupleData, SpiResult};

use super::{first, spi, text};
use crate::mailbox::{MailboxConfig, Protocol};
use crate::model::IncomingAuth;
use crate::net::Encryption;
use crate::net::Limits;

/// The id of an incoming server by name.
pub fn server_id(name: &str) -> Option<i64> {
    first(
        "SELECT id FROM mail_gateway.incoming_server WHERE name = $1",
        &[name.into()],
    )
}

/// An incoming server as the fetcher needs it.
pub struct IncomingServer {
    pub id: i64,
    pub name: String,
    pub config: MailboxConfig,
    pub cursor: Option<String>,
    /// The OAuth2 account whose access tokens it logs in with (XOAUTH2).
    pub oauth_account: Option<String>,
}

/// Servers matching `condition` (a fixed clause, never user text), in fetching order.
fn load_servers(
    condition: &str,
    args: &[pgrx::datum::DatumWithOid<'_>],
    limits: Limits,
) -> Vec<IncomingServer> {
    let sql = format!(
        "SELECT id, name, protocol, host, port, encryption, auth, username,
                coalesce(password, '') AS password, verify_tls, ca_cert, mailbox, fetch_cursor,
                oauth_account
         FROM mail_gateway.incoming_server s WHERE {condition} ORDER BY priority, id"
    );
    spi(Spi::connect(|client| {
        super::select(client, &sql, None, args)?
            .map(|row| incoming_server_row(&row, limits))
            .collect()
    }))
}

fn incoming_server_row(row: &SpiHeapTupleData<'_>, limits: Limits) -> SpiResult<IncomingServer> {
    let optional = |column: &str| row.get_by_name::<String, _>(column);
    Ok(IncomingServer {
        id: row.get_by_name::<i64, _>("id")?.unwrap_or_default(),
        name: text(row, "name")?,
        config: MailboxConfig {
            protocol: text(row, "protocol")?.parse().unwrap_or(Protocol::Imap),
            host: text(row, "host")?,
            port: row.get_by_name::<i32, _>("port")?.unwrap_or_default() as u16,
            // incoming_server_encryption_check allows no other values.
            encryption: text(row, "encryption")?.parse().unwrap_or(Encryption::Ssl),
            xoauth2: text(row, "auth")?.parse() == Ok(IncomingAuth::Xoauth2),
            username: text(row, "username")?,
            password: text(row, "password")?,
            verify_tls: row.get_by_name::<bool, _>("verify_tls")?.unwrap_or(true),
            ca_cert: optional("ca_cert")?,
            mailbox: text(row, "mailbox")?,
            limits,
        },
        cursor: optional("fetch_cursor")?,
        oauth_account: optional("oauth_account")?,
    })
}

pub fn incoming_server(name: &str, limits: Limits) -> Option<IncomingServer> {
    load_servers("name = $1", &[name.into()], limits)
        .into_iter()
        .next()
}

/// When a server is next due: `last_fetch_at` plus its interval (or `mail.fetch.interval`).
const NEXT_FETCH: &str = "s.last_fetch_at + coalesce(s.fetch_interval,
    mail_gateway.parameter_value('mail.fetch.interval')::interval)";

/// Due at once: never fetched, asked for by fetch_now(), or a fetch that never finished (the
/// fetcher was killed in the middle of it).
const DUE_NOW: &str = "(s.last_fetch_at IS NULL OR s.fetch_requested_at >= s.last_fetch_at
    OR s.last_fetch_at > greatest(s.last_success_at, s.last_error_at, '-infinity'))";

/// Confirmed, active servers whose interval has passed or whose fetch was requested.
pub fn due_servers(limits: Limits) -> Vec<IncomingServer> {
    load_servers(
        &format!(
            "s.active AND s.state = 'confirmed' AND ({DUE_NOW} OR {NEXT_FETCH} <= clock_timestamp())"
        ),
        &[],
        limits,
    )
}

/// Time until the next server is due, if any server is to be fetched at all.
pub fn next_fetch_in() -> Option<std::time::Duration> {
    first::<f64>(
        &format!(
            "SELECT extract(epoch FROM min(
                 CASE WHEN {DUE_NOW} THEN clock_timestamp() ELSE {NEXT_FETCH} END)
                 - clock_timestamp())::float8
             FROM mail_gateway.incoming_server s WHERE s.active AND s.state = 'confirmed'"
        ),
        &[],
    )
    // NULL (no mailbox to fetch) stays None: the fetcher sleeps its poll interval.
    .map(|secs| std::time::Duration::from_secs_f64(secs.max(0.0)))
}

/// Marks the start of a fetch (the time `incoming_status` shows, and the interval counts from).
pub fn fetch_started(id: i64) {
    super::execute(
        "UPDATE mail_gateway.incoming_server SET last_fetch_at = clock_timestamp() WHERE id = $1",
        &[id.into()],
    );
}

/// Records a fetch that went through: the IMAP cursor to start from next time.
pub fn fetch_succeeded(id: i64, cursor: Option<String>) {
    super::execute(
        "UPDATE mail_gateway.incoming_server
         SET last_success_at = clock_timestamp(), fetch_cursor = coalesce($2, fetch_cursor)
         WHERE id = $1",
        &[id.into(), cursor.into()],
    );
}

/// Records why a fetch (or a test) failed.
pub fn fetch_failed(id: i64, error: &str) {
    super::execute(
        "UPDATE mail_gateway.incoming_server
         SET last_error = $2, last_error_at = clock_timestamp() WHERE id = $1",
        &[id.into(), error.into()],
    );
}

/// "TEST & CONFIRM" succeeded.
pub fn confirm(id: i64) {
    super::execute(
        "UPDATE mail_gateway.incoming_server SET state = 'confirmed' WHERE id = $1",
        &[id.into()],
    );
}

/// Asks for a fetch of one server (or all confirmed, active ones); returns how many.
pub fn request_fetch(name: Option<&str>) -> i64 {
    first::<i64>(
        "WITH requested AS (
             UPDATE mail_gateway.incoming_server SET fetch_requested_at = clock_timestamp()
             WHERE active AND state = 'confirmed' AND ($1::text IS NULL OR name = $1)
             RETURNING 1)
         SELECT count(*) FROM requested",
        &[name.into()],
    )
    .unwrap_or(0)
}

/// What an incoming server keeps of a message in the chatter.
#[derive(Clone, Copy)]
pub struct Keep {
    pub attachments: bool,
    pub original: bool,
}

/// `keep_attachments` and `keep_original` of a server (attachments only, without one).
pub fn server_keeps(server_id: Option<i64>) -> Keep {
    let stored = server_id.and_then(|id| {
        spi(Spi::connect(|client| {
            super::select(
                client,
                "SELECT keep_attachments, keep_original FROM mail_gateway.incoming_server WHERE id = $1",
                None,
                &[id.into()],
            )?
            .next()
            .map(|row| {
                Ok(Keep {
                    attachments: row.get_by_name::<bool, _>("keep_attachments")?.unwrap_or(false),
                    original: row.get_by_name::<bool, _>("keep_original")?.unwrap_or(false),
                })
            })
            .transpose()
        }))
    });
    stored.unwrap_or(Keep {
        attachments: true,
        original: false,
    })
}

/// Hosts of the active incoming servers.
pub fn incoming_hosts() -> Vec<String> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT DISTINCT host FROM mail_gateway.incoming_server WHERE active ORDER BY host",
            None,
            &[],
        )?
        .map(|row| Ok(row.get::<String>(1)?.unwrap_or_default()))
        .collect()
    }))
}
