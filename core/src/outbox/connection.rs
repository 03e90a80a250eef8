//! One SMTP connection's thread. It takes mails from the pool (at most two: the one it sends
//! and the next, whose envelope may ride ahead), renders them, sends them one at a time, and
//! reports each result. It never sends a mail's content while the previous mail's result is
//! not yet committed by the worker: a crash then doubles at most one mail per connection.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::job::Job;
use crate::smtp::{Delivery, Outbound, ServerConfig, Session, SmtpError};

/// What a connection is told.
pub(super) enum Order {
    Send(Box<Job>),
    /// The result of this mail is committed: the next mail may go.
    Committed(i64),
    /// Give back what is not sent yet, say QUIT and end.
    Close,
}

/// What a connection tells the pool.
pub(super) enum Report {
    Done {
        conn: u64,
        server_id: i64,
        mail_id: i64,
        attempt: Attempt,
        warning: Option<String>,
    },
    /// Mails this connection will not send: it could not connect (`error`), or it was told to
    /// close, or the server pushed back.
    Unsent {
        conn: u64,
        server_id: i64,
        jobs: Vec<Job>,
        error: Option<SmtpError>,
    },
}

/// What happened to one mail.
pub enum Attempt {
    /// It went to the server: the answers, or the error that stopped it.
    Sent(Result<Delivery, SmtpError>),
    /// It never reached the network: the message could not be built.
    Unbuildable(String),
    /// A bug, caught: the panic's message.
    Panicked(String),
}

/// How a connection to one server behaves.
#[derive(Clone, PartialEq)]
pub struct Settings {
    pub config: ServerConfig,
    /// QUIT and connect again after this many mails (providers cap mails per session).
    pub max_mails: u32,
    /// QUIT after this long without a mail.
    pub idle: Duration,
    /// The server's OAuth2 access token (XOAUTH2), when it has an account: each new
    /// connection logs in with the token it holds then.
    pub token: Option<SharedToken>,
}

/// An access token the worker replaces before it expires, read by the connection threads
/// when they log in (a connection already logged in keeps its session). Settings with the
/// same cell are the same settings, whatever token it holds: a new token closes nothing.
#[derive(Clone, Default)]
pub struct SharedToken(Arc<Mutex<String>>);

