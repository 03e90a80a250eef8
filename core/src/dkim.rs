//! DKIM keys and signatures, pure Rust: key pairs made with OpenSSL, the DNS TXT record to
//! publish, and relaxed/relaxed signatures by mail-auth over the exact bytes that are sent.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rsa,
    Ed25519,
}

impl Algorithm {
    /// The `k=` of the DNS record, also the `dkim_key.algorithm` text (mapping in `model`).
    pub fn dns_name(self) -> &'static str {
        crate::model::Column::as_str(self)
    }
}

/// A new key pair: the private key as PKCS#8 PEM, the public key as DNS wants it (base64 of the
/// SubjectPublicKeyInfo for RSA, of the raw 32 bytes for Ed25519, RFC 8463).
pub struct KeyPair {
    pub private_pem: String,
    pub public_base64: String,
}

/// OpenSSL could not make a key pair (the message is OpenSSL's).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("{0}")]
    NotUtf8(#[from] std::string::FromUtf8Error),
}

/// Why a message could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("unknown algorithm \"{0}\"")]
    UnknownAlgorithm(String),
    #[error("unreadable DKIM key: {0}")]
    Pem(rustls_pki_types::pem::Error),
    #[error("unreadable RSA key: {0}")]
    Rsa(mail_auth::Error),
    #[error("an Ed25519 key must be PKCS#8")]
    NotPkcs8,
    #[error("unreadable Ed25519 key: {0}")]
    Ed25519(mail_auth::Error),
    #[error("DKIM signing failed: {0}")]
    Signing(mail_auth::Error),
}

pub fn generate(algorithm: Algorithm) -> Result<KeyPair, KeyError> {
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    let (key, public) = match algorithm {
        Algorithm::Rsa => {
            let key = PKey::from_rsa(Rsa::generate(2048)?)?;
            let public = key.public_key_to_der()?;
            (key, public)
        }
        Algorithm::Ed25519 => {
            let key = PKey::generate_ed25519()?;
            let public = key.raw_public_key()?;
            (key, public)
        }
    };
    let private_pem = String::from_utf8(key.private_key_to_pem_pkcs8()?)?;
    Ok(KeyPair {
        private_pem,
        public_base64: B64.encode(public),
    })
}

/// Whether `selector` (already trimmed and lower-cased) can name a DNS record: labels of
/// letters, digits and inner hyphens, joined by dots — the `dkim_key` table's own check.
pub fn valid_selector(selector: &str) -> bool {
    !selector.is_empty()
        && selector.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The TXT record to publish, in zone-file form; long values are split into strings of at most
/// 255 characters, as DNS requires.
pub fn dns_record(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    public_base64: &str,
) -> String {
    let value = format!("v=DKIM1; k={}; p={public_base64}", algorithm.dns_name());
    let chunks: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{selector}._domainkey.{domain}. IN TXT ( {} )",
        chunks.join(" ")
    )
}

/// Headers covered by the signature, when present.
const SIGNED_HEADERS: [&str; 11] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
];

/// Returns `message` with a DKIM-Signature header in front.
pub fn sign(
    message: &[u8],
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    private_pem: &str,
) -> Result<Vec<u8>, SignError> {
    let der = PrivateKeyDer::from_pem_slice(private_pem.as_bytes()).map_err(SignError::Pem)?;
    let signature = match algorithm {
        Algorithm::Rsa => {
            let key = RsaKey::<Sha256>::from_key_der(der).map_err(SignError::Rsa)?;
            signer(DkimSigner::from_key(key), domain, selector).sign(message)
        }
        Algorithm::Ed25519 => {
            let PrivateKeyDer::Pkcs8(pkcs8) = der else {
                return Err(SignError::NotPkcs8);
            };
            let key =
                Ed25519Key::from_pkcs8_der(pkcs8.secret_pkcs8_der()).map_err(SignError::Ed25519)?;
            signer(DkimSigner::from_key(key), domain, selector).sign(message)
        }
    }
    .map_err(SignError::Signing)?;
    let mut out = signature.to_header().into_bytes();
    out.extend_from_slice(message);
    Ok(out)
}

fn signer<T: mail_auth::common::crypto::SigningKey>(
    signer: DkimSigner<T, mail_auth::dkim::NeedDomain>,
    domain: &str,
    selector: &str,
) -> DkimSigner<T, mail_auth::dkim::Done> {
    signer
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS)
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"From: a@mycompany.com\r\nTo: b@x.com\r\nSubject: hi\r\n\r\nbody\r\n";

    #[test]
    fn selectors_are_dns_labels() {
        for good in ["mail", "s1", "2026-12", "a.b-c"] {
            assert!(valid_selector(good), "{good}");
        }
        for bad in ["", "bad_selector!", "-a", "a-", "a..b", "a b", "Mail"] {
            assert!(!valid_selector(bad), "{bad}");
        }
    }

    #[test]
    fn records_name_the_algorithm_and_split_long_values() {
        let rsa = generate(Algorithm::Rsa).unwrap();
        assert!(rsa.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let record = dns_record("mycompany.com", "mail", Algorithm::Rsa, &rsa.public_base64);
        assert!(
            record.starts_with("mail._domainkey.mycompany.com. IN TXT ( \"v=DKIM1; k=rsa; p="),
            "{record}"
        );
        assert!(
            record.matches('"').count() >= 4,
            "a 2048-bit key needs two strings: {record}"
        );
        let ed = generate(Algorithm::Ed25519).unwrap();
        assert_eq!(B64.decode(&ed.public_base64).unwrap().len(), 32);
        assert!(
            dns_record("x.org", "s1", Algorithm::Ed25519, &ed.public_base64).contains("k=ed25519")
        );
    }

    #[test]
    fn signs_with_both_algorithms() {
        for algorithm in [Algorithm::Rsa, Algorithm::Ed25519] {
            let key = generate(algorithm).unwrap();
            let signed = sign(
                MESSAGE,
                "mycompany.com",
                "mail",
                algorithm,
                &key.private_pem,
            )
            .unwrap();
            let text = String::from_utf8(signed).unwrap();
            assert!(text.starts_with("DKIM-Signature: v=1; a="), "{text}");
            assert!(text.contains("c=relaxed/relaxed"), "{text}");
            assert!(text.contains("d=mycompany.com"), "{text}");
            assert!(text.ends_with("\r\n\r\nbody\r\n"));
        }
    }

    #[test]
    fn bad_keys_are_errors_not_panics() {
        assert!(sign(MESSAGE, "x.com", "s", Algorithm::Rsa, "not a key").is_err());
        let ed = generate(Algorithm::Ed25519).unwrap();
        assert!(sign(MESSAGE, "x.com", "s", Algorithm::Rsa, &ed.private_pem).is_err());
    }
}
