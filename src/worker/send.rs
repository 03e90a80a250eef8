//! Sending, on the worker's main thread (the only one that may use SPI): claim due mail (short
//! transaction) → hand it to the pool's SMTP connection threads → collect their results →
//! record them (short transaction) → tell the connections their results are committed, which
//! lets each send its next mail. Results are recorded as they come, in groups as large as what
//! arrived during the last commit; a crash repeats at most the one mail per connection whose
//! answer was not committed yet (at-least-once, same Message-ID).

use std::collections::{HashMap, HashSet};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgrx::prelude::*;

use super::prepare::{self, InFlight, blocked_port, fail, prepare};
use super::{in_transaction, shutting_down, try_transaction};
use crate::delivery::NextState;
use crate::model::FailureType;
use crate::oauth::Failure;
use crate::outbox::{DkimKey, Pool, Settings};
use crate::routing::address::Sender as Mailbox;
use crate::routing::server::{SenderSettings, Server};
use crate::store::claim::{QueuedMail, Recorded};
use crate::store::servers::ServerRow;
use crate::{gucs, store};

mod results;
mod tokens;

use tokens::OAuthToken;

/// Results waiting for their transaction. When recording fails (a full disk) they stay here,
/// and the connections wait, until it succeeds.
#[derive(Default)]
struct Unrecorded {
    results: Vec<Recorded>,
    deferred: Vec<(i64, f64, String)>,
    successes: HashSet<i64>,
    errors: HashMap<i64, String>,
}

impl Unrecorded {
    fn is_empty(&self) -> bool {
        self.results.is_empty() && self.deferred.is_empty() && self.errors.is_empty()
    }
}

pub struct Sending {
    worker: i32,
    pool: Pool,
    in_flight: HashMap<i64, InFlight>,
    unrecorded: Unrecorded,
    leases_checked: Instant,
    /// Server names, for the log.
    names: HashMap<i64, String>,
    /// When each server's last success was recorded: once a second is enough for
    /// `server_status`, and each UPDATE of a server runs its validation triggers.
    success_noted: HashMap<i64, Instant>,
    /// The OAuth2 accounts of the servers, by name, and each server's account.
    oauth: HashMap<String, OAuthToken>,
    server_accounts: HashMap<i64, String>,
}

impl Sending {
    pub fn new(worker: i32) -> Sending {
        let pool = Pool::new(gucs::retry_delay()).unwrap_or_else(|e| {
            error!("mail_gateway: cannot create the sender's wake-up socket: {e}")
        });
        Sending {
            worker,
            pool,
            in_flight: HashMap::new(),
            unrecorded: Unrecorded::default(),
            leases_checked: Instant::now(),
            names: HashMap::new(),
            success_noted: HashMap::new(),
            oauth: HashMap::new(),
            server_accounts: HashMap::new(),
        }
    }

    /// Readable when a connection has a result: the worker's latch waits on it too.
    pub fn wake_fd(&self) -> RawFd {
        self.pool.wake_fd()
    }

    /// Does what can be done now — record, claim, hand out — and returns how long the worker
    /// may sleep (a connection's result, or a commit that queues mail, wakes it earlier).
    pub fn turn(&mut self) -> Duration {
        let batch = gucs::send_batch_size();
        self.keep_tokens_fresh();
        loop {
            let finished = self.pool.collect();
            self.absorb(finished);
            // Connections holding a next mail render it while the results are committed.
            self.pool.dispatch();
            if !self.record() {
                // The database cannot take them now: try again after the worker's backoff.
                return gucs::poll_interval();
            }
            if shutting_down() || self.pool.waiting() as i64 >= (batch + 1) / 2 {
                break;
            }
            if self.claim(batch) == 0 {
                break;
            }
            self.pool.dispatch();
        }
        if self.pool.unfinished() > 0 {
            return gucs::poll_interval();
        }
        self.idle_wait()
    }

    /// Nothing in flight: release leases of vanished senders now and then, and sleep until
    /// the next mail is due.
    fn idle_wait(&mut self) -> Duration {
        if self.leases_checked.elapsed() >= gucs::poll_interval() {
            in_transaction("releasing expired leases", store::claim::release_expired);
            self.leases_checked = Instant::now();
        }
        match in_transaction("looking for due mail", store::claim::next_due) {
            Some(Some(due)) => due.max(Duration::from_millis(10)),
            _ => gucs::poll_interval(),
        }
    }

    /// Claims due mail and hands it to the pool; returns how many were claimed.
    fn claim(&mut self, batch: i64) -> usize {
        let worker = self.worker;
        let claimed = in_transaction("claiming mail", move || {
            let mails =
                store::claim::claim(worker, batch, gucs::send_batch_memory(), gucs::send_lease());
            if mails.is_empty() {
                return None;
            }
            let addresses: Vec<String> = mails
                .iter()
                .flat_map(|m| m.to.iter().chain(&m.cc).chain(&m.bcc))
                .filter_map(|r| Mailbox::parse(r).ok())
                .map(|s| s.normalized())
                .collect();
            Some(Claimed {
                mails,
                blocked: store::claim::blocklisted(addresses),
                settings: store::config::sender_settings(),
                configs: store::servers::server_configs(gucs::smtp_timeout()),
                dkim_keys: Arc::new(store::dkim::signing_keys()),
            })
        });
        let Some(Some(claimed)) = claimed else {
            return 0;
        };
        let count = claimed.mails.len();
        self.hand_out(claimed);
        count
    }

