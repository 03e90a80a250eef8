//! What happens to a mail after a delivery attempt (docs/REFERENCE.md, "States"), pure Rust: per-recipient
//! states, retry with growing delays, giving up. The worker applies the result; SMTP produced it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::FailureType;
use crate::smtp::{Delivery, RecipientResult, SmtpError, Stage};

/// First retry after a minute, doubling up to an hour …
pub fn retry_delay(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 7) - 1;
    Duration::from_secs((60u64 << exp).min(3600))
}

/// … and no retry for mail older than two days.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(2 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipientState {
    Sent,
    /// Refused for good (5xx).
    Exception,
    Blacklisted,
    /// Refused for now (4xx): tried again with the mail.
    Deferred,
}

impl RecipientState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientState::Sent => "sent",
            RecipientState::Exception => "exception",
            RecipientState::Blacklisted => "blacklisted",
            RecipientState::Deferred => "deferred",
        }
    }

    pub fn parse(s: &str) -> Option<RecipientState> {
        Some(match s {
            "sent" => RecipientState::Sent,
            "exception" => RecipientState::Exception,
            "blacklisted" => RecipientState::Blacklisted,
            "deferred" => RecipientState::Deferred,
            _ => return None,
        })
    }

    /// A recipient that needs no further attempt.
    pub fn is_final(self) -> bool {
        self != RecipientState::Deferred
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    pub state: RecipientState,
    pub reason: Option<String>,
}

pub type Recipients = BTreeMap<String, RecipientStatus>;

/// What an attempt leaves the mail in (stored as `model::MailState`, a retry as `outgoing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextState {
    Sent,
    Retry(Duration),
    Exception,
    Cancel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: NextState,
    pub recipients: Recipients,
    pub failure_type: Option<FailureType>,
    pub failure_reason: Option<String>,
}

pub fn failure_type(stage: Stage) -> FailureType {
    match stage {
        Stage::Connect => FailureType::Connection,
        Stage::Tls => FailureType::Tls,
        Stage::Auth => FailureType::Auth,
        Stage::Sender => FailureType::SenderRefused,
        Stage::Recipient => FailureType::RecipientRefused,
        Stage::Message => FailureType::MessageRefused,
    }
}

/// A failure of the whole mail (no server, connection, sender, build …): retried when
/// `transient` and young enough, else final.
pub fn failed(
    recipients: Recipients,
    failure_type: FailureType,
    reason: String,
    transient: bool,
    attempts: i32,
    age: Duration,
) -> Outcome {
    let state = if !transient {
        NextState::Exception
    } else if age >= GIVE_UP_AFTER {
        return Outcome {
            state: NextState::Exception,
            recipients,
            failure_type: Some(FailureType::RetryExpired),
            failure_reason: Some(format!(
                "gave up after {attempts} attempts over two days; last error: {reason}"
            )),
        };
    } else {
        NextState::Retry(retry_delay(attempts))
    };
    Outcome {
        state,
        recipients,
        failure_type: Some(failure_type),
        failure_reason: Some(reason),
    }
}

/// Merges one SMTP attempt into what earlier attempts recorded.
pub fn after_delivery(
    mut recipients: Recipients,
    result: Result<Delivery, SmtpError>,
    attempts: i32,
    age: Duration,
) -> Outcome {
    let delivery = match result {
        Ok(d) => d,
        Err(e) => {
            return failed(
                recipients,
                failure_type(e.stage),
                e.message,
                e.transient,
                attempts,
                age,
            );
        }
    };
    let message_error = match &delivery.data {
        Some(Err(e)) => Some(e.clone()),
        _ => None,
    };
    for (address, result) in delivery.recipients {
        let error = match result {
            RecipientResult::Accepted => message_error.clone(),
            RecipientResult::Refused(e) => Some(e),
        };
        let status = match error {
            None => RecipientStatus {
                state: RecipientState::Sent,
                reason: None,
            },
            Some(e) => RecipientStatus {
                state: if e.transient {
                    RecipientState::Deferred
                } else {
                    RecipientState::Exception
                },
                reason: Some(e.message),
            },
        };
        recipients.insert(address, status);
    }
    summarise(recipients, attempts, age)
}

