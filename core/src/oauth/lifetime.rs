//! When a cached access token is refreshed and until when it is used, and the wait after a
//! failing endpoint.

use std::time::{Duration, SystemTime};

/// Refresh when this much of a token's life is left at most (half its life for short ones):
/// time to try again should the endpoint fail, before the token runs out.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(10 * 60);
/// A token is handed to a new login only while this much life is left at most (a quarter of
/// its life for short ones): the login takes a few seconds at worst.
pub const USE_MARGIN: Duration = Duration::from_secs(60);
/// A cached access token's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub obtained_at: SystemTime,
    pub expires_at: SystemTime,
}

impl Lifetime {
    pub fn new(obtained_at: SystemTime, lifetime: Duration) -> Lifetime {
        Lifetime {
            obtained_at,
            expires_at: obtained_at + lifetime,
        }
    }

    fn length(&self) -> Duration {
        self.expires_at
            .duration_since(self.obtained_at)
            .unwrap_or_default()
    }

    fn left(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }

    /// When the token should be replaced: `REFRESH_MARGIN` before it expires, or halfway
    /// through a short life.
    pub fn refresh_at(&self) -> SystemTime {
        self.expires_at - REFRESH_MARGIN.min(self.length() / 2)
    }

    pub fn refresh_due(&self, now: SystemTime) -> bool {
        now >= self.refresh_at()
    }

    /// Whether a new login may still use it (a failed refresh keeps the old token until here).
    pub fn usable(&self, now: SystemTime) -> bool {
        self.left(now) > USE_MARGIN.min(self.length() / 4)
    }
}

/// The wait before trying a failing endpoint again: 1 s, doubling up to a minute.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}