    /// Chooses each mail's server and envelope and submits it; what needs no network (no
    /// server, a blocked port, nobody left to reach) is finished here.
    fn hand_out(&mut self, claimed: Claimed) {
        let Claimed {
            mails,
            blocked,
            settings,
            configs,
            dkim_keys,
        } = claimed;
        self.configure_servers(&configs);
        let servers: Vec<Server> = configs.values().map(|row| row.server.clone()).collect();
        for mail in mails {
            let ready = match prepare(mail, &blocked, &settings, &servers) {
                Ok(ready) => ready,
                Err(done) => {
                    self.result(*done);
                    continue;
                }
            };
            let server = ready.choice.server.as_ref().map(|s| s.0);
            let Some((server_id, row)) = server.and_then(|id| Some((id, configs.get(&id)?))) else {
                let reason = "no active outgoing server".to_string();
                self.result(fail(ready, FailureType::NoServer, reason, true));
                continue;
            };
            if gucs::port_blocked(row.config.port) {
                let reason = blocked_port(row);
                self.unrecorded.errors.insert(server_id, reason.clone());
                self.result(fail(ready, FailureType::BlockedPort, reason, true));
                continue;
            }
            // No access token for its server: the mail waits (not an attempt, never failed),
            // and the server's last_error says what to renew.
            if let Some(account) = &row.oauth_account
                && let Err(problem) = self.token_for(account)
            {
                let wait = match problem.failure {
                    Failure::Transient => Duration::from_secs(5),
                    Failure::NeedsConsent | Failure::Misconfigured => gucs::retry_delay(),
                };
                self.hold(ready.mail.id, server_id, wait, &problem);
                continue;
            }
            let (job, in_flight) = prepare::job(ready, server_id, &dkim_keys);
            self.in_flight.insert(job.mail_id, in_flight);
            if let Some(finished) = self.pool.submit(job) {
                self.absorb(vec![finished]);
            }
        }
    }

    /// Tells the pool how to reach each server (its connection settings, its share of the
    /// database's connections, its access token).
    fn configure_servers(&mut self, configs: &HashMap<i64, ServerRow>) {
        self.pool.set_backoff_unit(gucs::retry_delay());
        let senders = gucs::senders() as i32;
        for (&id, row) in configs {
            let token = row.oauth_account.as_ref().map(|account| {
                self.server_accounts.insert(id, account.clone());
                self.oauth.entry(account.clone()).or_default().cell.clone()
            });
            if token.is_none() {
                self.server_accounts.remove(&id);
            }
            let settings = Settings {
                config: row.config.clone(),
                max_mails: row.max_mails_per_connection.max(1) as u32,
                idle: gucs::smtp_idle_timeout(),
                token,
            };
            // The limit is the database's: the senders share it (at least one each).
            let share = (row.max_connections / senders).max(1);
            self.pool.configure(id, settings, share as usize);
            self.names.insert(id, row.server.name.clone());
        }
    }

    /// Commits what is waiting to be recorded; then the connections may go on. Returns
    /// whether nothing is left unrecorded.
    fn record(&mut self) -> bool {
        if self.unrecorded.is_empty() && self.unrecorded.successes.is_empty() {
            return true;
        }
        let worker = self.worker;
        let u = &self.unrecorded;
        let done = try_transaction("recording results", || {
            store::claim::record(worker, &u.results);
            store::claim::defer(worker, &u.deferred);
            store::servers::record_server_health(
                u.successes.iter().copied().collect(),
                u.errors
                    .iter()
                    .map(|(id, e)| (*id, crate::provider_hints::with_hint(e)))
                    .collect(),
            );
        });
        if done.is_err() {
            return false;
        }
        self.unrecorded = Unrecorded::default();
        self.pool.committed();
        true
    }

    /// A result to record, its retry delay on the schedule of `mail_gateway.retry_delay`
    /// (1 min doubling to 1 h by default).
    fn result(&mut self, mut r: Recorded) {
        if let NextState::Retry(delay) = r.outcome.state {
            let scale = gucs::retry_delay().as_secs_f64() / 60.0;
            r.outcome.state = NextState::Retry(delay.mul_f64(scale));
        }
        // A provider's answer we know says what to change (docs/OPERATIONS.md, "Provider hints").
        r.outcome.failure_reason = r
            .outcome
            .failure_reason
            .map(|reason| crate::provider_hints::with_hint(&reason));
        self.unrecorded.results.push(r);
    }
}

/// Everything a claim needs, read in its transaction.
struct Claimed {
    mails: Vec<QueuedMail>,
    blocked: HashSet<String>,
    settings: SenderSettings,
    configs: HashMap<i64, ServerRow>,
    dkim_keys: Arc<HashMap<String, DkimKey>>,
}
