//! SQL tests of the chatter and of routing (docs/REFERENCE.md, "Chatter", "Table alias", "Routes") inside PostgreSQL:
//! process_message routes synchronously, so every rule is tested here without a worker.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn setup() {
        Spi::run(
            "SELECT mail_gateway.set_parameter('mail.catchall.domain', 'mycompany.com');
             CREATE TABLE crm_lead (id bigserial PRIMARY KEY, name text, email_from text,
                                    description text, team text);",
        )
        .unwrap();
    }

    fn one<T: IntoDatum + FromDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).unwrap()
    }

    fn count(sql: &str) -> i64 {
        one::<i64>(sql).unwrap_or(0)
    }

    fn process(raw: &str) -> i64 {
        Spi::get_one_with_args::<i64>(
            "SELECT mail_gateway.process_message(convert_to($1, 'UTF8'))",
            &[raw.into()],
        )
        .unwrap()
        .unwrap()
    }

    fn route(id: i64) -> (String, Option<String>, Option<String>) {
        let row = Spi::get_three_with_args::<String, String, String>(
            "SELECT state, route, reason FROM mail_gateway.inbound WHERE id = $1",
            &[id.into()],
        )
        .unwrap();
        (row.0.unwrap_or_default(), row.1, row.2)
    }

    /// A message with a Message-ID of its own.
    fn mail(from: &str, to: &str, subject: &str, extra: &str, body: &str) -> String {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <m{n}@customer.example>\r\n{extra}\r\n{body}\r\n"
        )
    }

    /// A thread with followers ann (internal) and bob (customer), and one posted message.
    fn thread() -> i64 {
        Spi::run(
            "SELECT mail_gateway.follow('sale_order', 42, 'ann@mycompany.com', 'Ann');
             SELECT mail_gateway.follow('sale_order', 42, '\"Bob Customer\" <Bob@Customer.Example>');",
        )
        .unwrap();
        one::<i64>(
            "SELECT mail_gateway.post_message('sale_order', 42, '\"Ann\" <ann@mycompany.com>',
                 'Your quotation is ready.', 'Quotation SO042')",
        )
        .unwrap()
    }

    #[pg_test]
    fn posting_mails_every_follower_but_the_author() {
        setup();
        let message = thread();
        assert_eq!(
            count("SELECT count(*) FROM mail_gateway.mail"),
            1,
            "Bob only"
        );
        let (to, reply_to, refs) = Spi::get_three::<Vec<String>, String, String>(
            "SELECT email_to, reply_to, headers->>'References' FROM mail_gateway.mail",
        )
        .unwrap();
        assert_eq!(to.unwrap(), ["\"Bob Customer\" <bob@customer.example>"]);
        assert_eq!(reply_to.as_deref(), Some("catchall@mycompany.com"));
        let own = one::<String>("SELECT message_id FROM mail_gateway.message").unwrap();
        assert_eq!(
            refs,
            Some(own),
            "References carry the message's own Message-ID"
        );
        let (model, res_id, message_ref) = Spi::get_three::<String, i64, i64>(
            "SELECT model, res_id, message_ref FROM mail_gateway.mail",
        )
        .unwrap();
        assert_eq!(
            (model.as_deref(), res_id, message_ref),
            (Some("sale_order"), Some(42), Some(message))
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM mail_gateway.contact WHERE email IN ('ann@mycompany.com', 'bob@customer.example')"
            ),
            2,
            "followers become contacts"
        );
    }

    #[pg_test]
    fn a_reply_lands_in_its_thread_and_is_relayed_to_the_others() {
        setup();
        thread();
        let notification = one::<String>("SELECT message_id FROM mail_gateway.mail").unwrap();
        let id = process(&mail(
            "Bob Customer <bob@customer.example>",
            "catchall@mycompany.com",
            "Re: Quotation SO042",
            &format!("In-Reply-To: {notification}\r\nReferences: {notification}\r\n"),
            "Thanks, I accept.",
        ));
        let (state, route_taken, _) = route(id);
        assert_eq!(
            (state.as_str(), route_taken.as_deref()),
            ("routed", Some("reply"))
        );
        let (kind, author, body) = Spi::get_three::<String, String, String>(
            "SELECT kind, author_email, body_text FROM mail_gateway.message ORDER BY id DESC LIMIT 1",
        )
        .unwrap();
        assert_eq!(
            (kind.as_deref(), author.as_deref()),
            (Some("email"), Some("bob@customer.example"))
        );
        assert!(body.unwrap().contains("I accept"));
        // Relayed to Ann, not back to Bob; from the default sender with Bob's name.
        let (to, from) = Spi::get_two::<Vec<String>, String>(
            "SELECT email_to, email_from FROM mail_gateway.mail ORDER BY id DESC LIMIT 1",
        )
        .unwrap();
        assert_eq!(to.unwrap(), ["\"Ann\" <ann@mycompany.com>"]);
        assert_eq!(
            from.as_deref(),
            Some("\"Bob Customer\" <notifications@mycompany.com>")
        );
        assert_eq!(count("SELECT count(*) FROM mail_gateway.mail"), 2);
    }

    #[pg_test]
    fn a_reply_whose_notification_id_was_rewritten_is_found_by_references() {
        setup();
        thread();
        let own = one::<String>("SELECT message_id FROM mail_gateway.message").unwrap();
        let id = process(&mail(
            "bob@customer.example",
            "catchall@mycompany.com",
            "Re: Quotation",
            &format!(
                "In-Reply-To: <rewritten-by-provider@ses.example>\r\nReferences: {own} <rewritten-by-provider@ses.example>\r\n"
            ),
            "Fine.",
        ));
        assert_eq!(route(id).1.as_deref(), Some("reply"));
    }

    #[pg_test]
    fn an_alias_creates_a_record_with_its_defaults_and_the_sender_follows_it() {
        setup();
        Spi::run(
            "INSERT INTO mail_gateway.alias (name, model, defaults) VALUES ('sales', 'crm_lead', '{\"team\": \"direct\"}')",
        )
        .unwrap();
        let id = process(&mail(
            "Carol <carol@prospect.example>",
            "Sales <sales@mycompany.com>",
            "Need a quote",
            "",
            "For 300 chairs.",
        ));
        let (state, route_taken, reason) = route(id);
        assert_eq!(
            (state.as_str(), route_taken.as_deref()),
            ("routed", Some("alias:sales"))
        );
        assert!(reason.unwrap().contains("created"));
        let (name, from, team) =
            Spi::get_three::<String, String, String>("SELECT name, email_from, team FROM crm_lead")
                .unwrap();
        assert_eq!(
            (name.as_deref(), from.as_deref(), team.as_deref()),
            (
                Some("Need a quote"),
                Some("carol@prospect.example"),
                Some("direct")
            )
        );
        assert!(
            one::<String>("SELECT description FROM crm_lead")
                .unwrap()
                .contains("300 chairs")
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM mail_gateway.follower WHERE email = 'carol@prospect.example' AND model = 'public.crm_lead'"
            ),
            1
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM mail_gateway.message WHERE model = 'public.crm_lead' AND kind = 'email'"
            ),
            1
        );
    }

    #[pg_test]
    fn a_forced_thread_takes_only_its_followers_mail() {
        setup();
        Spi::run(
            "INSERT INTO crm_lead (id, name) VALUES (7, 'Key account');
             INSERT INTO mail_gateway.alias (name, model, force_thread_id, contact_policy)
                 VALUES ('keyaccount', 'crm_lead', 7, 'followers');
             SELECT mail_gateway.follow('public.crm_lead', 7, 'buyer@key.example');",
        )
        .unwrap();
        let id = process(&mail(
            "buyer@key.example",
            "keyaccount@mycompany.com",
            "Order",
            "",
            "Ten more.",
        ));
        let (state, _, reason) = route(id);
        assert_eq!(state, "routed");
        assert!(reason.unwrap().contains("posted in public.crm_lead #7"));
        assert_eq!(count("SELECT count(*) FROM crm_lead"), 1, "no new record");
        assert_eq!(
            count(
                "SELECT count(*) FROM mail_gateway.message WHERE model = 'public.crm_lead' AND res_id = 7"
            ),
            1
        );
        // Notifications of that record answer to the alias.
        Spi::run("SELECT mail_gateway.follow('public.crm_lead', 7, 'ann@mycompany.com')").unwrap();
        Spi::run(
            "SELECT mail_gateway.post_message('public.crm_lead', 7, 'ann@mycompany.com', 'Noted.')",
        )
        .unwrap();
        assert_eq!(
            one::<String>("SELECT reply_to FROM mail_gateway.mail ORDER BY id DESC LIMIT 1")
                .as_deref(),
            Some("keyaccount@mycompany.com")
        );
        // Someone who does not follow it is refused.
        let refused = process(&mail(
            "other@x.example",
            "keyaccount@mycompany.com",
            "Hi",
            "",
            "?",
        ));
        assert_eq!(route(refused).0, "rejected");
    }

    #[pg_test]
    fn an_alias_handler_receives_the_message() {
        setup();
        Spi::run(
            "CREATE FUNCTION make_lead(message jsonb) RETURNS bigint LANGUAGE sql AS $$
                 INSERT INTO crm_lead (name, team) VALUES (message->>'subject', message->'defaults'->>'team')
                 RETURNING id $$;
             INSERT INTO mail_gateway.alias (name, model, handler, defaults)
                 VALUES ('sales', 'crm_lead', 'make_lead(jsonb)', '{\"team\": \"handled\"}');",
        )
        .unwrap();
        let id = process(&mail(
            "dan@x.example",
            "sales@mycompany.com",
            "Via handler",
            "",
            "hi",
        ));
        assert_eq!(route(id).0, "routed");
        assert_eq!(
            one::<String>("SELECT team FROM crm_lead WHERE name = 'Via handler'").as_deref(),
            Some("handled")
        );
    }

    #[pg_test]
    fn a_failing_handler_leaves_the_message_stored_in_error() {
        setup();
        Spi::run(
            "CREATE FUNCTION broken(message jsonb) RETURNS bigint LANGUAGE plpgsql AS $$
                 BEGIN RAISE EXCEPTION 'no leads today'; END $$;
             INSERT INTO mail_gateway.alias (name, model, handler) VALUES ('sales', 'crm_lead', 'broken(jsonb)');",
        )
        .unwrap();
        let id = process(&mail(
            "dan@x.example",
            "sales@mycompany.com",
            "Broken",
            "",
            "hi",
        ));
        let (state, _, reason) = route(id);
        assert_eq!(state, "error");
        assert!(reason.unwrap().contains("no leads today"));
        assert_eq!(count("SELECT count(*) FROM crm_lead"), 0, "rolled back");
        // Fixed, then routed again.
        Spi::run("UPDATE mail_gateway.alias SET handler = NULL").unwrap();
        let state = one::<String>(&format!("SELECT mail_gateway.reprocess({id})")).unwrap();
        assert_eq!(state, "routed");
        assert_eq!(count("SELECT count(*) FROM crm_lead"), 1);
    }

    #[pg_test(error = "message 1 is routed; routing it again would repeat what its route did")]
    fn a_routed_message_is_not_routed_twice() {
        setup();
        Spi::run("INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'crm_lead')")
            .unwrap();
        Spi::run("ALTER TABLE mail_gateway.inbound ALTER COLUMN id RESTART WITH 1").unwrap();
        let id = process(&mail(
            "dan@x.example",
            "sales@mycompany.com",
            "Once",
            "",
            "hi",
        ));
        Spi::run(&format!("SELECT mail_gateway.reprocess({id})")).unwrap();
    }

    #[pg_test]
    fn a_refused_sender_gets_the_bounced_content_once_and_no_record() {
        setup();
        Spi::run(
            "INSERT INTO mail_gateway.alias (name, model, contact_policy, bounced_content)
                 VALUES ('vip', 'crm_lead', 'partners', 'Only our partners may write here.');
             INSERT INTO mail_gateway.contact (email) VALUES ('partner@known.example');",
        )
        .unwrap();
        let id = process(&mail(
            "stranger@x.example",
            "vip@mycompany.com",
            "Hello",
            "",
            "hi",
        ));
        assert_eq!(route(id).0, "rejected");
        let (kind, body, headers) = Spi::get_three::<String, String, pgrx::JsonB>(
            "SELECT kind, body_text, headers FROM mail_gateway.mail",
        )
        .unwrap();
        assert_eq!(kind.as_deref(), Some("auto_reply"));
        assert_eq!(body.as_deref(), Some("Only our partners may write here."));
        assert_eq!(headers.unwrap().0["Auto-Submitted"], "auto-replied");
        assert!(
            one::<String>("SELECT message_id FROM mail_gateway.mail")
                .unwrap()
                .starts_with("<mg-loop-"),
            "our notices carry the loop tag"
        );
        let ok = process(&mail(
            "partner@known.example",
            "vip@mycompany.com",
            "Order",
            "",
            "hi",
        ));
        assert_eq!(route(ok).0, "routed");
        // An auto-submitted message is refused without an answer.
        process(&mail(
            "robot@x.example",
            "vip@mycompany.com",
            "Auto",
            "Auto-Submitted: auto-generated\r\n",
            "beep",
        ));
        assert_eq!(
            count("SELECT count(*) FROM mail_gateway.mail WHERE kind = 'auto_reply'"),
            1
        );
    }

    #[pg_test]
    fn an_auto_responder_stops_creating_records_at_the_limit() {
        setup();
        Spi::run("INSERT INTO mail_gateway.alias (name, model) VALUES ('sales', 'crm_lead')")
            .unwrap();
        for i in 0..8 {
            process(&mail(
                "responder@x.example",
                "sales@mycompany.com",
                &format!("Thanks {i}"),
                "",
                "We got your mail.",
            ));
        }
        assert_eq!(
            count("SELECT count(*) FROM crm_lead"),
            5,
            "mail.incoming.limit.alias"
        );
        assert_eq!(
            count("SELECT count(*) FROM mail_gateway.inbound WHERE state = 'loop'"),
            3
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM mail_gateway.mail WHERE headers->>'X-Mail-Gateway-Notice' = 'loop'"
            ),
            1,
            "one notice per period"
        );
        // Its answer to our notice is a loop too.
        let notice =
            one::<String>("SELECT message_id FROM mail_gateway.mail WHERE kind = 'auto_reply'")
                .unwrap();
        let id = process(&mail(
            "responder@x.example",
            "catchall@mycompany.com",
            "Re: too many",
            &format!("In-Reply-To: {notice}\r\n"),
            "We got your mail.",
        ));
        assert_eq!(route(id).0, "loop");
    }

    #[pg_test]
    fn mail_written_to_the_catchall_is_answered_and_creates_nothing() {
        setup();
        let id = process(&mail(
            "eve@x.example",
            "catchall@mycompany.com",
            "Hello?",
            "",
            "Anyone?",
        ));
        let (state, route_taken, _) = route(id);
        assert_eq!(
            (state.as_str(), route_taken.as_deref()),
            ("unroutable", Some("catchall"))
        );
        assert_eq!(
            count("SELECT count(*) FROM mail_gateway.mail WHERE kind = 'auto_reply'"),
            1
        );
        assert_eq!(count("SELECT count(*) FROM mail_gateway.message"), 0);
        // The same again within the period: a feedback loop, dropped without an answer.
        let again = process(&mail(
            "eve@x.example",
            "catchall@mycompany.com",
            "Hello?",
            "",
            "Anyone?",
        ));
        assert_eq!(route(again).0, "loop");
        assert_eq!(
            count("SELECT count(*) FROM mail_gateway.mail WHERE kind = 'auto_reply'"),
            1
        );
    }

    fn dsn(to: &str, recipient: &str, status: &str) -> String {
        format!(
            "From: MAILER-DAEMON@mx.customer.example (Mail Delivery System)\r\nTo: {to}\r\n\
Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-{status}-{recipient}@mx>\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.example\r\n\r\n\
Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n\
Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown\r\n\r\n--B--\r\n"
        )
    }

    #[pg_test]
    fn a_bounce_names_its_mail_through_the_bounce_address() {
        setup();
        let mail_id = one::<i64>(
            "SELECT mail_gateway.send_mail('sales@mycompany.com', ARRAY['gone@customer.example'], 'Offer')",
        )
        .unwrap();
        let message_id = one::<String>("SELECT message_id FROM mail_gateway.mail").unwrap();
        let check = crate::routing::thread::bounce_check(&message_id);
        let id = process(&dsn(
            &format!("bounce+{mail_id}-{check}@mycompany.com"),
            "gone@customer.example",
            "5.1.1",
        ));
        let (state, _, reason) = route(id);
        assert_eq!(state, "bounce");
        assert!(reason.unwrap().contains(&format!("mail {mail_id}")));
        let (email, status, hard) = Spi::get_three::<String, String, bool>(
            "SELECT email, status, hard FROM mail_gateway.bounce",
        )
        .unwrap();
        assert_eq!(
            (email.as_deref(), status.as_deref(), hard),
            (Some("gone@customer.example"), Some("5.1.1"), Some(true))
        );
        assert_eq!(
            one::<i64>("SELECT mail_id FROM mail_gateway.bounce"),
            Some(mail_id)
        );
        assert!(one::<bool>("SELECT bounced_at IS NOT NULL FROM mail_gateway.mail").unwrap());
        assert_eq!(
            one::<i32>(
                "SELECT bounce_count FROM mail_gateway.contact WHERE email = 'gone@customer.example'"
            ),
            Some(1)
        );
        // A forged token (wrong check) is not tied to the mail.
        let forged = process(&dsn(
            &format!("bounce+{mail_id}-00000000@mycompany.com"),
            "other@customer.example",
            "5.1.1",
        ));
        assert_eq!(route(forged).0, "bounce");
        assert_eq!(
            count(
                "SELECT count(*) FROM mail_gateway.bounce WHERE email = 'other@customer.example' AND mail_id IS NULL"
            ),
            1
        );
    }

    /// `n` earlier bounces of `email` (of mail we sent: trusted), spread evenly over `days` up
    /// to now.
    fn earlier_bounces(email: &str, n: i32, days: i32) {
        Spi::run_with_args(
            "INSERT INTO mail_gateway.bounce (email, status, hard, created_at, trusted)
             SELECT $1, '5.1.1', true, now() - make_interval(days => $3) * (i::float8 / greatest($2 - 1, 1)), true
             FROM generate_series(0, $2 - 1) AS i",
            &[email.into(), n.into(), days.into()],
        )
        .unwrap();
    }

    /// A DSN for a mail we just sent to `recipient`, to that mail's tracked bounce address:
    /// a bounce that counts.
    fn dsn_of_our_mail(recipient: &str) -> String {
        let mail_id = Spi::get_one_with_args::<i64>(
            "SELECT mail_gateway.send_mail('sales@mycompany.com', ARRAY[$1], 'Offer')",
            &[recipient.into()],
        )
        .unwrap()
        .unwrap();
        let message_id = Spi::get_one_with_args::<String>(
            "SELECT message_id FROM mail_gateway.mail WHERE id = $1",
            &[mail_id.into()],
        )
        .unwrap()
        .unwrap();
        let check = crate::routing::thread::bounce_check(&message_id);
        dsn(
            &format!("bounce+{mail_id}-{check}@mycompany.com"),
            recipient,
            "5.1.1",
        )
    }

    fn blocklisted(email: &str) -> bool {
        Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM mail_gateway.blacklist WHERE email = $1)",
            &[email.into()],
        )
        .unwrap()
        .unwrap()
    }

    #[pg_test]
    fn the_blocklist_rule_at_its_edges() {
        setup();
        // 4 bounces: below mail.bounce.limit.
        earlier_bounces("four@x.example", 3, 8);
        process(&dsn_of_our_mail("four@x.example"));
        assert!(!blocklisted("four@x.example"));
        // 5 bounces within one day: an outage, not a dead address (spread < 7 days).
        earlier_bounces("burst@x.example", 4, 1);
        process(&dsn_of_our_mail("burst@x.example"));
        assert!(!blocklisted("burst@x.example"));
        // 5 bounces spread over 8 days: blocklisted, with the reason.
        earlier_bounces("dead@x.example", 4, 8);
        let id = process(&dsn_of_our_mail("dead@x.example"));
        assert!(blocklisted("dead@x.example"));
        assert!(route(id).2.unwrap().contains("now blocklisted"));
        assert!(
            one::<String>(
                "SELECT reason FROM mail_gateway.blacklist WHERE email = 'dead@x.example'"
            )
            .unwrap()
            .starts_with("5 bounces")
        );
    }

    #[pg_test]
    fn normal_mail_resets_the_bounce_counter() {
        setup();
        thread();
        Spi::run(
            "UPDATE mail_gateway.contact SET bounce_count = 3 WHERE email = 'bob@customer.example'",
        )
        .unwrap();
        let notification = one::<String>("SELECT message_id FROM mail_gateway.mail").unwrap();
        process(&mail(
            "bob@customer.example",
            "catchall@mycompany.com",
            "Re: x",
            &format!("In-Reply-To: {notification}\r\n"),
            "ok",
        ));
        assert_eq!(
            one::<i32>(
                "SELECT bounce_count FROM mail_gateway.contact WHERE email = 'bob@customer.example'"
            ),
            Some(0)
        );
    }

    #[pg_test]
    fn complaints_and_our_own_ids_have_their_states() {
        setup();
        let arf = "From: abuse@isp.example\r\nTo: bounce@mycompany.com\r\nSubject: complaint\r\n\
Message-ID: <arf1@isp.example>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"A\"\r\n\r\n\
--A\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n--A\r\nContent-Type: message/feedback-report\r\n\r\n\
Feedback-Type: abuse\r\nUser-Agent: x/1.0\r\nVersion: 1\r\n\r\n--A--\r\n";
        assert_eq!(route(process(arf)).0, "complaint");
        assert_eq!(count("SELECT count(*) FROM mail_gateway.bounce"), 0);
        // One of our own notifications coming back (a follower forwarding to the catchall).
        thread();
        let ours = one::<String>("SELECT message_id FROM mail_gateway.message").unwrap();
        let id = process(&format!(
            "From: bob@customer.example\r\nTo: catchall@mycompany.com\r\nMessage-ID: {ours}\r\nSubject: x\r\n\r\nx\r\n"
        ));
        assert_eq!(route(id).0, "duplicate");
    }

    #[pg_test]
    fn mail_for_nobody_is_kept_unroutable_and_a_fallback_alias_takes_it() {
        setup();
        let id = process(&mail(
            "zed@x.example",
            "someone@elsewhere.example",
            "Lost",
            "",
            "?",
        ));
        let (state, _, reason) = route(id);
        assert_eq!(state, "unroutable");
        assert!(reason.unwrap().contains("no thread, alias or catchall"));
        Spi::run(
            "INSERT INTO mail_gateway.alias (name, model) VALUES ('inbox', 'crm_lead');
             INSERT INTO mail_gateway.incoming_server (name, protocol, host, username, fallback_alias)
                 VALUES ('box', 'imap', 'imap.example', 'u', 'inbox');",
        )
        .unwrap();
        let id = Spi::get_one_with_args::<i64>(
            "SELECT mail_gateway.process_message(convert_to($1, 'UTF8'), 'box')",
            &[mail(
                "zed@x.example",
                "someone@elsewhere.example",
                "Found",
                "",
                "?",
            )
            .into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(route(id).1.as_deref(), Some("alias:inbox"));
    }
}
