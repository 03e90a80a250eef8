//! `check_domain` (docs/REFERENCE.md, "check_domain"): SPF, DKIM, DMARC and MX of a sending domain, each with what DNS
//! holds, what it should hold, and the fix. It asks DNS from the caller's session (like the
//! check button it stands for), never from the worker's send path.

use std::time::Duration;

use pgrx::prelude::*;

use crate::deliverability::{self, DkimKey, Facts, SendingServer};
use crate::dkim::Algorithm;
use crate::dns::Dns;
use crate::error::ApiError;
use crate::routing::server::sends_for_domain;
use crate::{gucs, store};

/// Each DNS question waits at most this long (twice).
const DNS_TIMEOUT: Duration = Duration::from_secs(3);

#[allow(clippy::type_complexity)]
#[pg_extern]
pub fn check_domain(
    domain: &str,
) -> TableIterator<
    'static,
    (
        name!(check, String),
        name!(status, String),
        name!(current, Option<String>),
        name!(expected, Option<String>),
        name!(fix, String),
    ),
> {
    let domain = super::config::normalize_domain(domain);
    let settings = store::config::sender_settings();
    let servers: Vec<SendingServer> = store::servers::server_hosts()
        .into_iter()
        .filter(|s| sends_for_domain(&s.from_filter, &settings.default_from_filter, &domain))
        .map(|s| SendingServer {
            name: s.name,
            host: s.host,
        })
        .collect();
    let dkim = store::dkim::active_keys(&domain)
        .into_iter()
        .map(|key| {
            let algorithm = key.algorithm.parse().unwrap_or(Algorithm::Rsa);
            DkimKey {
                record: format!("v=DKIM1; k={}; p={}", algorithm.dns_name(), key.public_key),
                selector: key.selector,
                public_key: key.public_key,
            }
        })
        .collect();
    let facts = Facts {
        domain: domain.clone(),
        servers,
        dkim,
        catchall_domain: store::config::get_parameter("mail.catchall.domain"),
        incoming_hosts: store::incoming::incoming_hosts(),
    };
    let dns = Dns::new(gucs::dns_server().as_deref(), DNS_TIMEOUT).unwrap_or_else(|e| {
        ApiError::invalid(
            e.to_string(),
            "mail_gateway.dns_server is ip:port, e.g. 127.0.0.1:53, or empty.",
        )
        .raise()
    });
    let rows: Vec<_> = deliverability::check_domain(&facts, &dns)
        .into_iter()
        .map(|c| {
            (
                c.check,
                c.status.as_str().to_string(),
                c.current,
                c.expected,
                c.fix,
            )
        })
        .collect();
    TableIterator::new(rows)
}
