//! SQL tests of the queue API inside PostgreSQL (each in a rolled-back transaction, so the
//! worker never sees these rows; delivery is tested in tests/outbound.rs).

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn queue(sql_args: &str) -> i64 {
        Spi::get_one::<i64>(&format!("SELECT mail_gateway.send_mail({sql_args})"))
            .unwrap()
            .unwrap()
    }

    /// An idle worker sleeps its poll interval: with nothing queued and no mailbox, nothing is
    /// due (a NULL min() once read as "due now", and idle workers polled every 10 ms).
    #[pg_test]
    fn nothing_is_due_when_there_is_nothing_to_do() {
        Spi::run("DELETE FROM mail_gateway.mail; DELETE FROM mail_gateway.incoming_server")
            .unwrap();
        assert_eq!(crate::store::claim::next_due(), None);
        assert_eq!(crate::store::incoming::next_fetch_in(), None);
        queue(
            "'ann@mycompany.com', ARRAY['b@customer.example'], 'Later', scheduled_at => now() + interval '1 hour'",
        );
        let due = crate::store::claim::next_due().expect("a scheduled mail is due later");
        assert!(due > std::time::Duration::from_secs(3500), "{due:?}");
    }

    #[pg_test]
    fn send_mail_queues_in_the_callers_transaction() {
        let id = queue(
            "'\"Ann\" <ann@mycompany.com>', ARRAY['b@customer.example'], 'Hi',
             cc => ARRAY['c@customer.example'], bcc => ARRAY['d@customer.example'],
             model => 'sale_order', res_id => 42",
        );
        let (state, kind) = Spi::get_two_with_args::<String, String>(
            "SELECT state, kind FROM mail_gateway.mail WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(
            (state.as_deref(), kind.as_deref()),
            (Some("outgoing"), Some("transactional"))
        );
        let message_id = Spi::get_one_with_args::<String>(
            "SELECT message_id FROM mail_gateway.mail WHERE id = $1",
            &[id.into()],
        )
        .unwrap()
        .unwrap();
        assert!(
            message_id.starts_with('<') && message_id.ends_with("@mycompany.com>"),
            "{message_id}"
        );
        assert_eq!(
            message_id.len(),
            "<@mycompany.com>".len() + 32,
            "128 random bits in hex: {message_id}"
        );
        let due = Spi::get_one_with_args::<bool>(
            "SELECT next_attempt_at <= now() AND attempts = 0 AND model = 'sale_order' AND res_id = 42
             FROM mail_gateway.mail WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(due, Some(true));
    }

    #[pg_test]
    fn message_ids_are_unique() {
        Spi::run("SELECT mail_gateway.send_mail('a@x.com', ARRAY['b@y.com'], 's') FROM generate_series(1, 200)").unwrap();
        let n = Spi::get_one::<i64>("SELECT count(DISTINCT message_id) FROM mail_gateway.mail")
            .unwrap();
        assert_eq!(n, Some(200));
    }

    #[pg_test]
    fn scheduled_mail_is_due_at_its_time() {
        let id = queue("'a@x.com', ARRAY['b@y.com'], 's', scheduled_at => '2030-01-01 10:00+00'");
        let at = Spi::get_one_with_args::<bool>(
            "SELECT next_attempt_at = '2030-01-01 10:00+00' FROM mail_gateway.mail WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(at, Some(true));
    }

    #[pg_test]
    fn cancel_then_retry() {
        let id = queue("'a@x.com', ARRAY['b@y.com'], 's'");
        let s =
            Spi::get_one_with_args::<String>("SELECT mail_gateway.cancel_mail($1)", &[id.into()])
                .unwrap();
        assert_eq!(s.as_deref(), Some("cancel"));
        let s =
            Spi::get_one_with_args::<String>("SELECT mail_gateway.retry_mail($1)", &[id.into()])
                .unwrap();
        assert_eq!(s.as_deref(), Some("outgoing"));
    }

    #[pg_test(error = "mail 1 is sent and cannot be cancelled")]
    fn sent_mail_cannot_be_cancelled() {
        Spi::run(
            "INSERT INTO mail_gateway.mail (id, message_id, email_from, email_to, state)
             VALUES (1, '<x@y>', 'a@x.com', ARRAY['b@y.com'], 'sent')",
        )
        .unwrap();
        Spi::run("SELECT mail_gateway.cancel_mail(1)").unwrap();
    }

    #[pg_test(error = "no mail with id 12345")]
    fn unknown_mail() {
        Spi::run("SELECT mail_gateway.retry_mail(12345)").unwrap();
    }

    #[pg_test]
    fn dkim_key_replaces_the_previous_one() {
        let first = Spi::get_one::<String>("SELECT mail_gateway.create_dkim_key('MyCompany.com')")
            .unwrap()
            .unwrap();
        let second = Spi::get_one::<String>(
            "SELECT mail_gateway.create_dkim_key('mycompany.com', 'mail', 'ed25519')",
        )
        .unwrap()
        .unwrap();
        assert_ne!(first, second);
        assert!(
            second.starts_with("mail._domainkey.mycompany.com. IN TXT ( \"v=DKIM1; k=ed25519; p="),
            "{second}"
        );
        let (n, alg) = Spi::get_two::<i64, String>(
            "SELECT count(*), max(algorithm) FROM mail_gateway.dkim_key WHERE domain = 'mycompany.com'",
        )
        .unwrap();
        assert_eq!((n, alg.as_deref()), (Some(1), Some("ed25519")));
    }

    #[pg_test(error = "permission denied for table dkim_key")]
    fn users_cannot_read_dkim_private_keys() {
        Spi::run("SELECT mail_gateway.create_dkim_key('mycompany.com')").unwrap();
        Spi::run("SET LOCAL ROLE mail_gateway_user").unwrap();
        Spi::run("SELECT public_key FROM mail_gateway.dkim_key").unwrap();
        Spi::run("SELECT private_key FROM mail_gateway.dkim_key").unwrap();
    }

    #[pg_test]
    fn users_can_queue_mail() {
        Spi::run("SET LOCAL ROLE mail_gateway_user").unwrap();
        let id = queue("'a@x.com', ARRAY['b@y.com'], 's'");
        assert!(id > 0);
    }

    #[pg_test(error = "permission denied for function retry_mail")]
    fn users_cannot_retry_mail() {
        let id = queue("'a@x.com', ARRAY['b@y.com'], 's'");
        Spi::run("SET LOCAL ROLE mail_gateway_user").unwrap();
        Spi::run(&format!("SELECT mail_gateway.retry_mail({id})")).unwrap();
    }

    fn claim(bytes: i64) -> Vec<i64> {
        crate::store::claim::claim(99, 100, bytes, std::time::Duration::from_secs(600))
            .into_iter()
            .map(|m| m.id)
            .collect()
    }

    #[pg_test]
    fn a_claim_is_bounded_in_bytes_and_a_big_mail_goes_alone() {
        Spi::run(
            "SELECT mail_gateway.send_mail('a@x.com', ARRAY['b@y.com'], 's', body_text => repeat('x', 30000))
             FROM generate_series(1, 5)",
        )
        .unwrap();
        // 64 KB: the third mail starts under the budget, the fourth would not.
        assert_eq!(claim(64 * 1024).len(), 3);
        assert_eq!(claim(64 * 1024).len(), 2, "the rest");
        let big = queue("'a@x.com', ARRAY['b@y.com'], 's', body_text => repeat('y', 200000)");
        queue("'a@x.com', ARRAY['b@y.com'], 's', body_text => 'small'");
        assert_eq!(
            claim(64 * 1024),
            [big],
            "bigger than the budget: claimed alone"
        );
    }

    #[pg_test]
    fn the_erps_own_mail_is_claimed_first() {
        // Relays and automatic answers are queued by the router only (send_mail refuses
        // kind 'auto_reply'): their rows are set as the router writes them.
        let auto = queue("'a@x.com', ARRAY['b@y.com'], 'auto'");
        let relay = queue("'a@x.com', ARRAY['b@y.com'], 'relay'");
        let own = queue("'a@x.com', ARRAY['b@y.com'], 'own'");
        Spi::run_with_args(
            "UPDATE mail_gateway.mail SET priority = 1 WHERE id = $1",
            &[relay.into()],
        )
        .unwrap();
        Spi::run_with_args(
            "UPDATE mail_gateway.mail SET priority = 2, kind = 'auto_reply' WHERE id = $1",
            &[auto.into()],
        )
        .unwrap();
        let one = |_| {
            crate::store::claim::claim(99, 1, 1 << 30, std::time::Duration::from_secs(600))[0].id
        };
        let order: Vec<i64> = (0..3).map(one).collect();
        assert_eq!(order, [own, relay, auto]);
    }
}
