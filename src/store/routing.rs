//! What routing reads and writes: the message to route, aliases and contact policies, loop
//! counts, bounces and the blocklist rule.

use pgrx::JsonB;
use pgrx::prelude::*;

use super::{spi, text};
use crate::authentication::Verdict;
use crate::model::ContactPolicy;
use crate::routing::RoutingSettings;
use crate::routing::address::Sender;
use crate::routing::route::{Alias, BounceRow, Routed, SentMail, State, Thread};

/// A stored message waiting for its route.
pub struct Pending {
    pub server_id: Option<i64>,
    pub raw: Vec<u8>,
    /// `None` only for a value inbound_state_check would refuse.
    pub state: Option<State>,
    /// The server's fallback alias (docs/REFERENCE.md, "Routes").
    pub fallback_alias: Option<String>,
    /// Who wrote it, as verified when it was received.
    pub authentication: Verdict,
}

/// Read-write, so that it sees a message stored earlier in the same statement
/// (`process_message` stores, then routes).
pub fn pending(id: i64) -> Option<Pending> {
    spi(Spi::connect_mut(|client| {
        super::update(
            client,
            "SELECT i.id, i.server_id, i.raw, i.state, s.fallback_alias, i.auth_verdict
                 FROM mail_gateway.inbound i
                 LEFT JOIN mail_gateway.incoming_server s ON s.id = i.server_id
                 WHERE i.id = $1",
            None,
            &[id.into()],
        )?
        .next()
        .map(|row| {
            Ok(Pending {
                server_id: row.get_by_name::<i64, _>("server_id")?,
                raw: row.get_by_name::<Vec<u8>, _>("raw")?.unwrap_or_default(),
                state: text(&row, "state")?.parse().ok(),
                fallback_alias: row.get_by_name::<String, _>("fallback_alias")?,
                authentication: text(&row, "auth_verdict")?.parse().unwrap_or(Verdict::None),
            })
        })
        .transpose()
    }))
}

/// A stored message's state, without reading its bytes.
pub fn state(id: i64) -> Option<State> {
    super::first::<String>(
        "SELECT state FROM mail_gateway.inbound WHERE id = $1",
        &[id.into()],
    )
    .and_then(|s| s.parse().ok())
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

/// Records the route taken on the message.
pub fn record_route(id: i64, routed: &Routed) {
    super::execute(
        "UPDATE mail_gateway.inbound SET state = $2, route = $3, reason = $4, model = $5, res_id = $6,
             message_ref = $7, relayed = $8, routed_at = clock_timestamp()
         WHERE id = $1",
        &[
            id.into(),
            routed.state.as_str().into(),
            routed.route.as_deref().into(),
            routed.reason.as_str().into(),
            routed.thread.as_ref().map(|t| t.model.as_str()).into(),
            routed.thread.as_ref().map(|t| t.res_id).into(),
            routed.message.into(),
            (routed.relayed as i32).into(),
        ],
    )
}

/// The first active alias (in the order of `addresses`) that one of them names; with
/// `by_name`, the alias of that local part on the alias domain instead.
pub fn find_alias(addresses: &[String], by_name: Option<&str>) -> Option<Alias> {
    let addresses: Vec<String> = addresses.to_vec();
    spi(Spi::connect(|client| {
        super::select(client, "SELECT a.id, a.name, a.model, a.defaults, a.contact_policy,
                        a.bounced_content, a.force_thread_id, a.name || '@' || d.domain AS address
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
                    id: row.get_by_name::<i64, _>("id")?.unwrap_or_default(),
                    name: text(&row, "name")?,
                    model: text(&row, "model")?,
                    defaults: row
                        .get_by_name::<JsonB, _>("defaults")?
                        .map(|j| j.0)
                        .unwrap_or(serde_json::Value::Null),
                    // alias_contact_policy_check allows no other values.
                    contact_policy: text(&row, "contact_policy")?
                        .parse()
                        .unwrap_or(ContactPolicy::Everyone),
                    bounced_content: row.get_by_name::<String, _>("bounced_content")?,
                    force_thread_id: row.get_by_name::<i64, _>("force_thread_id")?,
                    address: text(&row, "address")?,
                })
            })
            .transpose()
    }))
}

pub fn is_contact(email: &str) -> bool {
    super::exists(
        "SELECT 1 FROM mail_gateway.contact WHERE email = $1",
        &[email.into()],
    )
}

