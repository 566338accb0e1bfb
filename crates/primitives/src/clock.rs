//! The wall clock, as a seam: block timestamps and head ages read it through [`Clock`], so a
//! test or a deterministic simulation can set the time instead of waiting for it.
//!
//! Timers and timeouts (Raft's heartbeats and elections, block ticks) run on tokio's clock,
//! which tokio's paused time and simulators such as turmoil already control.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the time of day comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Seconds since the Unix epoch.
    fn now_s(&self) -> u64 {
        self.now_ms() / 1_000
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to (tests and simulation).
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn at(now_ms: u64) -> Self {
        Self {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Moves the clock `ms` forward.
    pub fn advance(&self, ms: u64) {
        self.now_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Sets the clock, backwards too (a clock jump).
    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }
}

/// A span as people read it in progress lines: `42s`, `1m35s`, `2h05m` (whole seconds).
pub fn human_duration(ms: u64) -> String {
    let seconds = ms / 1_000;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manual_clock_moves_only_when_told() {
        let clock = ManualClock::at(5_000);
        assert_eq!((clock.now_ms(), clock.now_s()), (5_000, 5));
        clock.advance(1_500);
        assert_eq!(clock.now_ms(), 6_500);
        clock.set(100);
        assert_eq!(clock.now_ms(), 100);
        assert!(SystemClock.now_s() > 1_700_000_000);
    }
}
