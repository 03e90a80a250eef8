//! What the router reads from a received message (docs/REFERENCE.md, "Routes") before it asks the database:
//! recipients once each, a tracked bounce only through the bounce alias, a bounded list of
//! thread candidates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_gateway_core::routing::RoutingSettings;
use mail_gateway_core::routing::incoming::read_raw;
use mail_gateway_core::routing::thread::REFERENCES_LOOKED_AT;

fuzz_target!(|raw: &[u8]| {
    let settings = RoutingSettings {
        catchall_domain: Some("example.com".into()),
        catchall_alias: "catchall".into(),
        bounce_alias: "bounce".into(),
        ..Default::default()
    };
    let r = read_raw(raw, &settings);
    for (i, a) in r.recipients.iter().enumerate() {
        assert!(!r.recipients[..i].contains(a), "{a} listed twice");
    }
    if r.tagged_bounce.is_some() {
        assert!(r.to_bounce_address);
    }
    assert!(r.reply_candidates.len() <= 1 + REFERENCES_LOOKED_AT);
    if let Some(sender) = &r.sender {
        assert_eq!(sender.address, sender.address.to_lowercase());
    }
});
