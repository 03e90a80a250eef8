//! OAuth2 for SMTP, IMAP and POP3 logins (XOAUTH2): the providers' endpoints and scopes, the
//! token requests (refresh, and the first authorization-code exchange), reading the reply,
//! when to refresh, and what a failure means — `invalid_grant` needs a person to consent
//! again, a network or 5xx failure is tried again. Pure but for `http::post_form`; it knows
//! nothing of PostgreSQL (the extension's `oauth` module stores and locks).

pub mod http;

use std::time::{Duration, SystemTime};

use crate::net::{self, Limits};

/// Microsoft's scopes for all three protocols, and `offline_access` for a refresh token.
pub const MICROSOFT_SCOPE: &str = "https://outlook.office.com/SMTP.Send \
https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/POP.AccessAsUser.All \
offline_access";
/// Google's one scope for SMTP, IMAP and POP3.
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";
/// Microsoft's tenant when none is given: work and school accounts of any organisation.
pub const DEFAULT_TENANT: &str = "organizations";

/// Refresh when this much of a token's life is left at most (half its life for short ones):
/// time to try again should the endpoint fail, before the token runs out.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(10 * 60);
/// A token is handed to a new login only while this much life is left at most (a quarter of
/// its life for short ones): the login takes a few seconds at worst.
pub const USE_MARGIN: Duration = Duration::from_secs(60);
/// `expires_in` when a reply leaves it out (RFC 6749 only recommends it): an hour, what the
/// big providers give.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest error text kept from a provider.
const MAX_ERROR: usize = 400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Microsoft,
    Google,
    Custom,
}

impl Provider {
    pub fn parse(name: &str) -> Option<Provider> {
        match name.trim().to_ascii_lowercase().as_str() {
            "microsoft" => Some(Provider::Microsoft),
            "google" => Some(Provider::Google),
            "custom" => Some(Provider::Custom),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Microsoft => "microsoft",
            Provider::Google => "google",
            Provider::Custom => "custom",
        }
    }

    /// The token endpoint of the big two (a custom provider names its own).
    pub fn token_endpoint(self, tenant: Option<&str>) -> Option<String> {
        match self {
            Provider::Microsoft => Some(format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                tenant_or_default(tenant)
            )),
            Provider::Google => Some("https://oauth2.googleapis.com/token".into()),
            Provider::Custom => None,
        }
    }

    /// Where a person signs in and consents.
    pub fn authorize_endpoint(self, tenant: Option<&str>) -> Option<String> {
        match self {
            Provider::Microsoft => Some(format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/authorize",
                tenant_or_default(tenant)
            )),
            Provider::Google => Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
            Provider::Custom => None,
        }
    }

    pub fn default_scope(self) -> Option<&'static str> {
        match self {
            Provider::Microsoft => Some(MICROSOFT_SCOPE),
            Provider::Google => Some(GOOGLE_SCOPE),
            Provider::Custom => None,
        }
    }
}

fn tenant_or_default(tenant: Option<&str>) -> &str {
    tenant
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or(DEFAULT_TENANT)
}

/// A tenant is a GUID or a domain name, or one of Microsoft's words: it goes into a URL path.
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 253
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

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
    pub fn state(self) -> Option<&'static str> {
        match self {
            Failure::NeedsConsent => Some("needs_consent"),
            Failure::Misconfigured => Some("misconfigured"),
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
            .as_ref()
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
        return Ok(Granted {
            access_token,
            lifetime,
            refresh_token: field("refresh_token")
                .filter(|t| !t.contains(|c: char| c.is_control() || c.is_whitespace())),
            scope: field("scope"),
        });
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

/// A cached access token's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub obtained_at: SystemTime,
    pub expires_at: SystemTime,
}

impl Lifetime {
    pub fn new(obtained_at: SystemTime, lifetime: Duration) -> Lifetime {
        Lifetime {
            obtained_at,
            expires_at: obtained_at + lifetime,
        }
    }

    fn length(&self) -> Duration {
        self.expires_at
            .duration_since(self.obtained_at)
            .unwrap_or_default()
    }

    fn left(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }

    /// When the token should be replaced: `REFRESH_MARGIN` before it expires, or halfway
    /// through a short life.
    pub fn refresh_at(&self) -> SystemTime {
        self.expires_at - REFRESH_MARGIN.min(self.length() / 2)
    }

    pub fn refresh_due(&self, now: SystemTime) -> bool {
        now >= self.refresh_at()
    }

    /// Whether a new login may still use it (a failed refresh keeps the old token until here).
    pub fn usable(&self, now: SystemTime) -> bool {
        self.left(now) > USE_MARGIN.min(self.length() / 4)
    }
}

/// The wait before trying a failing endpoint again: 1 s, doubling up to a minute.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

#[cfg(test)]
mod tests;
