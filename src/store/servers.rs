//! Outgoing servers as their users load them: the senders and `test_outgoing_server` (every
//! connection setting, secrets included), `check_domain` (names and hosts only), and the
//! health the senders record.

use std::collections::HashMap;
use std::time::Duration;

use pgrx::prelude::*;
use pgrx::spi::{SpiHeapTupleData, SpiResult};

use super::{spi, text};
use crate::net::Encryption;
use crate::routing::address::{FilterEntry, parse_from_filter};
use crate::routing::server::Server;
use crate::smtp::{Auth, ServerConfig};

/// An outgoing server: what the choice needs, and everything needed to connect, secrets
/// included.
pub struct ServerRow {
    pub server: Server,
    pub config: ServerConfig,
    /// Connections this database may keep open to it at once (all senders together).
    pub max_connections: i32,
    /// Mails per connection before it is closed and opened again.
    pub max_mails_per_connection: i32,
    /// The OAuth2 account whose access tokens it logs in with (XOAUTH2).
    pub oauth_account: Option<String>,
}

/// What `check_domain` needs of an active server, and no secret.
pub struct ServerHost {
    pub name: String,
    pub host: String,
    pub from_filter: Vec<FilterEntry>,
}

/// Every active server's name, host and `from_filter`.
pub fn server_hosts() -> Vec<ServerHost> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT name, host, from_filter FROM mail_gateway.outgoing_server WHERE active",
            None,
            &[],
        )?
        .map(|row| {
            Ok(ServerHost {
                name: text(&row, "name")?,
                host: text(&row, "host")?,
                from_filter: filter(&row)?,
            })
        })
        .collect()
    }))
}

/// Every active server.
pub fn server_configs(timeout: Duration) -> HashMap<i64, ServerRow> {
    load_servers(None, timeout)
}

/// One server by name, active or not ("Test Connection" works on inactive servers too).
pub fn server_config_by_name(name: &str, timeout: Duration) -> Option<(i64, ServerRow)> {
    load_servers(Some(name), timeout).into_iter().next()
}

/// The `from_filter` column; one that no longer parses counts as none.
fn filter(row: &SpiHeapTupleData<'_>) -> SpiResult<Vec<FilterEntry>> {
    Ok(parse_from_filter(&text(row, "from_filter")?).unwrap_or_default())
}

fn load_servers(name: Option<&str>, timeout: Duration) -> HashMap<i64, ServerRow> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT id, name, host, port, encryption, auth, username, password, client_cert,
                    client_key, verify_tls, ca_cert, priority, from_filter, max_connections,
                    max_mails_per_connection, oauth_account
             FROM mail_gateway.outgoing_server
             WHERE CASE WHEN $1::text IS NULL THEN active ELSE name = $1 END",
            None,
            &[name.into()],
        )?
        .map(|row| {
            let loaded = server_row(&row, timeout)?;
            Ok((loaded.server.id, loaded))
        })
        .collect()
    }))
}

fn server_row(row: &SpiHeapTupleData<'_>, timeout: Duration) -> SpiResult<ServerRow> {
    let optional = |column: &str| row.get_by_name::<String, _>(column);
    // The table's CHECK constraints allow no other values (outgoing_server_encryption_check).
    let encryption = optional("encryption")?
        .and_then(|e| e.parse().ok())
        .unwrap_or(Encryption::None);
    let auth = optional("auth")?
        .and_then(|a| a.parse().ok())
        .unwrap_or(Auth::None);
    let config = ServerConfig {
        host: text(row, "host")?,
        port: row.get_by_name::<i32, _>("port")?.unwrap_or(25) as u16,
        encryption,
        auth,
        username: optional("username")?,
        password: optional("password")?,
        client_cert: optional("client_cert")?,
        client_key: optional("client_key")?,
        verify_tls: row.get_by_name::<bool, _>("verify_tls")?.unwrap_or(true),
        ca_cert: optional("ca_cert")?,
        timeout,
    };
    let server = Server {
        id: row.get_by_name::<i64, _>("id")?.unwrap_or_default(),
        name: text(row, "name")?,
        priority: row.get_by_name::<i32, _>("priority")?.unwrap_or_default(),
        from_filter: filter(row)?,
    };
    Ok(ServerRow {
        server,
        config,
        max_connections: row.get_by_name::<i32, _>("max_connections")?.unwrap_or(1),
        max_mails_per_connection: row
            .get_by_name::<i32, _>("max_mails_per_connection")?
            .unwrap_or(1),
        oauth_account: optional("oauth_account")?,
    })
}

/// Remembers each server's last success and last error, for `server_status`.
pub fn record_server_health(successes: Vec<i64>, errors: Vec<(i64, String)>) {
    if !successes.is_empty() {
        super::execute(
            "UPDATE mail_gateway.outgoing_server SET last_success_at = now() WHERE id = ANY($1)",
            &[successes.into()],
        );
    }
    for (id, error) in errors {
        super::execute(
            "UPDATE mail_gateway.outgoing_server SET last_error_at = now(), last_error = $2 WHERE id = $1",
            &[id.into(), error.into()],
        );
    }
}
