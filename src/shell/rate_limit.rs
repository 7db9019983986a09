//! A token bucket shared by every writer of one client, so the configured
//! `clientConnection.qps`/`burst` bound what phalanx sends to the API server
//! (kube-rs has no client-side limiter of its own).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { qps, burst, state: Mutex::new(Bucket { tokens: burst, refilled: Instant::now() }) }
    }

    /// Waits until one request may be sent.
    pub async fn acquire(&self) {
        let wait = {
            let mut b = self.state.lock().await;
            let now = Instant::now();
            b.tokens = (b.tokens + now.duration_since(b.refilled).as_secs_f64() * self.qps).min(self.burst);
            b.refilled = now;
            b.tokens -= 1.0;
            // A negative balance is this caller's place in line.
            if b.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-b.tokens / self.qps) }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_passes_then_qps_paces() {
        let limiter = RateLimiter::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..10 {
            limiter.acquire().await;
        }
        let paced = start.elapsed().as_secs_f64();
        assert!((0.99..=1.01).contains(&paced), "10 more at 10 qps take a second, took {paced}");
    }
}
