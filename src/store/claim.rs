//! The sending side of the queue: the one claim order, claims bounded in count and bytes,
//! results recorded as they come, mail held back for a server that pushes back, and the
//! release of mail whose sender died. Each runs in a short transaction of the sender's own;
//! nothing here runs while the network is being used.

use std::collections::HashSet;
use std::time::Duration;

use pgrx::JsonB;
use pgrx::prelude::*;
use pgrx::spi::{SpiHeapTupleData, SpiResult};

use super::{spi, text};
use crate::delivery::{NextState, Outcome, RecipientState, RecipientStatus, Recipients};
use crate::model::{self, FailureType, MailKind};

/// A claimed mail, as the worker needs it.
pub struct QueuedMail {
    pub id: i64,
    pub message_id: String,
    pub kind: MailKind,
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
    super::execute(
        "SELECT set_config('plan_cache_mode', 'force_generic_plan', false),
                set_config('enable_seqscan', 'off', false), set_config('jit', 'off', false)",
        &[],
    );
}

/// Mail of a sender that vanished is free again once its lease ran out.
pub fn release_expired() {
    super::execute(
        "UPDATE mail_gateway.mail SET state = 'outgoing', lease_until = NULL, claimed_by = NULL
         WHERE state = 'sending' AND lease_until < now()",
        &[],
    );
}

/// How many more mails may be claimed today under `mail.send.daily_limit`, or `None` when
/// there is no limit. Serialised between senders by an advisory lock held until commit.
fn daily_allowance(
    client: &mut pgrx::spi::SpiClient<'_>,
) -> Result<Option<i64>, pgrx::spi::SpiError> {
    let stored = super::select(
        client,
        // One row even when the parameter's row was deleted (then its default applies).
        "SELECT (SELECT value FROM mail_gateway.parameter WHERE key = 'mail.send.daily_limit')",
        None,
        &[],
    )?
    .first()
    .get_one::<String>()?;
    let limit = crate::parameters::number("mail.send.daily_limit", stored.as_deref());
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
                   extract(epoch FROM now() - coalesce(m.scheduled_at, m.created_at))::float8 AS age,
                   m.recipients"
    )
});

/// Claims due mails for `worker`, at most `batch` of them and about `bytes` of content: they
/// are `sending` when this transaction commits, with a lease of `lease`.
pub fn claim(worker: i32, batch: i64, bytes: i64, lease: Duration) -> Vec<QueuedMail> {
    // The claim's commit need not wait for the disk: a claim lost in a crash leaves the mail
    // `outgoing`, which is what the restarted sender makes of it anyway. (Results are
    // committed durably: they are what keeps a mail from being sent twice.)
    super::execute("SELECT set_config('synchronous_commit', 'off', true)", &[]);
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
        let mut mails = rows
            .map(|row| queued_mail(&row))
            .collect::<Result<Vec<_>, _>>()?;
        // UPDATE … RETURNING keeps no order; ids follow the queue closely enough.
        mails.sort_by_key(|m| m.id);
        Ok(mails)
    }))
}

fn queued_mail(row: &SpiHeapTupleData<'_>) -> SpiResult<QueuedMail> {
    let optional = |column: &str| row.get_by_name::<String, _>(column);
    let list = |column: &str| -> SpiResult<Vec<String>> {
        Ok(row
            .get_by_name::<Vec<String>, _>(column)?
            .unwrap_or_default())
    };
    let json = |column: &str| -> SpiResult<Option<serde_json::Value>> {
        Ok(row.get_by_name::<JsonB, _>(column)?.map(|j| j.0))
    };
    let age = row.get_by_name::<f64, _>("age")?.unwrap_or(0.0);
    Ok(QueuedMail {
        id: row.get_by_name::<i64, _>("id")?.unwrap_or_default(),
        message_id: text(row, "message_id")?,
        // An unknown kind cannot be stored (mail_kind_check).
        kind: text(row, "kind")?
            .parse()
            .unwrap_or(MailKind::Transactional),
        email_from: text(row, "email_from")?,
        to: list("email_to")?,
        cc: list("cc")?,
        bcc: list("bcc")?,
        reply_to: optional("reply_to")?,
        subject: text(row, "subject")?,
        body_text: optional("body_text")?,
        body_html: optional("body_html")?,
        headers: json("headers")?,
        attachments: json("attachments")?,
        attempts: row.get_by_name::<i32, _>("attempts")?.unwrap_or(1),
        age: Duration::from_secs_f64(age.max(0.0)),
        recipients: recipients_from_json(&json("recipients")?.unwrap_or_default()),
    })
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
            NextState::Sent => (model::MailState::Sent, 0.0),
            NextState::Retry(d) => (model::MailState::Outgoing, d.as_secs_f64()),
            NextState::Exception => (model::MailState::Exception, 0.0),
            NextState::Cancel => (model::MailState::Cancel, 0.0),
        };
        ids.push(r.id);
        states.push(state.as_str());
        delays.push(delay);
        recipients.push(JsonB(recipients_to_json(&r.outcome.recipients)));
        types.push(r.outcome.failure_type.map(FailureType::as_str));
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

/// How long until the next mail is due, if any is waiting.
pub fn next_due() -> Option<Duration> {
    // No greatest(…, 0) around the min(): it would turn "no mail at all" (NULL) into "due
    // now", and an idle sender would poll every 10 ms instead of sleeping.
    super::first::<f64>(
        "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
         FROM mail_gateway.mail WHERE state = 'outgoing'",
        &[],
    )
    .map(|s| Duration::from_secs_f64(s.max(0.0)))
}
