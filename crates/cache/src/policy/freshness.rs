//! How long a stored response may be reused and how a request may use it.

use std::time::{Duration, Instant};

use crate::cache_control::CacheControl;

/// How long a stored response may be reused, fixed when it is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Freshness {
    /// Freshness lifetime (RFC 9111 §4.2.1).
    pub lifetime: Duration,
    /// Age at the moment of storing, `corrected_initial_age` of §4.2.3.
    pub initial_age: Duration,
    /// How long past its lifetime the response may be served while it is
    /// revalidated in the background.
    pub stale_while_revalidate: Duration,
    /// How long past its lifetime the response may be served when the
    /// origin fails.
    pub stale_if_error: Duration,
    /// A stale response may never be served without revalidation.
    pub must_revalidate: bool,
    /// The response must be revalidated before every use.
    pub no_cache: bool,
    /// The lifetime comes from the `Last-Modified` heuristic; a route's
    /// `default_ttl` counts as explicit because an operator chose it.
    pub heuristic: bool,
}

/// How a stored response may be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it as it is.
    Fresh,
    /// Serve it stale because the request's `max-stale` allows it.
    Stale,
    /// Serve it stale and revalidate it in the background.
    StaleWhileRevalidate,
    /// Revalidate with the origin before use.
    Revalidate,
}

impl Freshness {
    /// Fresh for `lifetime`, stored at age zero, no stale windows: the
    /// fixture of unit tests that need an entry.
    #[cfg(test)]
    pub(crate) fn for_tests(lifetime: Duration) -> Self {
        Self {
            lifetime,
            initial_age: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
            no_cache: false,
            heuristic: false,
        }
    }

    /// True when `age` is within the lifetime and no revalidation is required.
    pub fn is_fresh(&self, age: Duration) -> bool {
        !self.no_cache && age < self.lifetime
    }

    /// How far `age` is past the freshness lifetime.
    pub fn staleness(&self, age: Duration) -> Duration {
        age.saturating_sub(self.lifetime)
    }

    /// True when a response of this age may be served because revalidation
    /// failed (RFC 5861 `stale-if-error`).
    pub fn usable_if_error(&self, age: Duration) -> bool {
        !self.must_revalidate && self.staleness(age) < self.stale_if_error
    }

    /// How long after storing the entry stops being useful without
    /// validators: its lifetime plus the longer stale window, minus the age
    /// it arrived with. Entries with validators may be kept longer.
    pub fn time_to_live(&self) -> Duration {
        let window = self.stale_while_revalidate.max(self.stale_if_error);
        self.lifetime
            .saturating_add(window)
            .saturating_sub(self.initial_age)
    }
}

/// The age of a stored response now (RFC 9111 §4.2.3): its initial age plus
/// the time it has been stored.
pub fn current_age(f: &Freshness, stored_at: Instant, now: Instant) -> Duration {
    f.initial_age
        .saturating_add(now.saturating_duration_since(stored_at))
}

/// Decides how a stored response of `age` may be used for a request with
/// the directives `request` (RFC 9111 §4.2, §5.2.1; RFC 5861).
///
/// `only-if-cached` is left to the caller, which answers `504` instead of
/// revalidating.
pub fn reuse(f: &Freshness, age: Duration, request: &CacheControl) -> Reuse {
    if f.no_cache || request.no_cache {
        return Reuse::Revalidate;
    }
    let secs = Duration::from_secs;
    // A request `max-age` or `min-fresh` asks for a fresher response than
    // the stored one: that is a wish for revalidation, not permission to
    // serve stale, so it never falls through to the stale rules.
    if request.max_age.is_some_and(|max| age > secs(max)) {
        return Reuse::Revalidate;
    }
    if age < f.lifetime {
        let remaining = f.lifetime - age;
        return match request.min_fresh {
            Some(min) if remaining < secs(min) => Reuse::Revalidate,
            _ => Reuse::Fresh,
        };
    }
    if f.must_revalidate {
        return Reuse::Revalidate;
    }
    let staleness = f.staleness(age);
    if request.max_stale.is_some_and(|max| staleness <= secs(max)) {
        Reuse::Stale
    } else if staleness < f.stale_while_revalidate {
        Reuse::StaleWhileRevalidate
    } else {
        Reuse::Revalidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn current_age_adds_resident_time() {
        let f = fresh(60);
        let stored = Instant::now();
        let later = stored + secs(5);
        assert_eq!(current_age(&f, stored, later), secs(5) + f.initial_age);
        assert_eq!(current_age(&f, later, stored), f.initial_age);
    }

    fn fresh(lifetime: u64) -> Freshness {
        Freshness {
            lifetime: secs(lifetime),
            initial_age: secs(1),
            stale_while_revalidate: secs(10),
            stale_if_error: secs(100),
            must_revalidate: false,
            no_cache: false,
            heuristic: false,
        }
    }

    #[test]
    fn reuse_decisions() {
        let f = fresh(60);
        let none = CacheControl::default();
        assert_eq!(reuse(&f, secs(10), &none), Reuse::Fresh);
        assert_eq!(reuse(&f, secs(65), &none), Reuse::StaleWhileRevalidate);
        assert_eq!(reuse(&f, secs(75), &none), Reuse::Revalidate);
        assert_eq!(
            reuse(&f, secs(10), &CacheControl::parse(b"no-cache")),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(&f, secs(10), &CacheControl::parse(b"max-age=5")),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(&f, secs(10), &CacheControl::parse(b"min-fresh=55")),
            Reuse::Revalidate
        );
        assert_eq!(
            reuse(&f, secs(10), &CacheControl::parse(b"min-fresh=50")),
            Reuse::Fresh
        );
        assert_eq!(
            reuse(&f, secs(90), &CacheControl::parse(b"max-stale")),
            Reuse::Stale
        );
        assert_eq!(
            reuse(&f, secs(90), &CacheControl::parse(b"max-stale=20")),
            Reuse::Revalidate
        );
        let must = Freshness {
            must_revalidate: true,
            ..f
        };
        assert_eq!(
            reuse(&must, secs(65), &CacheControl::parse(b"max-stale")),
            Reuse::Revalidate
        );
        let no_cache = Freshness {
            no_cache: true,
            ..f
        };
        assert_eq!(reuse(&no_cache, secs(1), &none), Reuse::Revalidate);
    }

    #[test]
    fn freshness_helpers() {
        let f = fresh(60);
        assert!(f.is_fresh(secs(59)) && !f.is_fresh(secs(60)));
        assert_eq!(f.staleness(secs(70)), secs(10));
        assert!(f.usable_if_error(secs(150)) && !f.usable_if_error(secs(160)));
        assert!(
            !Freshness {
                must_revalidate: true,
                ..f
            }
            .usable_if_error(secs(61))
        );
        assert_eq!(f.time_to_live(), secs(159));
    }
}
