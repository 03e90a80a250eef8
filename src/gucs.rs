//! Server-level settings (GUCs), all under the `mail_gateway.` prefix.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static ROLE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"mail_gateway_worker"));
static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static SENDERS: GucSetting<i32> = GucSetting::<i32>::new(1);
static SEND_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(200);
static SEND_BATCH_KB: GucSetting<i32> = GucSetting::<i32>::new(32 * 1024);
static SMTP_IDLE_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);
static SEND_LEASE_S: GucSetting<i32> = GucSetting::<i32>::new(600);
static SMTP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
static MAX_MESSAGE_SIZE_KB: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024);
static RETRY_DELAY_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
static FETCH_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
static FETCH_BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(50);
static DNS_SERVER: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static BLOCKED_PORTS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static LMTP_LISTEN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
static LMTP_MAX_CONNECTIONS: GucSetting<i32> = GucSetting::<i32>::new(10);
static LMTP_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);

/// Defines every setting. One long function on purpose: each definition is a self-contained
/// block (name, texts, default, context), and the list reads better whole than cut into
/// arbitrary groups.
pub fn init() {
    GucRegistry::define_string_guc(
        c"mail_gateway.database",
        c"Database whose mail the background workers serve; * (or empty) for every database with the extension.",
        c"The launcher starts and stops the workers of each database; a reload takes effect at once.",
        &DATABASE,
        // Not Postmaster: the library may also be loaded after startup (without preloading),
        // and PostgreSQL refuses to define postmaster-level settings then.
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"mail_gateway.role",
        c"Role the background workers connect as.",
        c"CREATE EXTENSION creates mail_gateway_worker with exactly the rights the workers need; another role must be a member of it. Never a superuser.",
        &ROLE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.poll_interval",
        c"How often the worker looks for due work when nothing wakes it.",
        c"A safety net: committed mail wakes the worker at once.",
        &POLL_INTERVAL_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.send_batch_size",
        c"Most mails one sender claims at once.",
        c"Claimed mail waits for a free SMTP connection; each result is committed as it comes.",
        &SEND_BATCH_SIZE,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.send_batch_memory",
        c"Most bytes of bodies and attachments one sender claims at once (a bigger mail is claimed alone).",
        c"Bounds a sender's memory; mail_gateway.send_batch_size bounds the number of mails.",
        &SEND_BATCH_KB,
        64,
        1024 * 1024,
        GucContext::Sighup,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.smtp_idle_timeout",
        c"How long an SMTP connection with nothing to send is kept open for the next mail.",
        c"A kept connection saves connect, EHLO, STARTTLS and AUTH (several round trips) per mail.",
        &SMTP_IDLE_TIMEOUT_MS,
        0,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.send_lease",
        c"How long a claimed mail belongs to its sender before another may take it over.",
        c"Only matters when a sender dies without being restarted; keep it above a batch's sending time.",
        &SEND_LEASE_S,
        1,
        86_400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.smtp_timeout",
        c"Timeout of every SMTP network step: connect, TLS handshake, each reply.",
        c"A server that hangs costs at most this long per step.",
        &SMTP_TIMEOUT_MS,
        100,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.retry_delay",
        c"First retry of a mail that failed for a transient reason; later ones double, up to 60 times it.",
        c"The default, 1 minute, gives 1, 2, 4 … 60 minutes; mail is given up after two days.",
        &RETRY_DELAY_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.fetch_timeout",
        c"Timeout of every IMAP/POP3 network step: connect, TLS handshake, each command.",
        c"A command that downloads mail also gets the time to transfer it at 64 KiB/s.",
        &FETCH_TIMEOUT_MS,
        100,
        600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.fetch_batch_size",
        c"Messages the fetcher downloads and commits together (and at most 32 MB).",
        c"Each batch is committed before its messages are flagged or deleted on the server.",
        &FETCH_BATCH_SIZE,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"mail_gateway.dns_server",
        c"DNS server check_domain() asks, as ip:port; empty = the system's resolvers.",
        c"Settable per session, e.g. to ask the domain's own name server.",
        &DNS_SERVER,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"mail_gateway.blocked_ports",
        c"Comma-separated TCP ports the hosting provider forbids, e.g. 25.",
        c"Servers on these ports are refused with a hint to use 465, 587 or 2525.",
        &BLOCKED_PORTS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.max_message_size",
        c"Largest received message that is stored; larger ones are recorded without their bytes.",
        c"The record keeps the sender, subject and size, and says why the body was not kept.",
        &MAX_MESSAGE_SIZE_KB,
        64,
        1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_string_guc(
        c"mail_gateway.lmtp_listen",
        c"Address (host:port) on which the fetcher takes mail pushed over LMTP; empty: no listener.",
        c"Only when mail_gateway.database names one database. Messages are stored and routed like process_message's, and acknowledged only after the commit.",
        &LMTP_LISTEN,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.lmtp_max_connections",
        c"Most LMTP sessions at a time; more are answered 421 (the MTA retries).",
        c"Each session is a thread of the fetcher.",
        &LMTP_MAX_CONNECTIONS,
        1,
        1000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.lmtp_timeout",
        c"Timeout of every LMTP read, and of the wait for the commit of a received message (then 451).",
        c"DATA also gets the time to transfer mail_gateway.max_message_size at 64 KiB/s.",
        &LMTP_TIMEOUT_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    // Only the postmaster can start workers, so their number is fixed at server start.
    // SAFETY: a global flag PostgreSQL sets while it loads shared_preload_libraries; read on the
    // backend's own thread.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        GucRegistry::define_int_guc(
            c"mail_gateway.senders",
            c"Background workers that send mail (the main worker included).",
            c"More senders send in parallel; claims never give one mail to two of them.",
            &SENDERS,
            1,
            crate::worker::registry::MAX_SENDERS as i32,
            GucContext::Postmaster,
            GucFlags::default(),
        );
    }
    // Typos such as mail_gateway.databse are refused instead of silently ignored.
    // SAFETY: called from _PG_init on the backend's thread with a NUL-terminated static name, as
    // the GUC API requires.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"mail_gateway".as_ptr()) };
}

