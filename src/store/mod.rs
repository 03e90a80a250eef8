//! The only code that speaks SQL to the extension's tables. Every query is parameterised;
//! no SQL is built from user text.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::PgOid;
use pgrx::datum::DatumWithOid;
use pgrx::datum::{FromDatum, IntoDatum};
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiHeapTupleData, SpiResult, SpiTupleTable};

pub mod chatter;
pub mod claim;
pub mod config;
pub mod dkim;
pub mod inbound;
pub mod incoming;
pub mod oauth;
pub mod queue;
pub mod records;
pub mod routing;
pub mod servers;

/// Turns an SPI failure (a bug or a dropped table, never user input) into an ERROR.
pub(crate) fn spi<T>(result: Result<T, pgrx::spi::SpiError>) -> T {
    result.unwrap_or_else(|e| {
        crate::error::ApiError::Internal(format!("mail_gateway: query failed: {e}")).raise()
    })
}

type PlanKey = (String, Vec<u32>, bool);

thread_local! {
    /// Every statement of this module is planned once per session (per text, argument types
    /// and read-only-ness) and kept: parsing and planning cost more than most of them take to
    /// run. PostgreSQL replans a kept plan by itself when a table it uses changes.
    static PLANS: RefCell<HashMap<PlanKey, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

fn plan(
    client: &SpiClient<'_>,
    sql: &str,
    args: &[DatumWithOid<'_>],
    mutable: bool,
) -> SpiResult<Rc<OwnedPreparedStatement>> {
    let key = (
        sql.to_string(),
        args.iter().map(|a| a.oid().to_u32()).collect(),
        mutable,
    );
    if let Some(plan) = PLANS.with(|plans| plans.borrow().get(&key).cloned()) {
        return Ok(plan);
    }
    let types: Vec<PgOid> = args.iter().map(|a| PgOid::from(a.oid())).collect();
    let prepared = if mutable {
        client.prepare_mut(sql, &types)?
    } else {
        client.prepare(sql, &types)?
    };
    let plan = Rc::new(prepared.keep());
    PLANS.with(|plans| plans.borrow_mut().insert(key, plan.clone()));
    Ok(plan)
}

/// A read-only statement, with a kept plan: it sees the database as the calling statement
/// does, so STABLE functions may use it.
pub(crate) fn select<'conn>(
    client: &SpiClient<'conn>,
    sql: &str,
    limit: Option<std::os::raw::c_long>,
    args: &[DatumWithOid<'_>],
) -> SpiResult<SpiTupleTable<'conn>> {
    let plan = plan(client, sql, args, false)?;
    client.select(&*plan, limit, args)
}

/// A read-write statement, with a kept plan: it sees what this statement wrote before.
pub(crate) fn update<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &str,
    limit: Option<std::os::raw::c_long>,
    args: &[DatumWithOid<'_>],
) -> SpiResult<SpiTupleTable<'conn>> {
    let plan = plan(client, sql, args, true)?;
    client.update(&*plan, limit, args)
}

/// Runs a statement for its effect, with a kept plan.
pub(crate) fn execute(sql: &str, args: &[DatumWithOid<'_>]) {
    spi(pgrx::Spi::connect_mut(|client| {
        update(client, sql, None, args).map(|_| ())
    }))
}

/// Runs a statement with a kept plan: a SELECT read-only (so that STABLE functions may use
/// it), anything else (an INSERT/UPDATE … RETURNING, a volatile function) read-write.
fn run<'conn>(
    client: &mut SpiClient<'conn>,
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> SpiResult<SpiTupleTable<'conn>> {
    if sql.trim_start().starts_with("SELECT") {
        select(client, sql, None, args)
    } else {
        update(client, sql, None, args)
    }
}

/// The first column of the first row of a statement; `None` when there is no row or the value
/// is NULL.
pub(crate) fn first<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid<'_>]) -> Option<T> {
    spi(pgrx::Spi::connect_mut(|client| {
        match run(client, sql, args)?.next() {
            Some(row) => row.get::<T>(1),
            None => Ok(None),
        }
    }))
}

