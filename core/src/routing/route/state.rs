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
    pub const ALL: [State; 9] = [
        State::New,
        State::Routed,
        State::Duplicate,
        State::Bounce,
        State::Complaint,
        State::Loop,
        State::Rejected,
        State::Unroutable,
        State::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::Routed => "routed",
            State::Duplicate => "duplicate",
            State::Bounce => "bounce",
            State::Complaint => "complaint",
            State::Loop => "loop",
            State::Rejected => "rejected",
            State::Unroutable => "unroutable",
            State::Error => "error",
        }
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

/// A text that names no state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown inbound state \"{0}\"")]
pub struct UnknownState(pub String);

impl std::str::FromStr for State {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<State, UnknownState> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
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
