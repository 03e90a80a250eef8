//! SASL initial responses (RFC 4422) our clients log in with: SMTP, IMAP and POP3 alike.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// XOAUTH2 (Google's and Microsoft's OAuth 2.0 login), before base64: the IMAP crate encodes
/// it itself.
pub fn xoauth2(user: &str, token: &str) -> String {
    format!("user={user}\x01auth=Bearer {token}\x01\x01")
}

/// XOAUTH2, base64-encoded for `AUTH XOAUTH2 <response>`.
pub fn xoauth2_base64(user: &str, token: &str) -> String {
    B64.encode(xoauth2(user, token))
}

/// PLAIN (RFC 4616) without an authorization identity, base64-encoded.
pub fn plain_base64(user: &str, secret: &str) -> String {
    B64.encode(format!("\0{user}\0{secret}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_initial_response() {
        assert_eq!(
            xoauth2("a@b.c", "tok"),
            "user=a@b.c\u{1}auth=Bearer tok\u{1}\u{1}"
        );
    }
}
