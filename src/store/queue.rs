//! The outgoing queue: enqueue, claim, record, retry, cancel. Claims are short transactions
//! that commit `sending` with a lease; results are recorded in another transaction. Nothing
//! here runs while the network is being used.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pgrx::JsonB;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::{first_text, spi};
use crate::delivery::{MailState, Outcome, RecipientState, RecipientStatus, Recipients};
use crate::routing::address::parse_from_filter;
use crate::routing::server::Server;
use crate::smtp::{Auth, Encryption, ServerConfig};

pub struct NewMail<'a> {
    /// Random hex; the Message-ID is `<token@catchall domain>` (the From domain without one).
    pub message_token: String,
    pub from_domain: String,
    pub email_from: &'a str,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Option<&'a str>,
    pub subject: &'a str,
    pub body_text: Option<&'a str>,
    pub body_html: Option<&'a str>,
    pub headers: Option<JsonB>,
    pub attachments: Option<JsonB>,
    pub scheduled_at: Option<TimestampWithTimeZone>,
    pub kind: &'a str,
    pub model: Option<&'a str>,
    pub res_id: Option<i64>,
    /// The chatter message this mail notifies.
    pub message_ref: Option<i64>,
}

const ENQUEUE: &str = "INSERT INTO mail_gateway.mail (message_id, email_from, email_to, cc, bcc, reply_to, subject,
         body_text, body_html, headers, attachments, scheduled_at, next_attempt_at, kind, model, res_id,
         message_ref, priority)
     VALUES ('<' || $1 || '@' || coalesce((SELECT value FROM mail_gateway.parameter
                                           WHERE key = 'mail.catchall.domain'), $16) || '>',
             $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($12, now()), $13, $14, $15, $17,
             CASE WHEN $13 = 'auto_reply' THEN 2 ELSE 0 END)
     RETURNING id";

thread_local! {
    /// send_mail is the hot path of ERP code: its INSERT is planned once per session.
    static ENQUEUE_PLAN: std::cell::OnceCell<pgrx::spi::OwnedPreparedStatement> = const { std::cell::OnceCell::new() };
}

pub fn enqueue(mail: NewMail<'_>) -> i64 {
    use pgrx::PgOid;
    use pgrx::pg_sys::{INT8OID, JSONBOID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZOID};
    let types: Vec<PgOid> = [
        TEXTOID,
        TEXTOID,
        TEXTARRAYOID,
        TEXTARRAYOID,
        TEXTARRAYOID,
        TEXTOID,
        TEXTOID,
        TEXTOID,
        TEXTOID,
        JSONBOID,
        JSONBOID,
        TIMESTAMPTZOID,
        TEXTOID,
        TEXTOID,
        INT8OID,
        TEXTOID,
        INT8OID,
    ]
    .into_iter()
    .map(PgOid::from)
    .collect();
    let args = [
        mail.message_token.into(),
        mail.email_from.into(),
        mail.to.into(),
        mail.cc.into(),
        mail.bcc.into(),
        mail.reply_to.into(),
        mail.subject.into(),
        mail.body_text.into(),
        mail.body_html.into(),
        mail.headers.into(),
        mail.attachments.into(),
        mail.scheduled_at.into(),
        mail.kind.into(),
        mail.model.into(),
        mail.res_id.into(),
        mail.from_domain.into(),
        mail.message_ref.into(),
    ];
    spi(ENQUEUE_PLAN.with(|plan| {
        Spi::connect_mut(|client| {
            if plan.get().is_none() {
                let _ = plan.set(client.prepare(ENQUEUE, &types)?.keep());
            }
            let stmt = plan.get().expect("prepared above");
            client.update(stmt, None, &args)?.first().get_one::<i64>()
        })
    }))
    .expect("INSERT … RETURNING gives a row")
}

