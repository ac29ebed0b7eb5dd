//! What a source holds after a read, and what it does next and when: the
//! state machine of a secret's life, as plain data and pure functions (the
//! engine does the I/O and the sleeping). Like kube-runtime's watcher states
//! and linkerd's identity refresh around a pure `refresh_in`, every timing
//! rule of `docs/agent.md` is decided here:
//!
//! - a renewable lease is renewed at about two thirds of its lifetime (±10%);
//! - a lease that cannot be renewed, or whose renewal came back capped by its
//!   max TTL, is replaced while a third of its lifetime (at least 2 s) is left;
//! - a lease whose token is ending (a capped token that will not be renewed)
//!   is replaced before that token ends: Vault revokes a token's leases with it;
//! - a versioned secret (KV v2, AWS) gets a cheap version check every
//!   `refresh`, and is read again only when the version moved;
//! - a secret with neither is read again every `refresh`; both on the
//!   agent's shared refresh ticks ([`Refresh`]: ±10% per agent);
//! - a certificate is replaced after its share of the lifetime (`renew=`,
//!   2/3 by default, ±5%), never because of a new login;
//! - a failed renewal or check is retried with the caller's backoff; a lease
//!   that ended meanwhile is replaced.

use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{Fetched, Lease};
use crate::schedule::{Refresh, capped, jitter, renew_after, replace_after};

/// The jitter spread of renewals.
const SPREAD: f64 = 0.1;

/// What a source holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A dynamic secret's lease.
    Lease {
        /// The lease.
        lease: Lease,
        /// The lifetime it was issued with (renewals ask for as much again).
        issued_ttl: Duration,
        /// The login (token generation) it belongs to.
        owner: u64,
        /// When it ends, as last known.
        ends: Instant,
    },
    /// A secret with a version that can be checked cheaply.
    Versioned {
        /// The version read.
        version: String,
        /// What the backend checks (KV v2 metadata path, AWS secret id).
        check: String,
    },
    /// A secret without versions (KV v1 and other static reads).
    Unversioned,
    /// A certificate: replaced by a new one after its share of the lifetime,
    /// whatever happens to the login.
    Certificate,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Renew the lease.
    Renew,
    /// Ask whether the version moved.
    CheckVersion,
    /// Read the secret again (a new credential, or a re-read of a static one).
    Read,
}

/// A source's state between reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// What is held.
    pub held: Held,
    /// When the next renewal or check is due; `None`: never (a lease that
    /// can only be replaced).
    due: Option<Instant>,
    /// When the held credential must be replaced by a new read.
    replace_at: Option<Instant>,
}

impl Holding {
    /// The state right after a read at `now`. `issued_ttl` is the lease's
    /// original lifetime when it is older than this read (adopted from a
    /// previous run of the agent).
    pub fn after_read(fetched: &Fetched, issued_ttl: Option<Duration>, now: Instant, refresh: Refresh) -> Self {
        let refresh_due = Some(refresh.next(now));
        if let Some(c) = fetched.certificate {
            // ±5%: a renewal at 90% of the lifetime must stay before its end.
            let at = now + jitter(c.reissue_after, SPREAD / 2.0);
            return Holding { held: Held::Certificate, due: None, replace_at: Some(at) };
        }
        match (&fetched.lease, &fetched.version, &fetched.check) {
            (Some(l), _, _) => {
                let held = Held::Lease {
                    lease: l.clone(),
                    issued_ttl: issued_ttl.unwrap_or(l.ttl),
                    owner: fetched.owner,
                    ends: now + l.ttl,
                };
                if l.renewable && !l.ttl.is_zero() {
                    Holding { held, due: Some(now + jitter(renew_after(l.ttl), SPREAD)), replace_at: None }
                } else {
                    Holding { held, due: None, replace_at: Some(now + replace_after(l.ttl)) }
                }
            }
            (None, Some(version), Some(check)) => Holding {
                held: Held::Versioned { version: version.clone(), check: check.clone() },
                due: refresh_due,
                replace_at: None,
            },
            _ => Holding { held: Held::Unversioned, due: refresh_due, replace_at: None },
        }
    }

