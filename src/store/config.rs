//! Configuration tables: `parameter`, `outgoing_server`.

use pgrx::prelude::*;

use super::{first_text, spi};
use crate::routing::RoutingSettings;
use crate::routing::address::parse_from_filter;
use crate::routing::server::{SenderSettings, Server};

pub fn get_parameter(key: &str) -> Option<String> {
    first_text(
        "SELECT value FROM mail_gateway.parameter WHERE key = $1",
        &[key.into()],
    )
}

/// Stores a parameter (the table's trigger validates and normalises it). Returns whether the
/// key existed before, i.e. whether it is one the gateway knows.
pub fn set_parameter(key: &str, value: Option<&str>) -> bool {
    spi(Spi::connect_mut(|client| {
        let known = !super::select(
            client,
            "SELECT 1 FROM mail_gateway.parameter WHERE key = $1",
            Some(1),
            &[key.into()],
        )?
        .is_empty();
        super::update(
            client,
            "INSERT INTO mail_gateway.parameter (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            None,
            &[key.into(), value.into()],
        )?;
        Ok(known)
    }))
}

/// Every system parameter, in one query.
fn parameters() -> Vec<(String, Option<String>)> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT key, value FROM mail_gateway.parameter",
            None,
            &[],
        )?
        .map(|row| {
            Ok((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?,
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    }))
}

/// The parameters that decide senders.
pub fn sender_settings() -> SenderSettings {
    sender_settings_from(&parameters())
}

fn sender_settings_from(rows: &[(String, Option<String>)]) -> SenderSettings {
    let get = |key: &str| {
        rows.iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.clone())
    };
    // Values were validated on the way in; a filter that no longer parses counts as none.
    let default_filter = get("mail.default.from_filter")
        .and_then(|f| parse_from_filter(&f).ok())
        .unwrap_or_default();
    SenderSettings::from_parameters(
        get("mail.catchall.domain"),
        get("mail.default.from"),
        get("mail.bounce.alias"),
        default_filter,
        get("mass_mailing.outgoing_mail_server"),
    )
}

/// The parameters that decide routes (SPEC §2.1, §2.8).
pub fn routing_settings() -> RoutingSettings {
    let rows = parameters();
    let get = |key: &str| {
        rows.iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.clone())
    };
    let minutes = |key: &str, default: i64| {
        get(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(default)
    };
    RoutingSettings {
        catchall_domain: get("mail.catchall.domain"),
        catchall_alias: get("mail.catchall.alias").unwrap_or_else(|| "catchall".into()),
        bounce_alias: get("mail.bounce.alias").unwrap_or_else(|| "bounce".into()),
        loop_period_minutes: minutes("mail.incoming.limit.period", 60),
        loop_limit: minutes("mail.incoming.limit.alias", 5),
        bounce_limit: minutes("mail.bounce.limit", 5),
        bounce_period: get("mail.bounce.period").unwrap_or_else(|| "30 days".into()),
        bounce_spread: get("mail.bounce.spread").unwrap_or_else(|| "7 days".into()),
        sender: sender_settings_from(&rows),
        own_domains: own_domains(),
        relay_limit_thread: minutes("mail.relay.limit.thread", 20),
        relay_limit_sender: minutes("mail.relay.limit.sender", 10),
        auto_reply_limit_recipient: minutes("mail.auto_reply.limit.recipient", 1),
        auto_reply_daily_share: minutes("mail.auto_reply.daily_share", 10),
        daily_limit: minutes("mail.send.daily_limit", 200),
    }
}

/// Our own domains besides the alias domain: those of aliases, DKIM keys and the outgoing
/// servers' filters (lower-case).
fn own_domains() -> Vec<String> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT DISTINCT d FROM (
                 SELECT domain AS d FROM mail_gateway.alias WHERE domain IS NOT NULL
                 UNION ALL SELECT domain FROM mail_gateway.dkim_key
                 UNION ALL SELECT lower(split_part(btrim(f), '@', -1))
                 FROM mail_gateway.outgoing_server, unnest(string_to_array(from_filter, ',')) AS f
             ) own WHERE d <> ''",
            None,
            &[],
        )?
        .map(|row| Ok(row.get::<String>(1)?.unwrap_or_default()))
        .collect()
    }))
}

/// `mail.authentication.trusted_servers`: the authserv-ids whose Authentication-Results are
/// believed.
pub fn trusted_authserv_ids() -> Vec<String> {
    get_parameter("mail.authentication.trusted_servers")
        .map(|v| {
            v.split(',')
                .map(|id| id.trim().to_lowercase())
                .filter(|id| !id.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Active outgoing servers; the order is decided by `routing::server::choose`.
pub fn active_outgoing_servers() -> Vec<Server> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT id, name, priority, from_filter FROM mail_gateway.outgoing_server WHERE active",
            None,
            &[],
        )?
        .map(|row| {
            let filter = row.get::<String>(4)?.unwrap_or_default();
            Ok(Server {
                id: row.get::<i64>(1)?.unwrap_or_default(),
                name: row.get::<String>(2)?.unwrap_or_default(),
                priority: row.get::<i32>(3)?.unwrap_or_default(),
                from_filter: parse_from_filter(&filter).unwrap_or_default(),
            })
        })
        .collect()
    }))
}

/// Whether `CREATE EXTENSION mail_gateway` has run in the current database.
pub fn extension_installed() -> bool {
    spi(Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'mail_gateway')",
    ))
    .unwrap_or(false)
}