/// Records created by `sender` through route `route` within the last `minutes`.
pub fn recent_routes(route: &str, sender: &str, minutes: i64) -> i64 {
    super::first::<i64>(
        "SELECT count(*) FROM mail_gateway.inbound
         WHERE route = $1 AND email_from = $2 AND state = 'routed'
           AND received_at > now() - make_interval(mins => $3::int)",
        &[route.into(), sender.into(), (minutes as i32).into()],
    )
    .unwrap_or(0)
}

/// Automatic answers queued: to `to` within the last `minutes` of this `notice` kind, to `to`
/// within them of any kind, and since 00:00 UTC in all.
pub fn answers_queued(to: &str, notice: &str, minutes: i64) -> (i64, i64, i64) {
    spi(Spi::connect(|client| {
        let row = super::select(
            client,
            "SELECT count(*) FILTER (WHERE recent AND email_to = ARRAY[$1]
                                       AND headers->>'X-Mail-Gateway-Notice' = $2),
                    count(*) FILTER (WHERE recent AND email_to = ARRAY[$1]),
                    count(*) FILTER (WHERE created_at >= date_trunc('day', now(), 'UTC'))
             FROM (SELECT email_to, headers, created_at,
                          created_at > now() - make_interval(mins => $3::int) AS recent
                   FROM mail_gateway.mail
                   WHERE kind = 'auto_reply'
                     AND created_at >= least(date_trunc('day', now(), 'UTC'),
                                             now() - make_interval(mins => $3::int))) m",
            None,
            &[to.into(), notice.into(), (minutes as i32).into()],
        )?
        .first();
        Ok::<_, pgrx::spi::SpiError>((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<i64>(2)?.unwrap_or(0),
            row.get::<i64>(3)?.unwrap_or(0),
        ))
    }))
}

/// Received messages relayed within the last `minutes`: in `thread`, and from `sender`, each
/// counted up to its cap.
pub fn relayed(thread: &Thread, sender: &str, minutes: i64, caps: (i64, i64)) -> (i64, i64) {
    spi(Spi::connect(|client| {
        let row = super::select(
            client,
            "SELECT (SELECT count(*) FROM (SELECT FROM mail_gateway.inbound
                     WHERE relayed > 0 AND model = $1 AND res_id = $2
                       AND received_at > now() - make_interval(mins => $4::int) LIMIT $5) t),
                    (SELECT count(*) FROM (SELECT FROM mail_gateway.inbound
                     WHERE relayed > 0 AND email_from = $3
                       AND received_at > now() - make_interval(mins => $4::int) LIMIT $6) s)",
            None,
            &[
                thread.model.as_str().into(),
                thread.res_id.into(),
                sender.into(),
                (minutes as i32).into(),
                caps.0.max(0).into(),
                caps.1.max(0).into(),
            ],
        )?
        .first();
        Ok::<_, pgrx::spi::SpiError>((
            row.get::<i64>(1)?.unwrap_or(0),
            row.get::<i64>(2)?.unwrap_or(0),
        ))
    }))
}

/// Whether the same sender wrote the same subject to the catchall within the last `minutes`
/// (another message than `id`).
pub fn catchall_repeat(id: i64, sender: &str, subject: Option<&str>, minutes: i64) -> bool {
    super::exists(
        "SELECT 1 FROM mail_gateway.inbound
         WHERE id <> $1 AND route = 'catchall' AND email_from = $2 AND subject IS NOT DISTINCT FROM $3
           AND received_at > now() - make_interval(mins => $4::int)
         LIMIT 1",
        &[id.into(), sender.into(), subject.into(), (minutes as i32).into()],
    )
}

/// A mail we sent, by id (a tracked bounce address) or by Message-ID (a returned original),
/// with its recipients (lower-case addresses) and thread.
pub fn sent_mail(id: Option<i64>, message_id: Option<&str>) -> Option<SentMail> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT id, message_id, email_to || cc || bcc AS recipients, model, res_id FROM mail_gateway.mail
                 WHERE id = $1 OR message_id = $2
                 ORDER BY (id = $1) DESC LIMIT 1",
            None,
            &[id.into(), message_id.into()],
        )?
        .next()
        .map(|row| {
            let recipients = row
                .get_by_name::<Vec<String>, _>("recipients")?
                .unwrap_or_default();
            let model = row.get_by_name::<String, _>("model")?;
            let res_id = row.get_by_name::<i64, _>("res_id")?;
            Ok(SentMail {
                id: row.get_by_name::<i64, _>("id")?.unwrap_or_default(),
                message_id: text(&row, "message_id")?,
                recipients: recipients
                    .iter()
                    .filter_map(|r| Sender::parse(r).ok())
                    .map(|r| r.normalized())
                    .collect(),
                thread: model
                    .zip(res_id)
                    .map(|(model, res_id)| Thread { model, res_id }),
            })
        })
        .transpose()
    }))
}

