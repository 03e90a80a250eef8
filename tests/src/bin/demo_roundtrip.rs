//! The round trip of the README's demo (scripts/demo.sh runs it against the demo cluster):
//! a post in a sale order's chatter is mailed to its followers through the demo SMTP relay; a
//! follower's reply reaches a real Dovecot mailbox, is fetched, lands in the thread and is
//! relayed to the other followers; a first mail to sales@ creates a lead in a small ERP table.
//! Usage: demo_roundtrip PORT RECEIVED_JSONL

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use mail_gateway_tests::dovecot::{Dovecot, PASSWORD, USER};
use mail_gateway_tests::{Client, wait_for};
use postgres::NoTls;

/// `(envelope recipients, raw message)` of what the demo relay received.
fn received(path: &str) -> Vec<(Vec<String>, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|m| {
            let rcpts = m["rcpt_tos"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let data = B64
                .decode(m["data"].as_str().unwrap_or_default())
                .unwrap_or_default();
            (rcpts, String::from_utf8_lossy(&data).into_owned())
        })
        .collect()
}

fn header(raw: &str, name: &str) -> String {
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    let mut value = String::new();
    let mut inside = false;
    for line in head.split("\r\n") {
        if inside && line.starts_with([' ', '\t']) {
            value.push_str(line);
            continue;
        }
        inside = line
            .split_once(':')
            .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name));
        if inside {
            value = line.split_once(':').unwrap().1.trim().to_string();
        }
    }
    value
}

fn show(mails: &[(Vec<String>, String)]) {
    for (rcpts, raw) in mails {
        println!("  RCPT TO: {}", rcpts.join(", "));
        for h in [
            "From",
            "To",
            "Reply-To",
            "Subject",
            "Message-ID",
            "In-Reply-To",
            "References",
        ] {
            let v = header(raw, h);
            if !v.is_empty() {
                println!("    {h}: {}", v.chars().take(100).collect::<String>());
            }
        }
    }
}

fn table(db: &mut Client, title: &str, sql: &str) {
    println!("== {title}");
    for row in db.query(sql, &[]).unwrap() {
        let cells: Vec<String> = (0..row.len())
            .map(|i| {
                row.try_get::<_, Option<String>>(i)
                    .ok()
                    .flatten()
                    .or_else(|| {
                        row.try_get::<_, Option<i64>>(i)
                            .ok()
                            .flatten()
                            .map(|n| n.to_string())
                    })
                    .unwrap_or_else(|| "·".into())
            })
            .collect();
        println!("  {}", cells.join(" | "));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("PORT");
    let jsonl = args.next().expect("RECEIVED_JSONL");
    let mut db = Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=erp"),
        NoTls,
    )
    .expect("the demo cluster");
    let dovecot = Dovecot::start();
    println!(
        "== A real Dovecot on 127.0.0.1:{} (IMAP, STARTTLS, self-signed certificate)",
        dovecot.imap
    );
    db.batch_execute(
        "DROP TABLE IF EXISTS crm_lead;
         CREATE TABLE crm_lead (id bigserial PRIMARY KEY, name text, email_from text,
                                description text, team text);
         INSERT INTO mail_gateway.alias (name, model, defaults) VALUES ('sales', 'crm_lead', '{\"team\": \"direct\"}');
         SELECT mail_gateway.follow('sale_order', 42, 'Ann Seller <ann@mycompany.com>');
         SELECT mail_gateway.follow('sale_order', 42, 'Bob Buyer <bob@customer.example>');
         SELECT mail_gateway.follow('sale_order', 42, 'Carol Buyer <carol@customer.example>');",
    )
    .unwrap();
    db.execute(
        "INSERT INTO mail_gateway.incoming_server (name, protocol, host, port, encryption, username, password, ca_cert)
         VALUES ('catchall mailbox', 'imap', '127.0.0.1', $1, 'starttls', $2, $3, $4)",
        &[&(dovecot.imap as i32), &USER, &PASSWORD, &dovecot.cert.cert_pem()],
    )
    .unwrap();
    let ok: String = db
        .query_one(
            "SELECT mail_gateway.test_incoming_server('catchall mailbox')",
            &[],
        )
        .unwrap()
        .get(0);
    println!("  test_incoming_server: {ok}");

    let before = received(&jsonl).len();
    println!("== Ann posts in sale order 42; its followers Bob and Carol are mailed");
    db.execute(
        "SELECT mail_gateway.post_message('sale_order', 42, 'Ann Seller <ann@mycompany.com>',
             'Your quotation SO042 is ready.', 'Quotation SO042')",
        &[],
    )
    .unwrap();
    let notifications = wait_for("the notifications", Duration::from_secs(30), || {
        let all = received(&jsonl);
        (all.len() >= before + 2).then(|| all[before..].to_vec())
    });
    show(&notifications);

    let (_, to_bob) = notifications
        .iter()
        .find(|(r, _)| r.iter().any(|r| r == "bob@customer.example"))
        .expect("Bob's notification");
    let id = header(to_bob, "Message-ID");
    let references = header(to_bob, "References");
    println!("== Bob replies from his mail client; Dan writes to sales@ for the first time");
    dovecot.deliver(
        format!(
            "From: Bob Buyer <bob@customer.example>\r\nTo: catchall@mycompany.com\r\n\
             Subject: Re: Quotation SO042\r\nMessage-ID: <bob-reply@customer.example>\r\n\
             In-Reply-To: {id}\r\nReferences: {references} {id}\r\n\r\nI accept the quotation.\r\n"
        )
        .as_bytes(),
    );
    dovecot.deliver(
        b"From: Dan <dan@prospect.example>\r\nTo: sales@mycompany.com\r\nSubject: 300 chairs\r\n\
          Message-ID: <dan-1@prospect.example>\r\n\r\nPlease send a quote for 300 chairs.\r\n",
    );
    db.execute("SELECT mail_gateway.fetch_now('catchall mailbox')", &[])
        .unwrap();
    let relays = wait_for("the relays", Duration::from_secs(30), || {
        let all = received(&jsonl);
        (all.len() >= before + 4).then(|| all[before + 2..].to_vec())
    });
    wait_for("both messages routed", Duration::from_secs(30), || {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM mail_gateway.inbound WHERE state = 'routed'",
                &[],
            )
            .unwrap()
            .get(0);
        (n >= 2).then_some(())
    });
    table(
        &mut db,
        "Fetched and routed (mail_gateway.inbound)",
        "SELECT id::text, state, route, reason FROM mail_gateway.inbound ORDER BY id",
    );
    println!("== Bob's reply relayed to Ann and Carol (not back to Bob), from us with Bob's name");
    show(&relays);
    table(
        &mut db,
        "The thread of sale order 42 (mail_gateway.message)",
        "SELECT id::text, kind, author_email, subject, left(body_text, 40) FROM mail_gateway.message
         WHERE model = 'sale_order' AND res_id = 42 ORDER BY id",
    );
    table(
        &mut db,
        "The lead Dan's mail created (crm_lead)",
        "SELECT id::text, name, email_from, team, left(description, 40) FROM crm_lead",
    );
    table(
        &mut db,
        "Incoming servers (mail_gateway.incoming_status)",
        "SELECT name, state, last_fetch_at::text, fetched::text, coalesce(last_error, 'no error') FROM mail_gateway.incoming_status",
    );
}
