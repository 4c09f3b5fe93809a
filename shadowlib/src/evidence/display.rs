//! The plain-text rendering of an arm's evidence.

use std::fmt;

use super::{ArmEvidence, Distribution};

/// Renders the arm as a short plain-text report, one KPI per line.
///
/// What was not measured says so ("allocations: not measured") rather than showing zero.
///
/// ```
/// use shadowlib::{ArmEvidence, Outcome};
///
/// let mut arm = ArmEvidence::default();
/// arm.record_request(Outcome::Success, 1_250);
/// let report = arm.to_string();
/// assert!(report.contains("1 requests"));
/// assert!(report.contains("allocations: not measured"));
/// ```
impl fmt::Display for ArmEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.outcomes;
        writeln!(
            f,
            "{} requests (success {}, client error {}, server error {}, timeout {}, panic {}, shed {})",
            self.requests(),
            o.success,
            o.client_error,
            o.server_error,
            o.timeout,
            o.panic,
            o.shed
        )?;
        let l = &self.latency_us;
        writeln!(
            f,
            "  latency: p50 {}, p99 {}, max {}",
            Micros(l.quantile(0.5)),
            Micros(l.quantile(0.99)),
            Micros(l.max())
        )?;
        match &self.cpu_ns {
            Some(cpu) => writeln!(
                f,
                "  cpu per request: mean {}, p99 {}",
                Micros(cpu.mean() as u64 / 1_000),
                Micros(cpu.quantile(0.99) / 1_000)
            )?,
            None => writeln!(f, "  cpu: not measured")?,
        }
        match (&self.alloc_bytes, &self.alloc_count) {
            (Some(bytes), count) => writeln!(
                f,
                "  allocations per request: mean {} in {:.1} allocations, p99 {}",
                Bytes(bytes.mean() as u64),
                count.as_ref().map_or(0.0, Distribution::mean),
                Bytes(bytes.quantile(0.99))
            )?,
            (None, _) => writeln!(f, "  allocations: not measured")?,
        }
        writeln!(
            f,
            "  bytes: {} received, {} sent",
            Bytes(self.request_bytes),
            Bytes(self.response_bytes)
        )?;
        Ok(())
    }
}

/// Microseconds, shown in the largest unit that keeps them readable.
struct Micros(u64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            us @ 0..1_000 => write!(f, "{us} µs"),
            us @ 1_000..1_000_000 => write!(f, "{:.2} ms", us as f64 / 1e3),
            us => write!(f, "{:.2} s", us as f64 / 1e6),
        }
    }
}

/// A byte count in binary units.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}
