//! The MX check: replies and bounces reach the alias domain's incoming mailboxes.

use super::{Check, Facts, Status};
use crate::dns::Lookup;

/// The MX records of the alias domain; None for another sending domain, which receives
/// neither our replies nor our bounces.
pub(super) fn check(facts: &Facts, lookup: &dyn Lookup) -> Option<Check> {
    let domain = &facts.domain;
    if facts.catchall_domain.as_deref() != Some(domain.as_str()) {
        return None;
    }
    Some(match lookup.mx(domain) {
        Err(e) => Check {
            check: "MX".into(),
            status: Status::Error,
            current: None,
            expected: None,
            fix: format!("{e}."),
        },
        Ok(records) if records.is_empty() => Check {
            check: "MX".into(),
            status: Status::Error,
            current: None,
            expected: facts.incoming_hosts.first().map(|h| format!("10 {h}")),
            fix: format!(
                "{domain} has no MX record: replies to our mail and bounces (catchall@, bounce@{domain}) cannot reach \
                 the incoming mailboxes. Publish an MX record for {domain} pointing to the mail server that holds \
                 them{}.",
                facts
                    .incoming_hosts
                    .first()
                    .map(|h| format!(
                        " (the incoming server's host is {h}; use its provider's MX host)"
                    ))
                    .unwrap_or_default()
            ),
        },
        Ok(mut records) => {
            records.sort();
            let list: Vec<String> = records.iter().map(|(p, h)| format!("{p} {h}")).collect();
            Check {
                check: "MX".into(),
                status: Status::Ok,
                current: Some(list.join(", ")),
                expected: None,
                fix: format!("Mail to {domain} reaches {}.", list.join(", ")),
            }
        }
    })
}
