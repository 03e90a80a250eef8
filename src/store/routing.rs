//! What routing reads and writes: the message to route, aliases and contact policies, loop
//! counts, bounces and the blocklist rule.

use pgrx::JsonB;
use pgrx::prelude::*;

use super::{first_text, spi};

/// A stored message waiting for its route.
pub struct Pending {
    pub server_id: Option<i64>,
    pub raw: Vec<u8>,
    pub state: String,
    /// The server's fallback alias (SPEC §2.8 rule 7).
    pub fallback_alias: Option<String>,
}

/// Read-write, so that it sees a message stored earlier in the same statement
/// (`process_message` stores, then routes).
pub fn pending(id: i64) -> Option<Pending> {
    spi(Spi::connect_mut(|client| {
        super::update(
            client,
            "SELECT i.id, i.server_id, i.raw, i.state, s.fallback_alias
                 FROM mail_gateway.inbound i
                 LEFT JOIN mail_gateway.incoming_server s ON s.id = i.server_id
                 WHERE i.id = $1",
            None,
            &[id.into()],
        )?
        .next()
        .map(|row| {
            Ok(Pending {
                server_id: row.get::<i64>(2)?,
                raw: row.get::<Vec<u8>>(3)?.unwrap_or_default(),
                state: row.get::<String>(4)?.unwrap_or_default(),
                fallback_alias: row.get::<String>(5)?,
            })
        })
        .transpose()
    }))
}

/// Ids of stored messages still in state `new` (oldest first), at most `limit`.
pub fn new_ids(limit: i64) -> Vec<i64> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT id FROM mail_gateway.inbound WHERE state = 'new' ORDER BY id LIMIT $1",
            None,
            &[limit.into()],
        )?
        .map(|row| Ok(row.get::<i64>(1)?.unwrap_or_default()))
        .collect()
    }))
}

/// The route taken, recorded on the message.
pub struct Route<'a> {
    pub state: &'a str,
    pub route: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub model: Option<&'a str>,
    pub res_id: Option<i64>,
    pub message_ref: Option<i64>,
}

pub fn record_route(id: i64, route: Route<'_>) {
    super::execute(
        "UPDATE mail_gateway.inbound SET state = $2, route = $3, reason = $4, model = $5, res_id = $6,
             message_ref = $7, routed_at = clock_timestamp()
         WHERE id = $1",
        &[
            id.into(),
            route.state.into(),
            route.route.into(),
            route.reason.into(),
            route.model.into(),
            route.res_id.into(),
            route.message_ref.into(),
        ],
    )
}

/// An alias that a message is addressed to.
pub struct Alias {
    pub name: String,
    pub model: String,
    pub handler: bool,
    pub defaults: serde_json::Value,
    pub contact_policy: String,
    pub bounced_content: Option<String>,
    pub force_thread_id: Option<i64>,
    /// `name@domain`.
    pub address: String,
    id: i64,
}

/// The first active alias (in the order of `addresses`) that one of them names; with
/// `by_name`, the alias of that local part on the alias domain instead.
pub fn find_alias(addresses: &[String], by_name: Option<&str>) -> Option<Alias> {
    let addresses: Vec<String> = addresses.to_vec();
    spi(Spi::connect(|client| {
        super::select(client, "SELECT a.id, a.name, a.model, a.handler IS NOT NULL, a.defaults, a.contact_policy,
                        a.bounced_content, a.force_thread_id, a.name || '@' || d.domain
                 FROM mail_gateway.alias a
                 CROSS JOIN LATERAL (SELECT coalesce(a.domain, (SELECT value FROM mail_gateway.parameter
                                                                WHERE key = 'mail.catchall.domain')) AS domain) d
                 WHERE a.active AND d.domain IS NOT NULL
                   AND CASE WHEN $2::text IS NULL THEN (a.name || '@' || d.domain) = ANY($1)
                            ELSE a.name = lower($2) END
                 ORDER BY array_position($1, a.name || '@' || d.domain), a.id LIMIT 1",
                None,
                &[addresses.into(), by_name.into()],
            )?
            .next()
            .map(|row| {
                Ok(Alias {
                    id: row.get::<i64>(1)?.unwrap_or_default(),
                    name: row.get::<String>(2)?.unwrap_or_default(),
                    model: row.get::<String>(3)?.unwrap_or_default(),
                    handler: row.get::<bool>(4)?.unwrap_or(false),
                    defaults: row
                        .get::<JsonB>(5)?
                        .map(|j| j.0)
                        .unwrap_or(serde_json::Value::Null),
                    contact_policy: row.get::<String>(6)?.unwrap_or_default(),
                    bounced_content: row.get::<String>(7)?,
                    force_thread_id: row.get::<i64>(8)?,
                    address: row.get::<String>(9)?.unwrap_or_default(),
                })
            })
            .transpose()
    }))
}