/// The mail's state from its recipients' states.
pub fn summarise(recipients: Recipients, attempts: i32, age: Duration) -> Outcome {
    let count = |s: RecipientState| recipients.values().filter(|r| r.state == s).count();
    let (sent, failed_, deferred, blocked) = (
        count(RecipientState::Sent),
        count(RecipientState::Exception),
        count(RecipientState::Deferred),
        count(RecipientState::Blacklisted),
    );
    let reasons = |s: RecipientState| {
        recipients
            .values()
            .filter(|r| r.state == s)
            .filter_map(|r| r.reason.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if deferred > 0 {
        let reason = format!(
            "{deferred} recipient(s) deferred: {}",
            reasons(RecipientState::Deferred)
        );
        return failed(
            recipients,
            FailureType::RecipientDeferred,
            reason,
            true,
            attempts,
            age,
        );
    }
    if failed_ > 0 {
        let reason = format!(
            "{failed_} recipient(s) refused: {}",
            reasons(RecipientState::Exception)
        );
        // Some went out: the mail is sent, partly.
        let (state, failure_type) = if sent > 0 {
            (NextState::Sent, FailureType::Partial)
        } else {
            (NextState::Exception, FailureType::RecipientRefused)
        };
        return Outcome {
            state,
            recipients,
            failure_type: Some(failure_type),
            failure_reason: Some(reason),
        };
    }
    if sent == 0 && blocked > 0 {
        return Outcome {
            state: NextState::Cancel,
            recipients,
            failure_type: Some(FailureType::Blacklisted),
            failure_reason: Some("every recipient is on the blocklist".into()),
        };
    }
    Outcome {
        state: NextState::Sent,
        recipients,
        failure_type: None,
        failure_reason: (blocked > 0)
            .then(|| format!("{blocked} blocklisted recipient(s) skipped")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(stage: Stage, transient: bool, code: u16) -> SmtpError {
        SmtpError {
            stage,
            transient,
            code: Some(code),
            message: format!("{code} no"),
        }
    }

    fn delivery(
        results: Vec<(&str, RecipientResult)>,
        data: Option<Result<String, SmtpError>>,
    ) -> Delivery {
        Delivery {
            recipients: results
                .into_iter()
                .map(|(a, r)| (a.to_string(), r))
                .collect(),
            data,
        }
    }

    const YOUNG: Duration = Duration::from_secs(10);

    #[test]
    fn delays_grow_from_a_minute_to_an_hour() {
        let delays: Vec<u64> = (1..=9).map(|a| retry_delay(a).as_secs()).collect();
        assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    }

    #[test]
    fn all_accepted_is_sent() {
        let d = delivery(
            vec![("a@x", RecipientResult::Accepted)],
            Some(Ok("250 ok".into())),
        );
        let o = after_delivery(Recipients::new(), Ok(d), 1, YOUNG);
        assert_eq!(o.state, NextState::Sent);
        assert_eq!(o.recipients["a@x"].state, RecipientState::Sent);
    }

    #[test]
    fn one_refused_recipient_does_not_stop_the_others() {
        let d = delivery(
            vec![
                ("a@x", RecipientResult::Accepted),
                (
                    "b@x",
                    RecipientResult::Refused(err(Stage::Recipient, false, 550)),
                ),
            ],
            Some(Ok("250".into())),
        );
        let o = after_delivery(Recipients::new(), Ok(d), 1, YOUNG);
        assert_eq!(o.state, NextState::Sent);
        assert_eq!(o.recipients["b@x"].state, RecipientState::Exception);
        assert_eq!(o.failure_type.map(FailureType::as_str), Some("partial"));
        assert!(o.failure_reason.unwrap().contains("550 no"));
    }

    #[test]
    fn a_deferred_recipient_retries_the_mail_for_that_recipient_only() {
        let d = delivery(
            vec![
                ("a@x", RecipientResult::Accepted),
                (
                    "b@x",
                    RecipientResult::Refused(err(Stage::Recipient, true, 451)),
                ),
            ],
            Some(Ok("250".into())),
        );
        let o = after_delivery(Recipients::new(), Ok(d), 2, YOUNG);
        assert_eq!(o.state, NextState::Retry(Duration::from_secs(120)));
        assert_eq!(o.recipients["a@x"].state, RecipientState::Sent);
        assert_eq!(o.recipients["b@x"].state, RecipientState::Deferred);
        // The retry succeeds: the mail is sent, the first recipient untouched.
        let d = delivery(
            vec![("b@x", RecipientResult::Accepted)],
            Some(Ok("250".into())),
        );
        let o = after_delivery(o.recipients, Ok(d), 3, YOUNG);
        assert_eq!(o.state, NextState::Sent);
        assert!(
            o.recipients
                .values()
                .all(|r| r.state == RecipientState::Sent)
        );
    }

    #[test]
    fn permanent_errors_fail_at_once_transient_ones_retry_until_two_days() {
        let o = after_delivery(
            Recipients::new(),
            Err(err(Stage::Sender, false, 553)),
            1,
            YOUNG,
        );
        assert_eq!(o.state, NextState::Exception);
        assert_eq!(
            o.failure_type.map(FailureType::as_str),
            Some("sender_refused")
        );
        let o = after_delivery(
            Recipients::new(),
            Err(err(Stage::Connect, true, 421)),
            1,
            YOUNG,
        );
        assert_eq!(o.state, NextState::Retry(Duration::from_secs(60)));
        let o = after_delivery(
            Recipients::new(),
            Err(err(Stage::Connect, true, 421)),
            40,
            GIVE_UP_AFTER,
        );
        assert_eq!(o.state, NextState::Exception);
        assert_eq!(
            o.failure_type.map(FailureType::as_str),
            Some("retry_expired")
        );
    }

    #[test]
    fn message_refused_after_data_fails_every_accepted_recipient() {
        let d = delivery(
            vec![("a@x", RecipientResult::Accepted)],
            Some(Err(err(Stage::Message, false, 554))),
        );
        let o = after_delivery(Recipients::new(), Ok(d), 1, YOUNG);
        assert_eq!(o.state, NextState::Exception);
        assert_eq!(o.recipients["a@x"].state, RecipientState::Exception);
    }

    #[test]
    fn only_blocklisted_recipients_cancel_the_mail() {
        let mut r = Recipients::new();
        r.insert(
            "a@x".into(),
            RecipientStatus {
                state: RecipientState::Blacklisted,
                reason: None,
            },
        );
        let o = summarise(r, 1, YOUNG);
        assert_eq!(o.state, NextState::Cancel);
        assert_eq!(o.failure_type.map(FailureType::as_str), Some("blacklisted"));
    }
}
