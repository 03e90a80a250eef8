//! SQL API tests, run inside PostgreSQL by `cargo pgrx test` (each in a rolled-back transaction).
//! One test per rule of docs/REFERENCE.md, "Parameters", "Table outgoing_server", "find_outgoing_server" and per configuration constraint.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn run(sql: &str) {
        Spi::run(sql).unwrap();
    }

    fn text(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap()
    }

    /// The catchall domain and three servers most tests share.
    fn setup() {
        run("SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com')");
    }

    fn add_server(name: &str, priority: i32, filter: Option<&str>) {
        Spi::run_with_args(
            "INSERT INTO mail_gateway.outgoing_server (name, host, priority, from_filter)
             VALUES ($1, 'smtp.example.net', $2, $3)",
            &[name.into(), priority.into(), filter.into()],
        )
        .unwrap();
    }

    /// (server_name, smtp_from, header_from) for a From.
    fn choose(from: &str) -> (Option<String>, String, String) {
        let (name, smtp, header) = Spi::get_three_with_args::<String, String, String>(
            "SELECT server_name, smtp_from, header_from FROM mail_gateway.find_outgoing_server($1)",
            &[from.into()],
        )
        .unwrap();
        (name, smtp.unwrap(), header.unwrap())
    }

    fn server_for(from: &str) -> String {
        choose(from).0.expect("a server is chosen")
    }

    #[pg_test]
    fn parameters_are_seeded_with_the_spec_defaults() {
        let expected = [
            ("mail.catchall.domain", None),
            ("mail.catchall.alias", Some("catchall")),
            ("mail.bounce.alias", Some("bounce")),
            ("mail.default.from", Some("notifications")),
            ("mail.default.from_filter", None),
            ("mail.incoming.limit.period", Some("60")),
            ("mail.incoming.limit.alias", Some("5")),
            ("mail.send.daily_limit", Some("200")),
            ("mail.bounce.limit", Some("5")),
            ("mail.bounce.period", Some("30 days")),
            ("mail.bounce.spread", Some("7 days")),
            ("mail.fetch.interval", Some("5 minutes")),
            ("mass_mailing.outgoing_mail_server", None),
            // Beyond docs/REFERENCE.md, "Parameters": what strangers can make us send (docs/SECURITY.md).
            ("mail.relay.limit.thread", Some("20")),
            ("mail.relay.limit.sender", Some("10")),
            ("mail.auto_reply.limit.recipient", Some("1")),
            ("mail.auto_reply.daily_share", Some("10")),
            ("mail.authentication.trusted_servers", None),
        ];
        for (key, value) in expected {
            let got = Spi::get_one_with_args::<String>(
                "SELECT mail_gateway.get_parameter($1)",
                &[key.into()],
            )
            .unwrap();
            assert_eq!(got.as_deref(), value, "{key}");
        }
        let count = Spi::get_one::<i64>("SELECT count(*) FROM mail_gateway.parameter").unwrap();
        assert_eq!(count, Some(expected.len() as i64));
    }

    #[pg_test]
    fn set_parameter_normalises_and_get_parameter_reads_back() {
        run("SELECT mail_gateway.set_parameter('mail.catchall.domain', '  MyCompany.COM ')");
        assert_eq!(
            text("SELECT mail_gateway.get_parameter('mail.catchall.domain')").as_deref(),
            Some("mycompany.com")
        );
        run("SELECT mail_gateway.set_parameter('mail.send.daily_limit', ' 0 ')");
        assert_eq!(
            text("SELECT mail_gateway.get_parameter('mail.send.daily_limit')").as_deref(),
            Some("0")
        );
        run("SELECT mail_gateway.set_parameter('mail.default.from_filter', 'B.com, a@C.com')");
        assert_eq!(
            text("SELECT mail_gateway.get_parameter('mail.default.from_filter')").as_deref(),
            Some("b.com,a@c.com")
        );
        run("SELECT mail_gateway.set_parameter('mail.catchall.domain', NULL)");
        assert_eq!(
            text("SELECT mail_gateway.get_parameter('mail.catchall.domain')"),
            None
        );
        run("SELECT mail_gateway.set_parameter('erp.custom', 'x')");
        assert_eq!(
            text("SELECT mail_gateway.get_parameter('erp.custom')").as_deref(),
            Some("x")
        );
        assert_eq!(
            text("SELECT mail_gateway.get_parameter('no.such.key')"),
            None
        );
    }

    #[pg_test(error = "invalid value \"many\" for parameter \"mail.bounce.limit\"")]
    fn set_parameter_rejects_a_non_number() {
        run("SELECT mail_gateway.set_parameter('mail.bounce.limit', 'many')");
    }

    #[pg_test(error = "invalid value \"a week\" for parameter \"mail.bounce.spread\"")]
    fn set_parameter_rejects_a_bad_interval() {
        run("SELECT mail_gateway.set_parameter('mail.bounce.spread', 'a week')");
    }

    #[pg_test(error = "malformed domain \"my company.com\"")]
    fn set_parameter_rejects_a_bad_domain() {
        run("SELECT mail_gateway.set_parameter('mail.catchall.domain', 'my company.com')");
    }

    #[pg_test(error = "parameter \"mail.catchall.alias\" cannot be NULL")]
    fn set_parameter_rejects_null_for_a_required_key() {
        run("SELECT mail_gateway.set_parameter('mail.catchall.alias', NULL)");
    }

    #[pg_test(error = "no outgoing server named \"bulk\"")]
    fn mass_mailing_server_must_exist() {
        run("SELECT mail_gateway.set_parameter('mass_mailing.outgoing_mail_server', 'bulk')");
    }

    #[pg_test]
    fn server_defaults_follow_encryption_and_username() {
        run(
            "INSERT INTO mail_gateway.outgoing_server (name, host, encryption) VALUES ('a', 'h', 'ssl')",
        );
        run(
            "INSERT INTO mail_gateway.outgoing_server (name, host, username, password) VALUES ('b', 'h', 'u', 'p')",
        );
        let a = Spi::get_two::<i32, String>(
            "SELECT port, auth FROM mail_gateway.outgoing_server WHERE name = 'a'",
        )
        .unwrap();
        assert_eq!(a, (Some(465), Some("none".into())));
        let b = Spi::get_two::<i32, String>(
            "SELECT port, auth FROM mail_gateway.outgoing_server WHERE name = 'b'",
        )
        .unwrap();
        assert_eq!(b, (Some(587), Some("login".into())));
        run(
            "INSERT INTO mail_gateway.incoming_server (name, host, username) VALUES ('i', 'h', 'u')",
        );
        run(
            "INSERT INTO mail_gateway.incoming_server (name, host, username, protocol, encryption) VALUES ('p', 'h', 'u', 'pop3', 'starttls')",
        );
        let ports = Spi::get_two::<i32, i32>(
            "SELECT (SELECT port FROM mail_gateway.incoming_server WHERE name = 'i'),
                    (SELECT port FROM mail_gateway.incoming_server WHERE name = 'p')",
        )
        .unwrap();
        assert_eq!(ports, (Some(993), Some(110)));
    }

    #[pg_test(error = "unknown encryption \"tls\" for server \"a\"")]
    fn outgoing_server_rejects_unknown_encryption() {
        run(
            "INSERT INTO mail_gateway.outgoing_server (name, host, encryption) VALUES ('a', 'h', 'tls')",
        );
    }

    #[pg_test(error = "port 70000 of server \"a\" is out of range")]
    fn outgoing_server_rejects_port_out_of_range() {
        run("INSERT INTO mail_gateway.outgoing_server (name, host, port) VALUES ('a', 'h', 70000)");
    }

    #[pg_test(error = "port 0 of server \"i\" is out of range")]
    fn incoming_server_rejects_port_out_of_range() {
        run(
            "INSERT INTO mail_gateway.incoming_server (name, host, port, username) VALUES ('i', 'h', 0, 'u')",
        );
    }

    #[pg_test(error = "unknown protocol \"pop\" for server \"i\"")]
    fn incoming_server_rejects_unknown_protocol() {
        run(
            "INSERT INTO mail_gateway.incoming_server (name, host, protocol, username) VALUES ('i', 'h', 'pop', 'u')",
        );
    }

    #[pg_test(error = "malformed from_filter entry \"@example.com\"")]
    fn outgoing_server_rejects_malformed_from_filter() {
        add_server("a", 10, Some("mycompany.com, @example.com"));
    }

    #[pg_test(error = "server \"a\" uses login authentication but has no username or password")]
    fn outgoing_server_login_needs_credentials() {
        run(
            "INSERT INTO mail_gateway.outgoing_server (name, host, auth) VALUES ('a', 'h', 'login')",
        );
    }

    #[pg_test(error = "server \"a\" would send its credentials without encryption")]
    fn outgoing_server_refuses_credentials_in_clear() {
        run(
            "INSERT INTO mail_gateway.outgoing_server (name, host, encryption, username, password)
             VALUES ('a', 'h', 'none', 'u', 'p')",
        );
    }

    #[pg_test(
        error = "duplicate key value violates unique constraint \"outgoing_server_name_key\""
    )]
    fn outgoing_server_names_are_unique() {
        add_server("a", 10, None);
        add_server("a", 20, None);
    }

    #[pg_test]
    fn outgoing_server_filter_is_stored_normalised() {
        add_server("a", 10, Some(" Example.COM ,Admin@Other.com,"));
        assert_eq!(
            text("SELECT from_filter FROM mail_gateway.outgoing_server").as_deref(),
            Some("example.com,admin@other.com")
        );
    }

    #[pg_test]
    fn changing_an_incoming_connection_needs_a_new_test() {
        run(
            "INSERT INTO mail_gateway.incoming_server (name, host, username, state) VALUES ('i', 'h', 'u', 'confirmed')",
        );
        run("UPDATE mail_gateway.incoming_server SET priority = 1");
        assert_eq!(
            text("SELECT state FROM mail_gateway.incoming_server").as_deref(),
            Some("confirmed")
        );
        run("UPDATE mail_gateway.incoming_server SET password = 'new'");
        assert_eq!(
            text("SELECT state FROM mail_gateway.incoming_server").as_deref(),
            Some("draft")
        );
    }

    fn leads_table() {
        run("CREATE TABLE public.crm_lead (id bigserial PRIMARY KEY, name text)");
    }

    #[pg_test(error = "alias name \"catchall\" is reserved")]
    fn alias_catchall_is_reserved() {
        leads_table();
        run("INSERT INTO mail_gateway.alias (name, model) VALUES ('Catchall', 'crm_lead')");
    }

    #[pg_test(error = "alias name \"bounce\" is reserved")]
    fn alias_bounce_is_reserved() {
        leads_table();
        run("INSERT INTO mail_gateway.alias (name, model) VALUES ('bounce', 'crm_lead')");
    }

    #[pg_test(error = "alias name \"replies\" is reserved")]
    fn alias_configured_catchall_name_is_reserved() {
        leads_table();
        run("SELECT mail_gateway.set_parameter('mail.catchall.alias', 'replies')");
        run("INSERT INTO mail_gateway.alias (name, model) VALUES ('replies', 'crm_lead')");
    }

    #[pg_test(error = "duplicate key value violates unique constraint \"alias_name_domain_key\"")]
    fn alias_names_are_unique_per_domain() {
        leads_table();
        run("INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'crm_lead')");
        run(
            "INSERT INTO mail_gateway.alias (name, domain, model) VALUES ('sales', 'other.com', 'crm_lead')",
        );
        run("INSERT INTO mail_gateway.alias (name, model) VALUES ('Sales', 'crm_lead')");
    }

    #[pg_test(error = "alias \"sales\" has no handler and table \"crm_lead\" does not exist")]
    fn alias_needs_a_table_or_handler() {
        run("INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'crm_lead')");
    }

    #[pg_test]
    fn alias_model_is_stored_schema_qualified() {
        leads_table();
        run("INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'crm_lead')");
        assert_eq!(
            text("SELECT model FROM mail_gateway.alias").as_deref(),
            Some("public.crm_lead")
        );
    }

    #[pg_test(error = "malformed local part \"sales team\"")]
    fn alias_name_must_be_a_local_part() {
        leads_table();
        run("INSERT INTO mail_gateway.alias (name, model) VALUES ('sales team', 'crm_lead')");
    }

    #[pg_test]
    fn contacts_and_blocklist_store_bare_lower_case_addresses() {
        run("INSERT INTO mail_gateway.contact (email) VALUES ('\"Ann\" <Ann@Customer.Example>')");
        assert_eq!(
            text("SELECT email FROM mail_gateway.contact").as_deref(),
            Some("ann@customer.example")
        );
        run("INSERT INTO mail_gateway.blacklist (email, reason) VALUES ('X@Y.com', 'test')");
        assert_eq!(
            text("SELECT email FROM mail_gateway.blacklist").as_deref(),
            Some("x@y.com")
        );
    }

    #[pg_test(error = "permission denied for table outgoing_server")]
    fn users_cannot_read_secrets() {
        add_server("a", 10, None);
        run("SET LOCAL ROLE mail_gateway_user");
        // Everything but the secrets is readable...
        assert_eq!(
            text("SELECT host FROM mail_gateway.outgoing_server").as_deref(),
            Some("smtp.example.net")
        );
        run("SELECT password FROM mail_gateway.outgoing_server");
    }

    #[pg_test(error = "permission denied for function set_parameter")]
    fn users_cannot_change_parameters() {
        run("SET LOCAL ROLE mail_gateway_user");
        assert_eq!(
            text("SELECT mail_gateway.get_parameter('mail.bounce.alias')").as_deref(),
            Some("bounce")
        );
        run("SELECT mail_gateway.set_parameter('mail.bounce.alias', 'x')");
    }

    #[pg_test]
    fn users_can_choose_a_server() {
        setup();
        add_server("a", 10, None);
        run("SET LOCAL ROLE mail_gateway_user");
        assert_eq!(server_for("x@mycompany.com"), "a");
    }

    // ---- find_outgoing_server (docs/REFERENCE.md), one rule each ----

    #[pg_test]
    fn rule1_exact_address_first() {
        setup();
        add_server("any", 1, None);
        add_server("domain", 5, Some("example.com"));
        add_server("exact", 30, Some("admin@example.com"));
        assert_eq!(server_for("admin@example.com"), "exact");
    }

    #[pg_test]
    fn rule2_then_domain() {
        setup();
        add_server("any", 1, None);
        add_server("domain", 5, Some("example.com"));
        add_server("exact", 30, Some("admin@example.com"));
        assert_eq!(server_for("bob@example.com"), "domain");
    }

    #[pg_test]
    fn rule3_then_a_server_without_filter() {
        setup();
        add_server("domain", 1, Some("example.com"));
        add_server("any", 20, None);
        assert_eq!(server_for("x@elsewhere.org"), "any");
    }

    #[pg_test]
    fn rule4_then_the_default_sender_exactly_then_its_domain() {
        setup();
        add_server("domain", 1, Some("mycompany.com"));
        add_server("exact", 20, Some("notifications@mycompany.com"));
        add_server("other", 0, Some("other.com"));
        assert_eq!(server_for("x@elsewhere.org"), "exact");
        run("UPDATE mail_gateway.outgoing_server SET active = false WHERE name = 'exact'");
        assert_eq!(server_for("x@elsewhere.org"), "domain");
    }

    #[pg_test]
    fn rule5_else_the_first_server() {
        setup();
        add_server("b", 20, Some("b.com"));
        add_server("a", 10, Some("a.com"));
        assert_eq!(server_for("x@elsewhere.org"), "a");
    }

    #[pg_test]
    fn priority_ties_go_to_the_lowest_id() {
        setup();
        add_server("first", 10, Some("example.com"));
        add_server("second", 10, Some("example.com"));
        assert_eq!(server_for("x@example.com"), "first");
        run("UPDATE mail_gateway.outgoing_server SET priority = 5 WHERE name = 'second'");
        assert_eq!(server_for("x@example.com"), "second");
    }

    #[pg_test]
    fn inactive_servers_are_never_chosen() {
        setup();
        add_server("exact", 1, Some("admin@example.com"));
        add_server("any", 10, None);
        run("UPDATE mail_gateway.outgoing_server SET active = false WHERE name = 'exact'");
        assert_eq!(server_for("admin@example.com"), "any");
        run("UPDATE mail_gateway.outgoing_server SET active = false");
        let (server, _, header) = choose("admin@example.com");
        assert_eq!(server, None);
        assert_eq!(header, "admin@example.com");
    }

    #[pg_test]
    fn comma_separated_filters_list_domains_and_addresses() {
        setup();
        add_server("any", 1, None);
        add_server("multi", 10, Some("a.com, boss@b.com"));
        assert_eq!(server_for("x@a.com"), "multi");
        assert_eq!(server_for("boss@b.com"), "multi");
        assert_eq!(server_for("other@b.com"), "any");
    }

    #[pg_test]
    fn addresses_match_whatever_their_case() {
        setup();
        add_server("any", 1, None);
        add_server("exact", 10, Some("Admin@Example.com"));
        let (server, _, header) = choose("\"Admin\" <ADMIN@EXAMPLE.COM>");
        assert_eq!(server.as_deref(), Some("exact"));
        assert_eq!(header, "\"Admin\" <ADMIN@EXAMPLE.COM>");
    }

    #[pg_test]
    fn seeds_example_admin_is_encapsulated() {
        setup();
        add_server("company", 10, Some("mycompany.com"));
        let (server, smtp, header) = choose("\"Admin\" <admin@example.com>");
        assert_eq!(server.as_deref(), Some("company"));
        assert_eq!(header, "\"Admin\" <notifications@mycompany.com>");
        assert_eq!(smtp, "bounce@mycompany.com");
    }

    #[pg_test]
    fn allowed_from_is_kept_as_written() {
        setup();
        add_server("company", 10, Some("mycompany.com"));
        let (_, smtp, header) = choose("  Sales Team <sales@mycompany.com> ");
        assert_eq!(header, "Sales Team <sales@mycompany.com>");
        assert_eq!(smtp, "bounce@mycompany.com");
    }

    #[pg_test]
    fn encapsulation_keeps_quoted_and_non_ascii_names() {
        setup();
        add_server("company", 10, Some("mycompany.com"));
        assert_eq!(
            choose(r#""Dupont, \"JD\"" <jd@customer.example>"#).2,
            r#""Dupont, \"JD\"" <notifications@mycompany.com>"#
        );
        assert_eq!(
            choose("Jérôme Müller <jm@customer.example>").2,
            "\"Jérôme Müller\" <notifications@mycompany.com>"
        );
        // No display name: the local part stands in for it.
        assert_eq!(
            choose("mary@customer.example").2,
            "\"mary\" <notifications@mycompany.com>"
        );
    }

    #[pg_test]
    fn default_from_filter_restricts_servers_without_their_own() {
        setup();
        run("SELECT mail_gateway.set_parameter('mail.default.from_filter', 'mycompany.com')");
        add_server("any", 10, None);
        assert_eq!(
            choose("\"Ann\" <ann@customer.example>").2,
            "\"Ann\" <notifications@mycompany.com>"
        );
        assert_eq!(choose("me@mycompany.com").2, "me@mycompany.com");
    }

    #[pg_test]
    fn filter_equal_to_default_sender_encapsulates_every_other_address() {
        setup();
        add_server("one", 10, Some("notifications@mycompany.com"));
        let (_, smtp, header) = choose("Bob <bob@mycompany.com>");
        assert_eq!(header, "\"Bob\" <notifications@mycompany.com>");
        // The server may not send as bounce@: the envelope is the From address.
        assert_eq!(smtp, "notifications@mycompany.com");
    }

    #[pg_test]
    fn full_default_from_is_used_as_is() {
        setup();
        run("SELECT mail_gateway.set_parameter('mail.default.from', 'NoReply@MyCompany.com')");
        add_server("company", 10, Some("mycompany.com"));
        assert_eq!(choose("A <a@x.org>").2, "\"A\" <noreply@mycompany.com>");
    }

    #[pg_test]
    fn envelope_is_the_from_without_a_catchall_domain() {
        add_server("any", 10, None);
        let (_, smtp, header) = choose("A <a@x.org>");
        assert_eq!(smtp, "a@x.org");
        assert_eq!(header, "A <a@x.org>");
    }

    #[pg_test]
    fn mass_mail_goes_to_the_dedicated_server() {
        setup();
        add_server("transactional", 1, None);
        add_server("bulk", 50, None);
        run("SELECT mail_gateway.set_parameter('mass_mailing.outgoing_mail_server', 'bulk')");
        let mass = text(
            "SELECT server_name FROM mail_gateway.find_outgoing_server('news@mycompany.com', kind => 'mass')",
        );
        assert_eq!(mass.as_deref(), Some("bulk"));
        assert_eq!(server_for("news@mycompany.com"), "transactional");
    }

    #[pg_test(error = "malformed From address \"Admin <admin@example.com\"")]
    fn malformed_from_is_a_clear_error() {
        setup();
        choose("Admin <admin@example.com");
    }

    #[pg_test(error = "unknown mail kind \"bulk\"")]
    fn unknown_kind_is_a_clear_error() {
        run("SELECT * FROM mail_gateway.find_outgoing_server('a@b.com', kind => 'bulk')");
    }
}
