//! `check_domain`'s checks (docs/REFERENCE.md, "check_domain"), pure: given what we send with (servers, DKIM keys, the
//! alias domain) and a DNS `Lookup`, one row per check with what DNS holds, what it should
//! hold, and the fix in words. No PostgreSQL.

use std::net::IpAddr;

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

/// RFC 7208 §4.6.4: at most 10 mechanisms and modifiers that cause DNS lookups.
const LOOKUP_LIMIT: usize = 10;

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

fn spf_records(lookup: &dyn Lookup, domain: &str) -> Result<Vec<String>, String> {
    Ok(lookup
        .txt(domain)?
        .into_iter()
        .filter(|t| {
            let t = t.trim().to_lowercase();
            t == "v=spf1" || t.starts_with("v=spf1 ")
        })
        .collect())
}

/// What an SPF record (and what it includes) authorises, and how many DNS lookups it costs.
#[derive(Default)]
struct SpfWalk {
    lookups: usize,
    networks: Vec<(IpAddr, u8)>,
    errors: Vec<String>,
}

fn in_network(ip: IpAddr, (net, prefix): (IpAddr, u8)) -> bool {
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

fn walk(lookup: &dyn Lookup, domain: &str, record: &str, depth: usize, out: &mut SpfWalk) {
    if depth > 10 {
        out.errors.push(format!("include loop at {domain}"));
        return;
    }
    for term in record.split_whitespace().skip(1) {
        let term = term.trim_start_matches(['+', '-', '~', '?']).to_lowercase();
        let (name, value) = match term.split_once([':', '=']) {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (term.clone(), None),
        };
        match name.as_str() {
            "ip4" => {
                if let Some(n) = value.as_deref().and_then(|v| parse_network(v, 32)) {
                    out.networks.push(n);
                }
            }
            "ip6" => {
                if let Some(n) = value.as_deref().and_then(|v| parse_network(v, 128)) {
                    out.networks.push(n);
                }
            }
            "a" | "mx" => {
                out.lookups += 1;
                let target = value.clone().unwrap_or_else(|| domain.to_string());
                let (host, prefix) = match target.split_once('/') {
                    Some((h, p)) => (h.to_string(), p.parse::<u8>().ok()),
                    None => (target, None),
                };
                let hosts = if name == "a" {
                    vec![host]
                } else {
                    lookup
                        .mx(&host)
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
            "include" | "redirect" => {
                out.lookups += 1;
                let Some(target) = value else { continue };
                match spf_records(lookup, &target) {
                    Ok(records) if records.len() == 1 => {
                        walk(lookup, &target, &records[0], depth + 1, out)
                    }
                    Ok(records) if records.is_empty() => out
                        .errors
                        .push(format!("{target} (included) has no SPF record")),
                    Ok(_) => out
                        .errors
                        .push(format!("{target} (included) has several SPF records")),
                    Err(e) => out.errors.push(e),
                }
            }
            "ptr" | "exists" => out.lookups += 1,
            _ => {}
        }
    }
}

/// The record with `mechanisms` added before its `all` (or its `redirect`), keeping the rest.
fn with_mechanisms(record: &str, mechanisms: &[String]) -> String {
    let terms: Vec<&str> = record.split_whitespace().collect();
    let at = terms
        .iter()
        .position(|t| {
            let t = t.trim_start_matches(['+', '-', '~', '?']).to_lowercase();
            t == "all" || t.starts_with("redirect=")
        })
        .unwrap_or(terms.len());
    let mut out: Vec<String> = terms[..at].iter().map(|t| t.to_string()).collect();
    out.extend(mechanisms.iter().cloned());
    out.extend(terms[at..].iter().map(|t| t.to_string()));
    if at == terms.len() {
        out.push("~all".into());
    }
    out.join(" ")
}

fn spf(facts: &Facts, lookup: &dyn Lookup) -> Check {
    let domain = &facts.domain;
    let needed: Vec<String> = {
        let mut m: Vec<String> = facts.servers.iter().map(mechanism_for).collect();
        m.dedup();
        m
    };
    let fresh = with_mechanisms("v=spf1", &needed);
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
        0 => Check {
            check: "SPF".into(),
            status: Status::Error,
            current: None,
            expected: Some(fresh.clone()),
            fix: format!(
                "{domain} has no SPF record: receivers cannot tell our servers from forgers. Publish one TXT \
                 record at {domain}: {fresh}"
            ),
        },
        1 => {
            let record = &records[0];
            let mut walked = SpfWalk::default();
            walk(lookup, domain, record, 0, &mut walked);
            let missing: Vec<&SendingServer> = facts
                .servers
                .iter()
                .filter(|s| {
                    let ips = lookup.ips(&s.host).unwrap_or_default();
                    let authorised = !ips.is_empty()
                        && ips
                            .iter()
                            .all(|ip| walked.networks.iter().any(|n| in_network(*ip, *n)));
                    // A provider's include counts even when its addresses could not be read.
                    let included = record
                        .to_lowercase()
                        .contains(&mechanism_for(s).to_lowercase());
                    !(authorised || included)
                })
                .collect();
            if walked.lookups > LOOKUP_LIMIT {
                return Check {
                    check: "SPF".into(),
                    status: Status::Error,
                    current: Some(record.clone()),
                    expected: None,
                    fix: format!(
                        "The record needs {} DNS lookups; receivers stop at {LOOKUP_LIMIT} (RFC 7208) and fail SPF \
                         for every message. Remove mechanisms no server needs, or replace include: mechanisms by the \
                         ip4:/ip6: ranges they publish.",
                        walked.lookups
                    ),
                };
            }
            if !missing.is_empty() {
                let add: Vec<String> = missing.iter().map(|s| mechanism_for(s)).collect();
                let expected = with_mechanisms(record, &add);
                let names: Vec<String> = missing
                    .iter()
                    .map(|s| format!("\"{}\" ({})", s.name, s.host))
                    .collect();
                return Check {
                    check: "SPF".into(),
                    status: Status::Error,
                    current: Some(record.clone()),
                    expected: Some(expected.clone()),
                    fix: format!(
                        "The SPF record does not authorise {}. Replace the record (do not add a second one) with: {expected}",
                        names.join(", ")
                    ),
                };
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
                current: Some(record.clone()),
                expected: Some(record.clone()),
                fix,
            }
        }
        n => {
            // One record with every mechanism of all of them.
            let mut merged = records[0].clone();
            for other in &records[1..] {
                let terms: Vec<String> = other
                    .split_whitespace()
                    .skip(1)
                    .filter(|t| {
                        let t = t.trim_start_matches(['+', '-', '~', '?']).to_lowercase();
                        t != "all" && !t.starts_with("redirect=")
                    })
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
                    "{domain} has {n} SPF records; receivers then fail SPF for every message (permerror). Replace them \
                     with this single record: {expected}"
                ),
            }
        }
    }
}

fn dkim(facts: &Facts, lookup: &dyn Lookup) -> Vec<Check> {
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
        .map(|key| {
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
            let published = records.iter().find_map(|r| {
                r.split(';')
                    .map(str::trim)
                    .find_map(|t| t.strip_prefix("p="))
                    .map(|p| p.split_whitespace().collect::<String>())
            });
            match published {
                None => Check {
                    check,
                    status: Status::Error,
                    current: records.first().cloned(),
                    expected: Some(key.record.clone()),
                    fix: format!(
                        "No DKIM key is published for selector \"{}\": receivers cannot verify our signatures. \
                         Publish a TXT record at {name}: {}",
                        key.selector, key.record
                    ),
                },
                Some(p) if p == key.public_key => Check {
                    check,
                    status: Status::Ok,
                    current: records.first().cloned(),
                    expected: Some(key.record.clone()),
                    fix: format!("{name} publishes the key we sign with."),
                },
                Some(_) => Check {
                    check,
                    status: Status::Error,
                    current: records.first().cloned(),
                    expected: Some(key.record.clone()),
                    fix: format!(
                        "{name} publishes another key than the one we sign with (an old key, or a typo): every \
                         signature fails. Replace the TXT record with: {}",
                        key.record
                    ),
                },
            }
        })
        .collect()
}

fn dmarc_policy(record: &str) -> Option<String> {
    record
        .split(';')
        .map(str::trim)
        .find_map(|t| t.strip_prefix("p=").map(|p| p.trim().to_lowercase()))
}

/// The organizational domain of `domain` by the DNS tree walk of DMARCbis (RFC 9989 §4.10.2),
/// as mail-auth decides it when it verifies: from the domain up (at most 8 names), the first
/// DMARC record with `psd=n` names it; one with `psd=y` above the domain is a public suffix,
/// and the name one label below it is the organizational domain; otherwise the shortest name
/// with a record, or the domain itself. Unlike "the last two labels", `a.co.uk` and `b.co.uk`
/// are two organizations. A failed lookup counts as no record.
fn org(domain: &str, lookup: &dyn Lookup) -> String {
    let domain = domain.trim_end_matches('.').to_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    // The domain itself, then its parents from at most 7 labels down to 1.
    let mut names = vec![domain.clone()];
    for keep in (1..labels.len().min(8)).rev() {
        names.push(labels[labels.len() - keep..].join("."));
    }
    names.dedup();
    let mut shortest = None;
    for name in &names {
        let Some(record) = lookup
            .txt(&format!("_dmarc.{name}"))
            .ok()
            .and_then(|records| {
                records
                    .into_iter()
                    .find(|r| r.trim().to_lowercase().starts_with("v=dmarc1"))
            })
        else {
            continue;
        };
        let psd = record
            .split(';')
            .map(str::trim)
            .find_map(|t| t.strip_prefix("psd=").map(|v| v.trim().to_lowercase()));
        match psd.as_deref() {
            Some("n") => return name.clone(),
            Some("y") if *name != domain => {
                let depth = name.split('.').count() + 1;
                return labels[labels.len() - depth..].join(".");
            }
            _ => shortest = Some(name.clone()),
        }
    }
    shortest.unwrap_or(domain)
}

fn dmarc(facts: &Facts, lookup: &dyn Lookup) -> Check {
    let domain = &facts.domain;
    let name = format!("_dmarc.{domain}");
    let expected = format!("v=DMARC1; p=none; rua=mailto:postmaster@{domain}");
    let record = match lookup.txt(&name) {
        Ok(records) => records
            .into_iter()
            .find(|r| r.trim().to_lowercase().starts_with("v=dmarc1")),
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
    let policy = dmarc_policy(&record).unwrap_or_else(|| "none".into());
    // Our own mail passes DMARC when SPF passes for an aligned Return-Path domain, or a DKIM
    // signature of an aligned domain verifies.
    let spf_aligned = facts
        .catchall_domain
        .as_deref()
        .is_some_and(|c| org(c, lookup) == org(domain, lookup));
    let dkim_aligned = !facts.dkim.is_empty();
    let relayed = "Mail relayed from outside authors is sent From our default sender with the author's name, so \
                   their own DMARC policy does not apply to it; an author from a p=reject domain (yahoo.com, aol.com) \
                   writing From their own address would never be delivered.";
    match policy.as_str() {
        "quarantine" | "reject" if !spf_aligned && !dkim_aligned => Check {
            check: "DMARC".into(),
            status: Status::Error,
            current: Some(record),
            expected: None,
            fix: format!(
                "p={policy}: receivers {} mail From {domain} that fails DMARC. Ours would: the Return-Path domain ({}) \
                 is not aligned with {domain} and no DKIM key signs for it. Create a DKIM key for {domain}, or set \
                 mail.catchall.domain to {domain}. {relayed}",
                if policy == "reject" {
                    "refuse"
                } else {
                    "file as spam"
                },
                facts.catchall_domain.as_deref().unwrap_or("unset")
            ),
        },
        "quarantine" | "reject" => Check {
            check: "DMARC".into(),
            status: Status::Warning,
            current: Some(record),
            expected: None,
            fix: format!(
                "p={policy}: mail From {domain} must pass DMARC — ours does through {}. Keep the SPF and DKIM checks \
                 above green: a failure becomes a {} message. {relayed}",
                match (spf_aligned, dkim_aligned) {
                    (true, true) => "aligned SPF and DKIM",
                    (true, false) => "aligned SPF only (add a DKIM key to survive forwarding)",
                    _ => "DKIM only (the Return-Path domain is not aligned)",
                },
                if policy == "reject" {
                    "refused"
                } else {
                    "quarantined"
                }
            ),
        },
        _ => Check {
            check: "DMARC".into(),
            status: Status::Ok,
            current: Some(record),
            expected: None,
            fix: format!("p=none: receivers only report. {relayed}"),
        },
    }
}

fn mx(facts: &Facts, lookup: &dyn Lookup) -> Option<Check> {
    let domain = &facts.domain;
    // Replies and bounces come back to the alias domain only.
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

/// Every check for the domain, in a fixed order: SPF, DKIM (one per key), DMARC, MX.
pub fn check_domain(facts: &Facts, lookup: &dyn Lookup) -> Vec<Check> {
    let mut out = vec![spf(facts, lookup)];
    out.extend(dkim(facts, lookup));
    out.push(dmarc(facts, lookup));
    out.extend(mx(facts, lookup));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Zone {
        txt: HashMap<String, Vec<String>>,
        mx: HashMap<String, Vec<(u16, String)>>,
        ips: HashMap<String, Vec<IpAddr>>,
    }

    impl Lookup for Zone {
        fn txt(&self, name: &str) -> Result<Vec<String>, String> {
            Ok(self.txt.get(name).cloned().unwrap_or_default())
        }
        fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, String> {
            Ok(self.mx.get(name).cloned().unwrap_or_default())
        }
        fn ips(&self, name: &str) -> Result<Vec<IpAddr>, String> {
            Ok(self.ips.get(name).cloned().unwrap_or_default())
        }
    }

    fn facts() -> Facts {
        Facts {
            domain: "example.com".into(),
            servers: vec![
                SendingServer {
                    name: "relay".into(),
                    host: "smtp.example.com".into(),
                },
                SendingServer {
                    name: "o365".into(),
                    host: "smtp.office365.com".into(),
                },
            ],
            dkim: vec![],
            catchall_domain: Some("example.com".into()),
            incoming_hosts: vec!["imap.example.com".into()],
        }
    }

    fn zone() -> Zone {
        let mut z = Zone::default();
        z.ips.insert(
            "smtp.example.com".into(),
            vec!["192.0.2.10".parse().unwrap()],
        );
        z
    }

    #[test]
    fn no_spf_gives_the_whole_record() {
        let c = spf(&facts(), &zone());
        assert_eq!(c.status, Status::Error);
        assert_eq!(
            c.expected.as_deref(),
            Some("v=spf1 a:smtp.example.com include:spf.protection.outlook.com ~all")
        );
    }

    #[test]
    fn a_missing_server_extends_the_record_before_all() {
        let mut z = zone();
        z.txt.insert(
            "example.com".into(),
            vec!["v=spf1 ip4:192.0.2.0/24 -all".into()],
        );
        let c = spf(&facts(), &z);
        assert_eq!(c.status, Status::Error);
        assert_eq!(
            c.expected.as_deref(),
            Some("v=spf1 ip4:192.0.2.0/24 include:spf.protection.outlook.com -all")
        );
        assert!(c.fix.contains("\"o365\"") && !c.fix.contains("\"relay\""));
    }

    #[test]
    fn two_records_are_merged_into_one() {
        let mut z = zone();
        z.txt.insert(
            "example.com".into(),
            vec![
                "v=spf1 a:smtp.example.com ~all".into(),
                "v=spf1 include:_spf.google.com ~all".into(),
            ],
        );
        let c = spf(&facts(), &z);
        assert_eq!(c.status, Status::Error);
        assert_eq!(
            c.expected.as_deref(),
            Some(
                "v=spf1 a:smtp.example.com include:_spf.google.com include:spf.protection.outlook.com ~all"
            )
        );
    }

    #[test]
    fn too_many_lookups_is_an_error() {
        let mut z = zone();
        let includes: Vec<String> = (0..11)
            .map(|i| format!("include:s{i}.example.net"))
            .collect();
        z.txt.insert(
            "example.com".into(),
            vec![format!(
                "v=spf1 {} a:smtp.example.com include:spf.protection.outlook.com ~all",
                includes.join(" ")
            )],
        );
        for i in 0..11 {
            z.txt.insert(
                format!("s{i}.example.net"),
                vec!["v=spf1 ip4:198.51.100.1 ~all".into()],
            );
        }
        let c = spf(&facts(), &z);
        assert_eq!(c.status, Status::Error);
        assert!(c.fix.contains("13 DNS lookups"), "{}", c.fix);
    }

    #[test]
    fn dkim_compares_the_published_key() {
        let mut f = facts();
        f.dkim.push(DkimKey {
            selector: "mail".into(),
            record: "v=DKIM1; k=rsa; p=AAAA".into(),
            public_key: "AAAA".into(),
        });
        let mut z = zone();
        assert_eq!(dkim(&f, &z)[0].status, Status::Error, "missing");
        z.txt.insert(
            "mail._domainkey.example.com".into(),
            vec!["v=DKIM1; k=rsa; p=BBBB".into()],
        );
        assert!(dkim(&f, &z)[0].fix.contains("another key"));
        z.txt.insert(
            "mail._domainkey.example.com".into(),
            vec!["v=DKIM1; k=rsa; p=AA AA".into()],
        );
        assert_eq!(dkim(&f, &z)[0].status, Status::Ok);
    }

    #[test]
    fn dmarc_reject_without_alignment_is_an_error() {
        let mut f = facts();
        f.catchall_domain = Some("other.net".into());
        let mut z = zone();
        z.txt.insert(
            "_dmarc.example.com".into(),
            vec!["v=DMARC1; p=reject".into()],
        );
        assert_eq!(dmarc(&f, &z).status, Status::Error);
        f.catchall_domain = Some("mail.example.com".into());
        assert_eq!(
            dmarc(&f, &z).status,
            Status::Warning,
            "aligned through the organizational domain"
        );
    }

    #[test]
    fn organizational_domains_come_from_the_dns_tree_walk() {
        let mut z = zone();
        z.txt.insert(
            "_dmarc.mycompany.co.uk".into(),
            vec!["v=DMARC1; p=reject".into()],
        );
        // co.uk publishes itself as a public suffix (as DMARCbis asks registries to).
        z.txt.insert(
            "_dmarc.co.uk".into(),
            vec!["v=DMARC1; p=none; psd=y".into()],
        );
        assert_eq!(org("mail.mycompany.co.uk", &z), "mycompany.co.uk");
        assert_eq!(org("mycompany.co.uk", &z), "mycompany.co.uk");
        assert_eq!(org("other.co.uk", &z), "other.co.uk");
        // Without any record on the way, a domain is its own organization.
        assert_eq!(org("a.b.example.net", &z), "a.b.example.net");
        // psd=n marks the organization even below a record of its parent.
        z.txt.insert(
            "_dmarc.unit.mycompany.co.uk".into(),
            vec!["v=DMARC1; p=none; psd=n".into()],
        );
        assert_eq!(org("x.unit.mycompany.co.uk", &z), "unit.mycompany.co.uk");
    }

    #[test]
    fn a_neighbour_under_the_same_public_suffix_is_not_aligned() {
        let mut f = facts();
        f.domain = "mycompany.co.uk".into();
        f.catchall_domain = Some("other.co.uk".into());
        let mut z = zone();
        z.txt.insert(
            "_dmarc.mycompany.co.uk".into(),
            vec!["v=DMARC1; p=reject".into()],
        );
        // The last two labels ("co.uk") made these two aligned.
        assert_eq!(dmarc(&f, &z).status, Status::Error);
        f.catchall_domain = Some("mail.mycompany.co.uk".into());
        assert_eq!(dmarc(&f, &z).status, Status::Warning);
    }

    #[test]
    fn networks_match() {
        assert!(in_network(
            "192.0.2.10".parse().unwrap(),
            ("192.0.2.0".parse().unwrap(), 24)
        ));
        assert!(!in_network(
            "192.0.3.10".parse().unwrap(),
            ("192.0.2.0".parse().unwrap(), 24)
        ));
        assert!(in_network(
            "2001:db8::1".parse().unwrap(),
            ("2001:db8::".parse().unwrap(), 32)
        ));
    }
}
