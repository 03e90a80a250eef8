//! SQL tests of OAuth2 accounts inside PostgreSQL (each in a rolled-back transaction): the
//! validation trigger, set_oauth and the servers' checks. Refreshes against a token endpoint
//! are tested end to end in tests/tests/oauth.rs.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn run(sql: &str) {
        Spi::run(sql).unwrap();
    }

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap()
    }

    #[pg_test]
    fn the_big_providers_get_their_endpoints_and_scopes() {
        run(
            "INSERT INTO mail_gateway.oauth_account (name, provider, client_id, refresh_token)
             VALUES (' m365 ', 'Microsoft', 'app', 'rt'), ('gmail', 'google', 'app', NULL)",
        );
        assert_eq!(
            text("SELECT token_endpoint || ' ' || tenant || ' ' || state FROM mail_gateway.oauth_account WHERE name = 'm365'")
                .as_deref(),
            Some("https://login.microsoftonline.com/organizations/oauth2/v2.0/token organizations ok")
        );
        assert_eq!(
            text("SELECT token_endpoint || ' ' || scope || ' ' || state FROM mail_gateway.oauth_account WHERE name = 'gmail'")
                .as_deref(),
            Some("https://oauth2.googleapis.com/token https://mail.google.com/ needs_consent")
        );
        // A token endpoint given for Microsoft is the tenant's all the same.
        run(
            "UPDATE mail_gateway.oauth_account SET tenant = 'common', token_endpoint = 'https://evil.example/t'
             WHERE name = 'm365'",
        );
        assert_eq!(
            text("SELECT token_endpoint FROM mail_gateway.oauth_account WHERE name = 'm365'")
                .as_deref(),
            Some("https://login.microsoftonline.com/common/oauth2/v2.0/token")
        );
    }

    #[pg_test]
    fn a_new_refresh_token_starts_afresh_but_storing_a_token_does_not() {
        run(
            "INSERT INTO mail_gateway.oauth_account (name, provider, client_id, refresh_token, token_endpoint)
             VALUES ('idp', 'custom', 'app', 'rt-1', 'https://idp.example.com/token');
             -- What the gateway stores after a refresh (a rotated refresh token with it).
             UPDATE mail_gateway.oauth_account SET access_token = 'at-1', expires_at = now() + interval '1 hour',
                    last_refresh_at = now(), refresh_token = 'rt-2', last_error = 'earlier';
             ",
        );
        assert_eq!(
            text("SELECT access_token || ' ' || refresh_token || ' ' || state || ' ' || last_error FROM mail_gateway.oauth_account")
                .as_deref(),
            Some("at-1 rt-2 ok earlier")
        );
        run("UPDATE mail_gateway.oauth_account SET state = 'needs_consent'");
        // An administrator's new refresh token: the cached token and the error go.
        run("UPDATE mail_gateway.oauth_account SET refresh_token = ' rt-3 '");
        assert_eq!(
            text("SELECT concat_ws(' ', access_token, expires_at, refresh_token, state, last_error) FROM mail_gateway.oauth_account")
                .as_deref(),
            Some("rt-3 ok")
        );
        run("UPDATE mail_gateway.oauth_account SET refresh_token = ''");
        assert_eq!(
            text("SELECT state FROM mail_gateway.oauth_account").as_deref(),
            Some("needs_consent")
        );
    }

    #[pg_test(
        error = "token_endpoint of OAuth2 account \"idp\": \"http://idp.example.com/token\" is not encrypted: secrets go to a token endpoint over https:// only (http:// is allowed on the loopback)"
    )]
    fn a_custom_endpoint_must_be_https() {
        run(
            "INSERT INTO mail_gateway.oauth_account (name, provider, client_id, token_endpoint)
             VALUES ('idp', 'custom', 'app', 'http://idp.example.com/token')",
        );
    }

    #[pg_test(error = "OAuth2 account \"idp\" (custom) has no token_endpoint")]
    fn a_custom_provider_needs_its_endpoint() {
        run(
            "INSERT INTO mail_gateway.oauth_account (name, provider, client_id) VALUES ('idp', 'custom', 'app')",
        );
    }

    #[pg_test(error = "OAuth2 account \"g\" has a tenant, which only Microsoft uses")]
    fn only_microsoft_has_tenants() {
        run(
            "INSERT INTO mail_gateway.oauth_account (name, provider, client_id, tenant) VALUES ('g', 'google', 'app', 'x')",
        );
    }

    #[pg_test(error = "server \"s\" uses xoauth2 authentication but has no username")]
    fn xoauth2_needs_a_username() {
        run(
            "INSERT INTO mail_gateway.oauth_account (name, provider, client_id) VALUES ('g', 'google', 'app');
             INSERT INTO mail_gateway.outgoing_server (name, host, username, oauth_account)
             VALUES ('s', 'smtp.gmail.com', ' ', 'g')",
        );
    }

    #[pg_test(error = "server \"s\" names OAuth2 account \"g\" but uses password authentication")]
    fn an_account_needs_xoauth2() {
        run(
            "INSERT INTO mail_gateway.oauth_account (name, provider, client_id) VALUES ('g', 'google', 'app');
             INSERT INTO mail_gateway.incoming_server (name, host, username, password, oauth_account)
             VALUES ('s', 'imap.gmail.com', 'me@gmail.com', 'p', 'g')",
        );
    }

    #[pg_test]
    fn an_outgoing_server_with_an_account_logs_in_with_xoauth2_and_no_password() {
        run(
            "INSERT INTO mail_gateway.oauth_account (name, provider, client_id) VALUES ('g', 'google', 'app');
             INSERT INTO mail_gateway.outgoing_server (name, host, username, oauth_account)
             VALUES ('s', 'smtp.gmail.com', 'me@gmail.com', 'g');
             -- Renaming the account follows into the servers.
             UPDATE mail_gateway.oauth_account SET name = 'gmail'",
        );
        assert_eq!(
            text("SELECT auth || ' ' || oauth_account FROM mail_gateway.outgoing_server")
                .as_deref(),
            Some("xoauth2 gmail")
        );
    }

    #[pg_test(
        error = "server \"s\" uses xoauth2 authentication but has no OAuth2 account or access token"
    )]
    fn xoauth2_needs_an_account_or_a_token() {
        run(
            "INSERT INTO mail_gateway.outgoing_server (name, host, auth, username)
             VALUES ('s', 'smtp.gmail.com', 'xoauth2', 'me@gmail.com')",
        );
    }

    #[pg_test]
    fn set_oauth_creates_links_and_changes() {
        run(
            "INSERT INTO mail_gateway.outgoing_server (name, host, username, password)
             VALUES ('gmail', 'smtp.gmail.com', 'me@gmail.com', 'app-password')",
        );
        let summary = text(
            "SELECT mail_gateway.set_oauth(server => 'gmail', provider => 'google', client_id => 'app',
                    client_secret => 's', refresh_token => 'rt')",
        )
        .unwrap();
        assert_eq!(
            summary,
            "OAuth2 account \"gmail\" (google): outgoing server \"gmail\" logs in with its tokens; refresh token set: SELECT mail_gateway.test_outgoing_server('gmail') checks it"
        );
        // Changing one setting keeps the others; another provider drops Microsoft's tenant.
        run(
            "SELECT mail_gateway.set_oauth(account => 'gmail', provider => 'microsoft', tenant => 'contoso.com');
             SELECT mail_gateway.set_oauth(server => 'gmail', client_secret => 's2')",
        );
        assert_eq!(
            text("SELECT concat_ws(' ', provider, tenant, client_id, client_secret, refresh_token) FROM mail_gateway.oauth_account")
                .as_deref(),
            Some("microsoft contoso.com app s2 rt")
        );
        run("SELECT mail_gateway.set_oauth(server => 'gmail', provider => 'google')");
        assert_eq!(
            text("SELECT concat_ws(' ', provider, tenant, token_endpoint) FROM mail_gateway.oauth_account")
                .as_deref(),
            Some("google https://oauth2.googleapis.com/token")
        );
        let url =
            text("SELECT mail_gateway.oauth_authorize_url('gmail', 'http://localhost:8080/cb')")
                .unwrap();
        assert!(
            url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?client_id=app&response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A8080%2Fcb&scope=https%3A%2F%2Fmail.google.com%2F&state=gmail&prompt=consent&access_type=offline&login_hint=me%40gmail.com"),
            "{url}"
        );
    }

    #[pg_test(error = "OAuth2 account \"gmail\": the sign-in was refused: access_denied")]
    fn a_refused_consent_is_reported() {
        run(
            "INSERT INTO mail_gateway.oauth_account (name, provider, client_id) VALUES ('gmail', 'google', 'app');
             SELECT mail_gateway.oauth_exchange_code('gmail', 'http://localhost/?error=access_denied&state=gmail')",
        );
    }
}
