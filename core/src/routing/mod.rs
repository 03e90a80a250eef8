//! Routing decisions, pure Rust: which outgoing server sends a mail and with which From
//! (docs/REFERENCE.md, "find_outgoing_server"), how mail belongs to its thread (`thread`), and the settings an incoming
//! message's route depends on (docs/REFERENCE.md, "Routes").

pub mod address;
pub mod incoming;
pub mod route;
pub mod server;
pub mod thread;

use server::SenderSettings;

/// The system parameters routes depend on (docs/REFERENCE.md, "Parameters").
#[derive(Debug, Clone, Default)]
pub struct RoutingSettings {
    pub catchall_domain: Option<String>,
    pub catchall_alias: String,
    pub bounce_alias: String,
    /// `mail.incoming.limit.period`, minutes.
    pub loop_period_minutes: i64,
    /// `mail.incoming.limit.alias`: records one sender may create through one alias per period.
    pub loop_limit: i64,
    /// The blocklist rule: `mail.bounce.limit` bounces within `mail.bounce.period`, the first
    /// and last at least `mail.bounce.spread` apart (intervals as PostgreSQL reads them).
    pub bounce_limit: i64,
    pub bounce_period: String,
    pub bounce_spread: String,
    pub sender: SenderSettings,
    /// Our own domains: the alias domain, the domains of aliases, DKIM keys and outgoing
    /// servers' filters. A message claiming one is believed only when authenticated.
    pub own_domains: Vec<String>,
    /// `mail.relay.limit.thread`: received messages relayed per thread per period.
    pub relay_limit_thread: i64,
    /// `mail.relay.limit.sender`: received messages of one sender relayed per period.
    pub relay_limit_sender: i64,
    /// `mail.auto_reply.limit.recipient`: automatic answers to one address per period.
    pub auto_reply_limit_recipient: i64,
    /// `mail.auto_reply.daily_share`: per cent of `mail.send.daily_limit` automatic answers
    /// may take.
    pub auto_reply_daily_share: i64,
    /// `mail.send.daily_limit` (0: unlimited).
    pub daily_limit: i64,
}

impl RoutingSettings {
    pub fn catchall_address(&self) -> Option<String> {
        self.catchall_domain
            .as_ref()
            .map(|d| format!("{}@{d}", self.catchall_alias))
    }

    /// Whether `domain` (lower-case) is one of ours, or a subdomain of one.
    pub fn is_own_domain(&self, domain: &str) -> bool {
        self.catchall_domain
            .iter()
            .chain(&self.own_domains)
            .any(|own| domain == own || domain.ends_with(&format!(".{own}")))
    }

    /// How many automatic answers a UTC day allows: their share of the daily limit (at least
    /// one), or no bound when sending is unlimited.
    pub fn auto_reply_daily_allowance(&self) -> Option<i64> {
        (self.daily_limit > 0)
            .then(|| (self.daily_limit * self.auto_reply_daily_share / 100).max(1))
    }

    /// Whether `address` (lower-case) is on the alias domain with this local part (or a
    /// `local+tag` of it).
    pub fn is_local(&self, address: &str, local: &str) -> bool {
        let Some(domain) = &self.catchall_domain else {
            return false;
        };
        let Some((l, d)) = address.rsplit_once('@') else {
            return false;
        };
        d == domain && (l == local || l.starts_with(&format!("{local}+")))
    }
}
