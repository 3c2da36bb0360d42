//! Politeness towards Stripe: a client-side rate limit and one call at a time per
//! (customer, meter).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Spaces calls evenly at `per_second`. Stripe allows 1,000 meter events/s in live mode (25
/// writes/s in test mode); staying below it means the adapter's 429 retries are the exception.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        Self {
            interval: Duration::from_secs(1) / per_second,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits for the next free slot. Slots are handed out under the lock, waited for outside it.
    pub async fn acquire(&self) {
        let slot = {
            let mut next = self.next.lock().expect("rate limiter lock");
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// One async mutex per key: Stripe accepts one concurrent meter-event call per (customer,
/// meter), and two subscriptions of one customer can share a meter.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub fn get(&self, key: String) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .expect("keyed locks")
            .entry(key)
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_limiter_spaces_calls() {
        let l = Arc::new(RateLimiter::new(100));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move { l.acquire().await }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 50 calls at 100/s: the last one waits 49 intervals of 10 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(490));
    }
}