/// One notification per follower, in one statement: what they share is bound once, the
/// Message-ID token and the recipient per mail. Returns how many were queued.
pub struct Notification<'a> {
    pub from_domain: &'a str,
    pub email_from: &'a str,
    pub reply_to: Option<&'a str>,
    pub subject: &'a str,
    pub body_text: Option<&'a str>,
    pub body_html: Option<&'a str>,
    pub headers: Option<JsonB>,
    pub attachments: Option<JsonB>,
    pub model: &'a str,
    pub res_id: i64,
    pub message_ref: i64,
    /// 0 for the ERP's own posts, 1 for relays of received mail (claimed after the ERP's).
    pub priority: i16,
}

pub fn enqueue_notifications(n: Notification<'_>, recipients: Vec<String>) -> usize {
    let count = recipients.len();
    let tokens: Vec<String> = (0..count).map(|_| super::random_token()).collect();
    super::execute(
        "INSERT INTO mail_gateway.mail (message_id, email_from, email_to, reply_to, subject, body_text,
             body_html, headers, attachments, kind, model, res_id, message_ref, priority)
         SELECT '<' || t.token || '@' || coalesce((SELECT value FROM mail_gateway.parameter
                                                   WHERE key = 'mail.catchall.domain'), $3) || '>',
                $4, ARRAY[t.recipient], $5, $6, $7, $8, $9, $10, 'transactional', $11, $12, $13, $14
         FROM unnest($1::text[], $2::text[]) AS t(token, recipient)",
        &[
            tokens.into(),
            recipients.into(),
            n.from_domain.into(),
            n.email_from.into(),
            n.reply_to.into(),
            n.subject.into(),
            n.body_text.into(),
            n.body_html.into(),
            n.headers.into(),
            n.attachments.into(),
            n.model.into(),
            n.res_id.into(),
            n.message_ref.into(),
            n.priority.into(),
        ],
    );
    count
}

/// A claimed mail, as the worker needs it.
pub struct QueuedMail {
    pub id: i64,
    pub message_id: String,
    pub kind: String,
    pub email_from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Option<String>,
    pub subject: String,
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    pub headers: Option<serde_json::Value>,
    pub attachments: Option<serde_json::Value>,
    pub attempts: i32,
    /// Since it was queued (or scheduled): old mail is not retried for ever.
    pub age: Duration,
    /// What earlier attempts recorded per recipient.
    pub recipients: Recipients,
}

pub fn recipients_from_json(value: &serde_json::Value) -> Recipients {
    let mut out = Recipients::new();
    if let Some(map) = value.as_object() {
        for (address, status) in map {
            if let Some(state) = status
                .get("state")
                .and_then(|s| s.as_str())
                .and_then(RecipientState::parse)
            {
                let reason = status
                    .get("reason")
                    .and_then(|r| r.as_str())
                    .map(str::to_string);
                out.insert(address.clone(), RecipientStatus { state, reason });
            }
        }
    }
    out
}

pub fn recipients_to_json(recipients: &Recipients) -> serde_json::Value {
    let map = recipients
        .iter()
        .map(|(address, status)| {
            let mut entry = serde_json::json!({ "state": status.state.as_str() });
            if let Some(reason) = &status.reason {
                entry["reason"] = serde_json::Value::String(reason.clone());
            }
            (address.clone(), entry)
        })
        .collect();
    serde_json::Value::Object(map)
}

/// Mail this worker held when it died is free again at once: no other process can be sending
/// it, since the worker index is ours.
pub fn release_own(worker: i32) {
    super::execute(
        "UPDATE mail_gateway.mail SET state = 'outgoing', lease_until = NULL, claimed_by = NULL
         WHERE state = 'sending' AND claimed_by = $1",
        &[worker.into()],
    );
}

/// A sender runs the same few statements thousands of times a minute; their arrays made
/// PostgreSQL plan each execution anew (a custom plan looked cheaper every time), which cost a
/// sixth of the sender's time. Its session uses the kept generic plans — and no sequential
/// scan where an index serves, which a plan made while the queue was empty would keep for
/// good. No JIT either: the penalty that steers the planner off sequential scans would make
/// every small statement look worth compiling.
pub fn prefer_generic_plans() {
    spi(Spi::run(
        "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; SET jit = off",
    ));
}

/// Mail of a sender that vanished is free again once its lease ran out.
pub fn release_expired() {
    spi(Spi::run(
        "UPDATE mail_gateway.mail SET state = 'outgoing', lease_until = NULL, claimed_by = NULL
         WHERE state = 'sending' AND lease_until < now()",
    ));
}

