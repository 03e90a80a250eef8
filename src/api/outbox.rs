//! Mass mailing at volume, through the one way into the queue: `INSERT INTO
//! mail_gateway.outbox (email_from, email_to, subject, body_html …) SELECT … FROM customers`
//! queues one mail per row in one statement. The view's INSTEAD OF trigger gives each row to
//! `send_mail` — the same checks, the same Message-IDs, states and wake-up — and hands the new
//! mail's id back (`RETURNING id` works).

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
use pgrx::{Array, JsonB};

use super::queue::send_mail;
use crate::model::MailKind;

#[pg_trigger]
fn outbox_insert<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, String> {
    let Some(row) = trigger.new() else {
        return Ok(None);
    };
    let text = |name: &str| row.get_by_name::<String>(name).map_err(|e| e.to_string());
    let list = |name: &str| {
        row.get_by_name::<Array<'_, String>>(name)
            .map(|a| a.map(|a| a.iter().collect::<Vec<Option<String>>>()))
            .map_err(|e| e.to_string())
    };
    let other = |e: pgrx::datum::TryFromDatumError| e.to_string();
    let email_from = text("email_from")?.unwrap_or_default();
    let subject = text("subject")?;
    let body_text = text("body_text")?;
    let body_html = text("body_html")?;
    let reply_to = text("reply_to")?;
    let kind = text("kind")?.unwrap_or_else(|| MailKind::Transactional.as_str().into());
    let model = text("model")?;
    let id = send_mail(
        &email_from,
        list("email_to")?,
        subject.as_deref(),
        body_text.as_deref(),
        body_html.as_deref(),
        list("cc")?,
        list("bcc")?,
        reply_to.as_deref(),
        row.get_by_name::<JsonB>("headers").map_err(other)?,
        row.get_by_name::<JsonB>("attachments").map_err(other)?,
        row.get_by_name::<TimestampWithTimeZone>("scheduled_at")
            .map_err(other)?,
        &kind,
        model.as_deref(),
        row.get_by_name::<i64>("res_id").map_err(other)?,
    );
    let mut row = row.into_owned();
    row.set_by_name("id", id).map_err(|e| e.to_string())?;
    Ok(Some(row))
}
