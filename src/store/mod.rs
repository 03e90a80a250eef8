//! The only code that speaks SQL to the extension's tables. Every query is parameterised;
//! no SQL is built from user text.

pub mod config;
pub mod dkim;
pub mod inbound;
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

/// The first column of the first row of a statement (a SELECT, or an UPDATE … RETURNING), as
/// text; `None` when there is no row or the value is NULL. A SELECT runs read-only, so that
/// STABLE functions may use it.
pub(crate) fn first_text(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Option<String> {
    spi(pgrx::Spi::connect_mut(|client| {
        let rows = if sql.trim_start().starts_with("SELECT") {
            client.select(sql, None, args)?
        } else {
            client.update(sql, None, args)?
        };
        match rows.into_iter().next() {
            Some(row) => row.get::<String>(1),
            None => Ok(None),
        }
    }))
}
