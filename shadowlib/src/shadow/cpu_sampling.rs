//! Which copies have their CPU measured.
//!
//! A build's CPU time is read from the thread's CPU clock around each poll. On Linux that
//! clock is a system call, not a vDSO read: from a few hundred nanoseconds to well over a
//! microsecond a reading where system calls are dear (a virtual machine with the
//! side-channel mitigations on), four readings or more a copy. Next to a copy of a
//! millisecond that is nothing; next to one of two microseconds it is more than the copy.
//! So the clock is read on a random share of copies, chosen so that the readings cost at
//! most a tenth of what the measured copies use themselves (and on at least one copy in
//! sixteen): every copy where the work dwarfs the readings, a sample where it does not.
//!
//! The draw is per copy, for both builds together (a pair's CPU ratio needs both), and
//! independent of the request, so the copies measured are a uniform sample: the CPU
//! evidence is unbiased, and only grows more slowly where it is sampled.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::metrics::thread_cpu_time;
use crate::model::Share;
use crate::rng;

/// The readings may cost this share of what the measured copies use.
const READINGS_SHARE_OF_WORK: f64 = 0.1;

/// The fewest copies measured: one in sixteen.
const MIN_SHARE_PPM: u32 = Share::PPM_SCALE / 16;

/// Readings of the clock a copy costs: before and after one poll of each build.
const READINGS_PER_COPY: f64 = 4.0;

/// The weight of the newest measured copy in the running mean of their CPU.
const MEAN_WEIGHT: f64 = 0.05;

/// See the [module docs](self). It lives on the shadow's thread only.
pub(crate) struct CpuSampling {
    /// What one reading of the clock costs, in nanoseconds.
    reading_ns: f64,
    /// The mean CPU of the measured copies, both builds' runs together, in nanoseconds.
    mean_copy_ns: Cell<Option<f64>>,
}

impl CpuSampling {
    /// Times the clock on the calling thread (the shadow's) and starts measuring every
    /// copy until the copies' own cost is known.
    pub(crate) fn calibrate() -> Self {
        const READINGS: u32 = 32;
        let started = Instant::now();
        for _ in 0..READINGS {
            std::hint::black_box(thread_cpu_time());
        }
        Self {
            reading_ns: started.elapsed().as_nanos() as f64 / f64::from(READINGS),
            mean_copy_ns: Cell::new(None),
        }
    }

    /// The share of copies measured now, in parts per million.
    pub(crate) fn share_ppm(&self) -> u32 {
        let Some(work) = self.mean_copy_ns.get() else {
            return Share::PPM_SCALE;
        };
        let readings = self.reading_ns * READINGS_PER_COPY;
        if readings <= 0.0 {
            return Share::PPM_SCALE;
        }
        let share = (READINGS_SHARE_OF_WORK * work / readings).min(1.0);
        ((share * f64::from(Share::PPM_SCALE)) as u32).max(MIN_SHARE_PPM)
    }

    /// Whether the next copy is measured.
    pub(crate) fn draw(&self) -> bool {
        let share = self.share_ppm();
        share >= Share::PPM_SCALE || rng::below(Share::PPM_SCALE) < share
    }

    /// A measured copy used `cpu`, both builds' runs together.
    pub(crate) fn observe(&self, cpu: Duration) {
        let cpu = cpu.as_nanos() as f64;
        self.mean_copy_ns.set(Some(match self.mean_copy_ns.get() {
            Some(mean) => mean + (cpu - mean) * MEAN_WEIGHT,
            None => cpu,
        }));
    }

    /// A clock that costs `reading_ns` a reading, for tests.
    #[cfg(test)]
    pub(crate) fn with_reading_cost(reading_ns: f64) -> Self {
        Self {
            reading_ns,
            mean_copy_ns: Cell::new(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_copy_is_measured_where_the_work_dwarfs_the_readings() {
        let sampling = CpuSampling::with_reading_cost(700.0);
        assert_eq!(
            sampling.share_ppm(),
            Share::PPM_SCALE,
            "until the work is known"
        );
        // Copies of a millisecond: the readings are 0.3% of them.
        sampling.observe(Duration::from_millis(1));
        assert_eq!(sampling.share_ppm(), Share::PPM_SCALE);
    }

    #[test]
    fn a_sample_is_measured_where_the_readings_would_cost_more_than_a_tenth() {
        let sampling = CpuSampling::with_reading_cost(700.0);
        // Copies of 5.6 µs against 2.8 µs of readings: a fifth of them.
        sampling.observe(Duration::from_nanos(5_600));
        assert_eq!(sampling.share_ppm(), 200_000);
        // Never fewer than one in sixteen.
        let cheap = CpuSampling::with_reading_cost(700.0);
        cheap.observe(Duration::from_nanos(100));
        assert_eq!(cheap.share_ppm(), MIN_SHARE_PPM);
        let measured = (0..16_000).filter(|_| cheap.draw()).count();
        assert!((600..1_400).contains(&measured), "{measured} of 16,000");
    }
}
