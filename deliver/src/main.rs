//! `mail-gateway-deliver`: the pipe an MTA runs for each received message (Postfix's
//! `pipe(8)`, Exim's `pipe` transport). It reads one message on standard input and hands it
//! to `mail_gateway.process_message()`, the same path as the LMTP listener and the fetcher
//! (dedupe, routing). The exit status is what MTAs expect of a delivery command:
//! 0 stored, 75 (EX_TEMPFAIL) the MTA keeps the message and retries, 65 (EX_DATAERR) the
//! message itself will never be accepted and the MTA bounces it.
//!
//! Only the message's own fault is 65: a database that is down, a missing grant or a wrong
//! argument are all 75, so that a mistake of ours leaves mail in the MTA's queue, never lost.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use postgres::{Client, Config, NoTls};

/// sysexits.h
const EX_OK: u8 = 0;
const EX_DATAERR: u8 = 65;
const EX_TEMPFAIL: u8 = 75;

const USAGE: &str = "usage: mail-gateway-deliver [--server NAME] [--timeout SECONDS] CONNINFO
  Reads one message on standard input and stores it with mail_gateway.process_message().
  CONNINFO: libpq key=value pairs, e.g. \"host=/var/run/postgresql dbname=erp user=postfix\".
  --server NAME    the incoming server to record it under (process_message's `server`)
  --timeout SECS   connecting, and the statement, each at most this long (default 120,
                   at most 86400)
Exit status: 0 stored, 75 try again later, 65 the message will never be accepted
(--help alone prints this and exits 75: nothing was stored).";

/// A day: more is surely a typo, and past ~24 days statement_timeout would refuse it.
const MAX_TIMEOUT_SECS: u64 = 86_400;

#[derive(Debug, PartialEq)]
struct Args {
    conninfo: String,
    server: Option<String>,
    timeout: Duration,
}

#[derive(Debug, PartialEq)]
enum Parsed {
    Run(Args),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let args: Vec<String> = args.into_iter().collect();
    // Help only when asked alone: a `-h host` or a stray `--help` in an MTA's command line
    // must end in "try again later", never in a status that says "delivered".
    if args == ["--help"] {
        return Ok(Parsed::Help);
    }
    let mut args = args.into_iter();
    let (mut conninfo, mut server, mut timeout) = (None, None, Duration::from_secs(120));
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--server" => server = Some(args.next().ok_or("--server needs a name")?),
            "--timeout" => {
                let value = args.next().ok_or("--timeout needs a number of seconds")?;
                match value.parse::<u64>() {
                    Ok(secs) if (1..=MAX_TIMEOUT_SECS).contains(&secs) => {
                        timeout = Duration::from_secs(secs)
                    }
                    _ => {
                        return Err(format!(
                            "--timeout {value}: not a number of seconds from 1 to {MAX_TIMEOUT_SECS}"
                        ));
                    }
                }
            }
            option if option.starts_with('-') => return Err(format!("unknown option {option}")),
            _ if conninfo.is_some() => return Err("only one CONNINFO".into()),
            _ => conninfo = Some(arg),
        }
    }
    let conninfo = conninfo.ok_or("CONNINFO is missing")?;
    Ok(Parsed::Run(Args {
        conninfo,
        server,
        timeout,
    }))
}

/// Why a delivery did not happen, and what the MTA is to do about it.
#[derive(Debug)]
enum Failure {
    /// The message will never be accepted: the MTA bounces it.
    Refused(String),
    /// Anything else: the MTA keeps the message and tries again.
    Later(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => EX_DATAERR,
            Failure::Later(_) => EX_TEMPFAIL,
        }
    }
}

/// A database error as the MTA will log it: SQLSTATE, message, hint.
fn later(what: &str, e: postgres::Error) -> Failure {
    Failure::Later(match e.as_db_error() {
        Some(db) => {
            let hint = db
                .hint()
                .map(|h| format!(" (hint: {h})"))
                .unwrap_or_default();
            format!("{what}: {} {}{hint}", db.code().code(), db.message())
        }
        None => format!("{what}: {e}"),
    })
}

/// Reads the message, keeping at most `limit` bytes. Returns the bytes and the whole size:
/// a larger message is read to its end (the MTA writes all of it) but not kept.
fn read_bounded(input: &mut impl Read, limit: u64) -> io::Result<(Vec<u8>, u64)> {
    let mut message = Vec::new();
    input.take(limit + 1).read_to_end(&mut message)?;
    let mut size = message.len() as u64;
    if size > limit {
        message.clear();
        size += io::copy(input, &mut io::sink())?;
    }
    Ok((message, size))
}

fn connect(args: &Args) -> Result<Client, Failure> {
    let mut config =
        Config::from_str(&args.conninfo).map_err(|e| Failure::Later(format!("CONNINFO: {e}")))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(args.timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("mail-gateway-deliver");
    }
    config.keepalives(true);
    config
        .connect(NoTls)
        .map_err(|e| later("cannot connect to the database", e))
}

