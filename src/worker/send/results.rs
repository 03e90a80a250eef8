//! What the connections finished, turned into results to record: an attempt's outcome, a
//! server that could not be reached or refused the access token, a mail it asked to hold back;
//! and each server's health for `server_status`.

use std::time::{Duration, Instant};

use pgrx::prelude::*;

use super::super::prepare::recorded;
use super::Sending;
use crate::delivery;
use crate::model::FailureType;
use crate::outbox::{Attempt, Finished};
use crate::smtp::{Delivery, SmtpError, Stage};

impl Sending {
    /// Turns what the connections finished into results to record.
    pub(super) fn absorb(&mut self, finished: Vec<Finished>) {
        for f in finished {
            match f {
                Finished::Attempt {
                    mail_id,
                    server_id,
                    attempt,
                    warning,
                } => {
                    if let Some(w) = warning {
                        warning!("mail_gateway: {w}");
                    }
                    self.attempted(mail_id, server_id, attempt);
                }
                Finished::Unreachable {
                    mail_id,
                    server_id,
                    error,
                } if error.stage == Stage::Auth
                    && self.server_accounts.contains_key(&server_id) =>
                {
                    self.token_refused_by(mail_id, server_id, error);
                }
                Finished::Unreachable {
                    mail_id,
                    server_id,
                    error,
                } => self.unreachable(mail_id, server_id, error),
                Finished::Deferred {
                    mail_id,
                    server_id,
                    wait,
                    reason,
                } => {
                    self.in_flight.remove(&mail_id);
                    self.defer(mail_id, server_id, wait, reason);
                }
            }
        }
    }

    /// A mail went through an SMTP attempt (or could not be built, or met a bug).
    fn attempted(&mut self, mail_id: i64, server_id: i64, attempt: Attempt) {
        let Some(mail) = self.in_flight.remove(&mail_id) else {
            return;
        };
        let failed = |failure: FailureType, reason: String| {
            delivery::failed(
                mail.recipients.clone(),
                failure,
                reason,
                false,
                mail.attempts,
                mail.age,
            )
        };
        let outcome = match attempt {
            Attempt::Sent(result) => {
                self.note_health(server_id, &result);
                delivery::after_delivery(mail.recipients.clone(), result, mail.attempts, mail.age)
            }
            Attempt::Unbuildable(reason) => failed(FailureType::Build, reason),
            Attempt::Panicked(reason) => {
                warning!("mail_gateway: mail {mail_id}: {reason}");
                failed(FailureType::Internal, reason)
            }
        };
        self.result(recorded(mail_id, mail, outcome));
    }

    /// The server refused the access token (expired early, revoked): the next look asks for a
    /// new one, and the mail waits without an attempt.
    fn token_refused_by(&mut self, mail_id: i64, server_id: i64, error: SmtpError) {
        self.in_flight.remove(&mail_id);
        let wait = self.token_refused(server_id);
        if !self.unrecorded.errors.contains_key(&server_id) {
            let name = self.names.get(&server_id).map_or("?", String::as_str);
            log!(
                "mail_gateway: server \"{name}\" refused the OAuth2 access token: {error}; its mail waits {} s for a new one",
                wait.as_secs()
            );
        }
        let reason = format!("waiting for a new OAuth2 access token: {}", error.message);
        self.defer(mail_id, server_id, wait, reason);
        self.unrecorded.errors.insert(server_id, error.message);
    }

    /// The server could not be reached, secured or logged in to: the mail fails (for now).
    fn unreachable(&mut self, mail_id: i64, server_id: i64, error: SmtpError) {
        if self
            .unrecorded
            .errors
            .insert(server_id, error.message.clone())
            .is_none()
        {
            let name = self.names.get(&server_id).map_or("?", String::as_str);
            log!("mail_gateway: server \"{name}\": {error}; its mail waits");
        }
        let Some(mail) = self.in_flight.remove(&mail_id) else {
            return;
        };
        let outcome = delivery::failed(
            mail.recipients.clone(),
            delivery::failure_type(error.stage),
            error.message,
            error.transient,
            mail.attempts,
            mail.age,
        );
        self.result(recorded(mail_id, mail, outcome));
    }

    /// The mail goes back to the queue for `wait` without an attempt; `reason` is the
    /// server's last error.
    fn defer(&mut self, mail_id: i64, server_id: i64, wait: Duration, reason: String) {
        self.unrecorded.errors.insert(server_id, reason.clone());
        let reason = crate::provider_hints::with_hint(&reason);
        self.unrecorded
            .deferred
            .push((mail_id, wait.as_secs_f64(), reason));
    }

    /// A server's health for `server_status`: the last success, and the last error that was
    /// the server's (not a refused recipient).
    fn note_health(&mut self, server_id: i64, result: &Result<Delivery, SmtpError>) {
        match result {
            Ok(d) if d.data.as_ref().is_some_and(|r| r.is_ok()) => {
                let due = self
                    .success_noted
                    .get(&server_id)
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if due {
                    self.success_noted.insert(server_id, Instant::now());
                    self.unrecorded.successes.insert(server_id);
                }
                if let Some(account) = self.server_accounts.get(&server_id)
                    && let Some(token) = self.oauth.get_mut(account)
                {
                    token.refusals = 0;
                }
            }
            Err(e)
                if matches!(e.stage, Stage::Connect | Stage::Tls | Stage::Auth)
                    || e.code.is_none() =>
            {
                self.unrecorded.errors.insert(server_id, e.message.clone());
            }
            _ => {}
        }
    }
}
