//! The bounce analyser on any message, and the RFC 3464 field parser on any text: every
//! failed recipient has an address and a status of the form class.subject.detail.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_gateway_core::mime::report::{self, Kind};

fn well_formed(status: &str) -> bool {
    let parts: Vec<&str> = status.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

fuzz_target!(|raw: &[u8]| {
    let report = report::analyse(raw);
    if report.kind != Kind::Bounce {
        assert!(
            report.failed.is_empty(),
            "only a bounce names failed recipients"
        );
    }
    for f in &report.failed {
        assert!(f.email.contains('@'), "failed recipient {:?}", f.email);
        assert!(well_formed(&f.status), "status {:?}", f.status);
    }
    let text = String::from_utf8_lossy(raw);
    for f in report::parse_delivery_status(&text) {
        assert!(well_formed(&f.status), "status {:?}", f.status);
    }
    if let Some(status) = report::find_status(&text) {
        assert!(well_formed(&status), "status {status:?}");
    }
});
