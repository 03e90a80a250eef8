//! The `dkim_key` table.

use pgrx::prelude::*;

use super::spi;

/// Stores a key, replacing the one of the same domain and selector. Returns the selector as
/// stored (lower-case).
pub fn save_key(
    domain: &str,
    selector: &str,
    algorithm: &str,
    private_pem: &str,
    public_base64: &str,
) -> String {
    spi(Spi::get_one_with_args::<String>(
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
    ))
    .unwrap_or_default()
}

/// `(selector, algorithm, public key)` of the domain's active keys.
pub fn active_keys(domain: &str) -> Vec<(String, String, String)> {
    spi(Spi::connect(|client| {
        super::select(
            client,
            "SELECT selector, algorithm, public_key FROM mail_gateway.dkim_key
             WHERE domain = lower($1) AND active ORDER BY selector",
            None,
            &[domain.into()],
        )?
        .map(|row| {
            Ok((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<String>(3)?.unwrap_or_default(),
            ))
        })
        .collect()
    }))
}
