//! Mail written straight to the catchall, and the automatic answers of ours (a refused
//! sender, the catchall, a loop notice) within their allowance.

use super::{AutoAnswer, Gateway, Routed, Router, State};
use crate::routing::address::Sender;

impl<G: Gateway> Router<'_, G> {
    pub(super) fn catchall(&mut self, sender: &Sender) -> Routed {
        let from = sender.normalized();
        let s = self.settings;
        let subject = self.summary().subject.clone();
        if self
            .gw
            .catchall_repeat(&from, subject.as_deref(), s.loop_period_minutes)
        {
            return Routed::new(
                State::Loop,
                Some("catchall"),
                "the same message reached the catchall address within mail.incoming.limit.period",
            );
        }
        let answered = self.answer(
            &from,
            "This address only collects replies to our messages: your message was not delivered \
             to anyone. Please answer one of our messages, or write to the address you were given.",
            "catchall",
        );
        Routed::new(
            State::Unroutable,
            Some("catchall"),
            format!("written to the catchall address, not in reply to anything; {answered}"),
        )
    }

    /// Queues an automatic answer when the message is not automatic itself and the answers'
    /// allowance permits; returns what happened, in words for the reason.
    pub(super) fn answer(&mut self, to: &str, body: &str, notice: &str) -> String {
        if self.automatic() {
            return "automatic, so not answered".into();
        }
        let s = self.settings;
        let (same_notice, to_recipient, today) =
            self.gw.answers_queued(to, notice, s.loop_period_minutes);
        if notice == "loop" && same_notice > 0 {
            return "a notice was sent within the period already".into();
        }
        if to_recipient >= s.auto_reply_limit_recipient {
            return format!(
                "not answered: {to_recipient} automatic answer(s) to {to} within {} minutes (mail.auto_reply.limit.recipient {})",
                s.loop_period_minutes, s.auto_reply_limit_recipient
            );
        }
        if let Some(allowance) = s.auto_reply_daily_allowance()
            && today >= allowance
        {
            return format!(
                "not answered: automatic answers used today's share of mail.send.daily_limit ({allowance}, mail.auto_reply.daily_share {} %)",
                s.auto_reply_daily_share
            );
        }
        let summary = self.reading.summary.clone();
        self.gw.auto_answer(AutoAnswer {
            to,
            subject: summary.subject.as_deref(),
            body,
            answers: summary.message_id.as_deref(),
            notice,
        });
        "answered automatically".into()
    }
}
