//! Push delivery over LMTP end to end: a real cluster whose fetcher listens
//! (`mail_gateway.lmtp_listen`), spoken to by a small LMTP client as an MTA would.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use mail_gateway_tests::{
    Client, Cluster, Gateway, count, free_port, post_quotation, with_sales_alias,
};

/// A cluster whose fetcher listens for LMTP on a free port.
fn listening() -> (Cluster, Client, u16) {
    let port = free_port();
    let (cluster, db) = Gateway::usual()
        .lmtp_listener(port)
        .setting("mail_gateway.lmtp_timeout", "10s")
        .setting("mail_gateway.max_message_size", "64kB")
        .start();
    (cluster, db, port)
}

struct Lmtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Lmtp {
    fn connect(port: u16) -> Lmtp {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut lmtp = Lmtp {
            writer: tcp.try_clone().unwrap(),
            reader: BufReader::new(tcp),
        };
        assert!(lmtp.reply().starts_with("220"));
        lmtp.command("LHLO test.example");
        lmtp
    }

    /// The last line of one reply.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(!line.is_empty(), "connection closed");
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_string();
            }
        }
    }

    fn command(&mut self, line: &str) -> String {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }

    /// One transaction; the replies to DATA, one per recipient.
    fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> Vec<String> {
        assert!(
            self.command(&format!("MAIL FROM:<{from}>"))
                .starts_with("250")
        );
        for rcpt in to {
            assert!(
                self.command(&format!("RCPT TO:<{rcpt}>"))
                    .starts_with("250")
            );
        }
        assert!(self.command("DATA").starts_with("354"));
        let mut data = Vec::new();
        for line in message.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        data.extend_from_slice(b".\r\n");
        // Written whole: a refused message may close the connection mid-way.
        let _ = self.writer.write_all(&data);
        to.iter().map(|_| self.reply()).collect()
    }
}

#[test]
fn a_reply_over_lmtp_lands_in_its_thread_once_and_is_acknowledged_after_commit() {
    let (_cluster, mut db, port) = listening();
    let posted = post_quotation(&mut db);
    let reply = format!(
        "From: Bob <bob@customer.example>\r\nTo: catchall@mycompany.com\r\n\
         Subject: Re: Quotation SO042\r\nMessage-ID: <bob-lmtp-1@customer.example>\r\n\
         In-Reply-To: {posted}\r\nReferences: {posted}\r\n\r\n\
         I accept the quotation.\r\n.a line that starts with a dot\r\n"
    );
    let mut lmtp = Lmtp::connect(port);
    let answers = lmtp.send(
        "bob@customer.example",
        &["catchall@mycompany.com", "ann@mycompany.com"],
        reply.as_bytes(),
    );
    assert_eq!(answers, ["250 2.0.0 stored", "250 2.0.0 stored"]);
    // 250 came after the commit: the row is there, routed, at once.
    let row = db
        .query_one(
            "SELECT state, route, model, res_id, raw FROM mail_gateway.inbound
             WHERE message_id = '<bob-lmtp-1@customer.example>'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, i64>(3)
        ),
        ("routed".into(), "reply".into(), "sale_order".into(), 42)
    );
    // Byte for byte below the envelope the listener writes on top (dot-stuffing undone).
    let envelope = "Return-Path: <bob@customer.example>\r\n\
                    Delivered-To: catchall@mycompany.com\r\nDelivered-To: ann@mycompany.com\r\n";
    assert_eq!(
        String::from_utf8(row.get::<_, Vec<u8>>(4)).unwrap(),
        format!("{envelope}{reply}"),
    );
    let in_thread =
        "SELECT count(*) FROM mail_gateway.message WHERE model = 'sale_order' AND res_id = 42";
    assert_eq!(count(&mut db, in_thread), 2);

    // The MTA delivers it again (it lost our answer): acknowledged, stored once.
    let again = Lmtp::connect(port).send(
        "bob@customer.example",
        &["catchall@mycompany.com"],
        reply.as_bytes(),
    );
    assert_eq!(again, ["250 2.0.0 stored"]);
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.inbound WHERE message_id = '<bob-lmtp-1@customer.example>'"
        ),
        1
    );
    assert_eq!(count(&mut db, in_thread), 2);
    assert_eq!(lmtp.command("QUIT"), "221 2.0.0 bye");
}

