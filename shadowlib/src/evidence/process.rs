//! The process's CPU, memory and I/O.

use serde::{Deserialize, Serialize};

use super::Moments;

/// The process's resource use, sampled by the rollout at each look (on Linux, unless it
/// was built [without it](crate::RolloutBuilder::without_process_sampling)).
///
/// Rates are per interval between two samples, so their [`Moments`] say both the typical
/// level and how much it moved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvidence {
    /// CPU used per wall-clock second, in cores (1.0 = one core busy all the time).
    pub cpu_cores: Moments,
    /// Resident memory in bytes at each sample.
    pub rss_bytes: Moments,
    /// Largest resident memory seen, in bytes.
    pub peak_rss_bytes: u64,
    /// Bytes per second the process read through any descriptor (files, sockets, pipes).
    pub read_bytes_per_second: Moments,
    /// Bytes per second the process wrote through any descriptor (files, sockets, pipes).
    pub write_bytes_per_second: Moments,
    /// Bytes per second fetched from storage devices (empty where the kernel does not say).
    pub storage_read_bytes_per_second: Moments,
    /// Bytes per second sent to storage devices (empty where the kernel does not say).
    pub storage_write_bytes_per_second: Moments,
}

impl ProcessEvidence {
    /// Adds another piece of process evidence (another interval or replica) to this one.
    pub fn merge(&mut self, other: &ProcessEvidence) {
        self.cpu_cores.merge(&other.cpu_cores);
        self.rss_bytes.merge(&other.rss_bytes);
        self.peak_rss_bytes = self.peak_rss_bytes.max(other.peak_rss_bytes);
        self.read_bytes_per_second
            .merge(&other.read_bytes_per_second);
        self.write_bytes_per_second
            .merge(&other.write_bytes_per_second);
        self.storage_read_bytes_per_second
            .merge(&other.storage_read_bytes_per_second);
        self.storage_write_bytes_per_second
            .merge(&other.storage_write_bytes_per_second);
    }
}
