use std::time::{Duration, SystemTime};

use super::*;
use crate::net::Limits;

fn client(provider: Provider) -> Client {
    Client {
        provider,
        token_endpoint: provider
            .token_endpoint(None)
            .unwrap_or_else(|| "https://idp.example/token".into()),
        client_id: "app-id".into(),
        client_secret: Some("s3cret~value".into()),
        ca_cert: None,
    }
}

#[test]
fn providers_have_their_endpoints_and_scopes() {
    assert_eq!(
        Provider::Microsoft.token_endpoint(None).unwrap(),
        "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    );
    assert_eq!(
        Provider::Microsoft
            .authorize_endpoint(Some("contoso.onmicrosoft.com"))
            .unwrap(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
    );
    assert_eq!(
        Provider::Google.token_endpoint(Some("ignored")).unwrap(),
        "https://oauth2.googleapis.com/token"
    );
    assert_eq!(Provider::Custom.token_endpoint(None), None);
    assert!(MICROSOFT_SCOPE.contains("SMTP.Send") && MICROSOFT_SCOPE.contains("offline_access"));
    assert_eq!(
        Provider::Google.default_scope(),
        Some("https://mail.google.com/")
    );
    assert_eq!(Provider::parse(" Microsoft "), Some(Provider::Microsoft));
    assert_eq!(Provider::parse("yahoo"), None);
    assert!(valid_tenant("common") && valid_tenant("72f988bf-86f1-41af-91ab-2d7cd011db47"));
    assert!(!valid_tenant("a/b") && !valid_tenant("") && !valid_tenant("x y"));
}

#[test]
fn the_refresh_form_carries_the_grant_and_the_client() {
    let c = client(Provider::Microsoft);
    let form = refresh_form(&c, "0.AX-rt", Some(MICROSOFT_SCOPE));
    assert_eq!(
        http::query_value(&form, "grant_type").as_deref(),
        Some("refresh_token")
    );
    assert_eq!(
        http::query_value(&form, "refresh_token").as_deref(),
        Some("0.AX-rt")
    );
    assert_eq!(
        http::query_value(&form, "client_id").as_deref(),
        Some("app-id")
    );
    assert_eq!(
        http::query_value(&form, "client_secret").as_deref(),
        Some("s3cret~value")
    );
    assert_eq!(
        http::query_value(&form, "scope").as_deref(),
        Some(MICROSOFT_SCOPE)
    );
    let public = Client {
        client_secret: None,
        ..client(Provider::Custom)
    };
    let form = refresh_form(&public, "rt", None);
    assert_eq!(http::query_value(&form, "client_secret"), None);
    assert_eq!(http::query_value(&form, "scope"), None);
    let form = code_form(
        &client(Provider::Google),
        "4/0Ab",
        "http://localhost",
        Some(GOOGLE_SCOPE),
    );
    assert_eq!(
        http::query_value(&form, "grant_type").as_deref(),
        Some("authorization_code")
    );
    assert_eq!(http::query_value(&form, "code").as_deref(), Some("4/0Ab"));
    assert_eq!(
        http::query_value(&form, "redirect_uri").as_deref(),
        Some("http://localhost")
    );
    assert_eq!(
        http::query_value(&form, "scope"),
        None,
        "Google takes no scope here"
    );
}

#[test]
fn the_consent_url_asks_for_offline_access_and_consent() {
    let url = authorize_url(
        Provider::Google,
        &Provider::Google.authorize_endpoint(None).unwrap(),
        "app-id",
        "http://localhost",
        GOOGLE_SCOPE,
        Some("catchall@mycompany.com"),
        "acct",
    );
    let query = url.split_once('?').unwrap().1;
    assert!(url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?"));
    for (k, v) in [
        ("response_type", "code"),
        ("access_type", "offline"),
        ("prompt", "consent"),
        ("scope", GOOGLE_SCOPE),
        ("login_hint", "catchall@mycompany.com"),
        ("state", "acct"),
    ] {
        assert_eq!(http::query_value(query, k).as_deref(), Some(v), "{k}");
    }
    let url = authorize_url(
        Provider::Microsoft,
        "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        "app-id",
        "http://localhost",
        MICROSOFT_SCOPE,
        None,
        "s",
    );
    let query = url.split_once('?').unwrap().1;
    assert_eq!(
        http::query_value(query, "response_mode").as_deref(),
        Some("query")
    );
    assert_eq!(
        http::query_value(query, "prompt").as_deref(),
        Some("consent")
    );
    assert_eq!(http::query_value(query, "login_hint"), None);
}

#[test]
fn a_pasted_code_or_redirected_url_gives_the_code() {
    assert_eq!(code_from(" 0.AXoA-code ").unwrap(), "0.AXoA-code");
    assert_eq!(
        code_from(
            "http://localhost/?code=4%2F0AbCd&scope=https%3A%2F%2Fmail.google.com%2F&state=x"
        )
        .unwrap(),
        "4/0AbCd"
    );
    assert_eq!(code_from("code=abc&state=y").unwrap(), "abc");
    let refused = code_from(
        "http://localhost/?error=access_denied&error_description=AADSTS65004%3A+User+declined",
    )
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("access_denied: AADSTS65004: User declined"),
        "{refused}"
    );
    assert!(code_from("").is_err());
    assert!(code_from("http://localhost/?state=x").is_err());
}

#[test]
fn a_granted_token_is_read() {
    let g = read_reply(
        200,
        br#"{"token_type":"Bearer","scope":"https://outlook.office.com/SMTP.Send","expires_in":4023,"ext_expires_in":4023,"access_token":"eyJ0.a.b","refresh_token":"0.AX-new"}"#,
    )
    .unwrap();
    assert_eq!(g.access_token, "eyJ0.a.b");
    assert_eq!(g.lifetime, Duration::from_secs(4023));
    assert_eq!(g.refresh_token.as_deref(), Some("0.AX-new"));
    // Google: no new refresh token; expires_in as a string elsewhere; none at all → an hour.
    let g = read_reply(
        200,
        br#"{"access_token":"ya29.x","expires_in":"3599","token_type":"bearer"}"#,
    )
    .unwrap();
    assert_eq!(
        (g.lifetime, g.refresh_token),
        (Duration::from_secs(3599), None)
    );
    let g = read_reply(200, br#"{"access_token":"t"}"#).unwrap();
    assert_eq!(g.lifetime, Duration::from_secs(3600));
    assert!(!format!("{g:?}").contains("ya29") && !format!("{g:?}").contains("\"t\""));
    let e = read_reply(200, br#"{"access_token":"t","token_type":"mac"}"#).unwrap_err();
    assert_eq!(e.failure, Failure::Misconfigured);
    let e = read_reply(200, br#"{"id_token":"x"}"#).unwrap_err();
    assert_eq!(e.failure, Failure::Transient);
}

#[test]
fn failures_are_classified_the_way_the_providers_mean_them() {
    let cases: &[(u16, &str, Failure, &str)] = &[
        (
            400,
            r#"{"error":"invalid_grant","error_description":"AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.","error_codes":[70008]}"#,
            Failure::NeedsConsent,
            "invalid_grant: AADSTS70008",
        ),
        (
            400,
            r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity."}"#,
            Failure::NeedsConsent,
            "AADSTS700082",
        ),
        (
            400,
            r#"{"error":"invalid_grant","error_description":"AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed."}"#,
            Failure::NeedsConsent,
            "AADSTS50173",
        ),
        (
            400,
            r#"{"error": "invalid_grant", "error_description": "Token has been expired or revoked."}"#,
            Failure::NeedsConsent,
            "Token has been expired or revoked.",
        ),
        (
            400,
            r#"{"error":"interaction_required","error_description":"AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication."}"#,
            Failure::NeedsConsent,
            "AADSTS50076",
        ),
        (
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys for app are expired."}"#,
            Failure::Misconfigured,
            "AADSTS7000222",
        ),
        (
            401,
            r#"{"error": "invalid_client", "error_description": "Unauthorized"}"#,
            Failure::Misconfigured,
            "invalid_client: Unauthorized",
        ),
        (
            400,
            r#"{"error":"invalid_scope","error_description":"AADSTS70011"}"#,
            Failure::Misconfigured,
            "invalid_scope",
        ),
        (
            503,
            r#"{"error":"temporarily_unavailable"}"#,
            Failure::Transient,
            "HTTP 503",
        ),
        (
            429,
            r#"{"error":"invalid_request"}"#,
            Failure::Transient,
            "429",
        ),
        (
            502,
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            Failure::Transient,
            "HTTP 502 (<html><body><h1>502 Bad Gateway</h1></body></html>)",
        ),
        (
            404,
            "Not Found",
            Failure::Misconfigured,
            "HTTP 404 (Not Found)",
        ),
    ];
    for (status, body, failure, words) in cases {
        let e = read_reply(*status, body.as_bytes()).unwrap_err();
        assert_eq!(e.failure, *failure, "{body}");
        assert!(e.message.contains(words), "{} lacks {words}", e.message);
    }
    assert_eq!(
        Failure::NeedsConsent.state().map(|s| s.as_str()),
        Some("needs_consent")
    );
    assert_eq!(Failure::Transient.state(), None);
}

#[test]
fn provider_words_are_made_safe_and_never_hold_a_secret() {
    let long = format!(
        r#"{{"error":"invalid_grant","error_description":"echo refresh_token=0.AX-secret\r\nX-Forged: 1 {}"}}"#,
        "x".repeat(2000)
    );
    let e = read_reply(400, long.as_bytes()).unwrap_err();
    assert!(
        !e.message.contains('\n') && e.message.len() < 600,
        "{}",
        e.message
    );
    let safe = redact(e.message, &["0.AX-secret", "s3cret~value", ""]);
    assert!(
        !safe.contains("0.AX-secret") && safe.contains("[secret]"),
        "{safe}"
    );
}

#[test]
fn hints_say_what_to_renew() {
    let h = hint(Failure::NeedsConsent, Provider::Microsoft, "m365");
    assert!(
        h.contains("AADSTS70008") && h.contains("oauth_authorize_url('m365')"),
        "{h}"
    );
    assert!(h.contains("set_oauth(account => 'm365'"), "{h}");
    let h = hint(Failure::NeedsConsent, Provider::Google, "gmail");
    assert!(h.contains("Testing") && h.contains("7 days"), "{h}");
    let h = hint(Failure::Misconfigured, Provider::Microsoft, "m365");
    assert!(
        h.contains("client secret") && h.contains("AADSTS7000222"),
        "{h}"
    );
    assert!(hint(Failure::Transient, Provider::Custom, "x").contains("tries again"));
}

#[test]
fn tokens_are_refreshed_before_they_expire_with_a_margin() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let at = |s: u64| t0 + Duration::from_secs(s);
    // An hour's token: refreshed ten minutes before its end, usable until its last minute.
    let hour = Lifetime::new(t0, Duration::from_secs(3600));
    assert!(!hour.refresh_due(at(2999)));
    assert!(hour.refresh_due(at(3000)));
    assert!(hour.usable(at(3539)));
    assert!(!hour.usable(at(3540)));
    // A four-second token (the tests): refreshed halfway, usable for three seconds.
    let short = Lifetime::new(t0, Duration::from_secs(4));
    assert!(!short.refresh_due(at(1)));
    assert!(short.refresh_due(at(2)));
    assert!(short.usable(at(2)));
    assert!(!short.usable(at(3)));
    // Expired, or a clock that went back: never usable after the end.
    assert!(!hour.usable(at(4000)) && hour.refresh_due(at(4000)));
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(3), Duration::from_secs(4));
    assert_eq!(backoff(30), Duration::from_secs(60));
}

#[test]
fn a_request_to_a_local_endpoint_goes_round_trip() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 8192];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("refresh_token=") {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"error":"invalid_grant","error_description":"refresh token rt-OLD-123 was used already"}"#;
        write!(
            s,
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let c = Client {
        token_endpoint: format!("http://127.0.0.1:{port}/token"),
        ..client(Provider::Custom)
    };
    let form = refresh_form(&c, "rt-OLD-123", None);
    let e = request(
        &c,
        &form,
        Limits::new(Duration::from_secs(5)),
        &["rt-OLD-123", "s3cret~value"],
    )
    .unwrap_err();
    server.join().unwrap();
    assert_eq!(e.failure, Failure::NeedsConsent);
    assert!(!e.message.contains("rt-OLD-123"), "{}", e.message);
    let bad = Client {
        token_endpoint: "http://192.0.2.1/token".into(),
        ..client(Provider::Custom)
    };
    let e = request(&bad, "", Limits::new(Duration::from_secs(1)), &[]).unwrap_err();
    assert_eq!(e.failure, Failure::Misconfigured);
}
