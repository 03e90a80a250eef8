//! The server side of LMTP (RFC 2033): a company's MTA (Postfix's `lmtp` transport) pushes
//! received mail to the fetcher instead of the fetcher polling a mailbox. `session` speaks the
//! protocol over any `Read + Write` and hands each complete message to a callback; `server`
//! accepts connections on threads and passes messages to the worker's main thread over a
//! channel, waking it through a socket its latch waits on (as `outbox` does). The answer to
//! DATA is whatever the callback returns: the worker answers only after its commit. Nothing
//! here knows PostgreSQL.

mod lines;
mod server;
mod session;

pub use server::{Delivery, ListenError, Server, Settings};
pub use session::{End, Envelope, Limits, Verdict, serve};

#[cfg(test)]
mod tests;
