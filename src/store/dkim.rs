//! The `dkim_key` table.

use std::collections::HashMap;

use pgrx::prelude::*;

use super::{spi, text};
use crate::outbox::DkimKey;

/// Stores a key, replacing the one of the same domain and selector. Returns the selector as
/// stored (lower-case).
pub fn save_key(
    domain: &str,
    selector: &str,
    algorithm: &str,
    private_pem: &str,
    public_base64: &str,
) -> String {
    super::first::<String>(
        "INSERT INTO mail_gateway.dkim_key (domain, selector, algorithm, private_key, public_key)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (domain, selector) DO UPDATE SET
             algorithm = EXCLUDED.algorithm, private_key = EXCLUDED.private_key,
             public_key = EXCLUDED.public_key, active = true, created_at = now()
         RETURNING selector",
        &[
            domain.into(),
            selector.into(),
            algorithm.into(),
            private_pem.into(),
            public_base64.into(),
        ],
    )
    .unwrap_or_default()
}

/// A key as DNS publishes it.
pub struct PublicKey {
    pub selector: String,
    pub algorithm: String,
    pub public_key: String,
}

/// The domain's active keys.
pub fn active_keys(domain: &str) -> Vec<PublicKey> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT selector, algorithm, public_key FROM mail_gateway.dkim_key
             WHERE domain = lower($1) AND active ORDER BY selector",
            None,
            &[domain.into()],
        )?
        .map(|row| {
            Ok(PublicKey {
                selector: text(&row, "selector")?,
                algorithm: text(&row, "algorithm")?,
                public_key: text(&row, "public_key")?,
            })
        })
        .collect()
    }))
}

/// The active key each domain signs with (the newest when several are active), private key
/// included: for the senders.
pub fn signing_keys() -> HashMap<String, DkimKey> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT DISTINCT ON (domain) domain, selector, algorithm, private_key
                 FROM mail_gateway.dkim_key WHERE active ORDER BY domain, created_at DESC, id DESC",
            None,
            &[],
        )?
        .map(|row| {
            Ok((
                text(&row, "domain")?,
                DkimKey {
                    selector: text(&row, "selector")?,
                    algorithm: text(&row, "algorithm")?,
                    private_pem: text(&row, "private_key")?,
                },
            ))
        })
        .collect()
    }))
}
