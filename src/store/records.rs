//! An alias's record: created by its handler, or by an insert into its table, with the rights
//! of whom the alias or the table belongs to.

use pgrx::JsonB;
use pgrx::prelude::*;

use super::spi;
use crate::routing::route::Alias;

/// Where an alias's record goes: its handler (a qualified name), else its table, with whom
/// each runs as and the columns of the table the message's fields fill.
struct RecordTarget {
    /// The alias's owner (a role name), whom the handler runs as.
    owner: Option<String>,
    handler: Option<String>,
    table: Option<String>,
    /// The table's owner (an oid, as text), whom the default insert runs as.
    table_owner: Option<String>,
    columns: Option<String>,
}

/// Creates the alias's record and returns its id. A handler runs with the rights of the
/// alias's owner; the default insert runs with the rights of the table's owner, so that the
/// table's triggers run as the one who wrote them, never as anyone more privileged (the alias's
/// owner was checked, when the alias was saved, to be allowed to insert there). Either way the
/// search_path is pinned. Identifiers come from the catalog, values are bound.
pub fn create_record(alias: &Alias, message: serde_json::Value, fields: serde_json::Value) -> i64 {
    let RecordTarget {
        owner,
        handler,
        table,
        table_owner,
        columns,
    } = record_target(alias, &fields);
    let run = |sql: String, argument: serde_json::Value| {
        spi(Spi::connect_mut(|client| {
            super::update(client, &sql, None, &[JsonB(argument).into()])?
                .first()
                .get_one::<i64>()
        }))
    };
    let id = match (handler, table) {
        (Some(handler), _) => {
            let owner = super::role_oid(&owner.unwrap_or_default());
            super::as_role(owner, || run(format!("SELECT {handler}($1)"), message))
        }
        (None, Some(table)) => {
            let owner = pgrx::pg_sys::Oid::from(
                table_owner
                    .and_then(|o| o.parse::<u32>().ok())
                    .unwrap_or_default(),
            );
            let sql = match columns {
                Some(columns) => format!(
                    "INSERT INTO {table} ({columns}) SELECT {columns}
                     FROM pg_catalog.jsonb_populate_record(NULL::{table}, $1) RETURNING id"
                ),
                None => format!("INSERT INTO {table} DEFAULT VALUES RETURNING id /* $1 */"),
            };
            super::as_role(owner, || run(sql, fields))
        }
        (None, None) => crate::error::ApiError::AliasTableGone {
            table: alias.model.clone(),
            alias: alias.name.clone(),
        }
        .raise(),
    };
    id.unwrap_or_else(|| crate::error::ApiError::AliasCreatedNothing(alias.name.clone()).raise())
}

/// Reads where the alias's record goes, from the catalog.
fn record_target(alias: &Alias, fields: &serde_json::Value) -> RecordTarget {
    spi(Spi::connect(|client| {
        let row = super::select(
            client,
            "SELECT a.owner::text AS owner,
                    (SELECT pg_catalog.format('%I.%I', n.nspname, p.proname)
                     FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                     WHERE p.oid = a.handler) AS handler,
                    (SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
                     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.oid = c_oid.oid) AS table_name,
                    (SELECT c.relowner::text FROM pg_catalog.pg_class c WHERE c.oid = c_oid.oid) AS table_owner,
                    (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(t.attname), ', ' ORDER BY t.attnum)
                     FROM pg_catalog.pg_attribute t
                     WHERE t.attrelid = c_oid.oid AND t.attnum > 0 AND NOT t.attisdropped
                       AND $2 ? t.attname::text) AS columns
             FROM mail_gateway.alias a
             CROSS JOIN LATERAL (SELECT pg_catalog.to_regclass(a.model)::oid AS oid) c_oid
             WHERE a.id = $1",
            None,
            &[alias.id.into(), JsonB(fields.clone()).into()],
        )?
        .first();
        let optional = |column: &str| row.get_by_name::<String, _>(column);
        Ok::<_, pgrx::spi::SpiError>(RecordTarget {
            owner: optional("owner")?,
            handler: optional("handler")?,
            table: optional("table_name")?,
            table_owner: optional("table_owner")?,
            columns: optional("columns")?,
        })
    }))
}
