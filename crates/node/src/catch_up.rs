//! Progress of a node far behind the chain's present (a restart after a long stop, a learner
//! joining, the log after a snapshot), as log lines: where it is, how far behind, how fast it
//! applies and the time left; then one line when it has caught up.
//!
//! "Behind" is the age of the applied head's timestamp on the node's clock: every block is
//! stamped when sealed, so a head an hour old is about an hour of blocks behind, whichever node
//! it came from. Nothing here decides anything: the lines are for the operator.

use keel_primitives::human_duration;

/// How often a catching-up node reports, in ms of its clock.
pub(crate) const CATCH_UP_REPORT_INTERVAL_MS: u64 = 5_000;
/// Block times a head may lag before the node counts as catching up (the head-stale health
/// bound is 10 block times plus 2 s: a node reporting here is one `/health` calls stale).
pub(crate) const CATCH_UP_BLOCK_TIMES: u64 = 10;
const _: () = assert!(CATCH_UP_BLOCK_TIMES >= 2 && CATCH_UP_REPORT_INTERVAL_MS >= 1_000);

/// A catch-up under way: where and when it began, and the last report.
#[derive(Debug, Clone, Copy)]
struct Run {
    started_ms: u64,
    started_block: u64,
    reported_ms: u64,
    reported_block: u64,
}

/// Watches applied heads; says what to log.
#[derive(Debug, Clone)]
pub(crate) struct CatchUp {
    block_time_ms: u64,
    run: Option<Run>,
}

impl CatchUp {
    pub(crate) fn new(block_time_ms: u64) -> Self {
        Self {
            block_time_ms: block_time_ms.max(1),
            run: None,
        }
    }

    /// Block `number`, sealed at `timestamp_s`, was applied at `now_ms`: the line to log, if
    /// one is due.
    pub(crate) fn applied(&mut self, number: u64, timestamp_s: u64, now_ms: u64) -> Option<String> {
        let behind_ms = now_ms.saturating_sub(timestamp_s.saturating_mul(1_000));
        let far = behind_ms > CATCH_UP_BLOCK_TIMES * self.block_time_ms + 2_000;
        match (self.run, far) {
            (None, false) => None,
            (None, true) => {
                self.run = Some(Run {
                    started_ms: now_ms,
                    started_block: number,
                    reported_ms: now_ms,
                    reported_block: number,
                });
                Some(format!(
                    "catching up: block {number} is {} behind (about {} blocks)",
                    human_duration(behind_ms),
                    behind_ms / self.block_time_ms
                ))
            }
            (Some(run), true) => {
                let since = now_ms.saturating_sub(run.reported_ms);
                if since < CATCH_UP_REPORT_INTERVAL_MS {
                    return None;
                }
                let rate = (number - run.reported_block) as f64 * 1_000.0 / since as f64;
                // The chain grows meanwhile: the gap closes at the rate minus the block rate.
                let closing = rate - 1_000.0 / self.block_time_ms as f64;
                let blocks_behind = behind_ms / self.block_time_ms;
                let left = if closing > 0.0 {
                    format!(
                        "about {} left",
                        human_duration((blocks_behind as f64 / closing * 1_000.0) as u64)
                    )
                } else {
                    "not gaining on the chain".to_string()
                };
                self.run = Some(Run {
                    reported_ms: now_ms,
                    reported_block: number,
                    ..run
                });
                Some(format!(
                    "catching up: block {number}, {} behind (about {blocks_behind} blocks), \
                     {rate:.0} blocks/s, {left}",
                    human_duration(behind_ms)
                ))
            }
            (Some(run), false) => {
                self.run = None;
                Some(format!(
                    "caught up: block {number}, {} blocks applied in {}",
                    number.saturating_sub(run.started_block),
                    human_duration(now_ms.saturating_sub(run.started_ms))
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node an hour behind says so, reports every 5 s with its rate and time left, and says
    /// when it has caught up; a node on time says nothing.
    #[test]
    fn a_node_far_behind_reports_its_catch_up_and_its_end() {
        let mut catch_up = CatchUp::new(1_000);
        let now = 10_000_000;
        assert_eq!(catch_up.applied(50, now / 1_000 - 1, now), None);
        let first = catch_up.applied(100, now / 1_000 - 3_600, now).unwrap();
        assert_eq!(
            first,
            "catching up: block 100 is 1h00m behind (about 3600 blocks)"
        );
        assert_eq!(
            catch_up.applied(200, now / 1_000 - 3_500, now + 1_000),
            None
        );
        // 5 s later, 1,001 blocks on: 200 blocks/s gains 199 a second on a 3,000-block gap.
        let report = catch_up
            .applied(1_101, (now + 5_000) / 1_000 - 3_000, now + 5_000)
            .unwrap();
        assert_eq!(
            report,
            "catching up: block 1101, 50m00s behind (about 3000 blocks), 200 blocks/s, about 15s left"
        );
        let done = catch_up
            .applied(4_200, (now + 21_000) / 1_000, now + 21_000)
            .unwrap();
        assert_eq!(done, "caught up: block 4200, 4100 blocks applied in 21s");
        assert_eq!(
            catch_up.applied(4_201, (now + 22_000) / 1_000, now + 22_000),
            None
        );
    }
}
