//! The `inbound` table: received messages, stored once.

use std::borrow::Cow;
use std::collections::HashSet;

use pgrx::JsonB;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use super::{first_text, spi};
use crate::authentication::Authentication;
use crate::mailbox::{MailboxConfig, Protocol};
use crate::mime::summary::{Summary, admit};
use crate::net::{Encryption, Limits};

/// Summarises and stores a received message of `size` bytes (`raw` holds only its header
/// when it is over `mail_gateway.max_message_size`: then it is recorded without its bytes, in
/// state `error` with the reason), with the authentication verdict on its sender. Returns its
/// `inbound` id.
///
/// Storing never depends on the content: what the summary cannot hold is cleaned by
/// `mime::summary`, and should storing with the summary still fail because of the data
/// (SQLSTATE classes 22, 23, 54 — say, a character a LATIN1 database cannot hold), the bytes
/// are stored alone, in state `error` with the reason. Failures of the database itself (a full
/// disk, a read-only standby) are raised: the caller must not take the message as stored.
pub fn receive(
    raw: Cow<'_, [u8]>,
    size: u64,
    server_id: Option<i64>,
    remote_uid: Option<&str>,
    auth: &Authentication,
) -> i64 {
    let sha = openssl::sha::sha256(&raw).to_vec();
    receive_with_sha(raw, sha, size, server_id, remote_uid, auth)
}

/// `receive` of a message pushed by an MTA, stored with its envelope (`trace`) on top but
/// deduplicated by the message alone: the same message in two transactions (an MTA splitting
/// its recipients) has two traces and is still one message.
pub fn receive_pushed(trace: &[u8], message: &[u8], auth: &Authentication) -> i64 {
    let sha = openssl::sha::sha256(message).to_vec();
    let mut raw = Vec::with_capacity(trace.len() + message.len());
    raw.extend_from_slice(trace);
    raw.extend_from_slice(message);
    let size = raw.len() as u64;
    receive_with_sha(Cow::Owned(raw), sha, size, None, None, auth)
}

fn receive_with_sha(
    raw: Cow<'_, [u8]>,
    sha: Vec<u8>,
    size: u64,
    server_id: Option<i64>,
    remote_uid: Option<&str>,
    auth: &Authentication,
) -> i64 {
    let (summary, refused) = admit(&raw, size, crate::gucs::max_message_size() as u64);
    // PostgreSQL's copy of the bytes, made once (it outlives the subtransactions below); ours
    // is freed before the INSERT, so that a big message is in memory as few times as possible.
    let bytes = Bytes::new(if refused.is_some() { &[] } else { &raw });
    drop(raw);
    let row = Row {
        size,
        server_id,
        remote_uid,
        auth,
        sha: &sha,
        bytes: &bytes,
    };
    // Written as the gateway: an MTA's role needs only EXECUTE on process_message.
    super::as_gateway(
        || match super::subtransaction(|| store(&row, &summary, refused.clone())) {
            Ok(id) => id,
            Err(e) if e.is_the_data() => {
                let why = format!(
                    "stored without its summary: {} (SQLSTATE {})",
                    e.message,
                    e.sqlstate()
                );
                store(&row, &Summary::default(), refused.or(Some(why)))
            }
            Err(e) => crate::error::raise(e.code, e.message, None),
        },
    )
}

/// A bytea datum in PostgreSQL's memory (the current memory context).
struct Bytes {
    datum: Option<pg_sys::Datum>,
    empty: bool,
}

impl Bytes {
    fn new(raw: &[u8]) -> Bytes {
        Bytes {
            datum: raw.into_datum(),
            empty: raw.is_empty(),
        }
    }

    fn arg(&self) -> DatumWithOid<'_> {
        // SAFETY: a bytea datum palloc'd in the memory context of the caller of `receive`,
        // which outlives every statement that binds it.
        unsafe { DatumWithOid::new(self.datum, pg_sys::BYTEAOID) }
    }
}

/// A message to store: its bytes and what is known of it besides.
struct Row<'a> {
    size: u64,
    server_id: Option<i64>,
    remote_uid: Option<&'a str>,
    auth: &'a Authentication,
    sha: &'a [u8],
    bytes: &'a Bytes,
}

