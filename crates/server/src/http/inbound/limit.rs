//! Rate limiting of inbound events: a token bucket per integration key,
//! in this process's memory.
//!
//! A bucket holds a minute's worth of events and refills continuously, so
//! a key may send its whole minute at once (an alert storm's first burst)
//! and then keeps its rate. Processes sharing a PostgreSQL database each
//! keep their own buckets: behind a load balancer over N processes a key
//! gets up to N times the rate.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Past this many buckets, full ones (keys quiet for a minute) are dropped.
const PRUNE_AT: usize = 10_000;

/// Token buckets by key.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_minute` events per minute per key, with a burst of as many;
    /// 0 lets everything through.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one event from `key`'s bucket; when it is empty, how long
    /// until the next event would be let through.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT && !buckets.contains_key(key) {
            buckets.retain(|_, b| level(b, now, per_second, capacity) < capacity);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        let tokens = level(bucket, now, per_second, capacity);
        bucket.at = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / per_second))
        }
    }
}

/// A bucket's tokens at `now`.
fn level(bucket: &Bucket, now: Instant, per_second: f64, capacity: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(capacity)
}

/// `Retry-After` seconds for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_a_minute_then_the_rate() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for i in 0..60 {
            assert_eq!(limiter.take_at("k", t0), Ok(()), "event {i} of the burst");
        }
        let wait = limiter.take_at("k", t0).expect_err("the 61st waits");
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        // Half a second later half a token is there: still refused, for
        // the other half second.
        let wait = limiter
            .take_at("k", t0 + Duration::from_millis(500))
            .expect_err("half a token");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        assert_eq!(retry_after_secs(wait), 1);
        assert_eq!(limiter.take_at("k", t0 + Duration::from_secs(1)), Ok(()));
        // Another key has its own bucket.
        assert_eq!(limiter.take_at("other", t0), Ok(()));
        // A quiet minute fills the bucket again, and no more than that.
        let later = t0 + Duration::from_secs(600);
        for _ in 0..60 {
            assert_eq!(limiter.take_at("k", later), Ok(()));
        }
        assert!(limiter.take_at("k", later).is_err());
    }

    #[test]
    fn zero_is_no_limit() {
        let limiter = RateLimiter::new(0);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(limiter.take_at("k", t0), Ok(()));
        }
    }

    #[test]
    fn quiet_keys_are_forgotten_past_the_bound() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for i in 0..PRUNE_AT {
            limiter.take_at(&format!("k{i}"), t0).expect("first event");
        }
        let later = t0 + Duration::from_secs(61);
        limiter.take_at("new", later).expect("first event");
        let buckets = limiter.buckets.lock().expect("lock");
        assert_eq!(buckets.len(), 1, "only the new key is kept");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
