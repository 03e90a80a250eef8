//! A bounce: one `bounce` row per failed recipient. A row counts only when the bounce is tied
//! to a mail we sent and names one of its recipients (docs/SECURITY.md).

use super::{BounceRow, Gateway, Routed, Router, SentMail, State};
use crate::mime::report::{Failed, MAX_FAILED, Report};

impl<G: Gateway> Router<'_, G> {
    /// One `bounce` row per failed recipient (at most `MAX_FAILED`) of the mail the tracked
    /// bounce address names (`tagged`), else of the returned original.
    pub(super) fn bounce(&mut self, tagged: Option<SentMail>) -> Routed {
        let report = &self.reading.report;
        let mail = tagged.or_else(|| {
            report
                .original_message_id
                .as_deref()
                .and_then(|id| self.gw.sent_mail(None, Some(id)))
        });
        let failed = failed_recipients(report, mail.as_ref());
        if failed.is_empty() {
            return Routed::new(
                State::Bounce,
                Some("bounce"),
                "a bounce that names no recipient and no mail of ours",
            );
        }
        let mut words = Vec::new();
        let mut untrusted = 0;
        for f in &failed {
            let trusted = mail
                .as_ref()
                .is_some_and(|m| m.recipients.contains(&f.email));
            untrusted += usize::from(!trusted);
            let blocked = self.gw.record_bounce(BounceRow {
                mail_id: mail.as_ref().map(|m| m.id),
                failed: f,
                trusted,
            });
            words.push(format!(
                "{} ({}{}{}{})",
                f.email,
                f.status,
                if f.hard { ", hard" } else { "" },
                if trusted { "" } else { ", untrusted" },
                if blocked { ", now blocklisted" } else { "" }
            ));
        }
        let about = match &mail {
            Some(m) => format!(" of mail {}", m.id),
            None => " naming no mail of ours".to_string(),
        };
        let note = if untrusted > 0 {
            "; untrusted rows are kept and count for nothing"
        } else {
            ""
        };
        Routed::new(
            State::Bounce,
            Some("bounce"),
            format!("bounce{about}: {}{note}", words.join(", ")),
        )
    }
}

/// The report's failed recipients; for a mailer's notice to our tracked address with no
/// report we can read, every recipient of the mail. At most `MAX_FAILED`.
fn failed_recipients(report: &Report, mail: Option<&SentMail>) -> Vec<Failed> {
    let mut failed = report.failed.clone();
    if failed.is_empty()
        && let Some(m) = mail
    {
        failed = m
            .recipients
            .iter()
            .map(|email| Failed {
                email: email.clone(),
                status: "5.0.0".into(),
                hard: false,
                diagnostic: Some("bounce without a readable report".into()),
            })
            .collect();
    }
    failed.truncate(MAX_FAILED);
    failed
}