    /// What to do next and when, given the deadline of the token the lease
    /// belongs to, if that token is known to be ending.
    pub fn next(&self, owner_deadline: Option<Instant>) -> (Action, Instant) {
        let mut replace_at = self.replace_at;
        if let (Held::Lease { issued_ttl, .. }, Some(deadline)) = (&self.held, owner_deadline) {
            let at = deadline.checked_sub((*issued_ttl / 3).max(Duration::from_secs(2))).unwrap_or(deadline);
            replace_at = Some(replace_at.map_or(at, |r| r.min(at)));
        }
        match (replace_at, self.due) {
            (Some(r), Some(due)) if r <= due => (Action::Read, r),
            (Some(r), None) => (Action::Read, r),
            (_, Some(due)) => match self.held {
                Held::Lease { .. } => (Action::Renew, due),
                Held::Versioned { .. } => (Action::CheckVersion, due),
                Held::Unversioned | Held::Certificate => (Action::Read, due),
            },
            // A state with neither is not built; read rather than stall.
            (None, None) => (Action::Read, Instant::now()),
        }
    }

    /// The lease, when one is held.
    pub fn lease(&self) -> Option<&Lease> {
        match &self.held {
            Held::Lease { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// When the held lease ends, as last known.
    pub fn ends(&self) -> Option<Instant> {
        match &self.held {
            Held::Lease { ends, .. } => Some(*ends),
            _ => None,
        }
    }

    /// The lifetime renewals ask for.
    pub fn increment(&self) -> Duration {
        match &self.held {
            Held::Lease { issued_ttl, .. } => *issued_ttl,
            _ => Duration::ZERO,
        }
    }

    /// A renewal at `now` granted `granted`: renew again at two thirds of
    /// it, or, when it came back capped, replace while a third is left.
    /// Returns whether it was capped.
    pub fn renewed(&mut self, granted: Duration, now: Instant) -> bool {
        let Held::Lease { issued_ttl, ends, .. } = &mut self.held else { return false };
        *ends = now + granted;
        if capped(*issued_ttl, granted) {
            self.replace_at = Some(now + replace_after(granted));
            self.due = None;
            true
        } else {
            self.due = Some(now + jitter(renew_after(granted), SPREAD));
            false
        }
    }

    /// A renewal or check failed at `now`; try again after `delay`. Returns
    /// true when the lease has ended meanwhile, so only a new read helps.
    pub fn failed(&mut self, delay: Duration, now: Instant) -> bool {
        self.due = Some(now + delay);
        matches!(self.held, Held::Lease { ends, .. } if ends <= now)
    }

    /// The version check at `now` found the same version.
    pub fn unchanged(&mut self, now: Instant, refresh: Refresh) {
        self.due = Some(refresh.next(now));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::secret::Secret;

    fn fetched(lease: Option<Lease>, version: Option<&str>) -> Fetched {
        Fetched {
            certificate: None,
            secret: Arc::new(Secret::from_fields(serde_json::json!({}))),
            version: version.map(str::to_owned),
            lease,
            check: version.map(|_| "secret/metadata/app".to_owned()),
            owner: 7,
        }
    }

    fn lease(ttl: u64, renewable: bool) -> Lease {
        Lease { id: "database/creds/app/1".into(), ttl: Duration::from_secs(ttl), renewable }
    }

    fn secs(from: Instant, at: Instant) -> f64 {
        (at - from).as_secs_f64()
    }

    #[test]
    fn a_renewable_lease_is_renewed_at_two_thirds_with_jitter() {
        let now = Instant::now();
        let h = Holding::after_read(&fetched(Some(lease(30, true)), None), None, now, every(300));
        let (action, at) = h.next(None);
        assert_eq!(action, Action::Renew);
        assert!((18.0..=22.0).contains(&secs(now, at)), "{}", secs(now, at));
        assert_eq!(h.increment(), Duration::from_secs(30));
    }

    #[test]
    fn a_lease_that_cannot_be_renewed_is_replaced_with_a_third_left() {
        let now = Instant::now();
        let h = Holding::after_read(&fetched(Some(lease(30, false)), None), None, now, every(300));
        assert_eq!(h.next(None), (Action::Read, now + Duration::from_secs(20)));
    }

    #[test]
    fn a_capped_renewal_schedules_the_replacement_and_no_more_renewals() {
        let now = Instant::now();
        let mut h = Holding::after_read(&fetched(Some(lease(30, true)), None), None, now, every(300));
        let later = now + Duration::from_secs(20);
        assert!(!h.renewed(Duration::from_secs(30), later), "a full renewal is not capped");
        assert_eq!(h.next(None).0, Action::Renew);
        let last = later + Duration::from_secs(20);
        assert!(h.renewed(Duration::from_secs(9), last));
        assert_eq!(h.next(None), (Action::Read, last + Duration::from_secs(6)));
        // A very short rest is replaced with at least 2 s left (here: at once).
        assert!(h.renewed(Duration::from_secs(2), last));
        assert_eq!(h.next(None), (Action::Read, last));
    }

    #[test]
    fn the_end_of_the_owning_token_brings_the_replacement_forward() {
        let now = Instant::now();
        let h = Holding::after_read(&fetched(Some(lease(600, true)), None), None, now, every(300));
        // The token ends in 60 s; the lease was issued for 600 s: a third of
        // that is more than the token has left, so replace at once.
        let (action, at) = h.next(Some(now + Duration::from_secs(60)));
        assert!(action == Action::Read && at <= now, "{action:?} in {:?}", at - now);
        // Ending in an hour: replace 200 s before it (after renewals before that).
        let (action, at) = h.next(Some(now + Duration::from_secs(3600)));
        assert_eq!(action, Action::Renew, "the renewal at ~400 s comes first");
        assert!(at < now + Duration::from_secs(3400));
        // A static secret has no owner to follow.
        let s = Holding::after_read(&fetched(None, Some("3")), None, now, every(300));
        assert_eq!(s.next(Some(now)).0, Action::CheckVersion);
    }

    fn every(secs: u64) -> Refresh {
        Refresh { period: Duration::from_secs(secs), epoch: Instant::now() }
    }

    #[test]
    fn static_secrets_are_checked_or_read_again_every_refresh() {
        let now = Instant::now();
        let refresh = Refresh { period: Duration::from_secs(100), epoch: now };
        let mut v = Holding::after_read(&fetched(None, Some("3")), None, now, refresh);
        let (action, at) = v.next(None);
        assert_eq!(action, Action::CheckVersion);
        assert!((secs(now, at) - 100.0).abs() < 0.001);
        v.unchanged(at, refresh);
        assert!((secs(at, v.next(None).1) - 100.0).abs() < 0.001);
        let u = Holding::after_read(&fetched(None, None), None, now, refresh);
        assert_eq!(u.next(None).0, Action::Read);
        assert_eq!(u.held, Held::Unversioned);
    }

    #[test]
    fn a_failed_renewal_retries_after_the_delay_until_the_lease_has_ended() {
        let now = Instant::now();
        let mut h = Holding::after_read(&fetched(Some(lease(30, true)), None), None, now, every(300));
        assert!(!h.failed(Duration::from_secs(1), now + Duration::from_secs(20)));
        assert_eq!(h.next(None), (Action::Renew, now + Duration::from_secs(21)));
        assert!(h.failed(Duration::from_secs(1), now + Duration::from_secs(30)), "the lease has ended");
    }

    #[test]
    fn a_certificate_is_replaced_after_its_share_of_the_lifetime_and_ignores_logins() {
        let now = Instant::now();
        let mut f = fetched(None, None);
        f.certificate = Some(crate::backend::CertTimes {
            lifetime: Duration::from_secs(150),
            reissue_after: Duration::from_secs(100),
        });
        let h = Holding::after_read(&f, None, now, every(5));
        let (action, at) = h.next(Some(now));
        assert_eq!(action, Action::Read);
        assert!((95.0..=105.0).contains(&secs(now, at)), "{}", secs(now, at));
        assert_eq!(h.held, Held::Certificate);
    }

    #[test]
    fn an_adopted_lease_renews_for_its_original_lifetime() {
        let now = Instant::now();
        let h =
            Holding::after_read(&fetched(Some(lease(10, true)), None), Some(Duration::from_secs(60)), now, every(300));
        assert_eq!(h.increment(), Duration::from_secs(60));
    }
}