/// Creates the alias's record: its handler with the message, or the default insert. (Run
/// read-write: a handler writes.)
pub fn create_record(alias: &Alias, message: serde_json::Value, fields: serde_json::Value) -> i64 {
    let (sql, argument) = if alias.handler {
        (
            "SELECT mail_gateway.alias_call_handler(a.handler, $2) FROM mail_gateway.alias a WHERE a.id = $1",
            message,
        )
    } else {
        (
            "SELECT mail_gateway.alias_default_insert(a.model::regclass, $2) FROM mail_gateway.alias a WHERE a.id = $1",
            fields,
        )
    };
    spi(Spi::connect_mut(|client| {
        let rows = client.update(sql, None, &[alias.id.into(), JsonB(argument).into()])?;
        match rows.into_iter().next() {
            Some(row) => Ok(row.get::<i64>(1)?.unwrap_or_default()),
            None => Ok(0),
        }
    }))
}

pub fn is_contact(email: &str) -> bool {
    first_text(
        "SELECT 1::text FROM mail_gateway.contact WHERE email = $1",
        &[email.into()],
    )
    .is_some()
}

/// Records created by `sender` through route `route` within the last `minutes`.
pub fn recent_routes(route: &str, sender: &str, minutes: i64) -> i64 {
    first_text(
        "SELECT count(*)::text FROM mail_gateway.inbound
         WHERE route = $1 AND email_from = $2 AND state = 'routed'
           AND received_at > now() - make_interval(mins => $3::int)",
        &[route.into(), sender.into(), (minutes as i32).into()],
    )
    .and_then(|n| n.parse().ok())
    .unwrap_or(0)
}

/// Whether an automatic notice of this `notice` kind went to `to` within the last `minutes`.
pub fn notice_sent(to: &str, notice: &str, minutes: i64) -> bool {
    first_text(
        "SELECT 1::text FROM mail_gateway.mail
         WHERE kind = 'auto_reply' AND headers->>'X-Mail-Gateway-Notice' = $2
           AND email_to = ARRAY[$1] AND created_at > now() - make_interval(mins => $3::int)
         LIMIT 1",
        &[to.into(), notice.into(), (minutes as i32).into()],
    )
    .is_some()
}

/// Whether the same sender wrote the same subject to the catchall within the last `minutes`
/// (another message than `id`).
pub fn catchall_repeat(id: i64, sender: &str, subject: Option<&str>, minutes: i64) -> bool {
    first_text(
        "SELECT 1::text FROM mail_gateway.inbound
         WHERE id <> $1 AND route = 'catchall' AND email_from = $2 AND subject IS NOT DISTINCT FROM $3
           AND received_at > now() - make_interval(mins => $4::int)
         LIMIT 1",
        &[id.into(), sender.into(), subject.into(), (minutes as i32).into()],
    )
    .is_some()
}

