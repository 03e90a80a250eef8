//! DKIM keys (docs/REFERENCE.md, "check_domain").

use pgrx::prelude::*;

use crate::dkim::{self, Algorithm};
use crate::error::ApiError;
use crate::store;

/// Makes a key pair for `domain` and `selector` (replacing the one they had) and returns the
/// DNS TXT record to publish. Outgoing mail from that domain is signed from now on.
#[pg_extern]
pub fn create_dkim_key(
    domain: &str,
    selector: default!(&str, "'mail'"),
    algorithm: default!(&str, "'rsa'"),
) -> String {
    let Ok(alg) = algorithm.parse::<Algorithm>() else {
        ApiError::invalid(
            format!("unknown DKIM algorithm \"{algorithm}\""),
            "Use 'rsa' (2048 bits, understood everywhere) or 'ed25519' (RFC 8463; publish an RSA key too).",
        )
        .raise();
    };
    let domain = crate::api::config::normalize_domain(domain);
    let selector = selector.trim().to_lowercase();
    if !dkim::valid_selector(&selector) {
        ApiError::invalid(
            format!("malformed DKIM selector \"{selector}\""),
            "A selector is a DNS name part: letters, digits, inner hyphens and dots, such as 'mail' or '2026-12'.",
        )
        .raise();
    }
    let key = dkim::generate(alg)
        .unwrap_or_else(|e| ApiError::Internal(format!("key generation failed: {e}")).raise());
    let selector = store::dkim::save_key(
        &domain,
        &selector,
        algorithm,
        &key.private_pem,
        &key.public_base64,
    );
    dkim::dns_record(&domain, &selector, alg, &key.public_base64)
}