pub fn database() -> String {
    DATABASE
        .get()
        .and_then(|s| s.into_string().ok())
        .unwrap_or_else(|| "postgres".to_string())
}

/// `mail_gateway.role`: whom the workers connect as.
pub fn role() -> String {
    ROLE.get()
        .and_then(|s| s.into_string().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "mail_gateway_worker".to_string())
}

pub fn poll_interval() -> std::time::Duration {
    std::time::Duration::from_millis(POLL_INTERVAL_MS.get().max(100) as u64)
}

pub fn senders() -> usize {
    SENDERS
        .get()
        .clamp(1, crate::worker::registry::MAX_SENDERS as i32) as usize
}

pub fn send_batch_size() -> i64 {
    SEND_BATCH_SIZE.get().max(1) as i64
}

/// In bytes.
pub fn send_batch_memory() -> i64 {
    SEND_BATCH_KB.get().max(64) as i64 * 1024
}

pub fn smtp_idle_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(SMTP_IDLE_TIMEOUT_MS.get().max(0) as u64)
}

pub fn send_lease() -> std::time::Duration {
    std::time::Duration::from_secs(SEND_LEASE_S.get().max(1) as u64)
}

pub fn smtp_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(SMTP_TIMEOUT_MS.get().max(100) as u64)
}

pub fn retry_delay() -> std::time::Duration {
    std::time::Duration::from_millis(RETRY_DELAY_MS.get().max(100) as u64)
}

pub fn fetch_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(FETCH_TIMEOUT_MS.get().max(100) as u64)
}

pub fn fetch_batch_size() -> usize {
    FETCH_BATCH_SIZE.get().max(1) as usize
}

/// `mail_gateway.dns_server`, when set.
pub fn dns_server() -> Option<String> {
    DNS_SERVER
        .get()
        .and_then(|s| s.into_string().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether the hosting provider forbids `port` (`mail_gateway.blocked_ports`).
pub fn port_blocked(port: u16) -> bool {
    BLOCKED_PORTS
        .get()
        .and_then(|s| s.into_string().ok())
        .is_some_and(|list| list.split(',').any(|p| p.trim().parse::<u16>() == Ok(port)))
}

/// In bytes.
pub fn max_message_size() -> usize {
    MAX_MESSAGE_SIZE_KB.get().max(64) as usize * 1024
}

/// `mail_gateway.lmtp_listen`, trimmed; empty when off.
pub fn lmtp_listen() -> String {
    LMTP_LISTEN
        .get()
        .and_then(|s| s.into_string().ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn lmtp_max_connections() -> usize {
    LMTP_MAX_CONNECTIONS.get().max(1) as usize
}

pub fn lmtp_timeout() -> std::time::Duration {
    std::time::Duration::from_millis(LMTP_TIMEOUT_MS.get().max(100) as u64)
}
