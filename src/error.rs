//! Errors raised to the SQL caller: a SQLSTATE, a message and, where it helps, a hint.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Raises an ERROR; never returns.
#[track_caller]
pub fn raise(code: PgSqlErrorCode, message: impl Into<String>, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message.into(), "mail_gateway");
    if let Some(hint) = hint {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
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
