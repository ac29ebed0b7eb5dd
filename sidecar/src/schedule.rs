//! When to act next: lease renewal points, refresh checks and the backoff
//! after failures. Pure arithmetic, so it is tested without clocks.
//!
//! Leases are renewed at about two thirds of their remaining lifetime
//! (Vault Agent and linkerd's identity client refresh at 2/3 to 70%), with
//! ±10% jitter so that many pods started together do not renew together.
//! When a renewal comes back shorter than asked (the lease hit its max TTL),
//! the credential is replaced while at least a third of its last lifetime
//! (and never less than two seconds) is left, so the app has the new one
//! well before the old one stops working.

use std::time::Duration;

use tokio::time::Instant;

/// A value in `[d * (1 - spread), d * (1 + spread)]`.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    let f = 1.0 + spread * (fastrand::f64() * 2.0 - 1.0);
    d.mul_f64(f.max(0.0))
}

/// How long after receiving a lease of `ttl` to renew it (no jitter).
pub fn renew_after(ttl: Duration) -> Duration {
    (ttl * 2 / 3).max(Duration::from_millis(500))
}

/// How long after a renewal that returned `granted` (less than the
/// `requested` increment, so the lease ends at its max TTL) to fetch a new
/// credential: while a third of `granted` (at least 2 s) is left.
pub fn replace_after(granted: Duration) -> Duration {
    let margin = (granted / 3).max(Duration::from_secs(2));
    granted.saturating_sub(margin)
}

/// Whether a renewal was capped by the lease's max TTL.
pub fn capped(requested: Duration, granted: Duration) -> bool {
    // Vault rounds to seconds; a second of slack avoids false alarms.
    granted + Duration::from_secs(1) < requested
}

/// The agent-wide clock of refresh checks: a tick every `period` from
/// `epoch`. Every source of one agent checks on the same ticks, so a
/// backend can answer them together (AWS: one call per 20 secrets). Each
/// agent draws a random phase (the epoch lies up to one period after its
/// start) and a period of `refresh` ±10%, so pods started together spread
/// their checks evenly over a refresh period from the first check on, and
/// keep drifting apart.
#[derive(Debug, Clone, Copy)]
pub struct Refresh {
    /// Between two ticks.
    pub period: Duration,
    /// The first tick's origin.
    pub epoch: Instant,
}

impl Refresh {
    /// The clock of an agent started at `start` with `refresh`.
    pub fn for_agent(refresh: Duration, start: Instant) -> Self {
        let period = jitter(refresh, 0.1).max(Duration::from_millis(100));
        Refresh { period, epoch: start + period.mul_f64(fastrand::f64()) }
    }

    /// The first tick at least half a period after `now` (a source read
    /// just now waits between half a period and one and a half).
    pub fn next(&self, now: Instant) -> Instant {
        let period = self.period.as_nanos().max(1);
        let since = (now + self.period / 2).saturating_duration_since(self.epoch).as_nanos();
        let at = since.div_ceil(period) * period;
        self.epoch + Duration::from_nanos(u64::try_from(at).unwrap_or(u64::MAX))
    }
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s … up to `max`, each
/// drawn from the upper half of its step ("equal jitter").
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `base` up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff { base, max, attempt: 0 }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.base.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }

    /// Back to the first step after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many failures in a row.
    pub fn failures(&self) -> u32 {
        self.attempt
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_two_thirds() {
        assert_eq!(renew_after(Duration::from_secs(30)), Duration::from_secs(20));
        assert_eq!(renew_after(Duration::from_millis(100)), Duration::from_millis(500));
    }

    #[test]
    fn replaces_capped_leases_with_a_third_left() {
        assert_eq!(replace_after(Duration::from_secs(9)), Duration::from_secs(6));
        assert_eq!(replace_after(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(replace_after(Duration::from_secs(1)), Duration::ZERO);
        assert!(capped(Duration::from_secs(10), Duration::from_secs(4)));
        assert!(!capped(Duration::from_secs(10), Duration::from_secs(10)));
        assert!(!capped(Duration::from_secs(10), Duration::from_millis(9500)));
    }

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..1000 {
            let j = jitter(Duration::from_secs(10), 0.1);
            assert!(j >= Duration::from_secs(9) && j <= Duration::from_secs(11), "{j:?}");
        }
    }

    #[test]
    fn refresh_ticks_are_shared_and_at_least_half_a_period_away() {
        let epoch = Instant::now();
        let r = Refresh { period: Duration::from_secs(100), epoch };
        let s = |d: u64| epoch + Duration::from_secs(d);
        // Sources read at different moments of the start check together.
        assert_eq!(r.next(s(0)), s(100));
        assert_eq!(r.next(s(3)), s(100));
        assert_eq!(r.next(s(49)), s(100));
        assert_eq!(r.next(s(51)), s(200));
        assert_eq!(r.next(s(100)), s(200));
        assert_eq!(r.next(epoch + Duration::from_millis(100_020)), s(200));
        // Agents started together: periods of refresh ±10%, and first checks
        // spread over a whole period (half a period to one and a half after the start).
        let firsts: Vec<f64> = (0..1000)
            .map(|_| {
                let a = Refresh::for_agent(Duration::from_secs(300), epoch);
                assert!(a.period >= Duration::from_secs(270) && a.period <= Duration::from_secs(330));
                let first = (a.next(epoch) - epoch).as_secs_f64();
                assert!((a.period.as_secs_f64() / 2.0 - 0.001..=a.period.as_secs_f64() * 1.5).contains(&first));
                first
            })
            .collect();
        let early = firsts.iter().filter(|f| **f < 300.0).count();
        assert!((350..=650).contains(&early), "{early} of 1000 first checks in the first half of the window");
    }

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let step = Duration::from_millis(500 * (1 << i)).min(Duration::from_secs(8));
            assert!(*d >= step / 2 && *d <= step, "attempt {i}: {d:?}");
        }
        assert_eq!(b.failures(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }
}
