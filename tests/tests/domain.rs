//! check_domain against a real DNS server (dnslib) serving one zone per case of the issue:
//! no SPF, two SPF records, SPF missing a server, a correct SPF, too many lookups; DKIM missing,
//! mismatched, correct; DMARC none, quarantine, reject; MX missing and present.

use mail_gateway_tests::dns::DnsServer;
use mail_gateway_tests::{Client, Gateway, error_text, exec};
use serde_json::json;

struct Row {
    status: String,
    current: Option<String>,
    expected: Option<String>,
    fix: String,
}

fn check(db: &mut Client, domain: &str, name: &str) -> Row {
    let rows = db
        .query("SELECT * FROM mail_gateway.check_domain($1)", &[&domain])
        .map_err(|e| error_text(&e))
        .unwrap();
    let row = rows
        .iter()
        .find(|r| r.get::<_, String>(0) == name)
        .unwrap_or_else(|| panic!("no {name} row for {domain}"));
    Row {
        status: row.get(1),
        current: row.get(2),
        expected: row.get(3),
        fix: row.get(4),
    }
}

#[test]
fn every_case_gets_its_status_and_its_fix() {
    let (_cluster, mut db) = Gateway::new()
        .without_preload()
        .catchall("good.test")
        .sql(
            "INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption)
                 VALUES ('relay', 'mail.relay.test', 587, 'starttls');
             INSERT INTO mail_gateway.outgoing_server (name, host, port, encryption, from_filter)
                 VALUES ('extra', 'mail2.relay.test', 587, 'starttls', 'missing.test');
             INSERT INTO mail_gateway.incoming_server (name, host, username) VALUES ('box', 'imap.good.test', 'u');",
        )
        .start();
    let key = |db: &mut Client, domain: &str| -> String {
        db.query_one("SELECT mail_gateway.create_dkim_key($1)", &[&domain])
            .unwrap();
        db.query_one(
            "SELECT public_key FROM mail_gateway.dkim_key WHERE domain = $1",
            &[&domain],
        )
        .unwrap()
        .get(0)
    };
    let good_key = key(&mut db, "good.test");
    key(&mut db, "two.test");
    key(&mut db, "nospf.test");
    let includes: Vec<String> = (0..11).map(|i| format!("include:s{i}.many.test")).collect();
    let mut zones = json!({
        "mail.relay.test": {"A": ["192.0.2.10"]},
        "mail2.relay.test": {"A": ["192.0.2.20"]},
        "good.test": {"TXT": ["v=spf1 ip4:192.0.2.0/28 -all"], "MX": [[10, "mx.good.test"]]},
        "mail._domainkey.good.test": {"TXT": [format!("v=DKIM1; k=rsa; p={good_key}")]},
        "_dmarc.good.test": {"TXT": ["v=DMARC1; p=reject; rua=mailto:dmarc@good.test"]},
        "nospf.test": {"TXT": ["google-site-verification=abc"]},
        "two.test": {"TXT": ["v=spf1 a:mail.relay.test ~all", "v=spf1 include:_spf.google.com ~all"]},
        "_spf.google.com": {"TXT": ["v=spf1 ip4:172.217.0.0/19 ~all"]},
        "mail._domainkey.two.test": {"TXT": ["v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAold"]},
        "_dmarc.two.test": {"TXT": ["v=DMARC1; p=none"]},
        "missing.test": {"TXT": ["v=spf1 a:mail.relay.test ~all"]},
        "_dmarc.missing.test": {"TXT": ["v=DMARC1; p=quarantine"]},
        "many.test": {"TXT": [format!("v=spf1 {} a:mail.relay.test ~all", includes.join(" "))]},
        "nomx.test": {"TXT": ["v=spf1 a:mail.relay.test ~all"]},
    });
    for i in 0..11 {
        zones[format!("s{i}.many.test")] = json!({"TXT": ["v=spf1 ip4:198.51.100.1 ~all"]});
    }
    let dns = DnsServer::start(&zones);
    exec(
        &mut db,
        &format!("SET mail_gateway.dns_server = '{}'", dns.address()),
    );

    // SPF
    let r = check(&mut db, "nospf.test", "SPF");
    assert_eq!(r.status, "error");
    assert_eq!(r.current, None);
    assert_eq!(r.expected.as_deref(), Some("v=spf1 a:mail.relay.test ~all"));
    assert!(
        r.fix.contains("no SPF record") && r.fix.contains("Publish one TXT record"),
        "{}",
        r.fix
    );

    let r = check(&mut db, "two.test", "SPF");
    assert_eq!(r.status, "error");
    assert!(r.fix.contains("2 SPF records"), "{}", r.fix);
    assert_eq!(
        r.expected.as_deref(),
        Some("v=spf1 a:mail.relay.test include:_spf.google.com ~all")
    );

    let r = check(&mut db, "missing.test", "SPF");
    assert_eq!(r.status, "error");
    assert!(
        r.fix.contains("\"extra\" (mail2.relay.test)") && !r.fix.contains("\"relay\""),
        "{}",
        r.fix
    );
    assert_eq!(
        r.expected.as_deref(),
        Some("v=spf1 a:mail.relay.test a:mail2.relay.test ~all")
    );

    let r = check(&mut db, "good.test", "SPF");
    assert_eq!(r.status, "ok", "{}", r.fix);
    assert_eq!(r.current.as_deref(), Some("v=spf1 ip4:192.0.2.0/28 -all"));

    let r = check(&mut db, "many.test", "SPF");
    assert_eq!(r.status, "error");
    assert!(
        r.fix.contains("12 DNS lookups") && r.fix.contains("stop at 10"),
        "{}",
        r.fix
    );

    // DKIM
    let r = check(&mut db, "nospf.test", "DKIM mail");
    assert_eq!(r.status, "error");
    assert!(r.fix.contains("No DKIM key is published"), "{}", r.fix);
    let r = check(&mut db, "two.test", "DKIM mail");
    assert_eq!(r.status, "error");
    assert!(r.fix.contains("another key"), "{}", r.fix);
    let r = check(&mut db, "good.test", "DKIM mail");
    assert_eq!(r.status, "ok", "{}", r.fix);
    assert_eq!(
        r.expected.as_deref(),
        Some(format!("v=DKIM1; k=rsa; p={good_key}").as_str())
    );
    let r = check(&mut db, "missing.test", "DKIM");
    assert_eq!(r.status, "warning", "no key at all");

    // DMARC
    let r = check(&mut db, "nospf.test", "DMARC");
    assert_eq!(r.status, "warning");
    assert_eq!(
        r.expected.as_deref(),
        Some("v=DMARC1; p=none; rua=mailto:postmaster@nospf.test")
    );
    let r = check(&mut db, "two.test", "DMARC");
    assert_eq!(r.status, "ok");
    let r = check(&mut db, "missing.test", "DMARC");
    assert_eq!(
        r.status, "error",
        "quarantine, and neither SPF nor DKIM aligned: {}",
        r.fix
    );
    assert!(r.fix.contains("not aligned"), "{}", r.fix);
    let r = check(&mut db, "good.test", "DMARC");
    assert_eq!(r.status, "warning", "reject, aligned: {}", r.fix);
    assert!(
        r.fix.contains("aligned SPF and DKIM") && r.fix.contains("default sender"),
        "{}",
        r.fix
    );

    // MX, for the alias domain only.
    let r = check(&mut db, "good.test", "MX");
    assert_eq!(
        (r.status.as_str(), r.current.as_deref()),
        ("ok", Some("10 mx.good.test"))
    );
    exec(
        &mut db,
        "SELECT mail_gateway.set_parameter('mail.catchall.domain', 'nomx.test')",
    );
    let r = check(&mut db, "nomx.test", "MX");
    assert_eq!(r.status, "error");
    assert!(
        r.fix.contains("replies to our mail and bounces") && r.fix.contains("imap.good.test"),
        "{}",
        r.fix
    );
    let rows: i64 = db
        .query_one(
            "SELECT count(*) FROM mail_gateway.check_domain('two.test') WHERE \"check\" = 'MX'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "MX is checked for the alias domain only");

    // Bad input.
    let e = db
        .query(
            "SELECT * FROM mail_gateway.check_domain('not a domain')",
            &[],
        )
        .unwrap_err();
    assert!(
        error_text(&e).contains("malformed domain"),
        "{}",
        error_text(&e)
    );
    let e = db
        .batch_execute("SET mail_gateway.dns_server = 'nowhere'; SELECT * FROM mail_gateway.check_domain('good.test')")
        .unwrap_err();
    assert!(
        error_text(&e).contains("is not an ip:port address"),
        "{}",
        error_text(&e)
    );
}
