//! What a POP3 server may send: a status line, and a multi-line body read with a size bound.
//! Never a panic or an endless loop; a body never exceeds its bound nor the bytes sent.
#![no_main]

use std::io::{BufReader, Cursor};

use libfuzzer_sys::fuzz_target;
use mail_gateway_core::mailbox::pop3::{Reply, parse_reply, read_multiline};

fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => data.split_at(i + 1),
        None => (data, &[][..]),
    };
    if let Some(Reply::Ok(text) | Reply::Err(text) | Reply::Continue(text)) = parse_reply(first) {
        assert!(!text.contains(char::is_control), "{text:?}");
    }
    // The first byte picks the bound, so short bounds are explored too.
    let max = u64::from(data.first().copied().unwrap_or(0)) * 16;
    // A small buffer makes lines span several reads.
    let mut reader = BufReader::with_capacity(7, Cursor::new(rest));
    if let Ok(body) = read_multiline(&mut reader, max) {
        assert!(body.len() as u64 <= max);
        assert!(body.len() <= rest.len());
    }
});
