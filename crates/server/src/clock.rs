//! The server's clock. Every timestamp, timer and on-call lookup reads it.
//!
//! `now = origin + speed × (real_now − origin)`: with `KLAXON_CLOCK_SPEED=60`
//! a 30-minute escalation timeout passes in 30 seconds. Processes that share
//! a database (or a process restarted in a test) share one origin
//! (`KLAXON_CLOCK_ORIGIN`) and so agree on the time.

use std::time::{SystemTime, UNIX_EPOCH};

use klaxon_core::time::Millis;

/// A possibly accelerated wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin_ms: Millis,
    speed: f64,
    offset_ms: Millis,
}

impl Clock {
    /// A clock running `speed` times real time from `origin_ms` (default:
    /// now). Speed 1 is the real clock.
    pub fn new(speed: f64, origin_ms: Option<Millis>) -> Self {
        Clock {
            origin_ms: origin_ms.unwrap_or_else(real_now_ms),
            speed,
            offset_ms: 0,
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
        let real = real_now_ms();
        if self.speed == 1.0 {
            return real + self.offset_ms;
        }
        self.origin_ms + ((real - self.origin_ms) as f64 * self.speed) as Millis + self.offset_ms
    }

    /// How many clock milliseconds pass per real millisecond.
    pub fn speed(&self) -> f64 {
        self.speed
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
}