/// The mail a bounce is about: by the tracking token of its bounce address (`id` and the
/// check that must match its Message-ID), or by the Message-ID of the returned original.
/// Returns `(id, message_id, recipients)`.
pub fn bounced_mail(
    tagged: Option<(i64, String)>,
    original_message_id: Option<&str>,
) -> Option<(i64, String, Vec<String>)> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT id, message_id, email_to || cc || bcc FROM mail_gateway.mail
                 WHERE id = $1 OR message_id = $2
                 ORDER BY (id = $1) DESC LIMIT 1",
            None,
            &[
                tagged.as_ref().map(|t| t.0).into(),
                original_message_id.into(),
            ],
        )?
        .next()
        .map(|row| {
            Ok((
                row.get::<i64>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<Vec<String>>(3)?.unwrap_or_default(),
            ))
        })
        .transpose()
    }))
}

pub struct BounceRow<'a> {
    pub inbound_id: i64,
    pub mail_id: Option<i64>,
    pub email: &'a str,
    pub status: &'a str,
    pub hard: bool,
    pub diagnostic: Option<&'a str>,
}

/// Records one failed recipient: the bounce row, the mail's red envelope, the contact's
/// counter, and the blocklist rule of SPEC §2.8. Returns whether the address was blocklisted now.
pub fn record_bounce(b: BounceRow<'_>, limit: i64, period: &str, spread: &str) -> bool {
    spi(Spi::connect_mut(|client| {
        super::update(
            client,
            "INSERT INTO mail_gateway.bounce (inbound_id, mail_id, email, status, hard, diagnostic)
             VALUES ($1, $2, lower($3), $4, $5, $6)",
            None,
            &[
                b.inbound_id.into(),
                b.mail_id.into(),
                b.email.into(),
                b.status.into(),
                b.hard.into(),
                b.diagnostic.into(),
            ],
        )?;
        if let Some(mail_id) = b.mail_id {
            super::update(client, "UPDATE mail_gateway.mail SET bounced_at = coalesce(bounced_at, clock_timestamp()),
                     recipients = CASE WHEN recipients ? lower($2)
                         THEN jsonb_set(recipients, ARRAY[lower($2)],
                                        recipients->lower($2) || jsonb_build_object('bounced', $3::text))
                         ELSE recipients END
                 WHERE id = $1",
                None,
                &[mail_id.into(), b.email.into(), b.status.into()],
            )?;
        }
        super::update(
            client,
            "INSERT INTO mail_gateway.contact (email, bounce_count, last_bounce_at)
             VALUES (lower($1), 1, clock_timestamp())
             ON CONFLICT (email) DO UPDATE SET bounce_count = contact.bounce_count + 1,
                                                last_bounce_at = clock_timestamp()",
            None,
            &[b.email.into()],
        )?;
        // At least `limit` bounces within `period`, the first and the last `spread` apart.
        let blocked = super::update(client, "WITH recent AS (
                     SELECT count(*) AS n, min(created_at) AS first, max(created_at) AS last
                     FROM mail_gateway.bounce
                     WHERE email = lower($1) AND created_at > clock_timestamp() - $3::interval)
                 INSERT INTO mail_gateway.blacklist (email, reason)
                 SELECT lower($1), format('%s bounces between %s and %s (mail.bounce.limit %s within %s, spread %s)',
                                          n, first::date, last::date, $2, $3, $4)
                 FROM recent WHERE n >= $2 AND last - first >= $4::interval
                 ON CONFLICT (email) DO NOTHING
                 RETURNING 1",
                None,
                &[b.email.into(), limit.into(), period.into(), spread.into()],
            )?
            .next()
            .is_some();
        Ok::<_, pgrx::spi::SpiError>(blocked)
    }))
}

/// Normal mail from an address resets its bounce counter.
pub fn reset_bounces(email: &str) {
    super::execute(
        "UPDATE mail_gateway.contact SET bounce_count = 0 WHERE email = $1 AND bounce_count > 0",
        &[email.into()],
    )
}
