//! The data directory's filesystem as gauges (`keel_disk_available_bytes`,
//! `keel_disk_total_bytes`), for the "disk filling" alerts: a full disk stops every write,
//! and a sequencer that cannot write cannot seal.

use std::path::PathBuf;
use std::time::Duration;

/// How often the filesystem is read.
pub(crate) const DISK_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);

/// Reads the filesystem holding `datadir` every [`DISK_SAMPLE_INTERVAL`], for the life of the
/// node. A read that fails (no such directory) leaves the gauges as they were.
pub(crate) async fn sample(datadir: PathBuf) {
    loop {
        match rustix::fs::statvfs(&datadir) {
            Ok(stat) => {
                let unit = stat.f_frsize;
                metrics::gauge!("keel_disk_available_bytes")
                    .set(stat.f_bavail.saturating_mul(unit) as f64);
                metrics::gauge!("keel_disk_total_bytes")
                    .set(stat.f_blocks.saturating_mul(unit) as f64);
            }
            Err(error) => {
                tracing::debug!(%error, path = %datadir.display(), "reading the data directory's filesystem")
            }
        }
        tokio::time::sleep(DISK_SAMPLE_INTERVAL).await;
    }
}
