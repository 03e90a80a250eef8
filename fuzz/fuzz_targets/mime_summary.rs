//! A received message of any bytes: summarised, admitted under a size limit and turned into
//! the content posted in a thread, without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_gateway_core::mime::summary::{admit, content};
use mail_parser::MessageParser;

fuzz_target!(|raw: &[u8]| {
    let size = raw.len() as u64;
    let (summary, refused) = admit(raw, size, size);
    assert!(refused.is_none(), "a message at the limit is admitted");
    let lower = |a: &String| *a == a.to_lowercase();
    assert!(summary.to.iter().chain(&summary.cc).all(lower));
    assert!(summary.from_address.iter().all(lower));

    // Over the limit: summarised from its header, with the reason.
    let (_, refused) = admit(raw, size + 1, size);
    assert!(refused.is_some());

    let parsed = MessageParser::default().parse(raw);
    let c = content(parsed.as_ref(), raw, true, true);
    assert!(
        c.attachments.is_some(),
        "the original is always kept when asked"
    );
});
