//! The network side of sending. The worker's main thread (the only one that may use SPI)
//! submits jobs; each server has a lane of up to `max_connections` connection threads that
//! send them and report back over a channel, waking the worker through a socket its latch
//! waits on. The pool is polite: it honours each server's connection limit, backs a server off
//! when it pushes back (421, or a 4xx to MAIL FROM), and opens fewer connections when a server
//! refuses more. Nothing here knows PostgreSQL.

mod connection;
mod job;
mod lane;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

pub use connection::{Attempt, Settings, SharedToken};
pub use job::{Content, DkimKey, Job, Rendered};

use connection::{Order, Report};
use lane::{Lane, back_off, deferred, spawn};

use crate::smtp::{SmtpError, Stage};

/// What became of a submitted mail.
pub enum Finished {
    /// Built and (perhaps) sent: to be recorded as an attempt.
    Attempt {
        mail_id: i64,
        server_id: i64,
        attempt: Attempt,
        warning: Option<String>,
    },
    /// Never sent: the server could not be reached. Retried like any failed attempt.
    Unreachable {
        mail_id: i64,
        server_id: i64,
        error: SmtpError,
    },
    /// Never sent: the server asked us to slow down. Back to the queue for `wait`, and not
    /// an attempt.
    Deferred {
        mail_id: i64,
        server_id: i64,
        wait: Duration,
        reason: String,
    },
}

pub struct Pool {
    lanes: HashMap<i64, Lane>,
    reports: Receiver<Report>,
    reports_tx: Sender<Report>,
    wake_read: UnixStream,
    wake_write: UnixStream,
    next_conn: u64,
    /// Connections whose last mail's result waits for the worker's commit.
    awaiting_commit: Vec<(i64, u64, i64)>,
    /// The first backoff of a server that pushes back; it doubles, up to 60 times.
    backoff_unit: Duration,
}

impl Pool {
    pub fn new(backoff_unit: Duration) -> io::Result<Pool> {
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        let (reports_tx, reports) = mpsc::channel();
        Ok(Pool {
            lanes: HashMap::new(),
            reports,
            reports_tx,
            wake_read,
            wake_write,
            next_conn: 0,
            awaiting_commit: Vec::new(),
            backoff_unit,
        })
    }

    /// Readable when a connection reported something: the worker waits on it with its latch.
    pub fn wake_fd(&self) -> RawFd {
        self.wake_read.as_raw_fd()
    }

    pub fn set_backoff_unit(&mut self, unit: Duration) {
        self.backoff_unit = unit;
    }

    /// A server's current settings; connections opened with other settings are closed (they
    /// give back what they hold, and new ones take over).
    pub fn configure(&mut self, server_id: i64, settings: Settings, max_connections: usize) {
        let max_connections = max_connections.max(1);
        let lane = self.lanes.entry(server_id).or_insert_with(|| Lane {
            settings: Arc::new(settings.clone()),
            max_connections,
            cap: max_connections,
            waiting: VecDeque::new(),
            conns: Vec::new(),
            backoff_until: None,
            pushbacks: 0,
            pushback_reason: String::new(),
        });
        if *lane.settings != settings {
            lane.settings = Arc::new(settings);
            for conn in lane.conns.drain(..) {
                let _ = conn.orders.send(Order::Close);
            }
        }
        if lane.max_connections != max_connections {
            lane.max_connections = max_connections;
            lane.cap = max_connections;
            // Fewer allowed now: idle connections beyond the limit go.
            while lane.conns.len() > max_connections {
                let Some(i) = lane.conns.iter().position(|c| c.assigned == 0) else {
                    break;
                };
                let _ = lane.conns.remove(i).orders.send(Order::Close);
            }
        }
    }

    /// Queues a job on its server's lane (`configure`d first); a server backing off defers it
    /// at once.
    pub fn submit(&mut self, job: Job) -> Option<Finished> {
        let lane = self
            .lanes
            .get_mut(&job.server_id)
            .expect("a configured server");
        if let Some(wait) = lane.backing_off() {
            return Some(deferred(job, wait, &lane.pushback_reason));
        }
        lane.waiting.push_back(job);
        None
    }

    /// Mails submitted and not handed to a connection yet.
    pub fn waiting(&self) -> usize {
        self.lanes.values().map(|l| l.waiting.len()).sum()
    }

    /// Mails submitted and not finished yet.
    pub fn unfinished(&self) -> usize {
        self.waiting()
            + self
                .lanes
                .values()
                .flat_map(|l| &l.conns)
                .map(|c| c.assigned)
                .sum::<usize>()
    }