/// How many more mails may be claimed today under `mail.send.daily_limit`, or `None` when
/// there is no limit. Serialised between senders by an advisory lock held until commit.
fn daily_allowance(
    client: &mut pgrx::spi::SpiClient<'_>,
) -> Result<Option<i64>, pgrx::spi::SpiError> {
    let limit: i64 = super::select(client, "SELECT coalesce(value, '0')::bigint FROM mail_gateway.parameter WHERE key = 'mail.send.daily_limit'",
            None,
            &[],
        )?
        .first()
        .get_one::<i64>()?
        .unwrap_or(0);
    if limit <= 0 {
        return Ok(None);
    }
    super::update(
        client,
        "SELECT pg_advisory_xact_lock(hashtext('mail_gateway.daily_limit'))",
        None,
        &[],
    )?;
    let used: i64 = super::select(
        client,
        "SELECT count(*) FROM mail_gateway.mail
             WHERE sent_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                OR state = 'sending'",
        None,
        &[],
    )?
    .first()
    .get_one::<i64>()?
    .unwrap_or(0);
    let left = (limit - used).max(0);
    if left == 0 {
        // Everything due waits for the next UTC day, with a reason that says so.
        super::update(client, "UPDATE mail_gateway.mail
             SET next_attempt_at = date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day',
                 failure_reason = format('daily limit of %s mails reached (mail.send.daily_limit); waits for the next UTC day', $1::bigint)
             WHERE state = 'outgoing' AND next_attempt_at <= now()",
            None,
            &[limit.into()],
        )?;
    }
    Ok(Some(left))
}

/// The order in which due mail is claimed — the one place that decides which mail goes first:
/// lower `priority` first, then the longest due, then the oldest. The index `mail_due_idx`
/// follows it; it ends with `id`, which makes it total.
const CLAIM_ORDER: &str = "priority, next_attempt_at, id";

/// The claim: due mail in `CLAIM_ORDER`, at most `$1` mails and — counting the bodies and
/// attachments as stored — no more than `$4` bytes after the first mail (a mail bigger than the
/// budget is claimed alone).
static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH candidate AS (
             SELECT {CLAIM_ORDER},
                    coalesce(octet_length(body_text), 0) + coalesce(octet_length(body_html), 0)
                        + coalesce(pg_column_size(attachments), 0) AS bytes
             FROM mail_gateway.mail
             WHERE state = 'outgoing' AND next_attempt_at <= now()
             ORDER BY {CLAIM_ORDER}
             LIMIT $1
             FOR UPDATE SKIP LOCKED),
         due AS (
             SELECT id FROM (
                 SELECT id, bytes, sum(bytes) OVER (ORDER BY {CLAIM_ORDER} ROWS UNBOUNDED PRECEDING) AS upto
                 FROM candidate) c
             WHERE upto - bytes < $4)
         UPDATE mail_gateway.mail m
         SET state = 'sending', attempts = m.attempts + 1, claimed_by = $2,
             lease_until = now() + make_interval(secs => $3)
         FROM due WHERE m.id = due.id
         RETURNING m.id, m.message_id, m.kind, m.email_from, m.email_to, m.cc, m.bcc, m.reply_to,
                   m.subject, m.body_text, m.body_html, m.headers, m.attachments, m.attempts,
                   extract(epoch FROM now() - coalesce(m.scheduled_at, m.created_at))::float8,
                   m.recipients"
    )
});

