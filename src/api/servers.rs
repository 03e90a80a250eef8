//! "Test Connection" of an outgoing server (docs/REFERENCE.md, "Table outgoing_server"). It talks to the network from the
//! caller's session, like the button it stands for: it only reads configuration, holds no lock
//! that matters, and every step has a timeout (`mail_gateway.smtp_timeout`).

use pgrx::prelude::*;

use crate::access_token::{self, Ask, Caller, Token};
use crate::error::ApiError;
use crate::net::Limits;
use crate::oauth::Failure;
use crate::routing::address::Sender;
use crate::routing::server::choose;
use crate::smtp::Session;
use crate::{gucs, store};

/// Refuses a port the hosting provider blocks, with the usual way out.
pub fn check_port(server: &str, port: u16) {
    if gucs::port_blocked(port) {
        ApiError::invalid(format!(
                "port {port} of server \"{server}\" is blocked on this host (mail_gateway.blocked_ports)"
            ), "Use port 465 (encryption 'ssl'), 587 (encryption 'starttls') or 2525.").raise();
    }
}

#[pg_extern]
pub fn test_outgoing_server(name: &str) -> String {
    let Some((_, row)) = store::servers::server_config_by_name(name, gucs::smtp_timeout()) else {
        ApiError::NoOutgoingServer(name.to_string()).raise();
    };
    check_port(name, row.config.port);
    // MAIL FROM a sender this server may use: the envelope the worker would use for mail
    // from the default sender.
    let settings = store::config::sender_settings();
    let default = settings
        .default_from
        .clone()
        .or_else(|| row.config.username.clone().filter(|u| u.contains('@')))
        .unwrap_or_else(|| format!("postmaster@{}", row.config.host));
    let sender = Sender::parse(&default).unwrap_or_else(|_| Sender {
        name: None,
        address: format!("postmaster@{}", row.config.host),
    });
    let choice = choose(
        std::slice::from_ref(&row.server),
        &settings,
        &sender,
        &default,
        false,
    );
    let from = crate::mime::build::envelope_address(&choice.smtp_from).unwrap_or_else(|e| {
        ApiError::Connection {
            message: e.to_string(),
            hint: None,
        }
        .raise()
    });

    let mut config = row.config.clone();
    let token = row
        .oauth_account
        .as_deref()
        .map(|account| oauth_token(&format!("server \"{name}\""), account));
    if let Some(token) = &token {
        config.password = Some(token.access_token.clone());
    }
    let oauth = token.is_some();
    let mut client = Session::open(&config).unwrap_or_else(|e| {
        ApiError::Connection {
            message: format!("server \"{name}\": {e}"),
            hint: Some(hint(&e, oauth).to_string()),
        }
        .raise()
    });
    if let Err(e) = client.probe(&from, &from) {
        ApiError::Connection {
            message: format!("server \"{name}\": {e}"),
            hint: Some(hint(&e, oauth).to_string()),
        }
        .raise();
    }
    let summary = format!(
        "OK: {}; sender <{from}> accepted{}",
        client.summary,
        oauth_summary(row.oauth_account.as_deref(), token.as_ref())
    );
    client.quit();
    summary
}

/// The access token of a server's OAuth2 account for a test (refreshed in the caller's
/// transaction when due), or an ERROR that says what to renew: SQLSTATE 28000 when a person
/// or an administrator must act, 08006 when the token endpoint failed.
pub fn oauth_token(server: &str, account: &str) -> Token {
    let ask = Ask {
        account,
        caller: Caller::Sql,
        limits: Limits::new(gucs::smtp_timeout()),
        rejected: None,
    };
    access_token::get(&ask).unwrap_or_else(|p| {
        let message = format!("{server}: {}", p.message);
        match p.failure {
            Failure::Transient => ApiError::Connection {
                message,
                hint: Some(p.hint),
            },
            Failure::NeedsConsent | Failure::Misconfigured => ApiError::Authorization {
                message,
                hint: p.hint,
            },
        }
        .raise()
    })
}

/// "; OAuth2 account "m365": access token valid for another 3599 s".
pub fn oauth_summary(account: Option<&str>, token: Option<&Token>) -> String {
    match (account, token) {
        (Some(account), Some(token)) => format!(
            "; OAuth2 account \"{account}\": access token valid for another {} s",
            token
                .lifetime
                .expires_at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
                .as_secs()
        ),
        _ => String::new(),
    }
}

/// What to check after a login refused with an OAuth2 access token that the provider gave.
pub const OAUTH_LOGIN_HINT: &str = "The server refused a fresh access token: check that username is the mailbox the consent was given for, that the app has the permission for this protocol (Microsoft: SMTP.Send, IMAP.AccessAsUser.All or POP.AccessAsUser.All, and SMTP AUTH, IMAP or POP enabled for the mailbox; Google: the scope https://mail.google.com/), and the scope of the account.";

fn hint(e: &crate::smtp::SmtpError, oauth: bool) -> &'static str {
    use crate::smtp::Stage;
    if let Some(hint) = crate::provider_hints::hint(&e.message) {
        return hint;
    }
    match e.stage {
        Stage::Auth if oauth => OAUTH_LOGIN_HINT,
        Stage::Connect => {
            "Check host and port, and that this machine may reach them (firewall, mail_gateway.blocked_ports)."
        }
        Stage::Tls => {
            "Check the encryption setting (ssl for 465, starttls for 587) and, for a self-signed server, ca_cert."
        }
        Stage::Auth => "Check username and password (for xoauth2, a fresh access token).",
        Stage::Sender => {
            "The server may not send as this address: check from_filter and mail.default.from."
        }
        Stage::Recipient | Stage::Message => {
            "The server refused the test address; see its reply above."
        }
    }
}
