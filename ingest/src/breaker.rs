//! A per-node circuit breaker: stops an ingest node from hammering a collector node that
//! keeps failing, and probes it with one trial call once it has had time to recover.
//!
//! ```text
//!            threshold consecutive failures
//!   Closed ────────────────────────────────> Open ──(open_for passed, allow())──> HalfOpen
//!     ^  \__ on_success resets the count      ^                                    │ one trial
//!     │                                       └──────── trial fails (timer restarts)┤
//!     └──────────────────────────────────────────────── trial succeeds ─────────────┘
//! ```
//!
//! The forwarder asks `allow(now)` before each call to a node and reports the outcome with
//! `on_success` / `on_failure(now)`. While the breaker refuses, the forwarder spools the
//! batch (hinted hand-off) instead of waiting on a node that is known to be failing.
//! Time is always passed in (`Instant`), so behaviour is deterministic and testable.
//!
//! A trial that never reports (its task was dropped) would otherwise keep the breaker
//! refusing forever, so a trial's lease expires after `open_for`: the next `allow()` then
//! lets a new trial through.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// What the breaker does with calls to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go out; consecutive failures are counted.
    Closed,
    /// Calls are refused until `open_for` has passed.
    Open,
    /// One trial call decides: success closes, failure opens again.
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Closed,
    Open {
        since: Instant,
    },
    /// `trial_since`: when the outstanding trial went out.
    HalfOpen {
        trial_since: Instant,
    },
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    consecutive_failures: u32,
    opened_count: u64,
}