/// Claims due mails for `worker`, at most `batch` of them and about `bytes` of content: they
/// are `sending` when this transaction commits, with a lease of `lease`.
pub fn claim(worker: i32, batch: i64, bytes: i64, lease: Duration) -> Vec<QueuedMail> {
    // The claim's commit need not wait for the disk: a claim lost in a crash leaves the mail
    // `outgoing`, which is what the restarted sender makes of it anyway. (Results are
    // committed durably: they are what keeps a mail from being sent twice.)
    spi(Spi::run("SET LOCAL synchronous_commit = off"));
    spi(Spi::connect_mut(|client| {
        let batch = match daily_allowance(client)? {
            Some(left) => batch.min(left),
            None => batch,
        };
        if batch == 0 {
            return Ok(vec![]);
        }
        let rows = super::update(
            client,
            &CLAIM,
            None,
            &[
                batch.into(),
                worker.into(),
                lease.as_secs_f64().into(),
                bytes.into(),
            ],
        )?;
        let mut mails = Vec::with_capacity(rows.len());
        for row in rows {
            mails.push(QueuedMail {
                id: row.get::<i64>(1)?.unwrap_or_default(),
                message_id: row.get::<String>(2)?.unwrap_or_default(),
                kind: row.get::<String>(3)?.unwrap_or_default(),
                email_from: row.get::<String>(4)?.unwrap_or_default(),
                to: row.get::<Vec<String>>(5)?.unwrap_or_default(),
                cc: row.get::<Vec<String>>(6)?.unwrap_or_default(),
                bcc: row.get::<Vec<String>>(7)?.unwrap_or_default(),
                reply_to: row.get::<String>(8)?,
                subject: row.get::<String>(9)?.unwrap_or_default(),
                body_text: row.get::<String>(10)?,
                body_html: row.get::<String>(11)?,
                headers: row.get::<JsonB>(12)?.map(|j| j.0),
                attachments: row.get::<JsonB>(13)?.map(|j| j.0),
                attempts: row.get::<i32>(14)?.unwrap_or(1),
                age: Duration::from_secs_f64(row.get::<f64>(15)?.unwrap_or(0.0).max(0.0)),
                recipients: recipients_from_json(
                    &row.get::<JsonB>(16)?.map(|j| j.0).unwrap_or_default(),
                ),
            });
        }
        // UPDATE … RETURNING keeps no order; ids follow the queue closely enough.
        mails.sort_by_key(|m| m.id);
        Ok(mails)
    }))
}

/// The blocklisted addresses among `addresses` (lower-case).
pub fn blocklisted(addresses: Vec<String>) -> HashSet<String> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT email FROM mail_gateway.blacklist WHERE active AND email = ANY($1)",
            None,
            &[addresses.into()],
        )?
        .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
        .collect()
    }))
}

/// An outgoing server: what the choice needs, and everything needed to connect, secrets
/// included.
pub struct ServerRow {
    pub server: Server,
    pub config: ServerConfig,
    /// Connections this database may keep open to it at once (all senders together).
    pub max_connections: i32,
    /// Mails per connection before it is closed and opened again.
    pub max_mails_per_connection: i32,
}

/// Every active server.
pub fn server_configs(timeout: Duration) -> HashMap<i64, ServerRow> {
    load_servers(None, timeout)
}

fn load_servers(name: Option<&str>, timeout: Duration) -> HashMap<i64, ServerRow> {
    spi(Spi::connect(|client| {
        super::select(client, "SELECT id, name, host, port, encryption, auth, username, password, client_cert, client_key,
                        verify_tls, ca_cert, priority, from_filter, max_connections,
                        max_mails_per_connection
                 FROM mail_gateway.outgoing_server
                 WHERE CASE WHEN $1::text IS NULL THEN active ELSE name = $1 END",
                None,
                &[name.into()],
            )?
            .map(|row| {
                let encryption = match row.get::<String>(5)?.as_deref() {
                    Some("ssl") => Encryption::Ssl,
                    Some("starttls") => Encryption::StartTls,
                    _ => Encryption::None,
                };
                let auth = match row.get::<String>(6)?.as_deref() {
                    Some("login") => Auth::Login,
                    Some("certificate") => Auth::Certificate,
                    Some("xoauth2") => Auth::Xoauth2,
                    _ => Auth::None,
                };
                let config = ServerConfig {
                    host: row.get::<String>(3)?.unwrap_or_default(),
                    port: row.get::<i32>(4)?.unwrap_or(25) as u16,
                    encryption,
                    auth,
                    username: row.get::<String>(7)?,
                    password: row.get::<String>(8)?,
                    client_cert: row.get::<String>(9)?,
                    client_key: row.get::<String>(10)?,
                    verify_tls: row.get::<bool>(11)?.unwrap_or(true),
                    ca_cert: row.get::<String>(12)?,
                    timeout,
                };
                let id = row.get::<i64>(1)?.unwrap_or_default();
                let server = Server {
                    id,
                    name: row.get::<String>(2)?.unwrap_or_default(),
                    priority: row.get::<i32>(13)?.unwrap_or_default(),
                    from_filter: parse_from_filter(&row.get::<String>(14)?.unwrap_or_default()).unwrap_or_default(),
                };
                Ok((id, ServerRow {
                    server,
                    config,
                    max_connections: row.get::<i32>(15)?.unwrap_or(1),
                    max_mails_per_connection: row.get::<i32>(16)?.unwrap_or(1),
                }))
            })
            .collect()
    }))
}

