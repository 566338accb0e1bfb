//! Progress of the long commands (`keel sim` soaks, `keel chaos`, `keel bench`), on stderr: a
//! line at most every `PROGRESS_INTERVAL`, with what is done, the rate and the time left, so a
//! run of minutes never looks hung. The results stay on stdout.

use std::time::{Duration, Instant};

/// The most often a progress line is printed.
pub(crate) const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// One long operation's progress.
#[derive(Debug)]
pub(crate) struct Progress {
    label: String,
    unit: &'static str,
    total: Option<u64>,
    started: Instant,
    last: Instant,
    interval: Duration,
}

/// `95.0` seconds as `1m35s` (rounded to the second).
fn duration(seconds: f64) -> String {
    keel_primitives::human_duration(seconds.max(0.0).round() as u64 * 1_000)
}

impl Progress {
    /// A progress of `total` `unit`s (`None`: open-ended), reported under `label`.
    pub(crate) fn new(label: impl Into<String>, total: Option<u64>, unit: &'static str) -> Self {
        let now = Instant::now();
        Self {
            label: label.into(),
            unit,
            total,
            started: now,
            last: now,
            interval: PROGRESS_INTERVAL,
        }
    }

    /// The line for `done` units after `elapsed`.
    fn line(&self, done: u64, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64();
        let rate = if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        };
        let mut line = format!("{}: {done}", self.label);
        if let Some(total) = self.total {
            let percent = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            line.push_str(&format!("/{total} {} ({percent:.0}%)", self.unit));
        } else {
            line.push_str(&format!(" {}", self.unit));
        }
        line.push_str(&format!(
            ", {rate:.1} {}/s, {} elapsed",
            self.unit,
            duration(seconds)
        ));
        if let Some(total) = self.total
            && rate > 0.0
            && done < total
        {
            line.push_str(&format!(
                ", about {} left",
                duration((total - done) as f64 / rate)
            ));
        }
        line
    }

    /// Notes that `done` units are done; prints a line if the last was long enough ago.
    pub(crate) fn update(&mut self, done: u64) {
        if self.last.elapsed() >= self.interval {
            self.last = Instant::now();
            eprintln!("{}", self.line(done, self.started.elapsed()));
        }
    }
}

/// Prints `label: N s of M s elapsed` every `PROGRESS_INTERVAL` until dropped: for an operation
/// that is one await (a chaos run) and knows only its planned length.
pub(crate) fn ticker(label: String, planned: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut progress = Progress::new(label, Some(planned.as_secs()), "s");
        let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
        tick.tick().await;
        loop {
            tick.tick().await;
            progress.last = Instant::now() - PROGRESS_INTERVAL;
            progress.update(progress.started.elapsed().as_secs().min(planned.as_secs()));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_says_what_is_done_the_rate_and_the_time_left() {
        let progress = Progress::new("sim", Some(1_000), "seeds");
        assert_eq!(
            progress.line(250, Duration::from_secs(100)),
            "sim: 250/1000 seeds (25%), 2.5 seeds/s, 1m40s elapsed, about 5m00s left"
        );
        assert_eq!(
            progress.line(1_000, Duration::from_secs(400)),
            "sim: 1000/1000 seeds (100%), 2.5 seeds/s, 6m40s elapsed"
        );
        let open = Progress::new("bench", None, "transactions");
        assert_eq!(
            open.line(30, Duration::from_secs(4000)),
            "bench: 30 transactions, 0.0 transactions/s, 1h06m elapsed"
        );
    }
}
