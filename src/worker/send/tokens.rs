//! The OAuth2 access tokens a sender's connections log in with: fetched before mail is handed
//! out, renewed while mail is in flight, asked for again when a server refuses one.

use std::time::{Duration, Instant};

use super::Sending;
use crate::access_token::{self, Ask, Caller, Problem};
use crate::gucs;
use crate::net::Limits;
use crate::oauth::{self, Lifetime};
use crate::outbox::SharedToken;
use crate::worker::shutting_down;

/// What this sender knows of an OAuth2 account's access token.
#[derive(Default)]
pub(super) struct OAuthToken {
    /// What new connections of its servers log in with.
    pub(super) cell: SharedToken,
    /// Of the token in `cell`, when there is one.
    lifetime: Option<Lifetime>,
    /// Why there is no token, and when to ask again.
    problem: Option<(Problem, Instant)>,
    /// A server refused the token in `cell`: the next look asks for a new one.
    rejected: bool,
    /// Logins refused in a row, for the wait of the mails.
    pub(super) refusals: u32,
    /// When the account was last looked at (the database is asked at most once a second
    /// while the cached token is still usable, e.g. while the endpoint fails).
    looked: Option<Instant>,
}

impl Sending {
    /// Makes sure the account's cell holds a token a new login may use, refreshing it when
    /// due (outside any transaction; `access_token` serialises refreshes between sessions).
    pub(super) fn token_for(&mut self, account: &str) -> Result<(), Problem> {
        let entry = self.oauth.entry(account.to_string()).or_default();
        let now = std::time::SystemTime::now();
        if !entry.rejected && entry.lifetime.is_some_and(|l| !l.refresh_due(now)) {
            return Ok(());
        }
        if !entry.rejected
            && entry
                .looked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
            && entry.lifetime.is_some_and(|l| l.usable(now))
        {
            return Ok(());
        }
        if !entry.rejected
            && let Some((problem, next)) = &entry.problem
            && Instant::now() < *next
        {
            return Err(problem.clone());
        }
        let rejected = entry.rejected.then(|| entry.cell.get());
        entry.rejected = false;
        entry.looked = Some(Instant::now());
        let ask = Ask {
            account,
            caller: Caller::Worker,
            limits: Limits {
                timeout: gucs::smtp_timeout(),
                cancelled: shutting_down,
            },
            rejected: rejected.as_deref(),
        };
        match access_token::get(&ask) {
            Ok(token) => {
                entry.cell.set(token.access_token);
                entry.lifetime = Some(token.lifetime);
                entry.problem = None;
                Ok(())
            }
            Err(problem) => {
                // The database is read again at most once a second for this account.
                entry.lifetime = None;
                entry.problem = Some((problem.clone(), Instant::now() + Duration::from_secs(1)));
                Err(problem)
            }
        }
    }

    /// While mail is in flight, tokens due for renewal are renewed before they run out (a
    /// connection that logs in later must find a valid one).
    pub(super) fn keep_tokens_fresh(&mut self) {
        if self.pool.unfinished() == 0 {
            return;
        }
        let now = std::time::SystemTime::now();
        let due: Vec<String> = self
            .oauth
            .iter()
            .filter(|(_, t)| t.rejected || t.lifetime.is_some_and(|l| l.refresh_due(now)))
            .map(|(account, _)| account.clone())
            .collect();
        for account in due {
            let _ = self.token_for(&account);
        }
    }

    /// A login refused with the account's token: ask for a new one; the mails wait 1 s,
    /// doubling while refusals go on (up to a minute: the token may be fine and the user name
    /// or a permission wrong).
    pub(super) fn token_refused(&mut self, server_id: i64) -> Duration {
        let Some(token) = self
            .server_accounts
            .get(&server_id)
            .and_then(|account| self.oauth.get_mut(account))
        else {
            return gucs::retry_delay();
        };
        token.rejected = true;
        token.refusals += 1;
        oauth::backoff(token.refusals)
    }

    /// Sends a claimed mail back to the queue for `wait`, without an attempt, because its
    /// server has no access token; the server's last_error says why.
    pub(super) fn hold(&mut self, mail_id: i64, server_id: i64, wait: Duration, problem: &Problem) {
        let reason = problem.with_hint();
        self.unrecorded.errors.insert(server_id, reason.clone());
        self.unrecorded
            .deferred
            .push((mail_id, wait.as_secs_f64(), reason));
    }
}