/// One server by name, active or not ("Test Connection" works on inactive servers too).
pub fn server_config_by_name(name: &str, timeout: Duration) -> Option<(i64, ServerRow)> {
    load_servers(Some(name), timeout).into_iter().next()
}

/// The active DKIM key of each domain (the newest when several are active).
pub fn dkim_keys() -> HashMap<String, (String, String, String)> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT DISTINCT ON (domain) domain, selector, algorithm, private_key
                 FROM mail_gateway.dkim_key WHERE active ORDER BY domain, created_at DESC, id DESC",
            None,
            &[],
        )?
        .map(|row| {
            Ok((
                row.get::<String>(1)?.unwrap_or_default(),
                (
                    row.get::<String>(2)?.unwrap_or_default(),
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<String>(4)?.unwrap_or_default(),
                ),
            ))
        })
        .collect()
    }))
}

/// One mail's result, to be recorded.
pub struct Recorded {
    pub id: i64,
    pub outcome: Outcome,
    pub server_id: Option<i64>,
    pub smtp_from: Option<String>,
    pub header_from: Option<String>,
}

/// Records the results of a group in one statement. Mail that is no longer ours (cancelled
/// meanwhile, or taken over after our lease ran out) is left alone. The rows are found by key
/// (`id = ANY`); `IS TRUE` keeps the partial index of sending mail out of the plan, which would
/// visit every mail being sent for each group (a sixth of the sender's time when it did).
pub fn record(worker: i32, results: &[Recorded]) {
    if results.is_empty() {
        return;
    }
    let mut ids = Vec::with_capacity(results.len());
    let mut states = Vec::with_capacity(results.len());
    let mut delays = Vec::with_capacity(results.len());
    let mut recipients = Vec::with_capacity(results.len());
    let mut types = Vec::with_capacity(results.len());
    let mut reasons = Vec::with_capacity(results.len());
    let mut servers = Vec::with_capacity(results.len());
    let mut smtp_froms = Vec::with_capacity(results.len());
    let mut header_froms = Vec::with_capacity(results.len());
    for r in results {
        let (state, delay) = match r.outcome.state {
            MailState::Sent => ("sent", 0.0),
            MailState::Retry(d) => ("outgoing", d.as_secs_f64()),
            MailState::Exception => ("exception", 0.0),
            MailState::Cancel => ("cancel", 0.0),
        };
        ids.push(r.id);
        states.push(state.to_string());
        delays.push(delay);
        recipients.push(JsonB(recipients_to_json(&r.outcome.recipients)));
        types.push(r.outcome.failure_type.clone());
        reasons.push(r.outcome.failure_reason.clone());
        servers.push(r.server_id);
        smtp_froms.push(r.smtp_from.clone());
        header_froms.push(r.header_from.clone());
    }
    super::execute(
        "UPDATE mail_gateway.mail m SET
             state = r.state,
             next_attempt_at = CASE WHEN r.state = 'outgoing' THEN now() + make_interval(secs => r.delay)
                                    ELSE m.next_attempt_at END,
             sent_at = CASE WHEN r.state = 'sent' THEN now() ELSE m.sent_at END,
             recipients = r.recipients, failure_type = r.failure_type, failure_reason = r.failure_reason,
             server_id = coalesce(r.server_id, m.server_id),
             smtp_from = coalesce(r.smtp_from, m.smtp_from),
             header_from = coalesce(r.header_from, m.header_from),
             lease_until = NULL, claimed_by = NULL
         FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::jsonb[], $5::text[], $6::text[],
                     $7::bigint[], $8::text[], $9::text[])
              AS r(id, state, delay, recipients, failure_type, failure_reason, server_id, smtp_from, header_from)
         WHERE m.id = r.id AND m.id = ANY($1) AND (m.state = 'sending') IS TRUE AND m.claimed_by = $10",
        &[
            ids.into(),
            states.into(),
            delays.into(),
            recipients.into(),
            types.into(),
            reasons.into(),
            servers.into(),
            smtp_froms.into(),
            header_froms.into(),
            worker.into(),
        ],
    );
}