/// Whether a statement gives at least one row.
pub(crate) fn exists(sql: &str, args: &[DatumWithOid<'_>]) -> bool {
    spi(pgrx::Spi::connect_mut(|client| {
        Ok(!run(client, sql, args)?.is_empty())
    }))
}

/// A text column of a row by name, NULL read as empty.
pub(crate) fn text(row: &SpiHeapTupleData<'_>, column: &str) -> SpiResult<String> {
    Ok(row.get_by_name::<String, _>(column)?.unwrap_or_default())
}

/// 128 random bits in hex: the unique part of the Message-IDs we write.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 16];
    // SAFETY: the buffer is ours, writable and exactly `bytes.len()` long.
    if !unsafe { pgrx::pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) } {
        crate::error::ApiError::Internal("no random bytes for a Message-ID".to_string()).raise();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `f` in a subtransaction: an ERROR inside rolls back only what `f` did and comes back
/// as its SQLSTATE and message, so that the caller's transaction (and what it stored) goes on.
pub(crate) fn subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, crate::error::Caught> {
    use pgrx::pg_sys;
    use std::panic::AssertUnwindSafe;
    // SAFETY: reads PostgreSQL's current memory context and resource owner on the backend's
    // thread; both are restored below as PL/pgSQL's exception blocks restore them.
    let (context, owner) = unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    // SAFETY: inside a transaction (every caller runs in one); a NULL name is allowed.
    unsafe { pg_sys::BeginInternalSubTransaction(std::ptr::null()) };
    let f = AssertUnwindSafe(f);
    pgrx::PgTryBuilder::new(AssertUnwindSafe(move || {
        let result = (f.0)();
        // SAFETY: the subtransaction begun above is the current one (f returned normally);
        // releasing it and restoring the saved context and owner is PL/pgSQL's sequence.
        unsafe {
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
        Ok(result)
    }))
    .catch_others(|e| {
        // SAFETY: an ERROR inside f left the subtransaction begun above current and aborted;
        // rolling it back and restoring the saved context and owner is PL/pgSQL's sequence.
        unsafe {
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
        Err(crate::error::Caught::from_error(&e))
    })
    .execute()
}

/// The role the gateway itself writes as: the workers connect as it, and the API's own writes
/// to the queue, the chatter and received mail run as it (like a SECURITY DEFINER function, but
/// with the gateway's rights only, never a superuser's: docs/SECURITY.md, "Roles").
pub(crate) const GATEWAY_ROLE: &str = "mail_gateway_worker";

/// The search_path statements run with under `as_role`: the catalog first, temporary objects
/// never before the named schemas.
const PINNED_SEARCH_PATH: &std::ffi::CStr = c"pg_catalog, \"$user\", public, pg_temp";

/// A role's oid by name; an ERROR naming it when there is none.
pub(crate) fn role_oid(name: &str) -> pgrx::pg_sys::Oid {
    let name = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: a NUL-terminated name; with missing_ok false, PostgreSQL raises for an unknown role.
    unsafe { pgrx::pg_sys::get_role_oid(name.as_ptr(), false) }
}

/// Runs `f` with the rights of `role` and a pinned search_path, as PostgreSQL runs a SECURITY
/// DEFINER function: `SET ROLE` is refused inside (SECURITY_LOCAL_USERID_CHANGE), and the
/// caller's role and search_path come back when `f` returns. When `f` raises, the
/// (sub)transaction's abort restores both, as it does for SECURITY DEFINER functions.
pub(crate) fn as_role<R>(role: pgrx::pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    use pgrx::pg_sys;
    let mut saved_user = pg_sys::InvalidOid;
    let mut saved_context: std::os::raw::c_int = 0;
    // SAFETY: plain reads of the backend's current user and security context.
    unsafe { pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context) };
    with_setting(c"search_path", PINNED_SEARCH_PATH, || {
        // SAFETY: a role that exists; restored below in the reverse order of the setting.
        unsafe {
            pg_sys::SetUserIdAndSecContext(
                role,
                saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as std::os::raw::c_int,
            )
        };
        let result = f();
        // SAFETY: restores what was saved above.
        unsafe { pg_sys::SetUserIdAndSecContext(saved_user, saved_context) };
        result
    })
}

/// Runs `f` with setting `name` at `value`, as a function's `SET` clause does: the old value
/// comes back when `f` returns, or with the abort of the (sub)transaction when it raises.
pub(crate) fn with_setting<R>(
    name: &std::ffi::CStr,
    value: &std::ffi::CStr,
    f: impl FnOnce() -> R,
) -> R {
    use pgrx::pg_sys;
    // SAFETY: a new GUC nest level, closed below (or by the abort of the transaction).
    let nest = unsafe { pg_sys::NewGUCNestLevel() };
    // SAFETY: a valid setting and value; GUC_ACTION_SAVE undoes it at AtEOXact_GUC.
    unsafe {
        pg_sys::set_config_option(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
    }
    let result = f();
    // SAFETY: closes the nest level opened above, restoring the setting.
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    result
}

/// Runs `f` as the gateway (`GATEWAY_ROLE`): for the API's writes to tables its callers may
/// only read.
pub(crate) fn as_gateway<R>(f: impl FnOnce() -> R) -> R {
    as_role(role_oid(GATEWAY_ROLE), f)
}
