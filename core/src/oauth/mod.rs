//! OAuth2 for SMTP, IMAP and POP3 logins (XOAUTH2): the providers' endpoints and scopes, the
//! token requests (refresh, and the first authorization-code exchange), reading the reply,
//! when to refresh, and what a failure means — `invalid_grant` needs a person to consent
//! again, a network or 5xx failure is tried again. Pure but for `http::post_form`; it knows
//! nothing of PostgreSQL (the extension's `oauth` module stores and locks).

mod consent;
pub mod http;
mod lifetime;
mod provider;
mod token;

pub use consent::{CodeError, authorize_url, code_form, code_from};
pub use lifetime::{Lifetime, REFRESH_MARGIN, USE_MARGIN, backoff};
pub use provider::{DEFAULT_TENANT, GOOGLE_SCOPE, MICROSOFT_SCOPE, Provider, valid_tenant};
pub use token::{
    Client, Failure, Granted, TokenError, classify, hint, read_reply, redact, refresh_form, request,
};

#[cfg(test)]
mod tests;