/// Mails a server asked us to hold back (421, a rate limit): due again after their wait, and
/// this claim does not count as an attempt (nothing was sent).
pub fn defer(worker: i32, deferred: &[(i64, f64, String)]) {
    if deferred.is_empty() {
        return;
    }
    let ids: Vec<i64> = deferred.iter().map(|d| d.0).collect();
    let waits: Vec<f64> = deferred.iter().map(|d| d.1).collect();
    let reasons: Vec<String> = deferred.iter().map(|d| d.2.clone()).collect();
    super::execute(
        "UPDATE mail_gateway.mail m SET
             state = 'outgoing', attempts = greatest(m.attempts - 1, 0),
             next_attempt_at = now() + make_interval(secs => d.wait),
             failure_reason = d.reason, lease_until = NULL, claimed_by = NULL
         FROM unnest($1::bigint[], $2::float8[], $3::text[]) AS d(id, wait, reason)
         WHERE m.id = d.id AND m.id = ANY($1) AND (m.state = 'sending') IS TRUE AND m.claimed_by = $4",
        &[ids.into(), waits.into(), reasons.into(), worker.into()],
    );
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

/// How long until the next mail is due, if any is waiting.
pub fn next_due() -> Option<Duration> {
    spi(Spi::get_one::<f64>(
        "SELECT greatest(extract(epoch FROM min(next_attempt_at) - now()), 0)::float8
         FROM mail_gateway.mail WHERE state = 'outgoing'",
    ))
    .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

/// `retry_mail`: an exception or cancelled mail goes back to the queue, due now. Returns the
/// state it was in, or `None` when there is no such mail.
pub fn retry(id: i64) -> Option<String> {
    first_text(
        "WITH old AS (SELECT id, state FROM mail_gateway.mail WHERE id = $1 FOR UPDATE)
         UPDATE mail_gateway.mail m SET
             state = CASE WHEN old.state IN ('exception', 'cancel', 'outgoing') THEN 'outgoing' ELSE m.state END,
             next_attempt_at = CASE WHEN old.state IN ('exception', 'cancel', 'outgoing') THEN now() ELSE m.next_attempt_at END,
             -- The two-day retry window counts from scheduled_at: it starts again now.
             scheduled_at = CASE WHEN old.state IN ('exception', 'cancel') THEN now() ELSE m.scheduled_at END,
             recipients = CASE WHEN old.state IN ('exception', 'cancel')
                               THEN (SELECT coalesce(jsonb_object_agg(k, v), '{}') FROM jsonb_each(m.recipients) AS e(k, v)
                                     WHERE v->>'state' = 'sent')
                               ELSE m.recipients END
         FROM old WHERE m.id = old.id
         RETURNING old.state",
        &[id.into()],
    )
}

/// `cancel_mail`: a mail not sent yet is cancelled. Returns the state it was in.
pub fn cancel(id: i64) -> Option<String> {
    first_text(
        "WITH old AS (SELECT id, state FROM mail_gateway.mail WHERE id = $1 FOR UPDATE)
         UPDATE mail_gateway.mail m SET
             state = CASE WHEN old.state IN ('outgoing', 'sending', 'exception') THEN 'cancel' ELSE m.state END,
             lease_until = NULL, claimed_by = NULL
         FROM old WHERE m.id = old.id
         RETURNING old.state",
        &[id.into()],
    )
}
