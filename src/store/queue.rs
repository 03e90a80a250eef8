//! The outgoing queue: enqueue, retry, cancel, and what a sender reads about servers, keys and
//! the blocklist. Claiming and recording are in `claim`. Nothing here runs while the network
//! is being used.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pgrx::JsonB;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::{first_text, spi};
use crate::net::Encryption;
use crate::routing::address::parse_from_filter;
use crate::routing::server::Server;
use crate::smtp::{Auth, ServerConfig};

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
    // Written as the gateway: callers may read the queue, never write it directly.
    spi(super::as_gateway(|| {
        ENQUEUE_PLAN.with(|plan| {
            Spi::connect_mut(|client| {
                if plan.get().is_none() {
                    let _ = plan.set(client.prepare(ENQUEUE, &types)?.keep());
                }
                let stmt = plan.get().expect("prepared above");
                client.update(stmt, None, &args)?.first().get_one::<i64>()
            })
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
    /// The OAuth2 account whose access tokens it logs in with (XOAUTH2).
    pub oauth_account: Option<String>,
}

/// Name, host and `from_filter` of every active server: what `check_domain` needs, and no
/// secret.
pub fn server_hosts() -> Vec<(String, String, Vec<crate::routing::address::FilterEntry>)> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT name, host, from_filter FROM mail_gateway.outgoing_server WHERE active",
            None,
            &[],
        )?
        .map(|row| {
            Ok((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                parse_from_filter(&row.get::<String>(3)?.unwrap_or_default()).unwrap_or_default(),
            ))
        })
        .collect()
    }))
}

/// Every active server.
pub fn server_configs(timeout: Duration) -> HashMap<i64, ServerRow> {
    load_servers(None, timeout)
}

fn load_servers(name: Option<&str>, timeout: Duration) -> HashMap<i64, ServerRow> {
    spi(Spi::connect(|client| {
        super::select(client, "SELECT id, name, host, port, encryption, auth, username, password, client_cert, client_key,
                        verify_tls, ca_cert, priority, from_filter, max_connections,
                        max_mails_per_connection, oauth_account
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
                    oauth_account: row.get::<String>(17)?,
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

/// `retry_mail`: an exception or cancelled mail goes back to the queue, due now. Returns the
/// state it was in, or `None` when there is no such mail.
pub fn retry(id: i64) -> Option<String> {
    // Administrators change the queue only through these functions: written as the gateway.
    super::as_gateway(|| {
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
    })
}

/// `cancel_mail`: a mail not sent yet is cancelled. Returns the state it was in.
pub fn cancel(id: i64) -> Option<String> {
    // Administrators change the queue only through these functions: written as the gateway.
    super::as_gateway(|| {
        first_text(
        "WITH old AS (SELECT id, state FROM mail_gateway.mail WHERE id = $1 FOR UPDATE)
         UPDATE mail_gateway.mail m SET
             state = CASE WHEN old.state IN ('outgoing', 'sending', 'exception') THEN 'cancel' ELSE m.state END,
             lease_until = NULL, claimed_by = NULL
         FROM old WHERE m.id = old.id
         RETURNING old.state",
        &[id.into()],
    )
    })
}
