//! Token requests and their replies: the forms, the request, what a reply grants or what its
//! failure means, and what an administrator must do about it.

use std::time::Duration;

use super::{Provider, http};
use crate::model::OAuthState;
use crate::net::{self, Limits};

/// `expires_in` when a reply leaves it out (RFC 6749 only recommends it): an hour, what the
/// big providers give.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest error text kept from a provider.
const MAX_ERROR: usize = 400;

/// One application registered with a provider, and where its tokens come from.
#[derive(Clone)]
pub struct Client {
    pub provider: Provider,
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    /// PEM of a CA to trust for the endpoint (a custom provider with its own CA).
    pub ca_cert: Option<String>,
}

/// What a token endpoint granted.
#[derive(Clone, PartialEq, Eq)]
pub struct Granted {
    pub access_token: String,
    pub lifetime: Duration,
    /// A new refresh token (rotation): the old one may no longer work once this one is issued.
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for Granted {
    // Never the tokens: a Debug print can reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Granted")
            .field("lifetime", &self.lifetime)
            .field("rotated", &self.refresh_token.is_some())
            .field("scope", &self.scope)
            .finish()
    }
}

/// What a failure means for the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The grant is gone (`invalid_grant`: expired, revoked, password changed, consent
    /// withdrawn): only a person signing in again can give a new refresh token. Not retried.
    NeedsConsent,
    /// The application's settings are wrong (client id or secret, tenant, endpoint, scope):
    /// an administrator must fix them. Not retried.
    Misconfigured,
    /// The endpoint could not be reached or failed (network, timeout, 5xx, 429): tried again.
    Transient,
}

impl Failure {
    /// The `oauth_account.state` it leads to (`None`: the account stays usable).
    pub fn state(self) -> Option<OAuthState> {
        match self {
            Failure::NeedsConsent => Some(OAuthState::NeedsConsent),
            Failure::Misconfigured => Some(OAuthState::Misconfigured),
            Failure::Transient => None,
        }
    }
}

/// A failed token request: what it means, and the words (the provider's, never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TokenError {
    pub failure: Failure,
    pub message: String,
}

impl TokenError {
    fn new(failure: Failure, message: impl Into<String>) -> TokenError {
        TokenError {
            failure,
            message: message.into(),
        }
    }
}

/// The form that trades a refresh token for an access token (client_secret_post: both big
/// providers take the secret in the body).
pub fn refresh_form(client: &Client, refresh_token: &str, scope: Option<&str>) -> String {
    let mut pairs = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client.client_id.as_str()),
    ];
    if let Some(secret) = client.client_secret.as_deref() {
        pairs.push(("client_secret", secret));
    }
    // Microsoft wants the scope again (it may narrow it); Google refuses none.
    if let Some(scope) = scope.filter(|s| !s.trim().is_empty()) {
        pairs.push(("scope", scope));
    }
    http::form(&pairs)
}

/// Sends a token request and reads its reply. `secrets` (the refresh token, the client
/// secret, a code) are cut out of any text that comes back, should an endpoint echo them.
pub fn request(
    client: &Client,
    form: &str,
    limits: Limits,
    secrets: &[&str],
) -> Result<Granted, TokenError> {
    let url = http::Url::parse(&client.token_endpoint)
        .map_err(|e| TokenError::new(Failure::Misconfigured, format!("token endpoint {e}")))?;
    let result = http::post_form(&url, form, limits, client.ca_cert.as_deref())
        .map_err(|e| TokenError::new(Failure::Transient, e.to_string()))
        .and_then(|response| read_reply(response.status, &response.body));
    result.map_err(|mut e| {
        e.message = redact(e.message, secrets);
        e
    })
}

/// Replaces every secret in `text` (a provider may quote what it was sent).
pub fn redact(mut text: String, secrets: &[&str]) -> String {
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if text.contains(secret) {
            text = text.replace(secret, "[secret]");
        }
    }
    text
}

/// A token endpoint's reply (RFC 6749 §5.1 and §5.2), read.
pub fn read_reply(status: u16, body: &[u8]) -> Result<Granted, TokenError> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| -> Option<String> {
        json.as_ref()?
            .get(name)
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if status == 200
        && let Some(access_token) = field("access_token")
    {
        return granted(access_token, json.as_ref(), &field);
    }
    let code = field("error");
    let description = field("error_description")
        .or_else(|| field("error_message"))
        .map(|d| cut(net::printable(d)));
    let words = match (&code, &description) {
        (Some(c), Some(d)) => format!("{}: {d}", net::printable(c.clone())),
        (Some(c), None) => net::printable(c.clone()),
        (None, Some(d)) => d.clone(),
        (None, None) if status == 200 => "a reply without access_token".into(),
        (None, None) => format!("HTTP {status}{}", excerpt(body)),
    };
    let failure = classify(status, code.as_deref());
    Err(TokenError::new(
        failure,
        format!("the token endpoint refused (HTTP {status}): {words}"),
    ))
}

