//! The access token of an OAuth2 account, for the senders, the fetcher and the test functions:
//! the cached token while it has life left, else a refresh. Refreshes are serialised between
//! sessions by a lock per account, and whoever did not get the lock reads what the holder
//! stored, so a rotated refresh token is never used twice. The worker reads the account in
//! one short transaction, asks the token endpoint outside any, stores the result in another
//! and only then lets the lock go. A SQL caller (a test function) has a helper worker do the
//! same (`worker::refresh`), so that what it stores outlives the caller's transaction; without
//! a free worker slot it does all of it in its own transaction, under a lock held until its
//! end.

use std::cell::RefCell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant, SystemTime};

use pgrx::prelude::*;

use crate::model::OAuthState;
use crate::net::Limits;
use crate::oauth::{self, Client, Failure, Lifetime};
use crate::store;
use crate::store::oauth::Account;

/// Who asks, which decides how transactions and the lock are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A background worker: its own short transactions, a session lock.
    Worker,
    /// A SQL function: the caller's transaction, a lock until its commit.
    Sql,
}

/// What to ask for.
pub struct Ask<'a> {
    pub account: &'a str,
    pub caller: Caller,
    /// The token endpoint's timeout, and the worker's shutdown.
    pub limits: Limits,
    /// A token a server just refused: a new one is wanted even if it looks fresh.
    pub rejected: Option<&'a str>,
}

/// A token to log in with.
#[derive(Clone)]
pub struct Token {
    pub access_token: String,
    pub lifetime: Lifetime,
}

