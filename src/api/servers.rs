//! "Test Connection" of an outgoing server (docs/REFERENCE.md, "Table outgoing_server"). It talks to the network from the
//! caller's session, like the button it stands for: it only reads configuration, holds no lock
//! that matters, and every step has a timeout (`mail_gateway.smtp_timeout`).

use pgrx::PgSqlErrorCode::{ERRCODE_CONNECTION_FAILURE, ERRCODE_UNDEFINED_OBJECT};
use pgrx::prelude::*;

use crate::error::raise;
use crate::routing::address::Sender;
use crate::routing::server::choose;
use crate::smtp::Session;
use crate::{gucs, store};

/// Refuses a port the hosting provider blocks, with the usual way out.
pub fn check_port(server: &str, port: u16) {
    if gucs::port_blocked(port) {
        raise(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "port {port} of server \"{server}\" is blocked on this host (mail_gateway.blocked_ports)"
            ),
            Some("Use port 465 (encryption 'ssl'), 587 (encryption 'starttls') or 2525."),
        );
    }
}

#[pg_extern]
pub fn test_outgoing_server(name: &str) -> String {
    let Some((_, row)) = store::queue::server_config_by_name(name, gucs::smtp_timeout()) else {
        raise(
            ERRCODE_UNDEFINED_OBJECT,
            format!("no outgoing server named \"{name}\""),
            None,
        );
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
    let from = crate::mime::build::envelope_address(&choice.smtp_from)
        .unwrap_or_else(|e| raise(ERRCODE_CONNECTION_FAILURE, e, None));

    let mut client = Session::open(&row.config).unwrap_or_else(|e| {
        raise(
            ERRCODE_CONNECTION_FAILURE,
            format!("server \"{name}\": {e}"),
            Some(hint(&e)),
        )
    });
    if let Err(e) = client.probe(&from, &from) {
        raise(
            ERRCODE_CONNECTION_FAILURE,
            format!("server \"{name}\": {e}"),
            Some(hint(&e)),
        );
    }
    let summary = format!("OK: {}; sender <{from}> accepted", client.summary);
    client.quit();
    summary
}

fn hint(e: &crate::smtp::SmtpError) -> &'static str {
    use crate::smtp::Stage;
    match e.stage {
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
