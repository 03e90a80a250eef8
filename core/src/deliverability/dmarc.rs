//! The DMARC check: the domain's policy, and whether our own mail passes it (relaxed
//! alignment on organizational domains).

use super::{Check, Facts, Status};
use crate::dns::Lookup;

/// What every DMARC fix adds about mail we relay for outside authors.
const RELAYED: &str = "Mail relayed from outside authors is sent From our default sender with the author's name, so \
                       their own DMARC policy does not apply to it; an author from a p=reject domain (yahoo.com, aol.com) \
                       writing From their own address would never be delivered.";

pub(super) fn check(facts: &Facts, lookup: &dyn Lookup) -> Check {
    let domain = &facts.domain;
    let name = format!("_dmarc.{domain}");
    let record = match lookup.txt(&name) {
        Ok(records) => dmarc_record(records),
        Err(e) => {
            return Check {
                check: "DMARC".into(),
                status: Status::Error,
                current: None,
                expected: None,
                fix: format!("{e}."),
            };
        }
    };
    let Some(record) = record else {
        let expected = format!("v=DMARC1; p=none; rua=mailto:postmaster@{domain}");
        return Check {
            check: "DMARC".into(),
            status: Status::Warning,
            current: None,
            expected: Some(expected.clone()),
            fix: format!(
                "{domain} has no DMARC record: large mailbox providers increasingly want one. Start by monitoring: \
                 publish a TXT record at {name}: {expected}"
            ),
        };
    };
    let policy = policy(&record).unwrap_or_else(|| "none".into());
    let (status, fix) = match policy.as_str() {
        "quarantine" | "reject" => enforced(facts, lookup, &policy),
        _ => (
            Status::Ok,
            format!("p=none: receivers only report. {RELAYED}"),
        ),
    };
    Check {
        check: "DMARC".into(),
        status,
        current: Some(record),
        expected: None,
        fix,
    }
}

/// Under `p=quarantine` or `p=reject`: whether our own mail passes DMARC — when SPF passes for
/// an aligned Return-Path domain, or a DKIM signature of an aligned domain verifies.
fn enforced(facts: &Facts, lookup: &dyn Lookup, policy: &str) -> (Status, String) {
    let domain = &facts.domain;
    let spf_aligned = facts
        .catchall_domain
        .as_deref()
        .is_some_and(|c| organizational_domain(c, lookup) == organizational_domain(domain, lookup));
    let dkim_aligned = !facts.dkim.is_empty();
    let reject = policy == "reject";
    if !spf_aligned && !dkim_aligned {
        return (
            Status::Error,
            format!(
                "p={policy}: receivers {} mail From {domain} that fails DMARC. Ours would: the Return-Path domain ({}) \
                 is not aligned with {domain} and no DKIM key signs for it. Create a DKIM key for {domain}, or set \
                 mail.catchall.domain to {domain}. {RELAYED}",
                if reject { "refuse" } else { "file as spam" },
                facts.catchall_domain.as_deref().unwrap_or("unset")
            ),
        );
    }
    let through = match (spf_aligned, dkim_aligned) {
        (true, true) => "aligned SPF and DKIM",
        (true, false) => "aligned SPF only (add a DKIM key to survive forwarding)",
        _ => "DKIM only (the Return-Path domain is not aligned)",
    };
    (
        Status::Warning,
        format!(
            "p={policy}: mail From {domain} must pass DMARC — ours does through {through}. Keep the SPF and DKIM \
             checks above green: a failure becomes a {} message. {RELAYED}",
            if reject { "refused" } else { "quarantined" }
        ),
    )
}

/// The DMARC record among a name's TXT records.
fn dmarc_record(records: Vec<String>) -> Option<String> {
    records
        .into_iter()
        .find(|r| r.trim().to_lowercase().starts_with("v=dmarc1"))
}

/// The `p=` of a DMARC record, lower-case.
fn policy(record: &str) -> Option<String> {
    tag(record, "p=")
}

/// The value of the tag `name` (with its `=`) of a DMARC record, lower-case.
fn tag(record: &str, name: &str) -> Option<String> {
    record
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix(name).map(|v| v.trim().to_lowercase()))
}

/// The organizational domain of `domain` by the DNS tree walk of DMARCbis (RFC 9989 §4.10.2),
/// as mail-auth decides it when it verifies: from the domain up (at most 8 names), the first
/// DMARC record with `psd=n` names it; one with `psd=y` above the domain is a public suffix,
/// and the name one label below it is the organizational domain; otherwise the shortest name
/// with a record, or the domain itself. Unlike "the last two labels", `a.co.uk` and `b.co.uk`
/// are two organizations. A failed lookup counts as no record. (mail-auth's own walk is
/// private to its DMARC verification and asks its resolver, not a `Lookup`.)
pub(super) fn organizational_domain(domain: &str, lookup: &dyn Lookup) -> String {
    let domain = domain.trim_end_matches('.').to_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let mut shortest = None;
    for name in tree_walk_names(&labels) {
        let Some(record) = lookup
            .txt(&format!("_dmarc.{name}"))
            .ok()
            .and_then(dmarc_record)
        else {
            continue;
        };
        match tag(&record, "psd=").as_deref() {
            Some("n") => return name,
            Some("y") if name != domain => {
                let depth = name.split('.').count() + 1;
                return labels[labels.len() - depth..].join(".");
            }
            _ => shortest = Some(name),
        }
    }
    shortest.unwrap_or(domain)
}

/// The names a tree walk asks, longest first: the domain itself, then its parents from at most
/// 7 labels down to 1.
fn tree_walk_names(labels: &[&str]) -> Vec<String> {
    let mut names = vec![labels.join(".")];
    for keep in (1..labels.len().min(8)).rev() {
        names.push(labels[labels.len() - keep..].join("."));
    }
    names.dedup();
    names
}