/// Why there is no token, for `last_error`, `failure_reason` and SQL errors.
#[derive(Debug, Clone)]
pub struct Problem {
    pub failure: Failure,
    /// Names the account; never a secret.
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Problem {
    fn new(failure: Failure, account: &Account, words: &str) -> Problem {
        Problem {
            failure,
            message: format!("OAuth2 account \"{}\": {words}", account.name),
            hint: oauth::hint(failure, account.provider, &account.name),
        }
    }

    /// The message and the hint in one line (a server's `last_error`, a mail's reason).
    pub fn with_hint(&self) -> String {
        format!("{} — {}", self.message, self.hint)
    }
}

thread_local! {
    /// Accounts whose endpoint failed lately in this process: (failures in a row, next try).
    static BACKOFF: RefCell<HashMap<i64, (u32, Instant)>> = RefCell::new(HashMap::new());
}

/// The account's token: cached, or refreshed now.
pub fn get(ask: &Ask<'_>) -> Result<Token, Problem> {
    let mut account = read(ask)?;
    if let Some(token) = fresh(&account, ask.rejected) {
        return Ok(token);
    }
    blocked(&account)?;
    // A SQL caller's refresh runs in a helper worker that commits it at once: a rotated refresh
    // token must outlive the caller's transaction, which a failed test rolls back. Not for an
    // account this transaction changed (the helper would not see the change), nor without a
    // free worker slot: then in the caller's transaction.
    if ask.caller == Caller::Sql
        && !store::oauth::changed_here(account.id)
        && crate::worker::refresh::in_helper(account.id, ask.limits.timeout)
    {
        return refreshed_by_helper(ask);
    }
    if let Some(failures) = backing_off(account.id) {
        let words = account
            .last_error
            .clone()
            .unwrap_or_else(|| format!("the token endpoint failed {failures} time(s) in a row"));
        return usable_or(
            &account,
            ask.rejected,
            Problem::new(Failure::Transient, &account, &words),
        );
    }
    let deadline = Instant::now() + ask.limits.timeout;
    loop {
        if transaction(ask.caller, "locking an OAuth2 account", || {
            store::oauth::try_lock(account.id, ask.caller == Caller::Sql)
        })? {
            break;
        }
        // Another session refreshes: meanwhile the cached token serves while it may, else
        // wait for what that session stores.
        if let Ok(token) = usable_or(
            &account,
            ask.rejected,
            Problem::new(Failure::Transient, &account, ""),
        ) {
            return Ok(token);
        }
        if Instant::now() >= deadline || (ask.limits.cancelled)() {
            let problem = Problem::new(
                Failure::Transient,
                &account,
                "another session is refreshing the token and did not finish in time",
            );
            return usable_or(&account, ask.rejected, problem);
        }
        pause(ask.caller);
        account = read(ask)?;
        if let Some(token) = fresh(&account, ask.rejected) {
            return Ok(token);
        }
        blocked(&account)?;
    }
    let result = refresh_locked(ask);
    if ask.caller == Caller::Worker {
        // After the result's commit: whoever takes the lock next reads it.
        let _ = transaction(ask.caller, "unlocking an OAuth2 account", || {
            store::oauth::unlock(account.id)
        });
    }
    result
}

/// What a helper worker stored (and committed) for the account.
fn refreshed_by_helper(ask: &Ask<'_>) -> Result<Token, Problem> {
    let account = read(ask)?;
    if let Some(token) = fresh(&account, ask.rejected) {
        return Ok(token);
    }
    blocked(&account)?;
    let words = account
        .last_error
        .clone()
        .unwrap_or_else(|| "the token could not be renewed (see the server log)".into());
    let problem = Problem::new(Failure::Transient, &account, &words);
    usable_or(&account, ask.rejected, problem)
}

/// Under the account's lock: read it again (someone may just have refreshed), else refresh.
fn refresh_locked(ask: &Ask<'_>) -> Result<Token, Problem> {
    let account = read(ask)?;
    if let Some(token) = fresh(&account, ask.rejected) {
        return Ok(token);
    }
    blocked(&account)?;
    let Some(refresh_token) = account.refresh_token.clone() else {
        return Err(Problem::new(
            Failure::NeedsConsent,
            &account,
            "no refresh token yet",
        ));
    };
    let obtained_at = SystemTime::now();
    let started = Instant::now();
    match ask_endpoint(ask, &account, &refresh_token) {
        Ok(granted) => {
            let lifetime = Lifetime::new(obtained_at, granted.lifetime);
            store_granted(ask, &account, &refresh_token, &granted, lifetime)?;
            if ask.caller == Caller::Worker {
                debug1!(
                    "mail_gateway: OAuth2 account \"{}\": new access token for {} s{} ({} ms)",
                    account.name,
                    granted.lifetime.as_secs(),
                    if granted.refresh_token.is_some() {
                        ", refresh token rotated"
                    } else {
                        ""
                    },
                    started.elapsed().as_millis()
                );
            }
            Ok(Token {
                access_token: granted.access_token,
                lifetime,
            })
        }
        Err(e) => {
            let _ = transaction(ask.caller, "recording an OAuth2 failure", || {
                store::oauth::store_failure(
                    account.id,
                    Some(&refresh_token),
                    e.failure.state(),
                    &e.message,
                )
            });
            let problem = Problem::new(e.failure, &account, &e.message);
            if ask.caller == Caller::Worker {
                warning!("mail_gateway: {}", problem.with_hint());
            }
            if e.failure == Failure::Transient {
                note_failure(account.id);
                return usable_or(&account, ask.rejected, problem);
            }
            Err(problem)
        }
    }
}

/// Asks the token endpoint for a new access token; a panic on the way is a failure like any.
fn ask_endpoint(
    ask: &Ask<'_>,
    account: &Account,
    refresh_token: &str,
) -> Result<oauth::Granted, oauth::TokenError> {
    let client = Client {
        provider: account.provider,
        token_endpoint: account.token_endpoint.clone(),
        client_id: account.client_id.clone(),
        client_secret: account.client_secret.clone(),
        ca_cert: account.ca_cert.clone(),
    };
    let form = oauth::refresh_form(&client, refresh_token, account.scope.as_deref());
    let secret = client.client_secret.clone().unwrap_or_default();
    catch_unwind(AssertUnwindSafe(|| {
        oauth::request(&client, &form, ask.limits, &[refresh_token, &secret])
    }))
    .unwrap_or_else(|_| {
        Err(oauth::TokenError {
            failure: Failure::Transient,
            message: "internal error while asking the token endpoint (see the server log)".into(),
        })
    })
}

/// Stores what the endpoint granted (unless the account changed meanwhile).
fn store_granted(
    ask: &Ask<'_>,
    account: &Account,
    refresh_token: &str,
    granted: &oauth::Granted,
    lifetime: Lifetime,
) -> Result<(), Problem> {
    let stored = transaction(ask.caller, "storing an OAuth2 token", || {
        store::oauth::store_granted(
            account.id,
            refresh_token,
            &granted.access_token,
            lifetime,
            granted.refresh_token.as_deref(),
        )
    })?;
    BACKOFF.with(|b| b.borrow_mut().remove(&account.id));
    if !stored && ask.caller == Caller::Worker {
        // set_oauth changed the account meanwhile: its new settings win; this token
        // still serves this login.
        log!(
            "mail_gateway: OAuth2 account \"{}\" changed during a refresh; its new settings are kept",
            account.name
        );
    }
    Ok(())
}

fn read(ask: &Ask<'_>) -> Result<Account, Problem> {
    transaction(ask.caller, "reading an OAuth2 account", || {
        store::oauth::account(ask.account)
    })?
    .ok_or_else(|| Problem {
        failure: Failure::Misconfigured,
        message: format!("no OAuth2 account named \"{}\"", ask.account),
        hint: "Create it with SELECT mail_gateway.set_oauth(…) (docs/OPERATIONS.md, \"OAuth2\")."
            .into(),
    })
}

/// The cached token, when it need not be refreshed yet.
fn fresh(account: &Account, rejected: Option<&str>) -> Option<Token> {
    let access_token = account.access_token.clone()?;
    let lifetime = account.lifetime?;
    (!lifetime.refresh_due(SystemTime::now()) && rejected != Some(access_token.as_str())).then_some(
        Token {
            access_token,
            lifetime,
        },
    )
}

/// The cached token while a new login may still use it, else `problem`.
fn usable_or(
    account: &Account,
    rejected: Option<&str>,
    problem: Problem,
) -> Result<Token, Problem> {
    match (&account.access_token, account.lifetime) {
        (Some(access_token), Some(lifetime))
            if lifetime.usable(SystemTime::now()) && rejected != Some(access_token.as_str()) =>
        {
            Ok(Token {
                access_token: access_token.clone(),
                lifetime,
            })
        }
        _ => Err(problem),
    }
}

/// An account a refresh cannot help: a person or an administrator must act first.
fn blocked(account: &Account) -> Result<(), Problem> {
    let failure = match account.state {
        OAuthState::NeedsConsent => Failure::NeedsConsent,
        OAuthState::Misconfigured => Failure::Misconfigured,
        OAuthState::Ok => return Ok(()),
    };
    let words = match (&account.last_error, &account.refresh_token) {
        (_, None) => "no refresh token yet".to_string(),
        (Some(e), _) => e.clone(),
        (None, _) => format!("state {}", account.state),
    };
    Err(Problem::new(failure, account, &words))
}

fn backing_off(id: i64) -> Option<u32> {
    BACKOFF.with(|b| {
        b.borrow()
            .get(&id)
            .filter(|(_, next)| Instant::now() < *next)
            .map(|(failures, _)| *failures)
    })
}

fn note_failure(id: i64) {
    BACKOFF.with(|b| {
        let mut b = b.borrow_mut();
        let failures = b.get(&id).map_or(0, |(f, _)| *f) + 1;
        b.insert(id, (failures, Instant::now() + oauth::backoff(failures)));
    });
}

/// A short wait for another session's refresh; a SQL caller stays cancellable.
fn pause(caller: Caller) {
    std::thread::sleep(Duration::from_millis(100));
    if caller == Caller::Sql {
        pg_sys::check_for_interrupts!();
    }
}

/// Runs `f` in a transaction of its own (a worker) or in the caller's (SQL). A worker's
/// failed transaction is a transient problem: the database, not the token.
fn transaction<R>(caller: Caller, what: &str, f: impl FnOnce() -> R) -> Result<R, Problem> {
    match caller {
        Caller::Sql => Ok(f()),
        Caller::Worker => crate::worker::try_transaction(what, f).map_err(|e| Problem {
            failure: Failure::Transient,
            message: format!("{what} failed: {e}"),
            hint: "The database refused the statement; the gateway tries again.".into(),
        }),
    }
}
