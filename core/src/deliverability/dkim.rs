//! The DKIM checks: one per active key, comparing the published key with ours.

use super::{Check, DkimKey, Facts, Status};
use crate::dns::Lookup;

/// One check per active key; a warning when the domain has none.
pub(super) fn checks(facts: &Facts, lookup: &dyn Lookup) -> Vec<Check> {
    let domain = &facts.domain;
    if facts.dkim.is_empty() {
        return vec![Check {
            check: "DKIM".into(),
            status: Status::Warning,
            current: None,
            expected: None,
            fix: format!(
                "Mail from {domain} is not signed. Create a key with SELECT mail_gateway.create_dkim_key('{domain}'); \
                 and publish the TXT record it returns."
            ),
        }];
    }
    facts
        .dkim
        .iter()
        .map(|key| key_check(domain, key, lookup))
        .collect()
}

/// Whether `selector._domainkey.domain` publishes `key`.
fn key_check(domain: &str, key: &DkimKey, lookup: &dyn Lookup) -> Check {
    let name = format!("{}._domainkey.{domain}", key.selector);
    let check = format!("DKIM {}", key.selector);
    let records = match lookup.txt(&name) {
        Ok(r) => r,
        Err(e) => {
            return Check {
                check,
                status: Status::Error,
                current: None,
                expected: Some(key.record.clone()),
                fix: format!("{e}."),
            };
        }
    };
    let published = records.iter().find_map(|r| published_key(r));
    let (status, fix) = match published {
        None => (
            Status::Error,
            format!(
                "No DKIM key is published for selector \"{}\": receivers cannot verify our signatures. \
                 Publish a TXT record at {name}: {}",
                key.selector, key.record
            ),
        ),
        Some(p) if p == key.public_key => (
            Status::Ok,
            format!("{name} publishes the key we sign with."),
        ),
        Some(_) => (
            Status::Error,
            format!(
                "{name} publishes another key than the one we sign with (an old key, or a typo): every \
                 signature fails. Replace the TXT record with: {}",
                key.record
            ),
        ),
    };
    Check {
        check,
        status,
        current: records.first().cloned(),
        expected: Some(key.record.clone()),
        fix,
    }
}

/// The `p=` of a DKIM record, without the spaces a DNS console may have put in it.
fn published_key(record: &str) -> Option<String> {
    record
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix("p="))
        .map(|p| p.split_whitespace().collect::<String>())
}