/// A successful reply's grant: a Bearer token without spaces, with its lifetime (an hour when
/// the reply leaves it out).
fn granted(
    access_token: String,
    json: Option<&serde_json::Value>,
    field: &dyn Fn(&str) -> Option<String>,
) -> Result<Granted, TokenError> {
    if let Some(kind) = field("token_type")
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(TokenError::new(
            Failure::Misconfigured,
            format!(
                "the token endpoint gave a \"{}\" token; XOAUTH2 needs a Bearer token",
                net::printable(kind)
            ),
        ));
    }
    // A number, or a number in a string (some endpoints).
    let lifetime = json
        .and_then(|j| j.get("expires_in"))
        .and_then(|v| v.as_f64().or_else(|| v.as_str()?.trim().parse().ok()))
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(366.0 * 86400.0)))
        .unwrap_or(DEFAULT_LIFETIME);
    if access_token.contains(|c: char| c.is_control() || c.is_whitespace()) {
        return Err(TokenError::new(
            Failure::Transient,
            "the token endpoint gave an access token with spaces or control characters",
        ));
    }
    Ok(Granted {
        access_token,
        lifetime,
        refresh_token: field("refresh_token")
            .filter(|t| !t.contains(|c: char| c.is_control() || c.is_whitespace())),
        scope: field("scope"),
    })
}

/// What an error reply means (RFC 6749 §5.2, and the providers' habits).
pub fn classify(status: u16, code: Option<&str>) -> Failure {
    match code.map(str::to_ascii_lowercase).as_deref() {
        Some("temporarily_unavailable" | "server_error" | "slow_down") => Failure::Transient,
        // Microsoft calls a throttled request invalid_request with a 429 or AADSTS50196 (loop).
        _ if status == 429 || status == 408 || status >= 500 => Failure::Transient,
        // Also AADSTS50076/50079 (MFA now required) and 65001 (no consent): a person must
        // sign in again.
        Some("invalid_grant" | "interaction_required" | "consent_required" | "login_required") => {
            Failure::NeedsConsent
        }
        Some(_) => Failure::Misconfigured,
        // No JSON error at all: a wrong URL (404, 405, an HTML page) or a broken proxy.
        None if status == 200 => Failure::Transient,
        None => Failure::Misconfigured,
    }
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_ERROR {
        let mut end = MAX_ERROR;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The start of a non-JSON reply, for the administrator (an HTML error page, say).
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(120)]);
    let text = net::printable(text.split_whitespace().collect::<Vec<_>>().join(" "));
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

/// What an administrator must do about a failure, in words (`account` is the
/// `oauth_account` name).
pub fn hint(failure: Failure, provider: Provider, account: &str) -> String {
    let consent = format!(
        "Sign in again as the mailbox's user and consent: open SELECT mail_gateway.oauth_authorize_url('{account}'), then SELECT mail_gateway.oauth_exchange_code('{account}', '<the code or the whole redirected URL>'); or give a new refresh token with SELECT mail_gateway.set_oauth(account => '{account}', refresh_token => '…'). Mail waits meanwhile."
    );
    match (failure, provider) {
        (Failure::NeedsConsent, Provider::Microsoft) => format!(
            "Microsoft no longer accepts the refresh token (AADSTS70008/700082: unused for 90 days or expired; AADSTS50173: revoked or the password changed; AADSTS65001: consent missing for a scope). {consent}"
        ),
        (Failure::NeedsConsent, Provider::Google) => format!(
            "Google no longer accepts the refresh token (revoked by the user or an administrator, the password changed, unused for six months, or the app is in the \"Testing\" publishing status, where refresh tokens expire after 7 days: publish it). {consent}"
        ),
        (Failure::NeedsConsent, Provider::Custom) => {
            format!("The provider no longer accepts the refresh token. {consent}")
        }
        (Failure::Misconfigured, Provider::Microsoft) => format!(
            "Check the application in Microsoft Entra (client_id, tenant, a client secret that has not expired — AADSTS7000215 or AADSTS7000222 — API permissions SMTP.Send, IMAP.AccessAsUser.All, POP.AccessAsUser.All), then SELECT mail_gateway.set_oauth(account => '{account}', client_secret => '…'). Mail waits meanwhile."
        ),
        (Failure::Misconfigured, Provider::Google) => format!(
            "Check the OAuth client in Google Cloud (client_id, client_secret, the Gmail API and the scope https://mail.google.com/), then SELECT mail_gateway.set_oauth(account => '{account}', client_secret => '…'). Mail waits meanwhile."
        ),
        (Failure::Misconfigured, Provider::Custom) => format!(
            "Check token_endpoint, client_id, client_secret and scope, then SELECT mail_gateway.set_oauth(account => '{account}', …). Mail waits meanwhile."
        ),
        (Failure::Transient, _) => "The token endpoint could not be reached or failed; the gateway tries again (after 1 s, doubling up to a minute) while mail waits. Check this machine's access to it (firewall, proxy, DNS).".into(),
    }
}
