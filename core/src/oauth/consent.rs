//! A person's consent: the URL to open, the code pasted back, and the form that trades it for
//! the first refresh token.

use super::{Client, Provider, http};
use crate::net;

/// The form of the first exchange: the code a person's consent gave, for the first refresh
/// token.
pub fn code_form(client: &Client, code: &str, redirect_uri: &str, scope: Option<&str>) -> String {
    let mut pairs = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", redirect_uri),
        ("client_id", client.client_id.as_str()),
    ];
    if let Some(secret) = client.client_secret.as_deref() {
        pairs.push(("client_secret", secret));
    }
    if client.provider == Provider::Microsoft
        && let Some(scope) = scope.filter(|s| !s.trim().is_empty())
    {
        pairs.push(("scope", scope));
    }
    http::form(&pairs)
}

/// The URL a person opens to consent, with offline access so that a refresh token comes
/// back, and the consent screen shown again (`prompt=consent`: Google gives a refresh token
/// only then, Microsoft then grants newly added scopes).
pub fn authorize_url(
    provider: Provider,
    endpoint: &str,
    client_id: &str,
    redirect_uri: &str,
    scope: &str,
    login_hint: Option<&str>,
    state: &str,
) -> String {
    let mut pairs = vec![
        ("client_id", client_id),
        ("response_type", "code"),
        ("redirect_uri", redirect_uri),
    ];
    if !scope.trim().is_empty() {
        pairs.push(("scope", scope));
    }
    pairs.extend([("state", state), ("prompt", "consent")]);
    match provider {
        Provider::Microsoft => pairs.push(("response_mode", "query")),
        Provider::Google | Provider::Custom => pairs.push(("access_type", "offline")),
    }
    if let Some(hint) = login_hint.filter(|h| !h.is_empty()) {
        pairs.push(("login_hint", hint));
    }
    let separator = if endpoint.contains('?') { '&' } else { '?' };
    format!("{endpoint}{separator}{}", http::form(&pairs))
}

/// Why no authorization code could be taken from what a person pasted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("no authorization code given")]
    Missing,
    /// The provider's `error` and `error_description` (": …"), made printable.
    #[error("the sign-in was refused: {error}{description}")]
    Refused { error: String, description: String },
    #[error("the URL holds no code=…")]
    NoCodeInUrl,
}

/// The code out of what a person pastes: the code itself, or the whole URL the browser was
/// sent back to (`…?code=…&state=…`), whose `error` it reports.
pub fn code_from(pasted: &str) -> Result<String, CodeError> {
    let pasted = pasted.trim();
    let query = match pasted.split_once('?') {
        Some((_, q)) => Some(q.split('#').next().unwrap_or_default()),
        None if pasted.contains("code=") || pasted.contains("error=") => Some(pasted),
        None => None,
    };
    let Some(query) = query else {
        return if pasted.is_empty() || pasted.contains(char::is_whitespace) {
            Err(CodeError::Missing)
        } else {
            Ok(pasted.to_string())
        };
    };
    if let Some(code) = http::query_value(query, "code").filter(|c| !c.is_empty()) {
        return Ok(code);
    }
    match http::query_value(query, "error") {
        Some(error) => Err(CodeError::Refused {
            error: net::printable(error),
            description: http::query_value(query, "error_description")
                .map(|d| format!(": {}", net::printable(d)))
                .unwrap_or_default(),
        }),
        None => Err(CodeError::NoCodeInUrl),
    }
}
