//! When a failed call is sent again, and after how long.
//!
//! The decision is made on the error's `code` (SPEC, **Errors**), never on
//! the status alone: `429 queue_full` is retried, `429 too_many_queues` is
//! not. [`Idempotence`] says what a second send of a call could do, which
//! decides whether an ambiguous transport error (the request may have
//! reached the server) is retried: always for fetches, settlements and
//! reads, and for publishes only when the user opted in, because a
//! publish sent twice may be published twice.
//!
//! The waits are exponential with full jitter ([`Backoff`]); a server's
//! `Retry-After` replaces the computed wait, capped by
//! [`RetryPolicy::max_retry_after`].

use std::cell::Cell;
use std::time::Duration;

use crate::error::Error;

/// What sending a call twice can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotence {
    /// Nothing harmful: reads, fetches (a lost answer's lease expires and
    /// the message comes back), settlements (a second acknowledge is
    /// `invalid`), queue settings.
    Safe,
    /// A publish: if the first send reached the server, the message is
    /// published twice.
    Publish,
}

/// An exponential backoff: `base * 2^(n-1)`, capped at `max`, for the
/// n-th wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before the `n`-th retry (n ≥ 1), without jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// [`Backoff::delay`] with full jitter: uniform in `[delay/2, delay]`,
    /// so that many clients refused at once do not return at once.
    pub fn jittered(&self, n: u32) -> Duration {
        let delay = self.delay(n);
        let half = delay / 2;
        half + half.mul_f64(unit_random())
    }
}

/// How calls are retried. The default retries up to 8 times (9 sends),
/// waiting 50 ms, 100 ms, ... up to 5 s, or what `Retry-After` says, up to
/// 30 s; publishes are retried after a transport error only with
/// [`RetryPolicy::retry_ambiguous_publishes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first send (0: never retry).
    pub max_retries: u32,
    pub backoff: Backoff,
    /// The longest `Retry-After` honoured; a longer one waits this long.
    pub max_retry_after: Duration,
    /// Retry a publish whose request may have reached the server (a
    /// connection reset after sending). A retried publish may then be
    /// published twice, which at-least-once delivery allows: consumers
    /// deduplicate by `message_id` only for redeliveries, so a duplicate
    /// publish gets a new `message_id`. Off by default.
    pub retry_ambiguous_publishes: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            backoff: Backoff {
                base: Duration::from_millis(50),
                max: Duration::from_secs(5),
            },
            max_retry_after: Duration::from_secs(30),
            retry_ambiguous_publishes: false,
        }
    }
}

impl RetryPolicy {
    /// Never retry: every failure is returned as it happened.
    pub fn never() -> Self {
        RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        }
    }

    /// Whether `error`, the outcome of send number `retries + 1` of a call
    /// of kind `idempotence`, is worth another send, and after how long.
    pub fn next_wait(
        &self,
        error: &Error,
        idempotence: Idempotence,
        retries: u32,
    ) -> Option<Duration> {
        if retries >= self.max_retries {
            return None;
        }
        let retry = match error {
            // The server answered and changed nothing: safe for any call.
            Error::Api(api) => api.code.is_transient(),
            // No connection: nothing was sent.
            Error::Transport { connect: true, .. } => true,
            // Sent, answer lost: a publish may have gone through.
            Error::Transport { connect: false, .. } => {
                idempotence == Idempotence::Safe || self.retry_ambiguous_publishes
            }
            Error::Decode { .. } | Error::InvalidArgument(_) => false,
        };
        if !retry {
            return None;
        }
        Some(match error.retry_after() {
            Some(asked) => asked.min(self.max_retry_after),
            None => self.backoff.jittered(retries + 1),
        })
    }
}

/// A uniform random number in `[0, 1)` from a per-thread xorshift; jitter
/// needs spread, not quality, and this saves a dependency.
pub(crate) fn unit_random() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process, and differs per
    // instance; never zero for xorshift.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9E37_79B9_7F4A_7C15);
    hasher.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ApiError, Code};
    use hyper::StatusCode;

    fn api(code: &str, retry_after: Option<u64>) -> Error {
        Error::Api(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: Code::parse(code),
            message: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    fn transport(connect: bool) -> Error {
        Error::Transport {
            connect,
            source: "reset".into(),
        }
    }

    #[test]
    fn decided_by_code() {
        let p = RetryPolicy::default();
        for code in ["queue_full", "too_many_connections", "shutting_down"] {
            assert!(
                p.next_wait(&api(code, None), Idempotence::Publish, 0)
                    .is_some(),
                "{code}"
            );
        }
        for code in [
            "too_many_queues",
            "log_failed",
            "disk_full",
            "invalid_id",
            "timeout",
        ] {
            assert!(
                p.next_wait(&api(code, None), Idempotence::Safe, 0)
                    .is_none(),
                "{code}"
            );
        }
    }

    #[test]
    fn ambiguous_publishes_only_when_asked() {
        let p = RetryPolicy::default();
        assert!(p
            .next_wait(&transport(true), Idempotence::Publish, 0)
            .is_some());
        assert!(p
            .next_wait(&transport(false), Idempotence::Publish, 0)
            .is_none());
        assert!(p
            .next_wait(&transport(false), Idempotence::Safe, 0)
            .is_some());
        let opted = RetryPolicy {
            retry_ambiguous_publishes: true,
            ..p
        };
        assert!(opted
            .next_wait(&transport(false), Idempotence::Publish, 0)
            .is_some());
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap_and_retries_run_out() {
        let p = RetryPolicy {
            max_retry_after: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        assert_eq!(
            p.next_wait(&api("queue_full", Some(2)), Idempotence::Safe, 0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            p.next_wait(&api("queue_full", Some(3600)), Idempotence::Safe, 0),
            Some(Duration::from_secs(10))
        );
        assert!(p
            .next_wait(&api("queue_full", None), Idempotence::Safe, 8)
            .is_none());
        assert!(RetryPolicy::never()
            .next_wait(&api("queue_full", None), Idempotence::Safe, 0)
            .is_none());
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        let delays: Vec<u64> = (1..=6).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(delays, [10, 20, 40, 80, 100, 100]);
        assert_eq!(b.delay(200), Duration::from_millis(100));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let d = b.jittered(3);
            assert!(
                d >= Duration::from_millis(20) && d <= Duration::from_millis(40),
                "{d:?}"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 100, "jitter spreads: {} distinct", seen.len());
    }
}
