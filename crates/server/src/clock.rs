//! The server's clock. Every timestamp, timer and on-call lookup reads it.
//!
//! `now = origin + speed × (real_now − origin)`: with `KLAXON_CLOCK_SPEED=60`
//! a 30-minute escalation timeout passes in 30 seconds. Processes that share
//! a database (or a process restarted in a test) share one origin
//! (`KLAXON_CLOCK_ORIGIN`) and so agree on the time.
//!
//! Tests use a manual clock instead ([`Clock::manual`]): it stands still
//! until told to move ([`Clock::advance`], [`Clock::set`]), so a test can
//! put the server exactly one millisecond before a timer is due, run the
//! engine once (`engine::run_due`) and see that nothing fired.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use klaxon_core::time::Millis;

/// A possibly accelerated wall clock, or a manual one for tests.
///
/// Cheap to clone, so the server hands the same clock to the engine and to
/// every request; clones of a manual clock share its hands.
#[derive(Debug, Clone)]
pub struct Clock {
    source: Source,
    offset_ms: Millis,
}

#[derive(Debug, Clone)]
enum Source {
    /// `origin + speed × (real_now − origin)`.
    Scaled { origin_ms: Millis, speed: f64 },
    /// Whatever the test last set, shared by every clone.
    Manual(std::sync::Arc<AtomicI64>),
}

impl Clock {
    /// A clock running `speed` times real time from `origin_ms` (default:
    /// now). Speed 1 is the real clock.
    pub fn new(speed: f64, origin_ms: Option<Millis>) -> Self {
        Clock {
            source: Source::Scaled {
                origin_ms: origin_ms.unwrap_or_else(real_now_ms),
                speed,
            },
            offset_ms: 0,
        }
    }

    /// A clock standing still at `now_ms` until [`advance`](Self::advance)d
    /// or [`set`](Self::set). Copies share it: moving one moves them all.
    pub fn manual(now_ms: Millis) -> Self {
        Clock {
            source: Source::Manual(std::sync::Arc::new(AtomicI64::new(now_ms))),
            offset_ms: 0,
        }
    }

    /// Moves a manual clock forward by `by` and returns the new instant.
    ///
    /// # Panics
    ///
    /// If the clock is not manual (only tests move time by hand).
    pub fn advance(&self, by: Duration) -> Millis {
        let by = Millis::try_from(by.as_millis()).unwrap_or(Millis::MAX);
        let cell = self.hands();
        let before = cell.fetch_add(by, Ordering::SeqCst);
        before + by + self.offset_ms
    }

    /// Sets a manual clock so that [`now_ms`](Self::now_ms) reads `now_ms`
    /// (it may go backwards; a test decides).
    ///
    /// # Panics
    ///
    /// If the clock is not manual.
    pub fn set(&self, now_ms: Millis) {
        self.hands()
            .store(now_ms - self.offset_ms, Ordering::SeqCst);
    }

    fn hands(&self) -> &AtomicI64 {
        match &self.source {
            Source::Manual(cell) => cell,
            Source::Scaled { .. } => panic!("only a manual clock can be moved by hand"),
        }
    }

    /// The same clock shifted by a constant (benchmarks schedule work in
    /// the future, then run the engine as if that future were now).
    pub fn shifted(self, offset_ms: Millis) -> Self {
        Clock {
            offset_ms: self.offset_ms + offset_ms,
            ..self
        }
    }

    /// The current instant on this clock.
    pub fn now_ms(&self) -> Millis {
        match &self.source {
            Source::Manual(cell) => cell.load(Ordering::SeqCst) + self.offset_ms,
            &Source::Scaled { origin_ms, speed } => {
                let real = real_now_ms();
                if speed == 1.0 {
                    return real + self.offset_ms;
                }
                origin_ms + ((real - origin_ms) as f64 * speed) as Millis + self.offset_ms
            }
        }
    }

    /// How many clock milliseconds pass per real millisecond; `None` for a
    /// manual clock, on which time passes only when a test moves it.
    pub fn speed(&self) -> Option<f64> {
        match &self.source {
            Source::Scaled { speed, .. } => Some(*speed),
            Source::Manual(_) => None,
        }
    }
}

fn real_now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_speed_tracks_the_system_clock() {
        let c = Clock::new(1.0, None);
        let diff = (c.now_ms() - real_now_ms()).abs();
        assert!(diff < 1000, "{diff}");
    }

    #[test]
    fn fast_clock_runs_ahead_from_its_origin() {
        let origin = real_now_ms() - 1000;
        let c = Clock::new(60.0, Some(origin));
        let elapsed = c.now_ms() - origin;
        // One real second at least has passed: at least a clock minute.
        assert!(elapsed >= 60_000, "{elapsed}");
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_copies_share_it() {
        let c = Clock::manual(1_000);
        let copy = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        assert_eq!(c.advance(Duration::from_secs(60)), 61_000);
        assert_eq!(copy.now_ms(), 61_000);
        copy.set(5);
        assert_eq!(c.now_ms(), 5);
        assert_eq!(c.speed(), None);
    }

    #[test]
    fn a_shifted_manual_clock_shares_the_hands() {
        let c = Clock::manual(1_000);
        let later = c.clone().shifted(500);
        assert_eq!(later.now_ms(), 1_500);
        later.set(2_000);
        assert_eq!(c.now_ms(), 1_500);
        assert_eq!(later.advance(Duration::from_millis(1)), 2_001);
    }

    #[test]
    #[should_panic(expected = "manual clock")]
    fn a_real_clock_cannot_be_moved() {
        Clock::new(1.0, None).advance(Duration::from_secs(1));
    }
}