/// Stores `raw` unless it is already stored (same Message-ID, or the same bytes when it has
/// none; or, from a mailbox, the same server id), and returns its id. Concurrent stores of the
/// same message are serialised by an advisory lock on its identity, so it is stored once
/// whoever comes first. `refused` stores the row without its bytes, with that reason and state
/// `error` — unless the reason is only a failed summary, which keeps the bytes. A row recorded
/// without its bytes (over the size limit) gets them when the message comes again and fits.
fn store(row: &Row<'_>, summary: &Summary, refused: Option<String>) -> i64 {
    let sha = row.sha.to_vec();
    let keeps_bytes = !row.bytes.empty;
    spi(Spi::connect_mut(move |client| {
        let identity = summary.message_id.clone().unwrap_or_else(|| hex(&sha));
        super::update(
            client,
            "SELECT pg_advisory_xact_lock(hashtextextended('mail_gateway.inbound:' || $1, 0))",
            None,
            &[identity.into()],
        )?;
        // Two statements rather than one with a CASE, so that each uses its index (and no
        // ORDER BY: the planner would walk the primary key instead). At most one row matches.
        let existing = match &summary.message_id {
            Some(message_id) => super::select(
                client,
                "SELECT id, raw_size > 0 AND octet_length(raw) = 0 FROM mail_gateway.inbound
                 WHERE message_id = $1 LIMIT 1",
                None,
                &[message_id.as_str().into()],
            )?,
            None => super::select(
                client,
                "SELECT id, raw_size > 0 AND octet_length(raw) = 0 FROM mail_gateway.inbound
                 WHERE message_id IS NULL AND raw_sha256 = $1 LIMIT 1",
                None,
                &[sha.clone().into()],
            )?,
        }
        .next()
        .map(|r| Ok::<_, pgrx::spi::SpiError>((r.get::<i64>(1)?, r.get::<bool>(2)?)))
        .transpose()?;
        if let Some((Some(id), without_bytes)) = existing {
            if without_bytes == Some(true) && keeps_bytes {
                fill_in(client, id, row, summary)?;
            }
            return Ok(id);
        }
        let state = if refused.is_none() { "new" } else { "error" };
        // The (server, uid) index makes a second store of the same fetched message a no-op.
        let (id, without_bytes) = super::update(client, "WITH new AS (
                     INSERT INTO mail_gateway.inbound (server_id, raw, raw_size, raw_sha256, message_id,
                         email_from, subject, summary, state, reason, remote_uid, auth_verdict, auth_detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                     ON CONFLICT (server_id, remote_uid) WHERE remote_uid IS NOT NULL DO NOTHING
                     RETURNING id, false)
                 SELECT * FROM new
                 UNION ALL
                 SELECT id, raw_size > 0 AND octet_length(raw) = 0 FROM mail_gateway.inbound
                 WHERE server_id = $1 AND remote_uid = $11
                 LIMIT 1",
                None,
                &[
                    row.server_id.into(),
                    row.bytes.arg(),
                    (row.size as i64).into(),
                    sha.clone().into(),
                    summary.message_id.clone().into(),
                    summary.from_address.clone().into(),
                    summary.subject.clone().into(),
                    JsonB(summary.to_json()).into(),
                    state.into(),
                    refused.into(),
                    row.remote_uid.into(),
                    row.auth.verdict.as_str().into(),
                    row.auth.detail.as_str().into(),
                ],
            )?
            .first()
            .get_two::<i64, bool>()?;
        let id = id.unwrap_or_default();
        if without_bytes == Some(true) && keeps_bytes {
            fill_in(client, id, row, summary)?;
        }
        Ok(id)
    }))
}

