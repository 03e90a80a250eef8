//! What a token endpoint may send back: an HTTP reply (lengths, chunks, interim answers) and
//! a JSON body, read into a token or an error in words; and what a person may paste as a
//! consent's code. Never a panic; the words stay printable and bounded, and a token never
//! holds spaces or control characters (it goes into a SASL line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_gateway_core::oauth::{code_from, http, read_reply};

fuzz_target!(|data: &[u8]| {
    let body = match http::parse_response(data) {
        Ok(response) => {
            assert!(response.body.len() <= data.len());
            Some((response.status, response.body))
        }
        Err(e) => {
            let words = e.to_string();
            assert!(!words.contains(['\r', '\n']), "{words:?}");
            None
        }
    };
    // The bytes as a body too, with the first byte as the status's choice.
    let status = [200, 400, 401, 429, 503][usize::from(data.first().copied().unwrap_or(0)) % 5];
    for (status, body) in body.into_iter().chain([(status, data.to_vec())]) {
        match read_reply(status, &body) {
            Ok(granted) => {
                assert!(
                    !granted
                        .access_token
                        .contains(|c: char| c.is_whitespace() || c.is_control())
                );
                assert!(!granted.lifetime.is_zero());
            }
            Err(e) => {
                assert!(!e.message.contains(char::is_control), "{:?}", e.message);
                assert!(e.message.len() < 1200, "{}", e.message.len());
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        match code_from(text) {
            Ok(code) => assert!(!code.is_empty()),
            Err(e) => {
                let words = e.to_string();
                assert!(!words.contains(['\r', '\n']))
            }
        }
    }
});
