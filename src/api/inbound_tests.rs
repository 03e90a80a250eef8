//! SQL tests of process_message inside PostgreSQL.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    const MESSAGE: &[u8] = b"From: Ann <Ann@Customer.Example>\r\nTo: sales@mycompany.com\r\n\
Subject: Quote\r\nMessage-ID: <m1@customer.example>\r\n\r\nHello\r\n";

    fn process(raw: &[u8]) -> i64 {
        Spi::get_one_with_args::<i64>("SELECT mail_gateway.process_message($1)", &[raw.into()])
            .unwrap()
            .unwrap()
    }

    #[pg_test]
    fn stores_raw_bytes_and_a_summary() {
        let id = process(MESSAGE);
        let raw = Spi::get_one_with_args::<Vec<u8>>(
            "SELECT raw FROM mail_gateway.inbound WHERE id = $1",
            &[id.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(raw, MESSAGE, "byte for byte");
        let (state, from) = Spi::get_two_with_args::<String, String>(
            "SELECT state, email_from FROM mail_gateway.inbound WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(
            (state.as_deref(), from.as_deref()),
            (Some("unroutable"), Some("ann@customer.example")),
            "stored, then routed (no alias or thread here)"
        );
        let summary = Spi::get_one_with_args::<String>(
            "SELECT summary->>'message_id' || ' ' || (summary->'to'->>0) FROM mail_gateway.inbound WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(
            summary.as_deref(),
            Some("<m1@customer.example> sales@mycompany.com")
        );
    }

    #[pg_test]
    fn the_same_message_is_stored_once() {
        let first = process(MESSAGE);
        assert_eq!(process(MESSAGE), first);
        let no_id: &[u8] = b"From: a@x.com\r\nSubject: no id\r\n\r\nbody\r\n";
        let a = process(no_id);
        assert_eq!(process(no_id), a, "same bytes without a Message-ID");
        assert_ne!(
            process(b"From: a@x.com\r\nSubject: no id\r\n\r\nother body\r\n"),
            a
        );
        let n = Spi::get_one::<i64>("SELECT count(*) FROM mail_gateway.inbound").unwrap();
        assert_eq!(n, Some(3));
    }

    #[pg_test]
    fn garbage_is_stored_not_refused() {
        let id = process(&[0xff, 0x00, 0xfe, b'\n']);
        assert!(id > 0);
    }

    #[pg_test]
    fn oversized_messages_are_recorded_without_their_bytes() {
        Spi::run("SET LOCAL mail_gateway.max_message_size = '64kB'").unwrap();
        let mut big = b"From: a@x.com\r\nSubject: big\r\nMessage-ID: <big@x.com>\r\n\r\n".to_vec();
        big.resize(200 * 1024, b'x');
        let id = process(&big);
        let (state, reason) = Spi::get_two_with_args::<String, String>(
            "SELECT state, reason FROM mail_gateway.inbound WHERE id = $1 AND length(raw) = 0 AND raw_size = 204800
               AND subject = 'big'",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(state.as_deref(), Some("error"));
        assert!(
            reason
                .unwrap()
                .contains("is over mail_gateway.max_message_size")
        );
    }

    #[pg_test(error = "no incoming server named \"nope\"")]
    fn unknown_server() {
        Spi::run("SELECT mail_gateway.process_message('x'::bytea, 'nope')").unwrap();
    }

    fn add_server(name: &str) {
        Spi::run_with_args(
            "INSERT INTO mail_gateway.incoming_server (name, protocol, host, username, password)
             VALUES ($1, 'imap', 'imap.example.com', 'u', 'p')",
            &[name.into()],
        )
        .unwrap();
    }

    #[pg_test(error = "no incoming server named \"nowhere\"")]
    fn fetch_now_names_an_existing_server() {
        Spi::run("SELECT mail_gateway.fetch_now('nowhere')").unwrap();
    }

    #[pg_test(error = "no incoming server named \"nowhere\"")]
    fn test_incoming_server_names_an_existing_server() {
        Spi::run("SELECT mail_gateway.test_incoming_server('nowhere')").unwrap();
    }

    #[pg_test]
    fn fetch_now_asks_only_for_confirmed_active_servers() {
        add_server("draft");
        add_server("confirmed");
        Spi::run(
            "UPDATE mail_gateway.incoming_server SET state = 'confirmed' WHERE name = 'confirmed'",
        )
        .unwrap();
        let all = Spi::get_one::<i64>("SELECT mail_gateway.fetch_now()").unwrap();
        assert_eq!(all, Some(1));
        let draft = Spi::get_one::<i64>("SELECT mail_gateway.fetch_now('draft')").unwrap();
        assert_eq!(draft, Some(0));
        let requested = Spi::get_one::<i64>(
            "SELECT count(*) FROM mail_gateway.incoming_server WHERE fetch_requested_at IS NOT NULL",
        )
        .unwrap();
        assert_eq!(requested, Some(1));
    }

    #[pg_test]
    fn another_folder_forgets_the_imap_position_and_needs_a_new_test() {
        add_server("box");
        Spi::run(
            "ALTER TABLE mail_gateway.incoming_server DISABLE TRIGGER incoming_server_validate_2;
             UPDATE mail_gateway.incoming_server SET state = 'confirmed', fetch_cursor = '7:42';
             ALTER TABLE mail_gateway.incoming_server ENABLE TRIGGER incoming_server_validate_2;",
        )
        .unwrap();
        Spi::run("UPDATE mail_gateway.incoming_server SET priority = 1").unwrap();
        let kept = Spi::get_two::<String, String>(
            "SELECT state, fetch_cursor FROM mail_gateway.incoming_server",
        )
        .unwrap();
        assert_eq!(kept, (Some("confirmed".into()), Some("7:42".into())));
        Spi::run("UPDATE mail_gateway.incoming_server SET mailbox = 'Archive'").unwrap();
        let reset = Spi::get_two::<String, String>(
            "SELECT state, fetch_cursor FROM mail_gateway.incoming_server",
        )
        .unwrap();
        assert_eq!(reset, (Some("draft".into()), None));
    }

    #[pg_test]
    fn incoming_status_counts_per_server() {
        add_server("box");
        Spi::run_with_args(
            "SELECT mail_gateway.process_message($1, 'box')",
            &[MESSAGE.into()],
        )
        .unwrap();
        let (fetched, interval) = Spi::get_two::<i64, String>(
            "SELECT fetched, fetch_interval::text FROM mail_gateway.incoming_status WHERE name = 'box'",
        )
        .unwrap();
        assert_eq!((fetched, interval.as_deref()), (Some(1), Some("00:05:00")));
    }
}
