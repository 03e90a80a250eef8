//! OAuth2 accounts (issue 14): setting one up in one statement (`set_oauth`) and the first
//! consent (`oauth_authorize_url`, `oauth_exchange_code`); the validation trigger is in
//! `oauth_account`. Errors name accounts and servers, never a secret.

use pgrx::prelude::*;
use std::time::SystemTime;

use crate::error::ApiError;
use crate::net::Limits;
use crate::oauth::{self, Client, Lifetime, Provider};
use crate::store::oauth::{NamedServer, ServerTable};
use crate::{gucs, store};

/// Where the provider sends the browser back after consent when none is named: nothing
/// listens there, and the address bar then shows the code to copy.
const DEFAULT_REDIRECT: &str = "http://localhost";

/// A text argument, trimmed; blank is absent.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Sets up OAuth2 for a server (outgoing, incoming, or both of that name) in one statement:
/// creates or changes the account and makes the server log in with its tokens (XOAUTH2).
///
/// ```sql
/// SELECT mail_gateway.set_oauth(server => 'office365', provider => 'microsoft',
///        client_id => '…', client_secret => '…', refresh_token => '…');
/// ```
#[allow(clippy::too_many_arguments)]
#[pg_extern]
pub fn set_oauth(
    server: default!(Option<&str>, "NULL"),
    provider: default!(Option<&str>, "NULL"),
    client_id: default!(Option<&str>, "NULL"),
    client_secret: default!(Option<&str>, "NULL"),
    refresh_token: default!(Option<&str>, "NULL"),
    tenant: default!(Option<&str>, "NULL"),
    scope: default!(Option<&str>, "NULL"),
    token_endpoint: default!(Option<&str>, "NULL"),
    authorize_endpoint: default!(Option<&str>, "NULL"),
    account: default!(Option<&str>, "NULL"),
) -> String {
    let server = given(server);
    let servers = server.map(store::oauth::servers_named).unwrap_or_default();
    if let Some(server) = server {
        check_servers(server, &servers);
    }
    let name = account_name(given(account), server, &servers);
    let provider = given(provider).map(|p| {
        Provider::parse(p).unwrap_or_else(|| ApiError::UnknownProvider(p.to_string()).raise())
    });
    let existing = store::oauth::account(&name);
    if existing.is_none() {
        check_new_account(&name, provider, given(client_id));
    }
    // Another provider: Microsoft's tenant goes, unless given again.
    let tenant = match (given(tenant), provider) {
        (Some(t), _) => Some(Some(t)),
        (None, Some(p)) if p != Provider::Microsoft => Some(None),
        (None, _) => None,
    };
    let settings = store::oauth::Settings {
        provider: provider.map(Provider::as_str),
        tenant,
        token_endpoint: given(token_endpoint),
        authorize_endpoint: given(authorize_endpoint),
        client_id: given(client_id),
        client_secret: given(client_secret),
        refresh_token: given(refresh_token),
        scope: given(scope),
    };
    store::oauth::save(&name, existing.is_some(), &settings);
    let tables = server
        .map(|s| store::oauth::link(s, &name))
        .unwrap_or_default();
    let Some(saved) = store::oauth::account(&name) else {
        ApiError::AccountVanished(name.clone()).raise();
    };
    set_oauth_summary(&name, server, &tables, &saved)
}

/// The servers named `server` exist, and each has the username XOAUTH2 logs in as.
fn check_servers(server: &str, servers: &[NamedServer]) {
    if servers.is_empty() {
        ApiError::NoServer(server.to_string()).raise();
    }
    for named in servers {
        if given(named.username.as_deref()).is_none() {
            ApiError::Check {
                message: format!(
                    "{} server \"{server}\" has no username: XOAUTH2 logs in as a mailbox",
                    named.table.as_str()
                ),
                hint: "Set username to the address of the mailbox the token is for, e.g. notifications@mycompany.com, then run set_oauth again.",
            }
            .raise();
        }
    }
}