impl SharedToken {
    pub fn set(&self, token: String) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = token;
    }

    pub fn get(&self) -> String {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl PartialEq for SharedToken {
    fn eq(&self, other: &SharedToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

struct Ready {
    job: Job,
    /// Rendered for the wire, or why it cannot be.
    outbound: Result<Outbound, Attempt>,
    warning: Option<String>,
}

pub(super) struct Connection {
    pub id: u64,
    pub server_id: i64,
    pub settings: Arc<Settings>,
    pub orders: Receiver<Order>,
    pub reports: Sender<Report>,
    pub wake: UnixStream,
    session: Option<Session>,
    sent_on_session: u32,
    /// The last mail that went to the server, while its result is not committed.
    uncommitted: Option<i64>,
    queue: VecDeque<Ready>,
}

/// The text of a caught panic.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("internal error (panic): {text}")
}

impl Connection {
    pub fn new(
        id: u64,
        server_id: i64,
        settings: Arc<Settings>,
        orders: Receiver<Order>,
        reports: Sender<Report>,
        wake: UnixStream,
    ) -> Connection {
        Connection {
            id,
            server_id,
            settings,
            orders,
            reports,
            wake,
            session: None,
            sent_on_session: 0,
            uncommitted: None,
            queue: VecDeque::new(),
        }
    }

    pub fn run(mut self) {
        loop {
            // Wait for a mail to send, and for the commit of the last one before sending more.
            while self.queue.is_empty() || self.uncommitted.is_some() {
                let idle =
                    self.session.is_some() && self.queue.is_empty() && self.uncommitted.is_none();
                let order = if idle {
                    match self.orders.recv_timeout(self.settings.idle) {
                        Ok(order) => order,
                        Err(RecvTimeoutError::Timeout) => {
                            self.hang_up();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                } else {
                    match self.orders.recv() {
                        Ok(order) => order,
                        Err(_) => return,
                    }
                };
                if !self.obey(order) {
                    return;
                }
            }
            // A next mail that came meanwhile can ride ahead.
            while let Ok(order) = self.orders.try_recv() {
                if !self.obey(order) {
                    return;
                }
            }
            self.send_first();
        }
    }

    /// Returns `false` when told to close.
    fn obey(&mut self, order: Order) -> bool {
        match order {
            Order::Send(job) => {
                let ready = render(*job);
                self.queue.push_back(ready);
            }
            Order::Committed(mail) => {
                if self.uncommitted == Some(mail) {
                    self.uncommitted = None;
                }
            }
            Order::Close => {
                self.give_back(None);
                self.hang_up();
                return false;
            }
        }
        true
    }

    fn send_first(&mut self) {
        let ready = self.queue.pop_front().expect("a mail to send");
        let outbound = match ready.outbound {
            Ok(outbound) => outbound,
            Err(attempt) => return self.report(ready.job.mail_id, attempt, ready.warning),
        };
        if let Err(e) = self.ensure_session() {
            self.queue.push_front(Ready {
                job: ready.job,
                outbound: Ok(outbound),
                warning: ready.warning,
            });
            return self.give_back(Some(e));
        }
        let last_on_session = self.sent_on_session + 1 >= self.settings.max_mails;
        let next = match self.queue.front() {
            Some(Ready {
                outbound: Ok(o), ..
            }) if !last_on_session => Some(o),
            _ => None,
        };
        let session = self.session.as_mut().expect("connected above");
        let sent = catch_unwind(AssertUnwindSafe(|| session.send(&outbound, next)));
        self.sent_on_session += 1;
        let attempt = match sent {
            Ok(result) => Attempt::Sent(result),
            Err(p) => {
                // The conversation is in an unknown state: drop it.
                self.session = None;
                Attempt::Panicked(panic_message(&*p))
            }
        };
        let pushback = match &attempt {
            Attempt::Sent(Err(e)) if e.is_pushback() => Some(e.clone()),
            _ => None,
        };
        self.uncommitted = Some(ready.job.mail_id);
        self.report(ready.job.mail_id, attempt, ready.warning);
        if pushback.is_some() {
            self.hang_up();
            self.give_back(None);
        } else if self.session.as_ref().is_some_and(|s| s.broken) {
            self.session = None;
        } else if last_on_session {
            self.hang_up();
        }
    }

    /// A usable session: the one open, or a new connection when it broke or the server closed
    /// it while idle.
    fn ensure_session(&mut self) -> Result<(), crate::smtp::SmtpError> {
        if self.session.as_ref().is_some_and(Session::is_usable) {
            return Ok(());
        }
        self.session = None;
        let mut config = self.settings.config.clone();
        if let Some(token) = &self.settings.token {
            config.password = Some(token.get());
        }
        let session = catch_unwind(AssertUnwindSafe(|| Session::open(&config)))
            .unwrap_or_else(|p| Err(crate::smtp::SmtpError::internal(panic_message(&*p))))?;
        self.session = Some(session);
        self.sent_on_session = 0;
        Ok(())
    }

    fn report(&mut self, mail_id: i64, attempt: Attempt, warning: Option<String>) {
        let _ = self.reports.send(Report::Done {
            conn: self.id,
            server_id: self.server_id,
            mail_id,
            attempt,
            warning,
        });
        self.wake_pool();
    }

    /// Hands back every mail not sent yet.
    fn give_back(&mut self, error: Option<SmtpError>) {
        if self.queue.is_empty() && error.is_none() {
            return;
        }
        let jobs = self.queue.drain(..).map(|r| r.job).collect();
        let _ = self.reports.send(Report::Unsent {
            conn: self.id,
            server_id: self.server_id,
            jobs,
            error,
        });
        self.wake_pool();
    }

    fn wake_pool(&mut self) {
        // Non-blocking: a full pipe already means the worker will wake.
        let _ = self.wake.write(&[1]);
    }

    fn hang_up(&mut self) {
        if let Some(session) = self.session.take() {
            session.quit();
        }
    }
}

/// Renders a job for the wire; a bug while building fails this mail only.
fn render(job: Job) -> Ready {
    let rendered = catch_unwind(AssertUnwindSafe(|| job.content.render(SystemTime::now())));
    let (outbound, warning) = match rendered {
        Ok(Ok(r)) => (
            Ok(Outbound {
                id: job.mail_id,
                from: job.from.clone(),
                to: job.to.clone(),
                message: r.message,
            }),
            r.warning,
        ),
        Ok(Err(reason)) => (Err(Attempt::Unbuildable(reason.to_string())), None),
        Err(p) => (Err(Attempt::Panicked(panic_message(&*p))), None),
    };
    Ready {
        job,
        outbound,
        warning,
    }
}
