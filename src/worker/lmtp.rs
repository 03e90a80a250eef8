//! The fetcher's LMTP listener (`mail_gateway.lmtp_listen`): `lmtp::Server`'s threads speak
//! LMTP; this main thread stores each complete message the way `process_message` does
//! (dedupe, then routing for state `new`) in a transaction of its own, and answers the
//! connection only after that transaction committed: 250 means stored. A failed transaction
//! is 451 4.3.0, and the MTA keeps the message.

use std::os::fd::RawFd;

use pgrx::prelude::*;

use super::try_transaction;
use crate::lmtp::{Delivery, Limits, Server, Settings, Verdict};
use crate::routing::route::State;
use crate::{authentication, gucs, router, store};

/// Recipients per LMTP transaction: one message is stored once whatever their number.
const MAX_RECIPIENTS: usize = 1000;

pub struct Lmtp {
    server: Option<Server>,
    /// The last setting and error logged, so that a lasting problem is logged once.
    told: Option<(Settings, String)>,
}

impl Lmtp {
    pub fn new() -> Lmtp {
        let server = Server::new()
            .map_err(|e| warning!("mail_gateway fetcher: no LMTP listener: {e}"))
            .ok();
        Lmtp { server, told: None }
    }

    /// Readable when a message waits to be stored.
    pub fn wake_fd(&self) -> Option<RawFd> {
        self.server.as_ref().map(Server::wake_fd)
    }

    /// Applies the current settings (after a reload): listens, stops or moves.
    pub fn configure(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        let mut listen = gucs::lmtp_listen();
        let database = gucs::database();
        let mut problem = None;
        if !listen.is_empty() && (database.is_empty() || database == "*") {
            // Every database's fetcher would race for the one address.
            problem = Some(format!(
                "mail_gateway.lmtp_listen needs mail_gateway.database to name one database (it is \"{database}\"); not listening"
            ));
            listen.clear();
        }
        let settings = Settings {
            listen,
            max_connections: gucs::lmtp_max_connections(),
            limits: Limits {
                max_message_size: gucs::max_message_size(),
                max_recipients: MAX_RECIPIENTS,
                timeout: gucs::lmtp_timeout(),
                hostname: "mail_gateway".into(),
            },
        };
        let listening_before = server.local_addr();
        if let Err(e) = server.configure(settings.clone()) {
            problem = Some(format!("{e}; not listening"));
        }
        if let Some(problem) = problem {
            if self.told.as_ref() != Some(&(settings.clone(), problem.clone())) {
                warning!("mail_gateway fetcher: {problem}");
                self.told = Some((settings, problem));
            }
            return;
        }
        self.told = None;
        let now = server.local_addr();
        if now != listening_before
            && let Some(address) = now
        {
            log!("mail_gateway fetcher: taking mail over LMTP on {address}");
        }
    }

    /// Stores every message that arrived, each in its own transaction, and answers each after
    /// its commit. Returns how many arrived.
    pub fn store_arrived(&mut self) -> usize {
        let Some(server) = self.server.as_mut() else {
            return 0;
        };
        let arrived = server.take();
        let count = arrived.len();
        for delivery in arrived {
            // The session took it under the limit of its start: a reload may have lowered it.
            if delivery.raw.len() > gucs::max_message_size() {
                delivery.answer(Verdict::TryLater(
                    "mail_gateway.max_message_size was lowered; try again".into(),
                ));
                continue;
            }
            let verdict = match try_transaction("storing a message received over LMTP", || {
                receive(&delivery)
            }) {
                // The transaction committed when try_transaction returned.
                Ok(_) => Verdict::Stored,
                Err(e) => Verdict::TryLater(format!(
                    "the gateway cannot store mail now ({}), try again later",
                    e.sqlstate()
                )),
            };
            delivery.answer(verdict);
        }
        count
    }
}

/// `process_message`'s path: the verdict of a trusted server's Authentication-Results only
/// (no DNS inside the transaction), store (a message already stored is not stored again),
/// route it if it is new.
/// The fetcher already writes as the gateway's worker role, as it does for fetched mail.
fn receive(delivery: &Delivery) -> i64 {
    let message = &delivery.raw;
    // Stored with the envelope on top, as a mailbox would have it (routing reads
    // Delivered-To, bounce analysis Return-Path), unless that pushes it over the size limit:
    // then as it came. Never recorded without its bytes after a 250: `store_arrived` checked
    // the message against the limit of this moment.
    let mut trace = delivery.envelope.trace(message);
    if trace.len() + message.len() > gucs::max_message_size() {
        trace.clear();
    }
    let trusted = store::config::trusted_authserv_ids();
    // The verdict reads the message's own header: the trace adds nothing it trusts.
    let auth = authentication::authenticate(message, &trusted, None);
    let id = store::inbound::receive_pushed(&trace, message, &auth);
    if store::routing::state(id) == Some(State::New) {
        router::route_stored(id);
    }
    id
}
