//! The validation trigger of `oauth_account`: completes an account with its provider's
//! endpoints and scopes, and starts it afresh when what a refresh depends on changed. Errors
//! name the account, never a secret.

use pgrx::prelude::*;

use crate::error::ApiError;
use crate::model::OAuthState;
use crate::oauth::{self, Provider, http::Url};

type Row<'a> = PgHeapTuple<'a, AllocatedByRust>;

/// A text column, trimmed; blank is NULL.
fn get(row: &Row<'_>, name: &str) -> Result<Option<String>, String> {
    Ok(row
        .get_by_name::<String>(name)
        .map_err(|e| e.to_string())?
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty()))
}

fn set(row: &mut Row<'_>, name: &str, value: Option<String>) -> Result<(), String> {
    row.set_by_name(name, value).map_err(|e| e.to_string())
}

/// What a refresh depends on: a change of one starts the account afresh (the worker's own
/// storing of a token changes none of them).
const SETTINGS: [&str; 8] = [
    "provider",
    "tenant",
    "token_endpoint",
    "client_id",
    "client_secret",
    "refresh_token",
    "scope",
    "ca_cert",
];

/// BEFORE INSERT OR UPDATE on `oauth_account`: the provider's endpoints and scope filled in,
/// a custom endpoint checked (https://, or http:// on the loopback), blank secrets made NULL,
/// and a changed setting (a new refresh token, client, endpoint …) starts afresh: the cached
/// token and the last error go, and the state says whether there is a refresh token to try.
#[pg_trigger]
fn oauth_account_validate<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByRust>>, String> {
    let Some(new) = trigger.new() else {
        return Ok(None);
    };
    let mut row = new.into_owned();
    let name = get(&row, "name")?.unwrap_or_default();
    if name.is_empty() {
        ApiError::Check {
            message: "an OAuth2 account needs a name".to_string(),
            hint: "Servers name it in oauth_account; set_oauth uses the server's name by default.",
        }
        .raise();
    }
    set(&mut row, "name", Some(name.clone()))?;
    let (provider, tenant) = provider_and_tenant(&mut row, &name)?;
    endpoints(&mut row, &name, provider, tenant.as_deref())?;
    let scope = get(&row, "scope")?.or_else(|| provider.default_scope().map(str::to_string));
    set(&mut row, "scope", scope)?;
    if get(&row, "client_id")?.is_none() {
        ApiError::Missing {
            message: format!("OAuth2 account \"{name}\" has no client_id"),
            hint: "The application (client) id of the app registered with the provider.",
        }
        .raise();
    }
    for secret in ["client_id", "client_secret", "refresh_token", "ca_cert"] {
        let value = get(&row, secret)?;
        set(&mut row, secret, value)?;
    }
    let has_refresh_token = get(&row, "refresh_token")?.is_some();
    let restart = match trigger.old() {
        None => get(&row, "state")?.is_none() || !has_refresh_token,
        Some(old) => refresh_settings_changed(&old, &row)? || !has_refresh_token,
    };
    if restart {
        start_afresh(&mut row, trigger.old().is_some(), has_refresh_token)?;
    }
    Ok(Some(row))
}

/// The provider (normalised) and the tenant: Microsoft's, its default when none is given;
/// none for the others.
fn provider_and_tenant(
    row: &mut Row<'_>,
    name: &str,
) -> Result<(Provider, Option<String>), String> {
    let provider_text = get(row, "provider")?.unwrap_or_default();
    let Some(provider) = Provider::parse(&provider_text) else {
        ApiError::UnknownAccountProvider {
            provider: provider_text,
            account: name.to_string(),
        }
        .raise();
    };
    set(row, "provider", Some(provider.as_str().into()))?;
    let tenant = get(row, "tenant")?;
    let tenant = match provider {
        Provider::Microsoft => {
            let tenant = tenant.unwrap_or_else(|| oauth::DEFAULT_TENANT.into());
            if !oauth::valid_tenant(&tenant) {
                ApiError::Check {
                    message: format!("tenant \"{tenant}\" of OAuth2 account \"{name}\" is not a tenant"),
                    hint: "Use organizations (work and school accounts), common, consumers, the tenant's id (a GUID) or its domain (contoso.onmicrosoft.com).",
                }
                .raise();
            }
            Some(tenant)
        }
        _ if tenant.is_some() => ApiError::Check {
            message: format!("OAuth2 account \"{name}\" has a tenant, which only Microsoft uses"),
            hint: "Set tenant = NULL.",
        }
        .raise(),
        _ => None,
    };
    set(row, "tenant", tenant.clone())?;
    Ok((provider, tenant))
}

/// The token and authorize endpoints: the provider's own, or the custom ones given, checked.
fn endpoints(
    row: &mut Row<'_>,
    name: &str,
    provider: Provider,
    tenant: Option<&str>,
) -> Result<(), String> {
    let check_url = |what: &str, url: &str| {
        if let Err(e) = Url::parse(url) {
            ApiError::Check {
                message: format!("{what} of OAuth2 account \"{name}\": {e}"),
                hint: "Give the provider's https:// URL (http:// only to this machine's loopback).",
            }
            .raise();
        }
    };
    match provider.token_endpoint(tenant) {
        Some(url) => set(row, "token_endpoint", Some(url))?,
        None => match get(row, "token_endpoint")? {
            Some(url) => {
                check_url("token_endpoint", &url);
                set(row, "token_endpoint", Some(url))?;
            }
            None => ApiError::Missing {
                message: format!("OAuth2 account \"{name}\" (custom) has no token_endpoint"),
                hint: "Give the provider's token URL, e.g. https://idp.example.com/oauth2/token.",
            }
            .raise(),
        },
    }
    match provider.authorize_endpoint(tenant) {
        Some(url) => set(row, "authorize_endpoint", Some(url))?,
        None => {
            let url = get(row, "authorize_endpoint")?;
            if let Some(url) = &url {
                check_url("authorize_endpoint", url);
            }
            set(row, "authorize_endpoint", url)?;
        }
    }
    Ok(())
}

/// Whether an UPDATE changed what a refresh depends on, other than by storing a token.
fn refresh_settings_changed(
    old: &PgHeapTuple<'_, AllocatedByPostgres>,
    row: &Row<'_>,
) -> Result<bool, String> {
    let mut changed = false;
    for column in SETTINGS {
        let before = old
            .get_by_name::<String>(column)
            .map_err(|e| e.to_string())?;
        changed |= before.as_deref().map(str::trim) != get(row, column)?.as_deref();
    }
    let token_before = old
        .get_by_name::<String>("access_token")
        .map_err(|e| e.to_string())?;
    Ok(changed && token_before == get(row, "access_token")?)
}

/// Drops the cached token and the last error (of an existing row), and sets the state by
/// whether there is a refresh token to try.
fn start_afresh(row: &mut Row<'_>, existed: bool, has_refresh_token: bool) -> Result<(), String> {
    if existed {
        set(row, "access_token", None)?;
        set(row, "last_error", None)?;
        for column in ["expires_at", "last_refresh_at", "last_error_at"] {
            row.set_by_name::<Option<pgrx::datum::TimestampWithTimeZone>>(column, None)
                .map_err(|e| e.to_string())?;
        }
    }
    let state = if has_refresh_token {
        OAuthState::Ok
    } else {
        OAuthState::NeedsConsent
    };
    set(row, "state", Some(state.as_str().into()))
}