fn deliver(args: &Args, input: &mut impl Read) -> Result<i64, Failure> {
    let mut db = match connect(args) {
        Ok(db) => db,
        Err(failure) => {
            // Read it all anyway: an MTA whose pipe is left unread reports a broken pipe
            // instead of our reason.
            let _ = io::copy(input, &mut io::sink());
            return Err(failure);
        }
    };
    let timeout_ms = args.timeout.as_millis().to_string();
    let limit: i64 = db
        .query_one(
            "SELECT pg_size_bytes(current_setting('mail_gateway.max_message_size')),
                    set_config('statement_timeout', $1, false)",
            &[&timeout_ms],
        )
        .map_err(|e| later("reading mail_gateway.max_message_size (is mail_gateway in shared_preload_libraries?)", e))?
        .get(0);
    let (message, size) = read_bounded(input, limit as u64)
        .map_err(|e| Failure::Later(format!("reading the message: {e}")))?;
    if size > limit as u64 {
        return Err(Failure::Refused(format!(
            "message of {size} bytes is over mail_gateway.max_message_size ({limit} bytes)"
        )));
    }
    if message.is_empty() {
        return Err(Failure::Refused("no message on standard input".into()));
    }
    // The limit checked again in the statement that stores: a reload that lowered it since
    // would otherwise have the message recorded without its bytes, and we would answer 0.
    let stored: Option<i64> = db
        .query_one(
            "SELECT CASE WHEN octet_length($1::bytea) <= pg_size_bytes(current_setting('mail_gateway.max_message_size'))
                    THEN mail_gateway.process_message(raw => $1::bytea, server => $2::text) END",
            &[&message, &args.server],
        )
        .map_err(|e| later("mail_gateway.process_message", e))?
        .get(0);
    stored.ok_or_else(|| {
        Failure::Later(
            "mail_gateway.max_message_size was lowered while the message was read".into(),
        )
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::from(EX_TEMPFAIL);
        }
        Err(e) => {
            // A wrong master.cf line must not bounce the mail: the MTA keeps it.
            eprintln!("mail-gateway-deliver: {e}\n{USAGE}");
            return ExitCode::from(EX_TEMPFAIL);
        }
    };
    match deliver(&args, &mut io::stdin().lock()) {
        Ok(_) => ExitCode::from(EX_OK),
        Err(failure) => {
            let (Failure::Refused(reason) | Failure::Later(reason)) = &failure;
            // The MTA puts this line into its log and the bounce or deferral reason.
            let _ = writeln!(io::stderr(), "mail-gateway-deliver: {reason}");
            ExitCode::from(failure.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Parsed, String> {
        parse_args(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn arguments() {
        assert_eq!(
            args(&["--server", "mx", "--timeout", "5", "dbname=erp"]),
            Ok(Parsed::Run(Args {
                conninfo: "dbname=erp".into(),
                server: Some("mx".into()),
                timeout: Duration::from_secs(5),
            }))
        );
        assert_eq!(args(&["--help"]), Ok(Parsed::Help));
        // Never help (and an exit status of its own) in the middle of an MTA's command line.
        assert!(
            args(&["-h", "/run/postgresql", "dbname=erp"])
                .unwrap_err()
                .contains("unknown option -h")
        );
        assert!(
            args(&["--help", "dbname=erp"])
                .unwrap_err()
                .contains("unknown option --help")
        );
        assert!(
            args(&["--timeout", "3000000", "x"])
                .unwrap_err()
                .contains("from 1 to 86400")
        );
        assert!(args(&[]).unwrap_err().contains("CONNINFO is missing"));
        assert!(args(&["a", "b"]).unwrap_err().contains("only one"));
        assert!(
            args(&["--timeout", "0", "x"])
                .unwrap_err()
                .contains("from 1 to")
        );
        assert!(args(&["--server"]).unwrap_err().contains("needs a name"));
        assert!(
            args(&["--verbose", "x"])
                .unwrap_err()
                .contains("unknown option")
        );
    }

    #[test]
    fn a_message_over_the_limit_is_read_to_its_end_but_not_kept() {
        let (kept, size) = read_bounded(&mut &b"12345"[..], 5).unwrap();
        assert_eq!((kept.as_slice(), size), (&b"12345"[..], 5));
        let big = vec![b'x'; 100_000];
        let mut input = &big[..];
        let (kept, size) = read_bounded(&mut input, 10).unwrap();
        assert_eq!((kept.len(), size), (0, 100_000));
        assert!(input.is_empty(), "read to the end");
    }

    #[test]
    fn only_the_message_itself_is_refused_for_good() {
        assert_eq!(Failure::Refused("x".into()).exit_code(), 65);
        assert_eq!(Failure::Later("x".into()).exit_code(), 75);
    }

    #[test]
    fn a_database_that_cannot_be_reached_is_try_later_and_the_message_is_read() {
        let args = Args {
            // A port nothing listens on (the discard port, closed on test machines).
            conninfo: "host=127.0.0.1 port=9 user=x dbname=x".into(),
            server: None,
            timeout: Duration::from_secs(5),
        };
        let message = vec![b'x'; 300_000];
        let mut input = &message[..];
        let failure = deliver(&args, &mut input).unwrap_err();
        assert!(
            matches!(failure, Failure::Later(ref r) if r.contains("cannot connect")),
            "{failure:?}"
        );
        assert!(input.is_empty());
    }
}
