//! Errors raised to the SQL caller. Every ERROR the extension raises itself is an `ApiError`:
//! its variant decides the SQLSTATE and the hint, here and nowhere else (docs/OPERATIONS.md,
//! "SQLSTATEs", lists them), and `ApiError::raise` is the one way out.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

use crate::model::MailState;

const ADDRESS_HINT: &str = "Write addresses as name@example.com or \"Name\" <name@example.com>.";
const EMAIL_HINT: &str = "Write it as name@example.com or \"Name\" <name@example.com>.";
const ATTACHMENT_HINT: &str =
    "attachments is a JSON array of {\"filename\": …, \"content_type\": …, \"content_base64\": …}.";
const PROVIDER_HINT: &str = "Use microsoft, google, or custom with token_endpoint.";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    // 22023 invalid_parameter_value: an argument (or a parameter's value) is malformed.
    /// One of several addresses of a call (From, To, a follower …).
    #[error("malformed {what} address \"{text}\"")]
    MalformedAddress { what: &'static str, text: String },
    #[error("{what} contains NULL")]
    NullAddress { what: &'static str },
    /// The one address a function takes.
    #[error("{0}")]
    MalformedEmail(String),
    #[error("unknown mail kind \"{0}\"")]
    UnknownMailKind(String),
    #[error("{0}")]
    Attachments(String),
    #[error("unknown OAuth2 provider \"{0}\"")]
    UnknownProvider(String),
    /// Any other malformed argument, with what to give instead.
    #[error("{message}")]
    Invalid { message: String, hint: &'static str },

    // 23514 check_violation, 23502 not_null_violation: a row (or the arguments that make one)
    // breaks a rule of its table.
    #[error("unknown OAuth2 provider \"{provider}\" for account \"{account}\"")]
    UnknownAccountProvider { provider: String, account: String },
    #[error("{message}")]
    Check { message: String, hint: &'static str },
    #[error("{message}")]
    Missing { message: String, hint: &'static str },

    // 42704 undefined_object: nothing of that name or id.
    #[error("no mail with id {0}")]
    NoMail(i64),
    #[error("no received message with id {0}")]
    NoReceivedMessage(i64),
    #[error("no outgoing server named \"{0}\"")]
    NoOutgoingServer(String),
    #[error("no incoming server named \"{0}\"")]
    NoIncomingServer(String),
    /// `set_oauth` links servers of either kind.
    #[error("no outgoing or incoming server named \"{0}\"")]
    NoServer(String),
    #[error("no OAuth2 account named \"{0}\"")]
    NoAccount(String),
    #[error("OAuth2 account \"{0}\" vanished")]
    AccountVanished(String),

    // 42P01 undefined_table, 22004 null_value_not_allowed: an alias that cannot create its record.
    #[error("table {table} of alias \"{alias}\" no longer exists")]
    AliasTableGone { table: String, alias: String },
    #[error("alias \"{0}\" created no record (its handler returned NULL)")]
    AliasCreatedNothing(String),

    // 55000 object_not_in_prerequisite_state: not in a state the function can act on.
    #[error("mail {id} is {state}; only mail in exception or cancel can be retried")]
    NotRetryable { id: i64, state: MailState },
    #[error("mail {id} is {state} and cannot be cancelled")]
    NotCancellable { id: i64, state: MailState },
    #[error("message {id} is {state}; routing it again would repeat what its route did")]
    NotReroutable { id: i64, state: &'static str },
    #[error("message {0} was not stored (over mail_gateway.max_message_size)")]
    NotStored(i64),
    #[error("{message}")]
    NotReady { message: String, hint: &'static str },

    // 08006 connection_failure, 28000 invalid_authorization_specification: a server or a token
    // endpoint failed, or a person or an administrator must act first.
    #[error("{message}")]
    Connection {
        message: String,
        hint: Option<String>,
    },
    #[error("{message}")]
    Authorization { message: String, hint: String },

    // XX000 internal_error: a bug, or a database that lost part of the extension.
    #[error("{0}")]
    Internal(String),
    /// An ERROR caught in a subtransaction, raised again as it was.
    #[error("{0}")]
    Again(Caught),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, hint: &'static str) -> ApiError {
        ApiError::Invalid {
            message: message.into(),
            hint,
        }
    }

    pub fn sqlstate(&self) -> PgSqlErrorCode {
        use ApiError::*;
        use PgSqlErrorCode::*;
        match self {
            MalformedAddress { .. }
            | NullAddress { .. }
            | MalformedEmail(_)
            | UnknownMailKind(_)
            | Attachments(_)
            | UnknownProvider(_)
            | Invalid { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            UnknownAccountProvider { .. } | Check { .. } => ERRCODE_CHECK_VIOLATION,
            Missing { .. } => ERRCODE_NOT_NULL_VIOLATION,
            NoMail(_) | NoReceivedMessage(_) | NoOutgoingServer(_) | NoIncomingServer(_)
            | NoServer(_) | NoAccount(_) | AccountVanished(_) => ERRCODE_UNDEFINED_OBJECT,
            AliasTableGone { .. } => ERRCODE_UNDEFINED_TABLE,
            AliasCreatedNothing(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            NotRetryable { .. }
            | NotCancellable { .. }
            | NotReroutable { .. }
            | NotStored(_)
            | NotReady { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            Connection { .. } => ERRCODE_CONNECTION_FAILURE,
            Authorization { .. } => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            Internal(_) => ERRCODE_INTERNAL_ERROR,
            Again(caught) => caught.code,
        }
    }

    pub fn hint(&self) -> Option<&str> {
        use ApiError::*;
        match self {
            MalformedAddress { .. } | NullAddress { .. } => Some(ADDRESS_HINT),
            MalformedEmail(_) => Some(EMAIL_HINT),
            UnknownMailKind(_) => Some("Use 'transactional' or 'mass'."),
            Attachments(_) => Some(ATTACHMENT_HINT),
            UnknownProvider(_) | UnknownAccountProvider { .. } => Some(PROVIDER_HINT),
            Invalid { hint, .. } | Check { hint, .. } | Missing { hint, .. } => Some(hint),
            NotReady { hint, .. } => Some(hint),
            NoServer(_) => {
                Some("Create the server first (docs/OPERATIONS.md), then run set_oauth for it.")
            }
            NoAccount(_) => Some(
                "Create it with SELECT mail_gateway.set_oauth(server => …, provider => …, client_id => …, client_secret => …).",
            ),
            AliasTableGone { .. } => Some("Create the table again, or give the alias a handler."),
            AliasCreatedNothing(_) => Some("A handler creates the record and returns its id."),
            NotRetryable { .. } => {
                Some("A sent mail is not sent again; queue a new one with send_mail().")
            }
            NotReroutable { .. } => Some(
                "Only messages in state new, error, unroutable, rejected, loop or duplicate are routed again.",
            ),
            NotStored(_) => {
                Some("Raise mail_gateway.max_message_size and fetch it again from its mailbox.")
            }
            Connection { hint, .. } => hint.as_deref(),
            Authorization { hint, .. } => Some(hint),
            NoMail(_)
            | NoReceivedMessage(_)
            | NoOutgoingServer(_)
            | NoIncomingServer(_)
            | AccountVanished(_)
            | NotCancellable { .. }
            | Internal(_)
            | Again(_) => None,
        }
    }

    /// Raises the ERROR; never returns.
    #[track_caller]
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "mail_gateway");
        if let Some(hint) = self.hint() {
            report = report.set_hint(hint);
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }
}
/// An ERROR caught inside the extension (a subtransaction, a worker's transaction): its
/// SQLSTATE and message.
#[derive(Debug, Clone)]
pub struct Caught {
    pub code: PgSqlErrorCode,
    pub message: String,
}

impl Caught {
    pub fn from_error(e: &pgrx::pg_sys::panic::CaughtError) -> Caught {
        use pgrx::pg_sys::panic::CaughtError;
        match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => Caught {
                code: r.sql_error_code(),
                message: r.message().to_string(),
            },
            // A panic in our own code: whatever the input was, it is a bug we hit with it.
            CaughtError::RustPanic { ereport, .. } => Caught {
                code: PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                message: ereport.message().to_string(),
            },
        }
    }

    /// Whether the failure comes from the data being written (bad characters, a value too
    /// big for an index, a constraint) rather than from the database itself (a full disk, a
    /// read-only standby, a lost table, a cancel): SQLSTATE classes 22, 23 and 54, and our own
    /// panics. A message that fails so is skipped; anything else stops the work.
    pub fn is_the_data(&self) -> bool {
        let state = sqlstate(self.code);
        matches!(&state[..2], "22" | "23" | "54")
            || self.code == PgSqlErrorCode::ERRCODE_INTERNAL_ERROR
    }

    /// The SQLSTATE's five characters.
    pub fn sqlstate(&self) -> String {
        sqlstate(self.code)
    }
}

impl std::fmt::Display for Caught {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The five characters of a SQLSTATE (PostgreSQL packs them six bits each).
fn sqlstate(code: PgSqlErrorCode) -> String {
    let mut n = code as i32;
    (0..5)
        .map(|_| {
            let c = ((n & 0x3f) as u8 + b'0') as char;
            n >>= 6;
            c
        })
        .collect()
}