/// Gives a row recorded without its bytes (over the size limit then) the whole message, now
/// that it fits: it becomes `new`, to be routed.
fn fill_in(
    client: &mut pgrx::spi::SpiClient<'_>,
    id: i64,
    row: &Row<'_>,
    summary: &Summary,
) -> Result<(), pgrx::spi::SpiError> {
    super::update(
        client,
        "UPDATE mail_gateway.inbound SET raw = $2, raw_size = $3, raw_sha256 = $4, summary = $5,
             email_from = $6, subject = $7, state = 'new', reason = NULL,
             auth_verdict = $8, auth_detail = $9
         WHERE id = $1",
        None,
        &[
            id.into(),
            row.bytes.arg(),
            (row.size as i64).into(),
            row.sha.to_vec().into(),
            JsonB(summary.to_json()).into(),
            summary.from_address.clone().into(),
            summary.subject.clone().into(),
            row.auth.verdict.as_str().into(),
            row.auth.detail.as_str().into(),
        ],
    )?;
    Ok(())
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
        "SELECT id, name, protocol, host, port, encryption, auth, username, coalesce(password, ''),
                verify_tls, ca_cert, mailbox, fetch_cursor, oauth_account
         FROM mail_gateway.incoming_server s WHERE {condition} ORDER BY priority, id"
    );
    spi(Spi::connect(|client| {
        super::select(client, &sql, None, args)?
            .map(|row| {
                let text = |i| -> Result<String, pgrx::spi::SpiError> {
                    Ok(row.get::<String>(i)?.unwrap_or_default())
                };
                Ok(IncomingServer {
                    id: row.get::<i64>(1)?.unwrap_or_default(),
                    name: text(2)?,
                    config: MailboxConfig {
                        protocol: if text(3)? == "pop3" {
                            Protocol::Pop3
                        } else {
                            Protocol::Imap
                        },
                        host: text(4)?,
                        port: row.get::<i32>(5)?.unwrap_or_default() as u16,
                        encryption: match text(6)?.as_str() {
                            "none" => Encryption::None,
                            "starttls" => Encryption::StartTls,
                            _ => Encryption::Ssl,
                        },
                        xoauth2: text(7)? == "xoauth2",
                        username: text(8)?,
                        password: text(9)?,
                        verify_tls: row.get::<bool>(10)?.unwrap_or(true),
                        ca_cert: row.get::<String>(11)?,
                        mailbox: text(12)?,
                        limits,
                    },
                    cursor: row.get::<String>(13)?,
                    oauth_account: row.get::<String>(14)?,
                })
            })
            .collect()
    }))
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
    super::first_text(
        &format!(
            "SELECT extract(epoch FROM min(
                 CASE WHEN {DUE_NOW} THEN clock_timestamp() ELSE {NEXT_FETCH} END)
                 - clock_timestamp())::text
             FROM mail_gateway.incoming_server s WHERE s.active AND s.state = 'confirmed'"
        ),
        &[],
    )
    .and_then(|secs| secs.parse::<f64>().ok())
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
    super::first_text(
        "WITH requested AS (
             UPDATE mail_gateway.incoming_server SET fetch_requested_at = clock_timestamp()
             WHERE active AND state = 'confirmed' AND ($1::text IS NULL OR name = $1)
             RETURNING 1)
         SELECT count(*)::text FROM requested",
        &[name.into()],
    )
    .and_then(|n| n.parse().ok())
    .unwrap_or(0)
}

/// Which of these remote ids of a server are already stored with their bytes (a message
/// recorded without them, over the size limit, is fetched again: it may fit now).
pub fn stored_keys(server_id: i64, keys: Vec<String>) -> HashSet<String> {
    if keys.is_empty() {
        return HashSet::new();
    }
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT remote_uid FROM mail_gateway.inbound
                 WHERE server_id = $1 AND remote_uid = ANY($2)
                   AND NOT (raw_size > 0 AND octet_length(raw) = 0)",
            None,
            &[server_id.into(), keys.into()],
        )?
        .map(|row| Ok(row.get::<String>(1)?.unwrap_or_default()))
        .collect()
    }))
}

/// What an incoming server keeps of a message in the chatter.
#[derive(Clone, Copy)]
pub struct Keep {
    pub attachments: bool,
    pub original: bool,
}

/// `keep_attachments` and `keep_original` of a server (attachments only, without one).
pub fn server_keeps(server_id: Option<i64>) -> Keep {
    let row = server_id.and_then(|id| {
        first_text(
            "SELECT keep_attachments::text || ' ' || keep_original::text
             FROM mail_gateway.incoming_server WHERE id = $1",
            &[id.into()],
        )
    });
    match row.as_deref().and_then(|r| r.split_once(' ')) {
        Some((attachments, original)) => Keep {
            attachments: attachments == "true",
            original: original == "true",
        },
        None => Keep {
            attachments: true,
            original: false,
        },
    }
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
