//! Rate limits for log lines that a loop or a storm could repeat without
//! end (accept errors, clients that do not take their answer, trace writes
//! on a full disk): the first line is logged at once, then at most one per
//! interval, each with the count of the lines suppressed since the last.
//!
//! Nothing in bitsgw logs per packet: a dropped packet is counted under its
//! reason (`show counters`, the metrics), never logged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of log line, limited to one per interval.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        LogLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`: if so, how many were
    /// suppressed since the last one logged (the count starts again);
    /// if not, this one is counted as suppressed.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.interval)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// A [`LogLimit`] that threads share (for a `static`).
#[derive(Debug)]
pub struct SharedLogLimit(Mutex<LogLimit>);

impl SharedLogLimit {
    /// At most one line per `interval`, from all threads together.
    pub const fn new(interval: Duration) -> Self {
        SharedLogLimit(Mutex::new(LogLimit::new(interval)))
    }

    /// [`LogLimit::allow`] now.
    pub fn allow(&self) -> Option<u64> {
        self.0.lock().ok()?.allow(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_once_per_interval_with_the_count_suppressed() {
        let mut limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(limit.allow(t0), Some(0), "the first line is logged");
        for i in 1..=99 {
            assert_eq!(limit.allow(t0 + Duration::from_millis(i * 10)), None);
        }
        // The next interval: one line, saying how many were held back.
        assert_eq!(limit.allow(t0 + Duration::from_secs(10)), Some(99));
        assert_eq!(limit.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(limit.allow(t0 + Duration::from_secs(25)), Some(1));
        // After a quiet interval nothing was suppressed.
        assert_eq!(limit.allow(t0 + Duration::from_secs(40)), Some(0));
    }

    #[test]
    fn shared_limit_counts_every_thread() {
        static LIMIT: SharedLogLimit = SharedLogLimit::new(Duration::from_secs(3600));
        assert_eq!(LIMIT.allow(), Some(0));
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..25).filter(|_| LIMIT.allow().is_some()).count()))
            .collect();
        let logged: usize = threads.into_iter().map(|t| t.join().unwrap_or(1)).sum();
        assert_eq!(logged, 0, "within the interval every line is suppressed");
        assert_eq!(LIMIT.0.lock().map(|l| l.suppressed).ok(), Some(100));
    }
}