/// Thread-safe circuit breaker for one collector node; share it behind an `Arc`.
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// `failure_threshold` consecutive failures open the breaker (0 is treated as 1);
    /// it stays open for `open_for` before a trial call is allowed.
    pub fn new(failure_threshold: u32, open_for: Duration) -> Self {
        Self {
            failure_threshold: failure_threshold.max(1),
            open_for,
            inner: Mutex::new(Inner {
                phase: Phase::Closed,
                consecutive_failures: 0,
                opened_count: 0,
            }),
        }
    }

    /// May a call go out now? Closed: yes. Open: no until `open_for` has passed since it
    /// opened; then it becomes HalfOpen and lets exactly one trial call through (further
    /// calls are refused until that trial reports, or its lease of `open_for` expires).
    pub fn allow(&self, now: Instant) -> bool {
        let mut inner = self.inner.lock();
        match inner.phase {
            Phase::Closed => true,
            Phase::Open { since } => {
                if self.elapsed(since, now) {
                    inner.phase = Phase::HalfOpen { trial_since: now };
                    true
                } else {
                    false
                }
            }
            Phase::HalfOpen { trial_since } => {
                let lease_over = self.elapsed(trial_since, now);
                if lease_over {
                    inner.phase = Phase::HalfOpen { trial_since: now };
                }
                lease_over
            }
        }
    }

    /// A call succeeded: the breaker closes and the failure count starts again.
    pub fn on_success(&self) {
        let mut inner = self.inner.lock();
        inner.phase = Phase::Closed;
        inner.consecutive_failures = 0;
    }

    /// A call failed. Closed: counted, and `failure_threshold` in a row open the breaker.
    /// HalfOpen: the trial failed, so it opens again with a fresh timer. Open: a late
    /// report of a call made before it opened; ignored so it does not extend the timer.
    pub fn on_failure(&self, now: Instant) {
        let mut inner = self.inner.lock();
        match inner.phase {
            Phase::Closed => {
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                if inner.consecutive_failures >= self.failure_threshold {
                    Self::open(&mut inner, now);
                }
            }
            Phase::HalfOpen { .. } => Self::open(&mut inner, now),
            Phase::Open { .. } => {}
        }
    }

    /// The state as of `now`; an Open breaker whose timer has passed reports HalfOpen
    /// (the next `allow` lets the trial through).
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.inner.lock().phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { since } if self.elapsed(since, now) => CircuitState::HalfOpen,
            Phase::Open { .. } => CircuitState::Open,
            Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// How many times the breaker has opened (including re-opens after a failed trial).
    pub fn opened_count(&self) -> u64 {
        self.inner.lock().opened_count
    }

    /// Failures in a row while closed (reset by a success or by opening).
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.lock().consecutive_failures
    }

    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold
    }

    pub fn open_for(&self) -> Duration {
        self.open_for
    }

    fn open(inner: &mut Inner, now: Instant) {
        inner.phase = Phase::Open { since: now };
        inner.consecutive_failures = 0;
        inner.opened_count += 1;
    }

    /// Has `open_for` passed since `since`? (An `Instant` earlier than `since` has not.)
    fn elapsed(&self, since: Instant, now: Instant) -> bool {
        now.saturating_duration_since(since) >= self.open_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(5);

    #[test]
    fn closed_counts_consecutive_failures_and_success_resets() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(3, OPEN_FOR);
        assert!(b.allow(t0));
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), CircuitState::Closed);
        assert_eq!(b.consecutive_failures(), 2);
        b.on_success();
        assert_eq!(b.consecutive_failures(), 0);
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), CircuitState::Closed, "not consecutive: 2 < 3");
        assert!(b.allow(t0));
        assert_eq!(b.opened_count(), 0);
    }

    #[test]
    fn threshold_opens_then_one_trial_after_open_for() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(2, OPEN_FOR);
        b.on_failure(t0);
        b.on_failure(t0);
        assert_eq!(b.state(t0), CircuitState::Open);
        assert_eq!(b.opened_count(), 1);
        assert!(!b.allow(t0));
        assert!(!b.allow(t0 + OPEN_FOR - Duration::from_millis(1)));
        assert_eq!(b.state(t0 + OPEN_FOR), CircuitState::HalfOpen);
        // state() does not consume the trial.
        assert!(b.allow(t0 + OPEN_FOR), "exactly one trial");
        assert!(!b.allow(t0 + OPEN_FOR), "second call waits for the trial");
        assert!(!b.allow(t0 + OPEN_FOR + Duration::from_secs(1)));
        assert_eq!(b.state(t0 + OPEN_FOR), CircuitState::HalfOpen);
        b.on_success();
        assert_eq!(b.state(t0 + OPEN_FOR), CircuitState::Closed);
        assert!(b.allow(t0 + OPEN_FOR));
        assert!(b.allow(t0 + OPEN_FOR));
        assert_eq!(b.opened_count(), 1);
    }

    #[test]
    fn failed_trial_reopens_with_a_fresh_timer() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(1, OPEN_FOR);
        b.on_failure(t0);
        let t1 = t0 + OPEN_FOR + Duration::from_secs(2);
        assert!(b.allow(t1));
        b.on_failure(t1);
        assert_eq!(b.opened_count(), 2);
        assert_eq!(b.state(t1), CircuitState::Open);
        // The timer restarted at t1, not t0.
        assert!(!b.allow(t0 + 2 * OPEN_FOR));
        assert_eq!(b.state(t1 + OPEN_FOR), CircuitState::HalfOpen);
        assert!(b.allow(t1 + OPEN_FOR));
        b.on_success();
        assert_eq!(b.state(t1 + OPEN_FOR), CircuitState::Closed);
        // Closed again: the threshold counts from zero.
        b.on_failure(t1 + OPEN_FOR);
        assert_eq!(b.opened_count(), 3);
    }

    #[test]
    fn late_failure_while_open_does_not_extend_the_timer() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(1, OPEN_FOR);
        b.on_failure(t0);
        b.on_failure(t0 + Duration::from_secs(4));
        assert_eq!(b.opened_count(), 1);
        assert!(b.allow(t0 + OPEN_FOR));
    }

    #[test]
    fn a_lost_trial_expires_after_open_for() {
        let t0 = Instant::now();
        let b = CircuitBreaker::new(1, OPEN_FOR);
        b.on_failure(t0);
        let trial = t0 + OPEN_FOR;
        assert!(b.allow(trial));
        assert!(!b.allow(trial + OPEN_FOR - Duration::from_millis(1)));
        assert!(
            b.allow(trial + OPEN_FOR),
            "the unreported trial's lease expired"
        );
        assert!(!b.allow(trial + OPEN_FOR));
    }

    #[test]
    fn zero_threshold_acts_as_one_and_is_thread_safe() {
        let t0 = Instant::now();
        let b = std::sync::Arc::new(CircuitBreaker::new(0, OPEN_FOR));
        assert!(b.allow(t0));
        b.on_failure(t0);
        assert_eq!(b.state(t0), CircuitState::Open);
        let later = t0 + OPEN_FOR;
        let granted: usize = (0..8)
            .map(|_| {
                let b = std::sync::Arc::clone(&b);
                std::thread::spawn(move || b.allow(later) as usize)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(granted, 1, "one trial among racing callers");
    }

    #[test]
    fn state_serializes_snake_case() {
        assert_eq!(
            serde_json::to_string(&CircuitState::HalfOpen).unwrap(),
            "\"half_open\""
        );
    }
}
