//! The chatter's tables: messages, followers, and the lookups that tie mail to its thread.

use pgrx::JsonB;
use pgrx::prelude::*;

use super::{exists, first, spi};
use crate::model::MessageKind;

/// Adds (or renames) a follower, and makes sure the address is a known contact.
pub fn follow(model: &str, res_id: i64, email: &str, name: Option<&str>) {
    spi(Spi::connect_mut(|client| {
        super::update(client, "INSERT INTO mail_gateway.follower (model, res_id, email, name) VALUES ($1, $2, $3, $4)
             ON CONFLICT (model, res_id, email) DO UPDATE SET name = coalesce(EXCLUDED.name, follower.name)",
            None,
            &[model.into(), res_id.into(), email.into(), name.into()],
        )?;
        super::update(
            client,
            "INSERT INTO mail_gateway.contact (email, name) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING",
            None,
            &[email.into(), name.into()],
        )?;
        Ok::<_, pgrx::spi::SpiError>(())
    }))
}

/// Removes a follower; whether there was one.
pub fn unfollow(model: &str, res_id: i64, email: &str) -> bool {
    first::<i64>(
        "WITH gone AS (DELETE FROM mail_gateway.follower
                       WHERE model = $1 AND res_id = $2 AND email = mail_gateway.normalize_email($3)
                       RETURNING 1)
         SELECT count(*) FROM gone",
        &[model.into(), res_id.into(), email.into()],
    )
    .is_some_and(|n| n != 0)
}

/// `(email, name)` of each follower of a thread.
pub fn followers(model: &str, res_id: i64) -> Vec<(String, Option<String>)> {
    spi(Spi::connect(|client| {
        super::select(client, "SELECT email, name FROM mail_gateway.follower WHERE model = $1 AND res_id = $2 ORDER BY id",
                None,
                &[model.into(), res_id.into()],
            )?
            .map(|row| Ok((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?)))
            .collect()
    }))
}

pub fn is_follower(model: &str, res_id: i64, email: &str) -> bool {
    exists(
        "SELECT 1 FROM mail_gateway.follower WHERE model = $1 AND res_id = $2 AND email = $3",
        &[model.into(), res_id.into(), email.into()],
    )
}

/// What a new message of a thread needs to know about it: the Message-IDs of its first and
/// latest messages (oldest first), the latest message's id, and the thread's subject.
pub struct ThreadState {
    pub message_ids: Vec<String>,
    pub last_id: Option<i64>,
    pub subject: Option<String>,
}

pub fn thread_state(model: &str, res_id: i64) -> ThreadState {
    let rows: Vec<(i64, String, Option<String>)> = spi(Spi::connect(|client| {
        super::select(
            client,
            "(SELECT id, message_id, subject FROM mail_gateway.message
                  WHERE model = $1 AND res_id = $2 ORDER BY id LIMIT 1)
                 UNION
                 (SELECT id, message_id, subject FROM mail_gateway.message
                  WHERE model = $1 AND res_id = $2 ORDER BY id DESC LIMIT 9)
                 ORDER BY 1",
            None,
            &[model.into(), res_id.into()],
        )?
        .map(|row| {
            Ok((
                row.get::<i64>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<String>(3)?,
            ))
        })
        .collect()
    }));
    ThreadState {
        last_id: rows.last().map(|r| r.0),
        subject: rows.first().and_then(|r| r.2.clone()),
        message_ids: rows.into_iter().map(|r| r.1).collect(),
    }
}

pub struct NewMessage<'a> {
    pub model: &'a str,
    pub res_id: i64,
    pub message_id: &'a str,
    pub parent_id: Option<i64>,
    pub author_email: Option<&'a str>,
    pub author_name: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub body_text: Option<&'a str>,
    pub body_html: Option<&'a str>,
    pub attachments: Option<JsonB>,
    pub kind: MessageKind,
    pub inbound_id: Option<i64>,
}

pub fn insert_message(m: NewMessage<'_>) -> i64 {
    // Written as the gateway: a planted Message-ID would steer replies into another thread.
    super::as_gateway(|| first::<i64>(
        "INSERT INTO mail_gateway.message (model, res_id, message_id, parent_id, author_email, author_name,
             subject, body_text, body_html, attachments, kind, inbound_id)
         VALUES ($1, $2, $3, $4, lower($5), $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        &[
            m.model.into(),
            m.res_id.into(),
            m.message_id.into(),
            m.parent_id.into(),
            m.author_email.into(),
            m.author_name.into(),
            m.subject.into(),
            m.body_text.into(),
            m.body_html.into(),
            m.attachments.into(),
            m.kind.as_str().into(),
            m.inbound_id.into(),
        ],
    ))
    .unwrap_or_default()
}

/// The thread that one of `candidates` (tried in order) belongs to: a stored message with that
/// Message-ID, or a mail we sent for a record. Returns `(model, res_id, message id)`.
pub fn find_thread(candidates: Vec<String>) -> Option<(String, i64, Option<i64>)> {
    if candidates.is_empty() {
        return None;
    }
    // With an array parameter the planner's generic estimate (ten elements) always loses to a
    // custom plan for the one or two Message-IDs of a reply, so PostgreSQL planned this query
    // anew for every message (half its time, a tenth of routing a reply). The generic plan
    // is the same two index scans.
    super::with_setting(c"plan_cache_mode", c"force_generic_plan", || {
        find_thread_planned(candidates)
    })
}

fn find_thread_planned(candidates: Vec<String>) -> Option<(String, i64, Option<i64>)> {
    spi(Spi::connect(|client| {
        super::select(client, "SELECT model, res_id, message FROM (
                     SELECT m.model, m.res_id, m.id AS message, array_position($1, m.message_id) AS rank
                     FROM mail_gateway.message m WHERE m.message_id = ANY($1)
                     UNION ALL
                     SELECT q.model, q.res_id, q.message_ref, array_position($1, q.message_id)
                     FROM mail_gateway.mail q
                     WHERE q.message_id = ANY($1) AND q.model IS NOT NULL AND q.res_id IS NOT NULL
                 ) found ORDER BY rank, message DESC NULLS LAST LIMIT 1",
                None,
                &[candidates.into()],
            )?
            .next()
            .map(|row| {
                Ok((
                    row.get::<String>(1)?.unwrap_or_default(),
                    row.get::<i64>(2)?.unwrap_or_default(),
                    row.get::<i64>(3)?,
                ))
            })
            .transpose()
    }))
}

/// Whether a Message-ID is one of ours (a chatter message or a mail we sent).
pub fn is_known_message_id(message_id: &str) -> bool {
    exists(
        "SELECT 1 WHERE EXISTS (SELECT 1 FROM mail_gateway.message WHERE message_id = $1)
                           OR EXISTS (SELECT 1 FROM mail_gateway.mail WHERE message_id = $1)",
        &[message_id.into()],
    )
}

/// The address of the alias that posts into this thread, if one does (`force_thread_id`).
pub fn thread_alias(model: &str, res_id: i64) -> Option<String> {
    first(
        "SELECT a.name || '@' || coalesce(a.domain,
                    (SELECT value FROM mail_gateway.parameter WHERE key = 'mail.catchall.domain'))
         FROM mail_gateway.alias a
         WHERE a.active AND a.force_thread_id = $2 AND a.model = $1 ORDER BY a.id LIMIT 1",
        &[model.into(), res_id.into()],
    )
}
