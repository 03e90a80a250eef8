//! A server's lane: its connection threads, what waits for them, and its backoff.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use super::Finished;
use super::connection::{Connection, Order, Report, Settings};
use super::job::Job;
use crate::smtp::SmtpError;

pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) orders: Sender<Order>,
    /// Mails handed to it and not reported yet (at most two).
    pub(super) assigned: usize,
    /// It has delivered a mail: the server does accept our connections.
    pub(super) proven: bool,
}

pub(super) struct Lane {
    pub(super) settings: Arc<Settings>,
    pub(super) max_connections: usize,
    /// Connections that may be open now: lowered when the server refuses one more.
    pub(super) cap: usize,
    pub(super) waiting: VecDeque<Job>,
    pub(super) conns: Vec<Conn>,
    pub(super) backoff_until: Option<Instant>,
    pub(super) pushbacks: i32,
    /// Why it backs off, in the server's words.
    pub(super) pushback_reason: String,
}

impl Lane {
    pub(super) fn backing_off(&mut self) -> Option<Duration> {
        let left = self.backoff_until?.checked_duration_since(Instant::now());
        if left.is_none() {
            self.backoff_until = None;
        }
        left
    }
}

/// The server pushed back: it gets no mail until the backoff ends (the first one
/// `backoff_unit`, doubling with each pushback in a row, at most 60 times it); what waits for it
/// is deferred. Returns the wait.
pub(super) fn back_off(
    lane: &mut Lane,
    unit: Duration,
    e: &SmtpError,
    finished: &mut Vec<Finished>,
) -> Duration {
    lane.pushbacks += 1;
    let wait = crate::delivery::retry_delay(lane.pushbacks).mul_f64(unit.as_secs_f64() / 60.0);
    let until = Instant::now() + wait;
    if lane.backoff_until.is_none_or(|t| t < until) {
        lane.backoff_until = Some(until);
    }
    lane.pushback_reason = format!("the server asked us to slow down: {}", e.message);
    let reason = &lane.pushback_reason;
    finished.extend(
        lane.waiting
            .drain(..)
            .map(|job| deferred(job, wait, reason)),
    );
    wait
}

pub(super) fn deferred(job: Job, wait: Duration, reason: &str) -> Finished {
    Finished::Deferred {
        mail_id: job.mail_id,
        server_id: job.server_id,
        wait,
        reason: reason.to_string(),
    }
}

pub(super) fn spawn(
    next_conn: &mut u64,
    server_id: i64,
    settings: &Arc<Settings>,
    reports: &Sender<Report>,
    wake: &UnixStream,
) -> Option<Conn> {
    *next_conn += 1;
    let id = *next_conn;
    let (orders, inbox) = mpsc::channel();
    let (settings, reports, wake) = (settings.clone(), reports.clone(), wake.try_clone().ok()?);
    // The connection lives on its thread (its session is not `Send`).
    std::thread::Builder::new()
        .name(format!("smtp {server_id}/{id}"))
        .spawn(move || Connection::new(id, server_id, settings, inbox, reports, wake).run())
        .ok()?;
    Some(Conn {
        id,
        orders,
        assigned: 0,
        proven: false,
    })
}
