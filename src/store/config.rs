//! Configuration tables: `parameter`, `outgoing_server`.

use pgrx::prelude::*;

use super::{first, spi};
use crate::routing::RoutingSettings;
use crate::routing::address::parse_from_filter;
use crate::routing::server::{SenderSettings, Server};

/// A parameter as the gateway reads it: its value, or its default when the row is missing or
/// NULL (what `mail_gateway.parameter_value()` answers in SQL). Read here with a kept plan:
/// that SQL function is never inlined and re-plans its body at every call, which cost the
/// inbound path a tenth of its time when it was called once per message.
pub fn get_parameter(key: &str) -> Option<String> {
    first(
        "SELECT value FROM mail_gateway.parameter WHERE key = $1",
        &[key.into()],
    )
    .or_else(|| crate::parameters::default_of(key).map(str::to_string))
}

/// Stores a parameter (the table's trigger validates and normalises it).
pub fn set_parameter(key: &str, value: Option<&str>) {
    super::execute(
        "INSERT INTO mail_gateway.parameter (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        &[key.into(), value.into()],
    )
}

/// Every system parameter, in one query; a missing row reads as its default.
fn parameters() -> Vec<(String, Option<String>)> {
    let mut rows = stored_parameters();
    for p in &crate::parameters::PARAMETERS {
        if !rows.iter().any(|(k, _)| k == p.key) {
            rows.push((p.key.to_string(), p.default.map(str::to_string)));
        }
    }
    rows
}

fn stored_parameters() -> Vec<(String, Option<String>)> {
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

/// The parameters that decide routes (docs/REFERENCE.md, "Parameters", "Routes").
pub fn routing_settings() -> RoutingSettings {
    let rows = parameters();
    let get = |key: &str| {
        rows.iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.clone())
    };
    let number = |key: &str| crate::parameters::number(key, get(key).as_deref());
    let text = |key: &str| get(key).unwrap_or_default();
    RoutingSettings {
        catchall_domain: get("mail.catchall.domain"),
        catchall_alias: text("mail.catchall.alias"),
        bounce_alias: text("mail.bounce.alias"),
        loop_period_minutes: number("mail.incoming.limit.period"),
        loop_limit: number("mail.incoming.limit.alias"),
        bounce_limit: number("mail.bounce.limit"),
        bounce_period: text("mail.bounce.period"),
        bounce_spread: text("mail.bounce.spread"),
        sender: sender_settings_from(&rows),
        own_domains: own_domains(),
        relay_limit_thread: number("mail.relay.limit.thread"),
        relay_limit_sender: number("mail.relay.limit.sender"),
        auto_reply_limit_recipient: number("mail.auto_reply.limit.recipient"),
        auto_reply_daily_share: number("mail.auto_reply.daily_share"),
        daily_limit: number("mail.send.daily_limit"),
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
            let filter = super::text(&row, "from_filter")?;
            Ok(Server {
                id: row.get_by_name::<i64, _>("id")?.unwrap_or_default(),
                name: super::text(&row, "name")?,
                priority: row.get_by_name::<i32, _>("priority")?.unwrap_or_default(),
                from_filter: parse_from_filter(&filter).unwrap_or_default(),
            })
        })
        .collect()
    }))
}

/// Whether `CREATE EXTENSION mail_gateway` has run in the current database.
/// The version of the extension created in this database, if it is.
pub fn installed_version() -> Option<String> {
    // A subquery: one row, NULL when the extension is not there.
    first(
        "SELECT (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'mail_gateway')",
        &[],
    )
}
