//! mail_gateway_core: everything mail_gateway knows about mail that does not need PostgreSQL.
//!
//! Pure decisions (`mime`, `routing`, `deliverability`), and the network clients the worker
//! drives (`smtp` + `delivery`, IMAP and POP3 behind `mailbox`, `net`, `sasl`, `dns`). The
//! extension crate (`mail_gateway`) re-exports these modules; none of them speaks SQL.

pub mod authentication;
pub mod deliverability;
pub mod delivery;
pub mod dkim;
pub mod dns;
pub mod interrupt;
pub mod lmtp;
pub mod mailbox;
pub mod mime;
pub mod model;
pub mod net;
pub mod oauth;
pub mod outbox;
pub mod parameters;
pub mod provider_hints;
pub mod routing;
pub mod sasl;
pub mod smtp;
