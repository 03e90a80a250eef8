//! The providers: Microsoft's and Google's endpoints and scopes, or a custom provider's own.

/// Microsoft's scopes for all three protocols, and `offline_access` for a refresh token.
pub const MICROSOFT_SCOPE: &str = "https://outlook.office.com/SMTP.Send \
https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/POP.AccessAsUser.All \
offline_access";
/// Google's one scope for SMTP, IMAP and POP3.
pub const GOOGLE_SCOPE: &str = "https://mail.google.com/";
/// Microsoft's tenant when none is given: work and school accounts of any organisation.
pub const DEFAULT_TENANT: &str = "organizations";

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
