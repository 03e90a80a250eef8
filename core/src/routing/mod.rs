//! Routing decisions, pure Rust: which outgoing server sends a mail and with which From
//! (SPEC §2.3), how mail belongs to its thread (`thread`), and the settings an incoming
//! message's route depends on (SPEC §2.8).

pub mod address;
pub mod incoming;
pub mod server;
pub mod thread;

use server::SenderSettings;

/// The system parameters routes depend on (SPEC §2.1).
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
}

impl RoutingSettings {
    pub fn catchall_address(&self) -> Option<String> {
        self.catchall_domain
            .as_ref()
            .map(|d| format!("{}@{d}", self.catchall_alias))
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
