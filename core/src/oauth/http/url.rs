//! The URL of a token endpoint: `https://`, or `http://` on the loopback only.

use std::net::IpAddr;

/// Where to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// The loopback: `localhost`, `127.x.x.x`, `::1`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What is wrong with a token endpoint's URL, in words for `set_oauth`'s caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("\"{0}\" is not an https:// URL")]
    NotHttp(String),
    #[error("\"{0}\" holds credentials: give client_id and client_secret instead")]
    Credentials(String),
    #[error("\"{0}\" has an unclosed [ in its host")]
    UnclosedBracket(String),
    #[error("\"{0}\" has a bad port")]
    BadPort(String),
    #[error("\"{0}\" has no valid host")]
    BadHost(String),
    #[error("\"{0}\" has spaces or control characters")]
    BadPath(String),
    #[error(
        "\"{0}\" is not encrypted: secrets go to a token endpoint over https:// only (http:// is allowed on the loopback)"
    )]
    NotEncrypted(String),
}

impl Url {
    /// `https://host[:port]/path`, or `http://` on the loopback. The error says what is wrong
    /// in words for `set_oauth`'s caller.
    pub fn parse(url: &str) -> Result<Url, UrlError> {
        let url = url.trim();
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "http://") {
            (false, rest)
        } else {
            return Err(UrlError::NotHttp(url.to_string()));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(UrlError::Credentials(url.to_string()));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError::UnclosedBracket(url.to_string()))?;
            (host.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| UrlError::BadPort(url.to_string()))?,
            None if tls => 443,
            None => 80,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadHost(url.to_string()));
        }
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadPath(url.to_string()));
        }
        if !tls && !is_loopback(&host) {
            return Err(UrlError::NotEncrypted(url.to_string()));
        }
        Ok(Url {
            tls,
            host,
            port,
            path,
        })
    }

    /// The `Host` header: the port only when it is not the scheme's.
    pub(super) fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}
