//! Parameters, address syntax, and server selection (docs/REFERENCE.md, "Parameters", "Table outgoing_server", "find_outgoing_server").

use lettre::Address;
use pgrx::prelude::*;

use crate::error::ApiError;
use crate::model::MailKind;
use crate::parameters;
use crate::routing::address::{Sender, format_from_filter, parse_from_filter};
use crate::routing::server::choose;
use crate::store;

/// The default of a system parameter (NULL for one without, or a key the gateway does not
/// read): the one list of defaults, `parameters::PARAMETERS`.
#[pg_extern(immutable, strict, parallel_safe)]
pub fn parameter_default(key: &str) -> Option<&'static str> {
    parameters::default_of(key)
}

/// What a system parameter's value is (`count`, `interval`, `domain` …), for its validation.
#[pg_extern(immutable, strict, parallel_safe)]
pub fn parameter_kind(key: &str) -> Option<&'static str> {
    parameters::find(key).map(|p| p.kind.as_str())
}

/// Every system parameter with its default: what CREATE EXTENSION seeds.
#[pg_extern(immutable, parallel_safe)]
pub fn parameter_defaults()
-> TableIterator<'static, (name!(key, String), name!(value, Option<String>))> {
    TableIterator::new(
        parameters::PARAMETERS
            .iter()
            .map(|p| (p.key.to_string(), p.default.map(str::to_string))),
    )
}

/// The bare address of a mailbox, lower-cased: `"Ann" <Ann@X.com>` → `ann@x.com`.
#[pg_extern(immutable, strict, parallel_safe)]
pub fn normalize_email(email: &str) -> String {
    match Sender::parse(email) {
        Ok(sender) => sender.normalized(),
        Err(e) => ApiError::MalformedEmail(e.to_string()).raise(),
    }
}

/// A mail domain, lower-cased: ` MyCompany.COM ` → `mycompany.com`.
#[pg_extern(immutable, strict, parallel_safe)]
pub fn normalize_domain(domain: &str) -> String {
    let domain = domain.trim().to_lowercase();
    if domain.contains('@') || Address::new("postmaster", &domain).is_err() {
        ApiError::invalid(
            format!("malformed domain \"{domain}\""),
            "Give a domain name only, such as mycompany.com.",
        )
        .raise();
    }
    domain
}

/// The local part of an address (an alias name), lower-cased: `Sales` → `sales`.
#[pg_extern(immutable, strict, parallel_safe)]
pub fn normalize_local_part(local_part: &str) -> String {
    let local = local_part.trim().to_lowercase();
    if local.contains('@') || Address::new(&local, "example.com").is_err() {
        ApiError::invalid(
            format!("malformed local part \"{local_part}\""),
            "Give the part before the @ only, such as sales or catchall.",
        )
        .raise();
    }
    local
}

/// A `from_filter` in canonical form: entries trimmed, lower-cased, joined by commas.
#[pg_extern(immutable, strict, parallel_safe)]
pub fn normalize_from_filter(filter: &str) -> String {
    match parse_from_filter(filter) {
        Ok(entries) => format_from_filter(&entries),
        Err(e) => ApiError::invalid(
            e.to_string(),
            "A from_filter is a comma-separated list of domains (example.com) and addresses (news@example.com).",
        )
        .raise(),
    }
}

/// The value of a system parameter — its default when its row was deleted — NULL when unset
/// or unknown.
#[pg_extern(stable, strict, parallel_safe)]
pub fn get_parameter(key: &str) -> Option<String> {
    store::config::get_parameter(key)
}

/// Sets a system parameter (NULL unsets it). Values are checked: see docs/REFERENCE.md, "Parameters".
#[pg_extern]
pub fn set_parameter(key: &str, value: Option<&str>) {
    store::config::set_parameter(key, value);
    if parameters::find(key).is_none() {
        notice!("parameter \"{key}\" is not one that mail_gateway reads; it was stored as given");
    }
}

/// The outgoing server that sends a mail from `email_from`, with the envelope sender and the
/// From header it will use (docs/REFERENCE.md, "find_outgoing_server"). `kind => 'mass'` prefers the dedicated mass-mailing
/// server. Returns one row; `server_id` is NULL when no server is active.
#[pg_extern(stable, parallel_safe)]
pub fn find_outgoing_server(
    email_from: &str,
    kind: default!(&str, "'transactional'"),
) -> TableIterator<
    'static,
    (
        name!(server_id, Option<i64>),
        name!(server_name, Option<String>),
        name!(smtp_from, String),
        name!(header_from, String),
    ),
> {
    let mass = match kind.parse() {
        Ok(MailKind::Mass) => true,
        Ok(MailKind::Transactional) => false,
        _ => ApiError::UnknownMailKind(kind.to_string()).raise(),
    };
    let from = Sender::parse(email_from).unwrap_or_else(|_| {
        ApiError::MalformedEmail(format!("malformed From address \"{email_from}\"")).raise()
    });
    let choice = choose(
        &store::config::active_outgoing_servers(),
        &store::config::sender_settings(),
        &from,
        email_from,
        mass,
    );
    let (id, name) = choice.server.unzip();
    TableIterator::once((id, name, choice.smtp_from, choice.header_from))
}
