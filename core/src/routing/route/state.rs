//! What routing decides for a message: its state (`inbound.state`) and the recorded route.

use super::Thread;

/// The states of a received message (`inbound.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    New,
    Routed,
    Duplicate,
    Bounce,
    Complaint,
    Loop,
    Rejected,
    Unroutable,
    Error,
}

impl State {
    /// The `inbound.state` text (the mapping is in `model`).
    pub fn as_str(self) -> &'static str {
        crate::model::Column::as_str(self)
    }

    /// States a message may be routed again from (`reprocess`): the others created something
    /// (a record, a post, bounce rows) that routing again would create twice.
    pub fn reroutable(self) -> bool {
        matches!(
            self,
            State::New
                | State::Error
                | State::Unroutable
                | State::Rejected
                | State::Loop
                | State::Duplicate
        )
    }
}

/// What routing decided, to be recorded on the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub state: State,
    pub route: Option<String>,
    pub reason: String,
    pub thread: Option<Thread>,
    pub message: Option<i64>,
    /// Mails queued to followers by relaying it.
    pub relayed: i64,
}

impl Routed {
    pub(super) fn new(state: State, route: Option<&str>, reason: impl Into<String>) -> Routed {
        Routed {
            state,
            route: route.map(str::to_string),
            reason: reason.into(),
            thread: None,
            message: None,
            relayed: 0,
        }
    }
}