#[test]
fn a_message_over_the_size_limit_gets_552_and_nothing_is_stored() {
    let (_cluster, mut db, port) = listening();
    let mut big = b"From: a@customer.example\r\nTo: sales@mycompany.com\r\nSubject: big\r\n\
                    Message-ID: <big@customer.example>\r\n\r\n"
        .to_vec();
    for _ in 0..2000 {
        big.extend_from_slice(&[b'x'; 70]);
        big.extend_from_slice(b"\r\n");
    }
    let mut lmtp = Lmtp::connect(port);
    // Declared: refused at MAIL.
    assert!(
        lmtp.command(&format!(
            "MAIL FROM:<a@customer.example> SIZE={}",
            big.len()
        ))
        .starts_with("552 5.3.4"),
    );
    // Undeclared: refused after DATA, for each recipient.
    let answers = lmtp.send("a@customer.example", &["sales@mycompany.com"], &big);
    assert!(answers[0].starts_with("552 5.3.4"), "{answers:?}");
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.inbound"),
        0
    );

    // The listener still takes mail.
    let small = b"From: a@customer.example\r\nTo: sales@mycompany.com\r\nSubject: small\r\n\
                  Message-ID: <small@customer.example>\r\n\r\nhi\r\n";
    let answers = Lmtp::connect(port).send("a@customer.example", &["sales@mycompany.com"], small);
    assert_eq!(answers, ["250 2.0.0 stored"]);
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.inbound"),
        1
    );
}

#[test]
fn postfix_smtp_source_delivers_over_lmtp() {
    let (_cluster, mut db, port) = listening();
    let output = std::process::Command::new("/usr/sbin/smtp-source")
        .args([
            "-L",
            "-m",
            "3",
            "-f",
            "a@customer.example",
            "-t",
            "sales@mycompany.com",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .expect("smtp-source runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // smtp-source numbers its Message-Ids (<pid.fd.count@host>): three messages, three rows.
    let stored = count(&mut db, "SELECT count(*) FROM mail_gateway.inbound");
    assert_eq!(stored, 3);
}

#[test]
fn the_envelope_is_stored_on_top_so_a_bcc_alias_routes_and_a_null_sender_counts() {
    let (_cluster, mut db, port) = listening();
    with_sales_alias(&mut db);
    // sales@ is in no header: only the envelope says the message was for it.
    let bcc = b"From: Carol <carol@prospect.example>\r\nTo: team@prospect.example\r\n\
                Subject: Tender\r\nMessage-ID: <carol-bcc@prospect.example>\r\n\r\nPlease quote.\r\n";
    let answers = Lmtp::connect(port).send("carol@prospect.example", &["sales@mycompany.com"], bcc);
    assert_eq!(answers, ["250 2.0.0 stored"]);
    let row = db
        .query_one(
            "SELECT state, model, raw FROM mail_gateway.inbound
             WHERE message_id = '<carol-bcc@prospect.example>'",
            &[],
        )
        .unwrap();
    let mut expected =
        b"Return-Path: <carol@prospect.example>\r\nDelivered-To: sales@mycompany.com\r\n".to_vec();
    expected.extend_from_slice(bcc);
    assert_eq!(
        row.get::<_, Vec<u8>>(2),
        expected,
        "the envelope, then the message"
    );
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("routed".into(), Some("public.crm_lead".into()))
    );
    assert_eq!(count(&mut db, "SELECT count(*) FROM crm_lead"), 1);

    // An out-of-office answer says so only by its Subject and its null sender: taken for an
    // automatic answer (never answered back), as it is when fetched from a mailbox.
    let away = |from: &str| {
        format!(
            "From: {from}\r\nTo: catchall@mycompany.com\r\nSubject: Out of office\r\n\
             Message-ID: <away-{from}>\r\n\r\nBack on Monday.\r\n"
        )
    };
    let answers = Lmtp::connect(port).send(
        "",
        &["catchall@mycompany.com"],
        away("dan@customer.example").as_bytes(),
    );
    assert_eq!(answers, ["250 2.0.0 stored"]);
    let answered = "SELECT count(*) FROM mail_gateway.mail WHERE kind = 'auto_reply'";
    assert_eq!(
        count(&mut db, answered),
        0,
        "no answer to an automatic answer"
    );
    // The same text from a person's address is answered: the null sender made the difference.
    let answers = Lmtp::connect(port).send(
        "erin@customer.example",
        &["catchall@mycompany.com"],
        away("erin@customer.example").as_bytes(),
    );
    assert_eq!(answers, ["250 2.0.0 stored"]);
    assert_eq!(count(&mut db, answered), 1);
}

#[test]
fn a_message_split_over_two_transactions_is_stored_once_even_without_a_message_id() {
    let (_cluster, mut db, port) = listening();
    // An MTA splitting its recipients: the same bytes, two envelopes, no Message-ID to go by.
    let message = b"From: a@customer.example\r\nTo: sales@mycompany.com, info@mycompany.com\r\n\
                    Subject: no id\r\n\r\nhello\r\n";
    let mut lmtp = Lmtp::connect(port);
    let first = lmtp.send("a@customer.example", &["sales@mycompany.com"], message);
    let second = lmtp.send("a@customer.example", &["info@mycompany.com"], message);
    assert_eq!(
        (first, second),
        (
            vec!["250 2.0.0 stored".to_string()],
            vec!["250 2.0.0 stored".to_string()]
        )
    );
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.inbound"),
        1
    );
}
