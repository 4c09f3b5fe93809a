//! Process context: CPU, resident memory and I/O of the whole process, sampled each look.
//!
//! Both builds share the process, so these numbers are not attributed to either; they tell
//! the predictor whether the process as a whole is near a limit while the candidate's share
//! grows (a candidate that is fine per request can still push a busy process over the edge).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use thiserror::Error;

use super::{MetricError, MetricSource};
use crate::evidence::{Evidence, ProcessEvidence};

/// The process's cumulative counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessSample {
    /// CPU time used by all the process's threads since it started (user + system).
    pub(crate) cpu_time: Duration,
    /// Resident memory in bytes.
    pub(crate) rss_bytes: u64,
    /// I/O counters, where the kernel lets the process read them.
    pub(crate) io: Option<IoCounters>,
}

/// The process's cumulative I/O counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IoCounters {
    /// Bytes read through any descriptor (files, sockets, pipes).
    pub(crate) read_bytes: u64,
    /// Bytes written through any descriptor (files, sockets, pipes).
    pub(crate) write_bytes: u64,
    /// Bytes fetched from storage devices.
    pub(crate) storage_read_bytes: u64,
    /// Bytes sent to storage devices.
    pub(crate) storage_write_bytes: u64,
}

/// The process's counters could not be read.
#[derive(Debug, Error)]
pub(crate) enum ProcessError {
    /// This platform has no process statistics shadowlib can read (only Linux has), or
    /// the process runs under valgrind, where reading them would fault.
    #[error("process statistics are not available on this platform")]
    Unsupported,
    /// A file under `/proc/self` could not be read or parsed.
    #[error("reading /proc/self/{file} failed: {message}")]
    Read {
        /// The file, such as `stat`.
        file: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Reads the process's counters now.
pub(crate) fn sample_process() -> Result<ProcessSample, ProcessError> {
    procfs_reader::sample()
}

/// Reads `/proc/self/stat` and `/proc/self/io` directly: four numbers from two short
/// text files do not justify the `procfs` crate and its dependencies in every user's build.
#[cfg(target_os = "linux")]
mod procfs_reader {
    use std::time::Duration;

    use super::{IoCounters, ProcessError, ProcessSample};

    fn read(file: &'static str) -> Result<String, ProcessError> {
        std::fs::read_to_string(format!("/proc/self/{file}")).map_err(|e| ProcessError::Read {
            file,
            message: e.to_string(),
        })
    }

    /// `utime`, `stime` (clock ticks) and `rss` (pages) from the text of `/proc/self/stat`.
    pub(super) fn parse_stat(stat: &str) -> Option<(u64, u64, u64)> {
        // The command name (field 2) is in parentheses and may hold spaces or
        // parentheses itself: the fields that follow start after the last `)`.
        let after_name = &stat[stat.rfind(')')? + 1..];
        // Field 3 (the state) is the first of these; utime is field 14.
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
        Some((field(14)?, field(15)?, field(24)?))
    }

    /// The counters of `/proc/self/io`, from its text.
    pub(super) fn parse_io(io: &str) -> Option<IoCounters> {
        let value = |key: &str| {
            io.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some(IoCounters {
            read_bytes: value("rchar")?,
            write_bytes: value("wchar")?,
            storage_read_bytes: value("read_bytes")?,
            storage_write_bytes: value("write_bytes")?,
        })
    }

    pub(super) fn sample() -> Result<ProcessSample, ProcessError> {
        if crate::metrics::under_valgrind() {
            // The clock-tick and page-size readings below would fault there.
            return Err(ProcessError::Unsupported);
        }
        let stat = read("stat")?;
        let (utime, stime, rss_pages) = parse_stat(&stat).ok_or_else(|| ProcessError::Read {
            file: "stat",
            message: "fields 14, 15 and 24 are not all numbers".to_owned(),
        })?;
        let ticks_per_second = rustix::param::clock_ticks_per_second().max(1);
        let ticks = utime + stime;
        let cpu_time = Duration::from_secs(ticks / ticks_per_second)
            + Duration::from_nanos((ticks % ticks_per_second) * 1_000_000_000 / ticks_per_second);
        // Some sandboxes hide /proc/self/io; memory and CPU are still worth having.
        let io = read("io").ok().and_then(|io| parse_io(&io));
        let page_size = rustix::param::page_size() as u64;
        Ok(ProcessSample {
            cpu_time,
            rss_bytes: rss_pages.saturating_mul(page_size),
            io,
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod procfs_reader {
    use super::{ProcessError, ProcessSample};

    pub(super) fn sample() -> Result<ProcessSample, ProcessError> {
        Err(ProcessError::Unsupported)
    }
}

/// Samples the process's CPU, memory and I/O at each look and serves them as
/// [`Evidence::process`].
///
/// Samples closer together than the minimum gap (250 ms unless changed) are skipped, so
/// looks taken in quick succession do not measure rates over a few microseconds. A failed
/// sample is logged and skipped: process context never holds a rollout up.
#[derive(Debug)]
pub(crate) struct ProcessSampler {
    min_gap: Duration,
    state: Mutex<SamplerState>,
}

#[derive(Debug, Default)]
struct SamplerState {
    last: Option<(Instant, ProcessSample)>,
    evidence: ProcessEvidence,
}

impl Default for ProcessSampler {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessSampler {
    /// A sampler with no samples yet and a minimum gap of 250 ms between samples.
    pub(crate) fn new() -> Self {
        Self {
            min_gap: Duration::from_millis(250),
            state: Mutex::new(SamplerState::default()),
        }
    }

    /// Sets the shortest time between two samples taken by [`collect`](MetricSource::collect).
    #[cfg(test)]
    pub(crate) fn with_min_gap(mut self, min_gap: Duration) -> Self {
        self.min_gap = min_gap;
        self
    }

    /// Takes a sample now and adds it to the evidence.
    pub(crate) fn sample(&self) -> Result<(), ProcessError> {
        let sample = sample_process()?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.add(Instant::now(), sample);
        Ok(())
    }

    /// Everything sampled so far.
    pub(crate) fn evidence(&self) -> ProcessEvidence {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .evidence
            .clone()
    }

    fn sample_if_due(&self) {
        let due = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state
                .last
                .is_none_or(|(at, _)| at.elapsed() >= self.min_gap)
        };
        if !due {
            return;
        }
        match self.sample() {
            Ok(()) | Err(ProcessError::Unsupported) => {}
            Err(e) => tracing::warn!(error = %e, "process sample skipped"),
        }
    }
}

impl SamplerState {
    fn add(&mut self, at: Instant, sample: ProcessSample) {
        let evidence = &mut self.evidence;
        evidence.rss_bytes.add(sample.rss_bytes as f64);
        evidence.peak_rss_bytes = evidence.peak_rss_bytes.max(sample.rss_bytes);
        if let Some((last_at, last)) = self.last {
            let seconds = at.duration_since(last_at).as_secs_f64();
            if seconds > 0.0 {
                let cpu = sample.cpu_time.saturating_sub(last.cpu_time).as_secs_f64();
                evidence.cpu_cores.add(cpu / seconds);
                if let (Some(now), Some(before)) = (sample.io, last.io) {
                    let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
                    evidence
                        .read_bytes_per_second
                        .add(rate(now.read_bytes, before.read_bytes));
                    evidence
                        .write_bytes_per_second
                        .add(rate(now.write_bytes, before.write_bytes));
                    evidence
                        .storage_read_bytes_per_second
                        .add(rate(now.storage_read_bytes, before.storage_read_bytes));
                    evidence
                        .storage_write_bytes_per_second
                        .add(rate(now.storage_write_bytes, before.storage_write_bytes));
                }
            }
        }
        self.last = Some((at, sample));
    }
}

#[async_trait]
impl MetricSource for ProcessSampler {
    fn name(&self) -> &str {
        "process"
    }

    async fn collect(&self, into: &mut Evidence) -> Result<(), MetricError> {
        self.sample_if_due();
        let evidence = self.evidence();
        if evidence.rss_bytes.count() == 0 {
            return Ok(());
        }
        match &mut into.process {
            Some(process) => process.merge(&evidence),
            None => into.process = Some(evidence),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu_ms: u64, rss: u64, written: u64) -> ProcessSample {
        ProcessSample {
            cpu_time: Duration::from_millis(cpu_ms),
            rss_bytes: rss,
            io: Some(IoCounters {
                write_bytes: written,
                ..IoCounters::default()
            }),
        }
    }

    #[test]
    fn rates_are_per_second_between_samples() {
        let mut state = SamplerState::default();
        let t0 = Instant::now();
        state.add(t0, sample(1_000, 100, 0));
        state.add(t0 + Duration::from_secs(2), sample(2_000, 300, 4_000));
        let e = &state.evidence;
        assert_eq!(e.rss_bytes.count(), 2);
        assert_eq!(e.peak_rss_bytes, 300);
        // One second of CPU over two of wall time: half a core.
        assert!((e.cpu_cores.mean() - 0.5).abs() < 1e-9);
        assert!((e.write_bytes_per_second.mean() - 2_000.0).abs() < 1e-9);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn looks_closer_than_the_gap_share_one_sample() {
        let sampler = ProcessSampler::new().with_min_gap(Duration::from_secs(3600));
        let versions = || (crate::Version::new("p", "1"), crate::Version::new("p", "2"));
        let mut first = Evidence::new(versions().0, versions().1);
        let mut second = Evidence::new(versions().0, versions().1);
        sampler.collect(&mut first).await.expect("never fails");
        sampler.collect(&mut second).await.expect("never fails");
        assert!(first.process.is_some());
        assert_eq!(first.process, second.process);
        assert_eq!(sampler.evidence().rss_bytes.count(), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn stat_and_io_are_read_field_by_field() {
        // A command name with a space and a parenthesis, as a process may be named.
        let stat = "4242 (web (v2) x) S 1 4242 4242 0 -1 4194560 2101 0 0 0 \
                    157 42 0 0 20 0 9 0 1234 567890 321 18446744073709551615";
        assert_eq!(procfs_reader::parse_stat(stat), Some((157, 42, 321)));
        assert_eq!(procfs_reader::parse_stat("4242 (cut"), None);
        let io = "rchar: 10\nwchar: 20\nsyscr: 3\nsyscw: 4\nread_bytes: 4096\nwrite_bytes: 8192\n";
        assert_eq!(
            procfs_reader::parse_io(io),
            Some(IoCounters {
                read_bytes: 10,
                write_bytes: 20,
                storage_read_bytes: 4096,
                storage_write_bytes: 8192,
            })
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn written_bytes_show_in_the_io_counters() {
        let before = sample_process().expect("procfs is readable");
        let path = std::env::temp_dir().join(format!("shadowlib-io-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 1 << 20]).expect("temp dir is writable");
        let after = sample_process().expect("procfs is readable");
        let _ = std::fs::remove_file(&path);
        if let (Some(before), Some(after)) = (before.io, after.io) {
            assert!(after.write_bytes - before.write_bytes >= 1 << 20);
        }
        assert!(after.rss_bytes > 0);
    }
}
