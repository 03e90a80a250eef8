//! The outgoing queue as the SQL API changes it: enqueue, retry, cancel. The senders' side is
//! in `claim`, the servers in `servers`.

use pgrx::JsonB;
use pgrx::datum::TimestampWithTimeZone;

use super::first;
use crate::model::{MailKind, MailState};

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
    pub kind: MailKind,
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

/// `send_mail`: queues one mail; returns its id.
pub fn enqueue(mail: NewMail<'_>) -> i64 {
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
        mail.kind.as_str().into(),
        mail.model.into(),
        mail.res_id.into(),
        mail.from_domain.into(),
        mail.message_ref.into(),
    ];
    // Written as the gateway: callers may read the queue, never write it directly.
    super::as_gateway(|| first::<i64>(ENQUEUE, &args)).expect("INSERT … RETURNING gives a row")
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
    super::as_gateway(|| {
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
    )
    });
    count
}

/// `retry_mail`: an exception or cancelled mail goes back to the queue, due now. Returns the
/// state it was in, or `None` when there is no such mail.
pub fn retry(id: i64) -> Option<MailState> {
    change_state(
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
        id,
    )
}

/// `cancel_mail`: a mail not sent yet is cancelled. Returns the state it was in.
pub fn cancel(id: i64) -> Option<MailState> {
    change_state(
        "WITH old AS (SELECT id, state FROM mail_gateway.mail WHERE id = $1 FOR UPDATE)
         UPDATE mail_gateway.mail m SET
             state = CASE WHEN old.state IN ('outgoing', 'sending', 'exception') THEN 'cancel' ELSE m.state END,
             lease_until = NULL, claimed_by = NULL
         FROM old WHERE m.id = old.id
         RETURNING old.state",
        id,
    )
}

/// Runs an administrator's change of mail `id` (`sql` returns the state it was in).
fn change_state(sql: &str, id: i64) -> Option<MailState> {
    // Administrators change the queue only through these functions: written as the gateway.
    super::as_gateway(|| first::<String>(sql, &[id.into()])).and_then(|state| state.parse().ok())
}
