//! OAuth2 accounts: reading one (secrets included: only administrators and the gateway can),
//! the per-account lock that serialises refreshes between sessions, and storing what a
//! refresh brought — guarded, so that a result obtained with a refresh token that has been
//! replaced since (set_oauth, another session's rotation) is dropped rather than stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgrx::prelude::*;

use super::{spi, text};
use crate::model::OAuthState;
use crate::oauth::{Lifetime, Provider};

/// One `oauth_account` row.
#[derive(Clone)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub provider: Provider,
    pub tenant: Option<String>,
    pub token_endpoint: String,
    pub authorize_endpoint: Option<String>,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub ca_cert: Option<String>,
    pub access_token: Option<String>,
    /// When the cached access token was obtained and when it expires.
    pub lifetime: Option<Lifetime>,
    pub state: OAuthState,
    pub last_error: Option<String>,
}

fn epoch(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0))
}

pub(crate) fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The account named `name`, as committed now: read-write, for a new snapshot (in READ
/// COMMITTED), so that a SQL caller sees what a helper or another session just stored.
pub fn account(name: &str) -> Option<Account> {
    spi(Spi::connect_mut(|client| {
        let mut rows = super::update(
            client,
            "SELECT id, name, provider, tenant, token_endpoint, authorize_endpoint, client_id,
                    client_secret, refresh_token, scope, ca_cert, access_token,
                    extract(epoch FROM last_refresh_at)::float8 AS obtained_at,
                    extract(epoch FROM expires_at)::float8 AS expires_at, state, last_error
             FROM mail_gateway.oauth_account WHERE name = $1",
            None,
            &[name.into()],
        )?;
        let Some(row) = rows.next() else {
            return Ok(None);
        };
        let optional = |column: &str| row.get_by_name::<String, _>(column);
        let seconds = |column: &str| row.get_by_name::<f64, _>(column);
        let lifetime = match (seconds("obtained_at")?, seconds("expires_at")?) {
            (Some(obtained), Some(expires)) => Some(Lifetime {
                obtained_at: epoch(obtained),
                expires_at: epoch(expires),
            }),
            _ => None,
        };
        Ok(Some(Account {
            id: row.get_by_name::<i64, _>("id")?.unwrap_or_default(),
            name: text(&row, "name")?,
            provider: text(&row, "provider")?.parse().unwrap_or(Provider::Custom),
            tenant: optional("tenant")?,
            token_endpoint: text(&row, "token_endpoint")?,
            authorize_endpoint: optional("authorize_endpoint")?,
            client_id: text(&row, "client_id")?,
            client_secret: optional("client_secret")?,
            refresh_token: optional("refresh_token")?,
            scope: optional("scope")?,
            ca_cert: optional("ca_cert")?,
            access_token: optional("access_token")?,
            lifetime,
            // oauth_account_state_check allows no other value.
            state: text(&row, "state")?.parse().unwrap_or(OAuthState::Ok),
            last_error: optional("last_error")?,
        }))
    }))
}

/// The name of account `id`.
pub fn name_of(id: i64) -> Option<String> {
    super::first(
        "SELECT name FROM mail_gateway.oauth_account WHERE id = $1",
        &[id.into()],
    )
}

/// Whether the caller's transaction wrote the account's row (not committed: a helper worker
/// would see the old row, and wait for the new one's lock).
pub fn changed_here(id: i64) -> bool {
    super::first::<bool>(
        "SELECT xmin = pg_current_xact_id_if_assigned()::xid
         FROM mail_gateway.oauth_account WHERE id = $1",
        &[id.into()],
    )
    .unwrap_or(false)
}

/// A helper worker waits at most a few seconds for a row lock: its caller, who may hold one
/// (a change made in a savepoint), waits for it.
pub fn prepare_helper() {
    super::first::<String>("SELECT set_config('lock_timeout', '3s', false)", &[]);
}

/// Takes the account's refresh lock without waiting. `until_commit`: a transaction-level lock
/// (a SQL caller, whose writes are visible to others only at its commit); otherwise a session
/// lock, released by `unlock` once the result is committed.
pub fn try_lock(id: i64, until_commit: bool) -> bool {
    let sql = if until_commit {
        "SELECT pg_try_advisory_xact_lock(hashtextextended('mail_gateway.oauth:' || $1::text, 0))"
    } else {
        "SELECT pg_try_advisory_lock(hashtextextended('mail_gateway.oauth:' || $1::text, 0))"
    };
    locking(sql, id)
}

pub fn unlock(id: i64) {
    locking(
        "SELECT pg_advisory_unlock(hashtextextended('mail_gateway.oauth:' || $1::text, 0))",
        id,
    );
}

/// Runs a lock function (volatile: not in a read-only statement) and returns its answer.
fn locking(sql: &str, id: i64) -> bool {
    spi(Spi::connect_mut(|client| {
        super::update(client, sql, None, &[id.into()])?
            .first()
            .get_one::<bool>()
    }))
    .unwrap_or(false)
}

/// Stores a new access token and, when the provider rotated it, the new refresh token — only
/// if the account still has the refresh token `used`. Returns whether it was stored.
pub fn store_granted(
    id: i64,
    used: &str,
    access_token: &str,
    lifetime: Lifetime,
    rotated: Option<&str>,
) -> bool {
    super::exists(
        "UPDATE mail_gateway.oauth_account
         SET access_token = $3, last_refresh_at = to_timestamp($4), expires_at = to_timestamp($5),
             refresh_token = coalesce($6, refresh_token), state = 'ok',
             last_error = NULL, last_error_at = NULL
         WHERE id = $1 AND refresh_token = $2
         RETURNING id",
        &[
            id.into(),
            used.into(),
            access_token.into(),
            seconds(lifetime.obtained_at).into(),
            seconds(lifetime.expires_at).into(),
            rotated.into(),
        ],
    )
}

/// Records a failed refresh made with refresh token `used`: the error, and for a failure that
/// no retry can fix, the state that stops the workers from trying (`needs_consent`,
/// `misconfigured`).
pub fn store_failure(id: i64, used: Option<&str>, state: Option<OAuthState>, error: &str) {
    super::execute(
        "UPDATE mail_gateway.oauth_account
         SET state = coalesce($3, state), last_error = $4, last_error_at = clock_timestamp()
         WHERE id = $1 AND refresh_token IS NOT DISTINCT FROM $2",
        &[
            id.into(),
            used.into(),
            state.map(OAuthState::as_str).into(),
            error.into(),
        ],
    );
}

/// The table a server is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTable {
    Outgoing,
    Incoming,
}