/// Records one failed recipient of bounce `inbound_id`. A trusted row (tied to a mail we sent
/// and naming one of its recipients) also marks the mail (the red envelope), raises the
/// contact's counter and applies the blocklist rule of docs/REFERENCE.md, "Routes" — counting only trusted
/// bounces since the counter was last reset. Returns whether the address was blocklisted now.
pub fn record_bounce(inbound_id: i64, b: BounceRow<'_>, settings: &RoutingSettings) -> bool {
    let f = b.failed;
    spi(Spi::connect_mut(|client| {
        super::update(
            client,
            "INSERT INTO mail_gateway.bounce (inbound_id, mail_id, email, status, hard, diagnostic, trusted)
             VALUES ($1, $2, lower($3), $4, $5, $6, $7)",
            None,
            &[
                inbound_id.into(),
                b.mail_id.into(),
                f.email.as_str().into(),
                f.status.as_str().into(),
                f.hard.into(),
                f.diagnostic.as_deref().into(),
                b.trusted.into(),
            ],
        )?;
        if !b.trusted {
            return Ok(false);
        }
        if let Some(mail_id) = b.mail_id {
            super::update(client, "UPDATE mail_gateway.mail SET bounced_at = coalesce(bounced_at, clock_timestamp()),
                     recipients = CASE WHEN recipients ? lower($2)
                         THEN jsonb_set(recipients, ARRAY[lower($2)],
                                        recipients->lower($2) || jsonb_build_object('bounced', $3::text))
                         ELSE recipients END
                 WHERE id = $1",
                None,
                &[mail_id.into(), f.email.as_str().into(), f.status.as_str().into()],
            )?;
        }
        super::update(
            client,
            "INSERT INTO mail_gateway.contact (email, bounce_count, last_bounce_at)
             VALUES (lower($1), 1, clock_timestamp())
             ON CONFLICT (email) DO UPDATE SET bounce_count = contact.bounce_count + 1,
                                                last_bounce_at = clock_timestamp()",
            None,
            &[f.email.as_str().into()],
        )?;
        blocklist_if_due(client, &f.email, settings)
    }))
}

/// Normal mail from an address resets its bounce counter (and, through the table's trigger,
/// what the blocklist rule counts).
pub fn reset_bounces(email: &str) {
    super::execute(
        "UPDATE mail_gateway.contact SET bounce_count = 0 WHERE email = $1 AND bounce_count > 0",
        &[email.into()],
    )
}

/// Blocklists `email` when its trusted bounces say so; whether it did.
fn blocklist_if_due(
    client: &mut pgrx::spi::SpiClient<'_>,
    email: &str,
    settings: &RoutingSettings,
) -> pgrx::spi::SpiResult<bool> {
    // At least `limit` trusted bounces within `period` and since the last reset, the first
    // and the last `spread` apart.
    Ok(super::update(client, "WITH recent AS (
                 SELECT count(*) AS n, min(b.created_at) AS first, max(b.created_at) AS last
                 FROM mail_gateway.bounce b
                 LEFT JOIN mail_gateway.contact c ON c.email = b.email
                 WHERE b.email = lower($1) AND b.trusted
                   AND b.created_at > clock_timestamp() - $3::interval
                   AND b.created_at > coalesce(c.bounces_reset_at, '-infinity'))
             INSERT INTO mail_gateway.blacklist (email, reason)
             SELECT lower($1), format('%s bounces between %s and %s (mail.bounce.limit %s within %s, spread %s)',
                                      n, first::date, last::date, $2, $3, $4)
             FROM recent WHERE n >= $2 AND last - first >= $4::interval
             ON CONFLICT (email) DO NOTHING
             RETURNING 1",
            None,
            &[
                email.into(),
                settings.bounce_limit.into(),
                settings.bounce_period.as_str().into(),
                settings.bounce_spread.as_str().into(),
            ],
        )?
        .next()
        .is_some())
}
