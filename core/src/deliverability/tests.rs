//! The checks against a zone held in memory.

use std::collections::HashMap;
use std::net::IpAddr;

use super::dmarc::{self, organizational_domain};
use super::spf::{self, in_network};
use super::*;
use crate::dns::DnsError;

#[derive(Default)]
struct Zone {
    txt: HashMap<String, Vec<String>>,
    mx: HashMap<String, Vec<(u16, String)>>,
    ips: HashMap<String, Vec<IpAddr>>,
}

impl Lookup for Zone {
    fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        Ok(self.txt.get(name).cloned().unwrap_or_default())
    }
    fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError> {
        Ok(self.mx.get(name).cloned().unwrap_or_default())
    }
    fn ips(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
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
    let c = spf::check(&facts(), &zone());
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
    let c = spf::check(&facts(), &z);
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
    let c = spf::check(&facts(), &z);
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
    let c = spf::check(&facts(), &z);
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
    assert_eq!(dkim::checks(&f, &z)[0].status, Status::Error, "missing");
    z.txt.insert(
        "mail._domainkey.example.com".into(),
        vec!["v=DKIM1; k=rsa; p=BBBB".into()],
    );
    assert!(dkim::checks(&f, &z)[0].fix.contains("another key"));
    z.txt.insert(
        "mail._domainkey.example.com".into(),
        vec!["v=DKIM1; k=rsa; p=AA AA".into()],
    );
    assert_eq!(dkim::checks(&f, &z)[0].status, Status::Ok);
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
    assert_eq!(dmarc::check(&f, &z).status, Status::Error);
    f.catchall_domain = Some("mail.example.com".into());
    assert_eq!(
        dmarc::check(&f, &z).status,
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
    assert_eq!(
        organizational_domain("mail.mycompany.co.uk", &z),
        "mycompany.co.uk"
    );
    assert_eq!(
        organizational_domain("mycompany.co.uk", &z),
        "mycompany.co.uk"
    );
    assert_eq!(organizational_domain("other.co.uk", &z), "other.co.uk");
    // Without any record on the way, a domain is its own organization.
    assert_eq!(
        organizational_domain("a.b.example.net", &z),
        "a.b.example.net"
    );
    // psd=n marks the organization even below a record of its parent.
    z.txt.insert(
        "_dmarc.unit.mycompany.co.uk".into(),
        vec!["v=DMARC1; p=none; psd=n".into()],
    );
    assert_eq!(
        organizational_domain("x.unit.mycompany.co.uk", &z),
        "unit.mycompany.co.uk"
    );
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
    assert_eq!(dmarc::check(&f, &z).status, Status::Error);
    f.catchall_domain = Some("mail.mycompany.co.uk".into());
    assert_eq!(dmarc::check(&f, &z).status, Status::Warning);
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

/// The example of the issue: under `co.uk`, the organization is `example.co.uk`, not `co.uk`.
#[test]
fn example_co_uk_is_its_own_organization() {
    let mut z = zone();
    z.txt.insert(
        "_dmarc.example.co.uk".into(),
        vec!["v=DMARC1; p=quarantine".into()],
    );
    assert_eq!(
        organizational_domain("mail.example.co.uk", &z),
        "example.co.uk"
    );
    assert_eq!(organizational_domain("example.co.uk", &z), "example.co.uk");
    let mut f = facts();
    f.domain = "example.co.uk".into();
    f.catchall_domain = Some("bounces.example.co.uk".into());
    assert_eq!(dmarc::check(&f, &z).status, Status::Warning, "aligned");
    f.catchall_domain = Some("another.co.uk".into());
    assert_eq!(dmarc::check(&f, &z).status, Status::Error, "not aligned");
}