    /// Hands waiting mails to connections: an idle one first, then a new one (up to the
    /// server's limit), then one that is busy but can take the next mail ahead.
    pub fn dispatch(&mut self) {
        let (reports, wake) = (&self.reports_tx, &self.wake_write);
        for (&server_id, lane) in &mut self.lanes {
            if lane.backing_off().is_some() {
                continue;
            }
            if lane.conns.iter().all(|c| c.assigned == 0) {
                lane.cap = lane.max_connections;
            }
            while let Some(job) = lane.waiting.pop_front() {
                let limit = lane.cap.min(lane.max_connections);
                let target = match lane.conns.iter().position(|c| c.assigned == 0) {
                    Some(i) => Some(i),
                    None if lane.conns.len() < limit => spawn(
                        &mut self.next_conn,
                        server_id,
                        &lane.settings,
                        reports,
                        wake,
                    )
                    .map(|conn| {
                        lane.conns.push(conn);
                        lane.conns.len() - 1
                    }),
                    None => lane.conns.iter().position(|c| c.assigned == 1),
                };
                let Some(i) = target else {
                    lane.waiting.push_front(job);
                    break;
                };
                match lane.conns[i].orders.send(Order::Send(Box::new(job))) {
                    Ok(()) => lane.conns[i].assigned += 1,
                    Err(mpsc::SendError(order)) => {
                        // Its thread is gone: forget it, keep the mail.
                        lane.conns.remove(i);
                        if let Order::Send(job) = order {
                            lane.waiting.push_front(*job);
                        }
                    }
                }
            }
        }
    }

    /// Everything the connections reported since the last call. It does not wait for more:
    /// what arrives while the worker commits this group makes the next one, so groups grow by
    /// themselves with the cost of a commit (waiting for them made every group slower).
    pub fn collect(&mut self) -> Vec<Finished> {
        let mut finished = Vec::new();
        for report in crate::net::take_woken(&self.reports, &self.wake_read) {
            self.handle(report, &mut finished);
        }
        finished
    }

    fn handle(&mut self, report: Report, finished: &mut Vec<Finished>) {
        match report {
            Report::Done {
                conn,
                server_id,
                mail_id,
                attempt,
                warning,
            } => self.done(conn, server_id, mail_id, attempt, warning, finished),
            Report::Unsent {
                conn,
                server_id,
                jobs,
                error,
            } => self.unsent(conn, server_id, jobs, error, finished),
        }
    }

    fn done(
        &mut self,
        conn: u64,
        server_id: i64,
        mail_id: i64,
        attempt: Attempt,
        warning: Option<String>,
        finished: &mut Vec<Finished>,
    ) {
        self.awaiting_commit.push((server_id, conn, mail_id));
        let unit = self.backoff_unit;
        let Some(lane) = self.lanes.get_mut(&server_id) else {
            return;
        };
        if let Some(c) = lane.conns.iter_mut().find(|c| c.id == conn) {
            c.assigned = c.assigned.saturating_sub(1);
            c.proven |= matches!(attempt, Attempt::Sent(Ok(_)));
        }
        match &attempt {
            Attempt::Sent(Ok(_)) => lane.pushbacks = 0,
            Attempt::Sent(Err(e)) if e.is_pushback() => {
                let wait = back_off(lane, unit, e, finished);
                // Refused before its content went out: not an attempt, it waits like the rest.
                if e.stage == Stage::Sender {
                    finished.push(Finished::Deferred {
                        mail_id,
                        server_id,
                        wait,
                        reason: lane.pushback_reason.clone(),
                    });
                    return;
                }
            }
            _ => {}
        }
        finished.push(Finished::Attempt {
            mail_id,
            server_id,
            attempt,
            warning,
        });
    }

    fn unsent(
        &mut self,
        conn: u64,
        server_id: i64,
        jobs: Vec<Job>,
        error: Option<SmtpError>,
        finished: &mut Vec<Finished>,
    ) {
        let unit = self.backoff_unit;
        let Some(lane) = self.lanes.get_mut(&server_id) else {
            return;
        };
        if let Some(c) = lane.conns.iter_mut().find(|c| c.id == conn) {
            c.assigned = c.assigned.saturating_sub(jobs.len());
        }
        let mut jobs: VecDeque<Job> = jobs.into();
        match error {
            Some(e) if e.is_pushback() => {
                back_off(lane, unit, &e, finished);
            }
            Some(e) if lane.conns.iter().any(|c| c.proven && c.id != conn) => {
                // Other connections work: this server takes no more of them. Fewer, then.
                let working = lane
                    .conns
                    .iter()
                    .filter(|c| c.proven && c.id != conn)
                    .count();
                lane.cap = working.max(1);
                if let Some(i) = lane.conns.iter().position(|c| c.id == conn) {
                    let _ = lane.conns.remove(i).orders.send(Order::Close);
                }
                let _ = e;
            }
            Some(e) => {
                // The server cannot be reached: every mail waiting for it fails this attempt.
                jobs.extend(lane.waiting.drain(..));
                finished.extend(jobs.drain(..).map(|job| Finished::Unreachable {
                    mail_id: job.mail_id,
                    server_id,
                    error: e.clone(),
                }));
            }
            None => {}
        }
        if let Some(wait) = lane.backing_off() {
            let reason = &lane.pushback_reason;
            finished.extend(jobs.drain(..).map(|job| deferred(job, wait, reason)));
        }
        while let Some(job) = jobs.pop_back() {
            lane.waiting.push_front(job);
        }
    }

    /// The worker committed every result collected so far: their connections may go on.
    pub fn committed(&mut self) {
        for (server_id, conn, mail_id) in self.awaiting_commit.drain(..) {
            if let Some(c) = self
                .lanes
                .get_mut(&server_id)
                .and_then(|l| l.conns.iter_mut().find(|c| c.id == conn))
            {
                let _ = c.orders.send(Order::Committed(mail_id));
            }
        }
    }
}

#[cfg(test)]
mod tests;
