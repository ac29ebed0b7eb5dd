//! Backend protection: when a secret store answers "slow down" (HTTP 429
//! from a rate-limit quota, 503 from a sealed or overloaded server, a
//! Secrets Manager throttling error), every request of this agent to that
//! store waits — not only the one that got the answer — until:
//!
//! - with a `Retry-After` (OpenBao's rate-limit quotas send one, usually
//!   `0`: the quota refills within the second): that delay (at most 5
//!   minutes) plus a spread of 0.125–0.25 s doubling to 1–2 s while the
//!   answers keep coming, so agents told the same thing come back at
//!   different moments and the herd runs at about the quota's rate;
//! - without one (a sealed Vault's 503, a throttling error): an
//!   exponential backoff with jitter, 0.5 s doubling to 60 s.
//!
//! The first answer that is not "slow down" resets both.
//!
//! A pod's first fetch is never delayed on purpose: the throttle holds
//! requests only after the store asked for it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::schedule::Backoff;

/// The longest `Retry-After` honoured; a longer one (or an HTTP date) is
/// treated as this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The hold shared by every request of one agent to one store.
#[derive(Debug)]
pub struct Throttle {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    until: Option<Instant>,
    backoff: Backoff,
    /// The spread added to a `Retry-After`.
    spread: Backoff,
    /// Answers "slow down" since the agent started (for the log).
    count: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        let spread = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        Throttle { inner: Mutex::new(Inner { until: None, backoff: Backoff::default(), spread, count: 0 }) }
    }
}

impl Throttle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits while the store asked to slow down.
    pub async fn wait(&self) {
        loop {
            let until = self.lock().until;
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    /// The store asked to slow down, with its `Retry-After` if any:
    /// requests wait from now on for the returned delay.
    pub fn slow_down(&self, retry_after: Option<Duration>) -> Duration {
        let mut inner = self.lock();
        let delay = match retry_after {
            Some(asked) => asked.min(MAX_RETRY_AFTER) + inner.spread.next_delay(),
            None => inner.backoff.next_delay(),
        };
        let until = Instant::now() + delay;
        inner.until = Some(inner.until.map_or(until, |u| u.max(until)));
        inner.count += 1;
        delay
    }

    /// An answer that was not "slow down".
    pub fn ok(&self) {
        let mut inner = self.lock();
        if inner.backoff.failures() > 0 || inner.spread.failures() > 0 {
            inner.backoff.reset();
            inner.spread.reset();
        }
    }

    /// How many times the store asked to slow down.
    pub fn count(&self) -> u64 {
        self.lock().count
    }
}

/// The delay of a `Retry-After` header in seconds (its HTTP-date form is
/// taken as [`MAX_RETRY_AFTER`]); `None` without one.
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    let value = header?.trim();
    if value.is_empty() {
        return None;
    }
    Some(value.parse::<u64>().map_or(MAX_RETRY_AFTER, |s| Duration::from_secs(s).min(MAX_RETRY_AFTER)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_capped() {
        assert_eq!(retry_after(None), None);
        assert_eq!(retry_after(Some(" ")), None);
        assert_eq!(retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some("0")), Some(Duration::ZERO));
        assert_eq!(retry_after(Some("86400")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), Some(MAX_RETRY_AFTER));
    }

    #[tokio::test(start_paused = true)]
    async fn every_request_waits_out_the_hold_which_grows_until_an_answer_is_good() {
        let t = Throttle::default();
        let start = Instant::now();
        t.wait().await;
        assert_eq!(Instant::now(), start, "nothing waits before the store asks");
        // The server's Retry-After, and a spread.
        let d = t.slow_down(Some(Duration::from_secs(2)));
        assert!(d >= Duration::from_millis(2125) && d <= Duration::from_millis(2250), "{d:?}");
        t.wait().await;
        let waited = Instant::now() - start;
        assert!(waited >= d && waited <= d + Duration::from_millis(1), "{waited:?} for {d:?} (timers tick in ms)");
        // Without Retry-After: the backoff, growing while it goes on.
        let delays: Vec<Duration> = (0..6).map(|_| t.slow_down(None)).collect();
        assert!(delays[5] >= Duration::from_secs(8), "{delays:?}");
        // "Retry-After: 0" again and again: the spread grows to 1–2 s, no more.
        let spread: Vec<Duration> = (0..8).map(|_| t.slow_down(Some(Duration::ZERO))).collect();
        assert!(spread[7] >= Duration::from_secs(1) && spread[7] <= Duration::from_secs(2), "{spread:?}");
        t.ok();
        assert!(t.slow_down(None) <= Duration::from_millis(500));
        assert!(t.slow_down(Some(Duration::ZERO)) <= Duration::from_millis(250));
        assert_eq!(t.count(), 17);
    }
}