/// The account: named, else the one the server already uses, else the server's name.
fn account_name(account: Option<&str>, server: Option<&str>, servers: &[NamedServer]) -> String {
    let linked: Vec<&str> = servers
        .iter()
        .filter_map(|s| s.oauth_account.as_deref())
        .collect();
    let Some(name) = account.or_else(|| linked.first().copied()).or(server) else {
        ApiError::invalid(
            "set_oauth needs a server or an account",
            "Name the server (server => 'office365'), or the account to change (account => 'm365').",
        )
        .raise();
    };
    name.to_string()
}

/// A new account needs its provider and client id.
fn check_new_account(name: &str, provider: Option<Provider>, client_id: Option<&str>) {
    if provider.is_none() {
        ApiError::Missing {
            message: format!("OAuth2 account \"{name}\" does not exist yet: provider is needed"),
            hint: "Add provider => 'microsoft', 'google' or 'custom' (with token_endpoint).",
        }
        .raise();
    }
    if client_id.is_none() {
        ApiError::Missing {
            message: format!("OAuth2 account \"{name}\" does not exist yet: client_id is needed"),
            hint: "The application (client) id of the app registered with the provider (docs/OPERATIONS.md, \"OAuth2\").",
        }
        .raise();
    }
}

/// What `set_oauth` answers: the account, the servers that now use it, and the next step.
fn set_oauth_summary(
    name: &str,
    server: Option<&str>,
    tables: &[ServerTable],
    saved: &store::oauth::Account,
) -> String {
    let mut summary = format!(
        "OAuth2 account \"{name}\" ({}{})",
        saved.provider.as_str(),
        saved
            .tenant
            .as_deref()
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default()
    );
    if let Some(server) = server {
        summary.push_str(&format!(
            ": {} server \"{server}\" logs in with its tokens",
            tables
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }
    if saved.refresh_token.is_some() {
        let test = match (server, tables.first()) {
            (Some(s), Some(ServerTable::Outgoing)) => {
                format!("SELECT mail_gateway.test_outgoing_server('{s}')")
            }
            (Some(s), _) => format!("SELECT mail_gateway.test_incoming_server('{s}')"),
            (None, _) => "test_outgoing_server or test_incoming_server".into(),
        };
        summary.push_str(&format!("; refresh token set: {test} checks it"));
    } else {
        summary.push_str(&format!(
            "; no refresh token yet: SELECT mail_gateway.oauth_authorize_url('{name}'), sign in, then SELECT mail_gateway.oauth_exchange_code('{name}', '<code>')"
        ));
    }
    summary
}

/// The URL where the mailbox's user signs in and consents (offline access, consent shown
/// again), for the first refresh token or a new one. Open it in a browser; the browser is
/// sent back to `redirect_uri` with `?code=…`: give that code (or the whole URL) to
/// `oauth_exchange_code`.
#[pg_extern]
pub fn oauth_authorize_url(
    account: &str,
    redirect_uri: default!(&str, "'http://localhost'"),
    login_hint: default!(Option<&str>, "NULL"),
) -> String {
    let acct = existing(account);
    let Some(endpoint) = acct.authorize_endpoint.clone() else {
        ApiError::NotReady {
            message: format!("OAuth2 account \"{account}\" has no authorize_endpoint"),
            hint: "Give the provider's authorization URL: SELECT mail_gateway.set_oauth(account => '…', authorize_endpoint => 'https://…').",
        }
        .raise();
    };
    let hint = given(login_hint)
        .map(str::to_string)
        .or_else(|| store::oauth::first_username(&acct.name));
    oauth::authorize_url(
        acct.provider,
        &endpoint,
        &acct.client_id,
        given(Some(redirect_uri)).unwrap_or(DEFAULT_REDIRECT),
        acct.scope.as_deref().unwrap_or_default(),
        hint.as_deref(),
        &acct.name,
    )
}

/// Trades the code of a consent (or the whole URL the browser was sent back to) for the
/// account's first refresh token, and stores it with an access token. Talks to the token
/// endpoint from the caller's session (bounded by `mail_gateway.smtp_timeout`); the code
/// works once: should this transaction roll back, consent again.
#[pg_extern]
pub fn oauth_exchange_code(
    account: &str,
    code: &str,
    redirect_uri: default!(&str, "'http://localhost'"),
) -> String {
    let acct = existing(account);
    let code = consent_code(&acct, code);
    let client = Client {
        provider: acct.provider,
        token_endpoint: acct.token_endpoint.clone(),
        client_id: acct.client_id.clone(),
        client_secret: acct.client_secret.clone(),
        ca_cert: acct.ca_cert.clone(),
    };
    let redirect = given(Some(redirect_uri)).unwrap_or(DEFAULT_REDIRECT);
    let form = oauth::code_form(&client, &code, redirect, acct.scope.as_deref());
    let secret = client.client_secret.clone().unwrap_or_default();
    let obtained_at = SystemTime::now();
    let granted = oauth::request(
        &client,
        &form,
        Limits::new(gucs::smtp_timeout()),
        &[&code, &secret],
    )
    .unwrap_or_else(|e| {
        ApiError::Connection {
            message: format!("OAuth2 account \"{account}\": {}", e.message),
            hint: Some(match e.failure {
                oauth::Failure::NeedsConsent => "The code was refused: it works once and for a few minutes, with the same redirect_uri as the consent. Open oauth_authorize_url again.".to_string(),
                other => oauth::hint(other, acct.provider, &acct.name),
            }),
        }
        .raise()
    });
    let Some(refresh_token) = granted.refresh_token.as_deref() else {
        no_refresh_token(account, acct.provider);
    };
    store::oauth::save(
        &acct.name,
        true,
        &store::oauth::Settings {
            refresh_token: Some(refresh_token),
            ..Default::default()
        },
    );
    let lifetime = Lifetime::new(obtained_at, granted.lifetime);
    store::oauth::store_granted(
        acct.id,
        refresh_token,
        &granted.access_token,
        lifetime,
        None,
    );
    format!(
        "OK: OAuth2 account \"{}\" has a refresh token{}; access token valid for {} s",
        acct.name,
        granted
            .scope
            .as_deref()
            .map(|s| format!(" (scope {s})"))
            .unwrap_or_default(),
        granted.lifetime.as_secs()
    )
}

/// The code of a consent given alone or in the URL the browser was sent back to, whose
/// `state` (when there) must name this account.
fn consent_code(acct: &store::oauth::Account, code: &str) -> String {
    let pasted_state = code
        .split_once('?')
        .and_then(|(_, q)| oauth::http::query_value(q, "state"));
    if let Some(state) = pasted_state
        && state != acct.name
    {
        ApiError::invalid(
            format!(
                "this consent was for OAuth2 account \"{}\", not \"{}\"",
                net_printable(&state),
                acct.name
            ),
            "Give the code to the account whose oauth_authorize_url was opened.",
        )
        .raise();
    }
    oauth::code_from(code).unwrap_or_else(|e| {
        ApiError::invalid(
            format!("OAuth2 account \"{}\": {e}", acct.name),
            "Give the code=… value of the URL the browser was sent back to, or that whole URL.",
        )
        .raise()
    })
}

/// The provider granted no refresh token: the consent did not ask for offline access.
fn no_refresh_token(account: &str, provider: Provider) -> ! {
    let hint = match provider {
        Provider::Microsoft => {
            "Add offline_access to the scope (set_oauth(account => …, scope => …)), then consent again through oauth_authorize_url."
        }
        _ => {
            "The consent must ask for offline access (access_type=offline&prompt=consent, as oauth_authorize_url does); for Google, remove the app's access at myaccount.google.com/permissions and consent again."
        }
    };
    ApiError::NotReady {
        message: format!(
            "OAuth2 account \"{account}\": the provider gave an access token but no refresh token"
        ),
        hint,
    }
    .raise()
}

fn net_printable(text: &str) -> String {
    crate::net::printable(text.chars().take(100).collect())
}

fn existing(account: &str) -> store::oauth::Account {
    store::oauth::account(account)
        .unwrap_or_else(|| ApiError::NoAccount(account.to_string()).raise())
}