impl ServerTable {
    /// As messages name it: "outgoing server …".
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTable::Outgoing => "outgoing",
            ServerTable::Incoming => "incoming",
        }
    }
}

/// A server `set_oauth` may link to an account.
pub struct NamedServer {
    pub table: ServerTable,
    pub username: Option<String>,
    /// The account it logs in with now.
    pub oauth_account: Option<String>,
}

/// Servers named `name` in either table, outgoing first.
pub fn servers_named(name: &str) -> Vec<NamedServer> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT true AS outgoing, username, oauth_account FROM mail_gateway.outgoing_server WHERE name = $1
             UNION ALL
             SELECT false, username, oauth_account FROM mail_gateway.incoming_server WHERE name = $1",
            None,
            &[name.into()],
        )?
        .map(|row| {
            let outgoing = row.get_by_name::<bool, _>("outgoing")?.unwrap_or(false);
            Ok(NamedServer {
                table: if outgoing {
                    ServerTable::Outgoing
                } else {
                    ServerTable::Incoming
                },
                username: row.get_by_name::<String, _>("username")?,
                oauth_account: row.get_by_name::<String, _>("oauth_account")?,
            })
        })
        .collect()
    }))
}

/// The user name of the first server that uses the account (a login hint for the consent).
pub fn first_username(account: &str) -> Option<String> {
    super::first(
        "SELECT username FROM (
             SELECT username, 1 AS o FROM mail_gateway.outgoing_server WHERE oauth_account = $1
             UNION ALL
             SELECT username, 2 FROM mail_gateway.incoming_server WHERE oauth_account = $1) s
         WHERE btrim(username) <> '' ORDER BY o LIMIT 1",
        &[account.into()],
    )
}

/// The settings `set_oauth` changes; `None` keeps a value.
#[derive(Default)]
pub struct Settings<'a> {
    pub provider: Option<&'a str>,
    pub tenant: Option<Option<&'a str>>,
    pub token_endpoint: Option<&'a str>,
    pub authorize_endpoint: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
    pub refresh_token: Option<&'a str>,
    pub scope: Option<&'a str>,
}

/// Creates the account, or changes what `settings` gives (the validation trigger completes
/// and checks it).
pub fn save(name: &str, exists: bool, s: &Settings<'_>) {
    let clear_tenant = matches!(s.tenant, Some(None));
    let tenant = s.tenant.flatten();
    if exists {
        super::execute(
            "UPDATE mail_gateway.oauth_account SET
                 provider = coalesce($2, provider),
                 tenant = CASE WHEN $3 THEN NULL ELSE coalesce($4, tenant) END,
                 token_endpoint = coalesce($5, token_endpoint),
                 authorize_endpoint = coalesce($6, authorize_endpoint),
                 client_id = coalesce($7, client_id),
                 client_secret = coalesce($8, client_secret),
                 refresh_token = coalesce($9, refresh_token),
                 scope = coalesce($10, scope)
             WHERE name = $1",
            &[
                name.into(),
                s.provider.into(),
                clear_tenant.into(),
                tenant.into(),
                s.token_endpoint.into(),
                s.authorize_endpoint.into(),
                s.client_id.into(),
                s.client_secret.into(),
                s.refresh_token.into(),
                s.scope.into(),
            ],
        );
    } else {
        super::execute(
            "INSERT INTO mail_gateway.oauth_account (name, provider, tenant, token_endpoint,
                 authorize_endpoint, client_id, client_secret, refresh_token, scope)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                name.into(),
                s.provider.into(),
                tenant.into(),
                s.token_endpoint.into(),
                s.authorize_endpoint.into(),
                s.client_id.into(),
                s.client_secret.into(),
                s.refresh_token.into(),
                s.scope.into(),
            ],
        );
    }
}

/// Makes the servers named `name` log in with the account's tokens (XOAUTH2); a static token
/// in `password` is dropped. Returns the tables changed.
pub fn link(name: &str, account: &str) -> Vec<ServerTable> {
    let mut linked = Vec::new();
    for (table, sql) in [
        (
            ServerTable::Outgoing,
            "UPDATE mail_gateway.outgoing_server SET auth = 'xoauth2', oauth_account = $2, password = NULL
             WHERE name = $1 RETURNING id",
        ),
        (
            ServerTable::Incoming,
            "UPDATE mail_gateway.incoming_server SET auth = 'xoauth2', oauth_account = $2, password = NULL
             WHERE name = $1 RETURNING id",
        ),
    ] {
        if super::exists(sql, &[name.into(), account.into()]) {
            linked.push(table);
        }
    }
    linked
}
