//! The SPF check: one record at the domain that authorises every active outgoing server within
//! RFC 7208's ten DNS lookups; the fix is the record to publish instead, keeping its policy.

use std::net::IpAddr;

use super::{Check, Facts, SendingServer, Status};
use crate::dns::{DnsError, Lookup};

/// RFC 7208 §4.6.4: at most 10 mechanisms and modifiers that cause DNS lookups.
const LOOKUP_LIMIT: usize = 10;

pub(super) fn check(facts: &Facts, lookup: &dyn Lookup) -> Check {
    let domain = &facts.domain;
    let needed: Vec<String> = {
        let mut m: Vec<String> = facts.servers.iter().map(mechanism_for).collect();
        m.dedup();
        m
    };
    let records = match spf_records(lookup, domain) {
        Ok(r) => r,
        Err(e) => {
            return Check {
                check: "SPF".into(),
                status: Status::Error,
                current: None,
                expected: None,
                fix: format!("{e}. Check that the domain's DNS servers answer."),
            };
        }
    };
    match records.len() {
        0 => {
            let fresh = with_mechanisms("v=spf1", &needed);
            Check {
                check: "SPF".into(),
                status: Status::Error,
                current: None,
                expected: Some(fresh.clone()),
                fix: format!(
                    "{domain} has no SPF record: receivers cannot tell our servers from forgers. Publish one TXT \
                     record at {domain}: {fresh}"
                ),
            }
        }
        1 => one_record(facts, lookup, &records[0]),
        _ => several_records(domain, &records, &needed),
    }
}

/// The domain's only SPF record: within the lookup limit, and authorising every server.
fn one_record(facts: &Facts, lookup: &dyn Lookup, record: &str) -> Check {
    let mut walked = SpfWalk::default();
    walk(lookup, &facts.domain, record, 0, &mut walked);
    let error = |expected: Option<String>, fix: String| Check {
        check: "SPF".into(),
        status: Status::Error,
        current: Some(record.to_string()),
        expected,
        fix,
    };
    if walked.lookups > LOOKUP_LIMIT {
        return error(
            None,
            format!(
                "The record needs {} DNS lookups; receivers stop at {LOOKUP_LIMIT} (RFC 7208) and fail SPF \
                 for every message. Remove mechanisms no server needs, or replace include: mechanisms by the \
                 ip4:/ip6: ranges they publish.",
                walked.lookups
            ),
        );
    }
    let missing = unauthorised(facts, lookup, record, &walked);
    if !missing.is_empty() {
        let add: Vec<String> = missing.iter().map(|s| mechanism_for(s)).collect();
        let expected = with_mechanisms(record, &add);
        let names: Vec<String> = missing
            .iter()
            .map(|s| format!("\"{}\" ({})", s.name, s.host))
            .collect();
        let fix = format!(
            "The SPF record does not authorise {}. Replace the record (do not add a second one) with: {expected}",
            names.join(", ")
        );
        return error(Some(expected), fix);
    }
    let mut fix = format!(
        "The record authorises every active outgoing server ({} DNS lookups of {LOOKUP_LIMIT}).",
        walked.lookups
    );
    if !walked.errors.is_empty() {
        fix.push_str(&format!(" Note: {}.", walked.errors.join("; ")));
    }
    Check {
        check: "SPF".into(),
        status: if walked.errors.is_empty() {
            Status::Ok
        } else {
            Status::Warning
        },
        current: Some(record.to_string()),
        expected: Some(record.to_string()),
        fix,
    }
}

/// The servers `record` does not authorise: not every address of the host is in its networks,
/// and the record does not carry the mechanism we would add (a provider's include counts even
/// when its addresses could not be read).
fn unauthorised<'f>(
    facts: &'f Facts,
    lookup: &dyn Lookup,
    record: &str,
    walked: &SpfWalk,
) -> Vec<&'f SendingServer> {
    let record = record.to_lowercase();
    facts
        .servers
        .iter()
        .filter(|s| {
            let ips = lookup.ips(&s.host).unwrap_or_default();
            let authorised = !ips.is_empty()
                && ips
                    .iter()
                    .all(|ip| walked.networks.iter().any(|n| in_network(*ip, *n)));
            let included = record.contains(&mechanism_for(s).to_lowercase());
            !(authorised || included)
        })
        .collect()
}

/// Several SPF records (a permerror): the fix is one record with every mechanism of all of
/// them, and those our servers need.
fn several_records(domain: &str, records: &[String], needed: &[String]) -> Check {
    let mut merged = records[0].clone();
    for other in &records[1..] {
        let terms: Vec<String> = other
            .split_whitespace()
            .skip(1)
            .filter(|t| !ends_the_record(t))
            .filter(|t| !merged.split_whitespace().any(|m| m.eq_ignore_ascii_case(t)))
            .map(str::to_string)
            .collect();
        merged = with_mechanisms(&merged, &terms);
    }
    let add: Vec<String> = needed
        .iter()
        .filter(|m| !merged.to_lowercase().contains(&m.to_lowercase()))
        .cloned()
        .collect();
    let expected = with_mechanisms(&merged, &add);
    Check {
        check: "SPF".into(),
        status: Status::Error,
        current: Some(records.join(" | ")),
        expected: Some(expected.clone()),
        fix: format!(
            "{domain} has {} SPF records; receivers then fail SPF for every message (permerror). Replace them \
             with this single record: {expected}",
            records.len()
        ),
    }
}

