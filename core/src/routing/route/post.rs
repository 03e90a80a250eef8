//! A message stored in a thread: a reply, or mail to an alias; relayed to the thread's
//! followers unless automatic or over the relay limits.

use super::{Gateway, Post, Routed, Router, State, Thread};
use crate::routing::address::Sender;

impl<G: Gateway> Router<'_, G> {
    /// Why a received message is not relayed to `thread`'s followers, if it is not.
    fn relay_refusal(&mut self, thread: &Thread, sender: &Sender) -> Option<String> {
        if self.automatic() {
            return Some("automatic message (RFC 3834): stored, not relayed".into());
        }
        let s = self.settings;
        let (in_thread, from_sender) = self.gw.relayed(
            thread,
            &sender.normalized(),
            s.loop_period_minutes,
            (s.relay_limit_thread, s.relay_limit_sender),
        );
        if in_thread >= s.relay_limit_thread {
            return Some(format!(
                "not relayed: {in_thread} messages were relayed in this thread within {} minutes (mail.relay.limit.thread {})",
                s.loop_period_minutes, s.relay_limit_thread
            ));
        }
        if from_sender >= s.relay_limit_sender {
            return Some(format!(
                "not relayed: {from_sender} messages of {} were relayed within {} minutes (mail.relay.limit.sender {})",
                sender.normalized(),
                s.loop_period_minutes,
                s.relay_limit_sender
            ));
        }
        None
    }

    /// Stores the message in `thread`, relayed unless automatic or over a limit; returns the
    /// recorded route with `reason` completed.
    pub(super) fn post(
        &mut self,
        thread: &Thread,
        sender: &Sender,
        route: &str,
        reason: String,
    ) -> Routed {
        let refusal = self.relay_refusal(thread, sender);
        let content = self.content();
        let s = self.summary().clone();
        let posted = self.gw.post(Post {
            thread,
            author: sender,
            author_verified: self.believed(sender),
            subject: s.subject.as_deref(),
            content,
            message_id: s.message_id.as_deref(),
            relay: refusal.is_none(),
        });
        let said = match refusal {
            Some(why) => format!("{reason}; {why}"),
            None => format!("{reason}, relayed to {} follower(s)", posted.mails),
        };
        Routed {
            state: State::Routed,
            route: Some(route.to_string()),
            reason: said,
            thread: Some(thread.clone()),
            message: Some(posted.message),
            relayed: posted.mails,
        }
    }

    pub(super) fn reply(&mut self, thread: &Thread, sender: &Sender) -> Routed {
        let reason = format!("reply in {} #{}", thread.model, thread.res_id);
        self.post(thread, sender, "reply", reason)
    }
}
