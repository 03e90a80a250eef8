//! `check_domain`'s checks (docs/REFERENCE.md, "check_domain"), pure: given what we send with
//! (servers, DKIM keys, the alias domain) and a DNS `Lookup`, one row per check with what DNS
//! holds, what it should hold, and the fix in words: `spf`, `dkim`, `dmarc` (with the
//! organizational domain), `mx`. No PostgreSQL.

mod dkim;
mod dmarc;
mod mx;
mod spf;
#[cfg(test)]
mod tests;

use crate::dns::Lookup;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warning,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub current: Option<String>,
    pub expected: Option<String>,
    pub fix: String,
}

/// An outgoing server that sends for the domain.
#[derive(Debug, Clone)]
pub struct SendingServer {
    pub name: String,
    pub host: String,
}

/// An active DKIM key of the domain.
#[derive(Debug, Clone)]
pub struct DkimKey {
    pub selector: String,
    /// The TXT record to publish (`v=DKIM1; k=…; p=…`).
    pub record: String,
    /// Base64, as in `p=`.
    pub public_key: String,
}

pub struct Facts {
    pub domain: String,
    pub servers: Vec<SendingServer>,
    pub dkim: Vec<DkimKey>,
    /// `mail.catchall.domain`: the Return-Path domain (SPF's), and where replies come back.
    pub catchall_domain: Option<String>,
    /// The hosts of the incoming servers, for the MX fix.
    pub incoming_hosts: Vec<String>,
}

/// Every check for the domain, in a fixed order: SPF, DKIM (one per key), DMARC, MX.
pub fn check_domain(facts: &Facts, lookup: &dyn Lookup) -> Vec<Check> {
    let mut out = vec![spf::check(facts, lookup)];
    out.extend(dkim::checks(facts, lookup));
    out.push(dmarc::check(facts, lookup));
    out.extend(mx::check(facts, lookup));
    out
}