/// The SPF include that authorises a well-known provider's servers.
fn provider_include(host: &str) -> Option<&'static str> {
    let host = host.to_lowercase();
    [
        ("office365.com", "spf.protection.outlook.com"),
        ("outlook.com", "spf.protection.outlook.com"),
        ("gmail.com", "_spf.google.com"),
        ("google.com", "_spf.google.com"),
        ("googlemail.com", "_spf.google.com"),
        ("sendgrid.net", "sendgrid.net"),
        ("mailgun.org", "mailgun.org"),
        ("amazonaws.com", "amazonses.com"),
        ("mailjet.com", "spf.mailjet.com"),
        ("sparkpostmail.com", "sparkpostmail.com"),
        ("brevo.com", "spf.brevo.com"),
        ("sendinblue.com", "spf.brevo.com"),
    ]
    .iter()
    .find(|(suffix, _)| host == *suffix || host.ends_with(&format!(".{suffix}")))
    .map(|(_, include)| *include)
}

/// The mechanism that authorises a server: the provider's include, else `a:host`.
fn mechanism_for(server: &SendingServer) -> String {
    match provider_include(&server.host) {
        Some(include) => format!("include:{include}"),
        None => match server.host.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => format!("ip4:{ip}"),
            Ok(IpAddr::V6(ip)) => format!("ip6:{ip}"),
            Err(_) => format!("a:{}", server.host.to_lowercase()),
        },
    }
}

fn spf_records(lookup: &dyn Lookup, domain: &str) -> Result<Vec<String>, DnsError> {
    Ok(lookup
        .txt(domain)?
        .into_iter()
        .filter(|t| {
            let t = t.trim().to_lowercase();
            t == "v=spf1" || t.starts_with("v=spf1 ")
        })
        .collect())
}

/// `all` or `redirect=`, with or without a qualifier: where a record's mechanisms end.
fn ends_the_record(term: &str) -> bool {
    let t = term.trim_start_matches(['+', '-', '~', '?']).to_lowercase();
    t == "all" || t.starts_with("redirect=")
}

/// The record with `mechanisms` added before its `all` (or its `redirect`), keeping the rest.
fn with_mechanisms(record: &str, mechanisms: &[String]) -> String {
    let terms: Vec<&str> = record.split_whitespace().collect();
    let at = terms
        .iter()
        .position(|t| ends_the_record(t))
        .unwrap_or(terms.len());
    let mut out: Vec<String> = terms[..at].iter().map(|t| t.to_string()).collect();
    out.extend(mechanisms.iter().cloned());
    out.extend(terms[at..].iter().map(|t| t.to_string()));
    if at == terms.len() {
        out.push("~all".into());
    }
    out.join(" ")
}

/// What an SPF record (and what it includes) authorises, and how many DNS lookups it costs.
#[derive(Default)]
struct SpfWalk {
    lookups: usize,
    networks: Vec<(IpAddr, u8)>,
    errors: Vec<String>,
}

pub(super) fn in_network(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let prefix = prefix.min(32) as u32;
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let prefix = prefix.min(128) as u32;
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

fn parse_network(value: &str, default_prefix: u8) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = match value.split_once('/') {
        Some((ip, prefix)) => (ip, prefix.parse().ok()?),
        None => (value, default_prefix),
    };
    Some((ip.parse().ok()?, prefix))
}

/// Walks `record` of `domain`: networks of `ip4`/`ip6`/`a`/`mx`, includes and redirects
/// followed (ten deep at most), every term that costs a DNS lookup counted. Macros are not
/// expanded.
fn walk(lookup: &dyn Lookup, domain: &str, record: &str, depth: usize, out: &mut SpfWalk) {
    if depth > 10 {
        out.errors.push(format!("include loop at {domain}"));
        return;
    }
    for term in record.split_whitespace().skip(1) {
        let term = term.trim_start_matches(['+', '-', '~', '?']).to_lowercase();
        let (name, value) = match term.split_once([':', '=']) {
            Some((n, v)) => (n, Some(v)),
            None => (term.as_str(), None),
        };
        match name {
            "ip4" | "ip6" => {
                let full = if name == "ip4" { 32 } else { 128 };
                if let Some(n) = value.and_then(|v| parse_network(v, full)) {
                    out.networks.push(n);
                }
            }
            "a" | "mx" => {
                out.lookups += 1;
                addresses_of(lookup, name, value.unwrap_or(domain), out);
            }
            "include" | "redirect" => {
                out.lookups += 1;
                if let Some(target) = value {
                    follow(lookup, target, depth, out);
                }
            }
            "ptr" | "exists" => out.lookups += 1,
            _ => {}
        }
    }
}

/// The networks of an `a` or `mx` mechanism on `target` (`host` or `host/prefix`).
fn addresses_of(lookup: &dyn Lookup, mechanism: &str, target: &str, out: &mut SpfWalk) {
    let (host, prefix) = match target.split_once('/') {
        Some((h, p)) => (h, p.parse::<u8>().ok()),
        None => (target, None),
    };
    let hosts = if mechanism == "a" {
        vec![host.to_string()]
    } else {
        lookup
            .mx(host)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, h)| h)
            .collect()
    };
    for h in hosts {
        for ip in lookup.ips(&h).unwrap_or_default() {
            let full = if ip.is_ipv4() { 32 } else { 128 };
            out.networks.push((ip, prefix.unwrap_or(full)));
        }
    }
}

/// An `include` or `redirect`: the target's one SPF record is walked in turn.
fn follow(lookup: &dyn Lookup, target: &str, depth: usize, out: &mut SpfWalk) {
    match spf_records(lookup, target) {
        Ok(records) if records.len() == 1 => walk(lookup, target, &records[0], depth + 1, out),
        Ok(records) if records.is_empty() => out
            .errors
            .push(format!("{target} (included) has no SPF record")),
        Ok(_) => out
            .errors
            .push(format!("{target} (included) has several SPF records")),
        Err(e) => out.errors.push(e.to_string()),
    }
}
