//! The only code that speaks SQL to the extension's tables. Every query is parameterised;
//! no SQL is built from user text.

pub mod config;
pub mod dkim;
pub mod queue;

/// Turns an SPI failure (a bug or a dropped table, never user input) into an ERROR.
pub(crate) fn spi<T>(result: Result<T, pgrx::spi::SpiError>) -> T {
    result.unwrap_or_else(|e| {
        crate::error::raise(
            pgrx::PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("mail_gateway: query failed: {e}"),
            None,
        )
    })
}
