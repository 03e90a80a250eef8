//! `mail-gateway-deliver`, the MTA's pipe, run as an MTA runs it: a message on standard input,
//! against a real cluster, judged by its exit status and what the database holds.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use mail_gateway_tests::{Client, Cluster, Gateway, count, deliver_program, exec};

/// Runs the program with `message` on its standard input.
fn deliver(args: &[&str], message: &[u8]) -> Output {
    let mut child = Command::new(deliver_program())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mail-gateway-deliver runs");
    // The program may stop reading early (it must not: see the tests below); ignore EPIPE.
    let _ = child.stdin.take().unwrap().write_all(message);
    child.wait_with_output().unwrap()
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A role with nothing but what the pipe needs, as docs/OPERATIONS.md sets it up.
fn mta_role(db: &mut Client) {
    exec(
        db,
        "CREATE ROLE postfix LOGIN;
         GRANT USAGE ON SCHEMA mail_gateway TO postfix;
         GRANT EXECUTE ON FUNCTION mail_gateway.process_message(bytea, text) TO postfix;",
    );
}

fn conninfo(cluster: &Cluster, user: &str) -> String {
    format!(
        "host=127.0.0.1 port={} dbname=postgres user={user}",
        cluster.port
    )
}

fn reply_to(db: &mut Client, message_id: &str) -> Vec<u8> {
    exec(
        db,
        "SELECT mail_gateway.post_message('sale_order', 7, 'Ann <ann@mycompany.com>',
             'Your quotation SO007 is ready.', 'Quotation SO007')",
    );
    let posted: String = db
        .query_one(
            "SELECT message_id FROM mail_gateway.message WHERE model = 'sale_order' AND res_id = 7",
            &[],
        )
        .unwrap()
        .get(0);
    format!(
        "From: Bob <bob@customer.example>\r\nTo: catchall@mycompany.com\r\n\
         Subject: Re: Quotation SO007\r\nMessage-ID: {message_id}\r\n\
         In-Reply-To: {posted}\r\nReferences: {posted}\r\n\r\nI accept.\r\n"
    )
    .into_bytes()
}

#[test]
fn a_piped_reply_lands_in_its_thread_once_with_only_execute_granted() {
    let (cluster, mut db) = Gateway::usual().start();
    mta_role(&mut db);
    let reply = reply_to(&mut db, "<bob-pipe-1@customer.example>");
    let dsn = conninfo(&cluster, "postfix");

    let first = deliver(&[&dsn], &reply);
    assert_eq!(status(&first), 0, "{}", stderr(&first));
    let row = db
        .query_one(
            "SELECT state, route, model, res_id, raw FROM mail_gateway.inbound
             WHERE message_id = '<bob-pipe-1@customer.example>'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, i64>(3),
        ),
        ("routed".into(), "reply".into(), "sale_order".into(), 7)
    );
    assert_eq!(row.get::<_, Vec<u8>>(4), reply, "stored byte for byte");

    // The MTA runs the pipe again (it lost our status): 0, and still one message.
    let again = deliver(&[&dsn], &reply);
    assert_eq!(status(&again), 0, "{}", stderr(&again));
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.inbound WHERE message_id = '<bob-pipe-1@customer.example>'"
        ),
        1
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM mail_gateway.message WHERE model = 'sale_order' AND res_id = 7"
        ),
        2
    );
}

#[test]
fn a_database_that_cannot_take_it_is_exit_75_and_nothing_is_half_stored() {
    let (mut cluster, mut db) = Gateway::usual().start();
    exec(&mut db, "CREATE ROLE stranger LOGIN");
    let message = b"From: a@customer.example\r\nTo: sales@mycompany.com\r\n\
                    Message-ID: <later@customer.example>\r\nSubject: hello\r\n\r\nhi\r\n";

    // No grant: a mistake of the administrator's keeps the mail in the MTA's queue.
    let refused = deliver(&[&conninfo(&cluster, "stranger")], message);
    assert_eq!(status(&refused), 75, "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("42501"),
        "the SQLSTATE is in the reason: {}",
        stderr(&refused)
    );
    // A wrong argument is the administrator's mistake too.
    let wrong = deliver(
        &["--timeout", "soon", &conninfo(&cluster, "postgres")],
        message,
    );
    assert_eq!(status(&wrong), 75, "{}", stderr(&wrong));
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.inbound"),
        0
    );

    // The database is down: 75 again, quickly, with the reason.
    drop(db);
    cluster.stop("fast");
    let down = deliver(
        &["--timeout", "5", &conninfo(&cluster, "postgres")],
        message,
    );
    assert_eq!(status(&down), 75, "{}", stderr(&down));
    assert!(
        stderr(&down).contains("cannot connect"),
        "{}",
        stderr(&down)
    );

    // Back up: the MTA's next try stores it.
    cluster.restart();
    let stored = deliver(&[&conninfo(&cluster, "postgres")], message);
    assert_eq!(status(&stored), 0, "{}", stderr(&stored));
    let mut db = cluster.connect("postgres");
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.inbound"),
        1
    );
}

#[test]
fn a_message_over_the_size_limit_or_empty_is_exit_65_and_nothing_is_stored() {
    let (cluster, mut db) = Gateway::usual()
        .setting("mail_gateway.max_message_size", "64kB")
        .start();
    let dsn = conninfo(&cluster, "postgres");
    let mut big = b"From: a@customer.example\r\nTo: sales@mycompany.com\r\n\
                    Message-ID: <big-pipe@customer.example>\r\nSubject: big\r\n\r\n"
        .to_vec();
    for _ in 0..4000 {
        big.extend_from_slice(&[b'x'; 70]);
        big.extend_from_slice(b"\r\n");
    }
    let over = deliver(&[&dsn], &big);
    assert_eq!(status(&over), 65, "{}", stderr(&over));
    assert!(
        stderr(&over).contains(&format!("message of {} bytes", big.len())),
        "the whole message was read, and its size is the reason: {}",
        stderr(&over)
    );
    let empty = deliver(&[&dsn], b"");
    assert_eq!(status(&empty), 65, "{}", stderr(&empty));
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM mail_gateway.inbound"),
        0
    );
}
