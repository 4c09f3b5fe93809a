//! What the shadow may use beyond one copy's budget, and when: how it follows live, how
//! long a copy may wait for CPU, the adaptive mirror share, off-peak windows and the cost
//! cap. Read from the same TOML file as the [`ShadowBudget`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::{BudgetError, ShadowBudget};
use crate::model::Share;

/// Resources that cannot be used, naming the field that is wrong.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum ResourcesError {
    /// The TOML text could not be parsed (syntax, types, unknown fields, a time of day
    /// that is not `HH:MM`); the message names the key.
    #[error("invalid TOML shadow resources: {0}")]
    Toml(String),
    /// One of the budget's own fields is wrong.
    #[error(transparent)]
    Budget(#[from] BudgetError),
    /// `interval` is zero: the governor would never wait between two looks.
    #[error("interval: must be greater than zero")]
    ZeroInterval,
    /// `max_cpu_wait` is zero: every copy would be shed.
    #[error("max_cpu_wait: must be greater than zero")]
    ZeroCpuWait,
    /// `cpu_seconds_per_hour` is not a positive, finite number.
    #[error("cpu_seconds_per_hour: {0} is not a positive, finite number of seconds")]
    CostCap(f64),
    /// A field of `[adaptive]` is out of its range.
    #[error("adaptive.{field}: {value} is outside {range}")]
    Adaptive {
        /// The field, such as `cut`.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The values it may take.
        range: &'static str,
    },
    /// An off-peak window starts where it ends, so it holds no time at all.
    #[error("off_peak[{index}]: from and to are both {at}: the window is empty")]
    EmptyWindow {
        /// The window's position in the file.
        index: usize,
        /// Where it starts and ends.
        at: TimeOfDay,
    },
    /// Two off-peak windows overlap, so which share holds there would be a guess.
    #[error("off_peak[{later}] overlaps off_peak[{earlier}]")]
    OverlappingWindows {
        /// The first of the two in the file.
        earlier: usize,
        /// The second.
        later: usize,
    },
}

/// A time of day in UTC, to the minute: `"01:00"` in a file.
///
/// ```
/// use shadowlib::shadow::TimeOfDay;
///
/// let at: TimeOfDay = "01:30".parse()?;
/// assert_eq!((at.hour(), at.minute()), (1, 30));
/// assert_eq!(at.to_string(), "01:30");
/// assert!("24:00".parse::<TimeOfDay>().is_err());
/// # Ok::<(), shadowlib::shadow::TimeOfDayError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimeOfDay {
    minutes: u16,
}

/// A time of day that is not `HH:MM` with `HH` in 00–23 and `MM` in 00–59.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{0}` is not a time of day written HH:MM (00:00 to 23:59)")]
pub struct TimeOfDayError(pub String);

const MINUTES_PER_DAY: u16 = 24 * 60;

impl TimeOfDay {
    /// `hour:minute`, both in range (`hour` below 24, `minute` below 60).
    pub fn new(hour: u8, minute: u8) -> Result<Self, TimeOfDayError> {
        if hour >= 24 || minute >= 60 {
            return Err(TimeOfDayError(format!("{hour}:{minute}")));
        }
        Ok(Self {
            minutes: u16::from(hour) * 60 + u16::from(minute),
        })
    }

    /// The hour, 0–23.
    pub fn hour(self) -> u8 {
        // Below 24 by construction.
        (self.minutes / 60) as u8
    }

    /// The minute, 0–59.
    pub fn minute(self) -> u8 {
        (self.minutes % 60) as u8
    }

    /// The time of day of a moment `seconds` after the Unix epoch, in UTC (the epoch
    /// counts no leap seconds, so every day is 86,400 of them).
    pub(crate) fn of_unix_seconds(seconds: u64) -> Self {
        let minutes = (seconds / 60) % u64::from(MINUTES_PER_DAY);
        Self {
            minutes: minutes as u16,
        }
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour(), self.minute())
    }
}

impl FromStr for TimeOfDay {
    type Err = TimeOfDayError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || TimeOfDayError(text.to_owned());
        let (hour, minute) = text.split_once(':').ok_or_else(invalid)?;
        let two_digits = |part: &str| {
            (part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u8>().ok())
                .flatten()
        };
        let (hour, minute) = two_digits(hour)
            .zip(two_digits(minute))
            .ok_or_else(invalid)?;
        Self::new(hour, minute).map_err(|_| invalid())
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A daily window, in UTC, during which the mirror share is its own (typically higher:
/// the night's spare CPU buys the day's evidence).
///
/// `from` is inside the window and `to` is not; a window whose `to` is earlier than its
/// `from` runs past midnight (`22:00` to `02:00`).
///
/// ```
/// use shadowlib::Share;
/// use shadowlib::shadow::OffPeakWindow;
///
/// let night = OffPeakWindow::new("01:00".parse()?, "05:00".parse()?, Share::FULL);
/// assert!(night.contains("04:59".parse()?));
/// assert!(!night.contains("05:00".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffPeakWindow {
    /// Where the window starts (inside it).
    pub from: TimeOfDay,
    /// Where it ends (outside it).
    pub to: TimeOfDay,
    /// The share of reads mirrored within it.
    pub share: Share,
}

impl OffPeakWindow {
    /// The window from `from` to `to`, with `share`.
    pub fn new(from: TimeOfDay, to: TimeOfDay, share: Share) -> Self {
        Self { from, to, share }
    }

    /// Whether `at` falls in the window.
    pub fn contains(&self, at: TimeOfDay) -> bool {
        if self.from <= self.to {
            self.from <= at && at < self.to
        } else {
            at >= self.from || at < self.to
        }
    }

    /// Whether the two windows share a minute.
    fn overlaps(&self, other: &OffPeakWindow) -> bool {
        // Each window's first minute is inside it, so two windows overlap exactly when
        // one starts inside the other.
        self.contains(other.from) || other.contains(self.from)
    }
}

/// The adaptive mirror share: an AIMD loop (additive increase, multiplicative decrease,
/// as TCP paces a connection) that mirrors more reads while live has headroom and fewer as
/// soon as it has not.
///
/// Every [`interval`](ShadowResources::interval) the governor looks at what live did in
/// the last one, and:
///
/// * cuts the share to `share × cut` (never below [`floor`](Self::floor)) when any of
///   these says live has no headroom, naming the first that did:
///   1. **live latency**: the mean latency of live requests (both builds', mirrored or
///      not, plus the 20 µs [latency floor](crate::LATENCY_FLOOR)) rose more than
///      [`latency_rise`](Self::latency_rise) above its baseline (the mean of earlier
///      intervals with headroom, or at the floor, where the shadow is not to blame);
///   2. **live CPU**: the process's CPU, less the shadow's own, used more than
///      [`cpu_ceiling`](Self::cpu_ceiling) of the cores;
///   3. **shadow sheds**: more than [`shed_tolerance`](Self::shed_tolerance) of the copies
///      offered to the shadow were shed (queue full, or waited for CPU too long);
/// * otherwise raises it by [`step`](Self::step), up to the ceiling in force (the
///   off-peak window's share, or [`ShadowConfig::with_mirror_share`](super::ShadowConfig::with_mirror_share)).
///
/// It starts at the floor: it probes for headroom rather than assume it. A cut takes
/// effect within one interval of the rise that caused it, from the next read on.
///
/// Decisions stay valid while the share moves: the share only decides *how many* reads
/// are mirrored, drawn at random per read, never *which* kind; and the evidence is paired
/// per read (the twin and the candidate on the same request), so a pair at 5% is the same
/// draw from the same distribution as one at 100%. Nothing in the evidence divides by time
/// or by the share.
///
/// ```
/// use shadowlib::Share;
/// use shadowlib::shadow::AdaptiveShare;
///
/// let adaptive = AdaptiveShare { step: Share::from_percent(10.0)?, ..AdaptiveShare::default() };
/// assert_eq!(adaptive.floor, Share::from_percent(1.0)?);
/// assert!(adaptive.validate().is_ok());
/// assert!(AdaptiveShare { cut: 1.5, ..adaptive }.validate().is_err());
/// # Ok::<(), shadowlib::ShareError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveShare {
    /// The lowest the share is cut to (a share of zero would leave nothing to learn from
    /// about live having headroom again, and the rollout nothing to judge).
    pub floor: Share,
    /// What each interval with headroom adds to the share.
    pub step: Share,
    /// What a cut multiplies the share by, in (0, 1).
    pub cut: f64,
    /// How far above its baseline live's mean latency may rise before it counts as a
    /// rise: 0.25 is 25%.
    pub latency_rise: f64,
    /// The fraction of the machine's cores live's CPU may use before live counts as
    /// saturated, in (0, 1].
    pub cpu_ceiling: f64,
    /// The fraction of copies offered that may be shed in one interval before the share
    /// is cut, in [0, 1).
    pub shed_tolerance: f64,
}

impl Default for AdaptiveShare {
    /// From 1%, up 5 points per interval with headroom, halved on a 25% rise of live
    /// latency, live CPU above 85% of the cores, or more than 1% of copies shed.
    fn default() -> Self {
        Self {
            floor: Share::from_ppm(10_000).unwrap_or(Share::ZERO),
            step: Share::from_ppm(50_000).unwrap_or(Share::FULL),
            cut: 0.5,
            latency_rise: 0.25,
            cpu_ceiling: 0.85,
            shed_tolerance: 0.01,
        }
    }
}

impl AdaptiveShare {
    /// Checks every field; the first violation found is returned.
    pub fn validate(&self) -> Result<(), ResourcesError> {
        let out_of = |field, value: f64, range| ResourcesError::Adaptive {
            field,
            value,
            range,
        };
        if self.step.is_zero() {
            return Err(out_of("step", 0.0, "(0%, 100%]: a share that never rises"));
        }
        if !(self.cut > 0.0 && self.cut < 1.0) {
            return Err(out_of("cut", self.cut, "(0, 1)"));
        }
        if !(self.latency_rise.is_finite() && self.latency_rise > 0.0) {
            return Err(out_of("latency_rise", self.latency_rise, "(0, ∞)"));
        }
        if !(self.cpu_ceiling > 0.0 && self.cpu_ceiling <= 1.0) {
            return Err(out_of("cpu_ceiling", self.cpu_ceiling, "(0, 1]"));
        }
        if !(self.shed_tolerance >= 0.0 && self.shed_tolerance < 1.0) {
            return Err(out_of("shed_tolerance", self.shed_tolerance, "[0, 1)"));
        }
        Ok(())
    }
}

/// What the shadow may use beyond one copy's [`ShadowBudget`], and when.
///
/// * **Sized like live** ([`follow_live`](Self::follow_live), on by default): the copies
///   run at once follow the concurrency live is observed to use (requests in flight, by
///   Little's law over each interval: busy time over wall time, the peak of the last ten
///   intervals), once for each build a copy runs on (the twin and the candidate, one
///   after the other), within the budget's [`concurrency`](ShadowBudget::concurrency); the
///   queue holds what the shadow can start within [`max_cpu_wait`](Self::max_cpu_wait)
///   at that concurrency, within the budget's [`queue_capacity`](ShadowBudget::queue_capacity).
///   Off, the budget's figures are used as they are.
/// * **Preemptible** ([`max_cpu_wait`](Self::max_cpu_wait)): the shadow's thread runs in
///   the lowest scheduling class (see [`SchedulingClass`](super::SchedulingClass)), so it
///   gets only CPU live does not want. A copy during which the thread waited for CPU
///   longer than this is shed from the latency evidence and counted
///   ([`ShadowCounts::starved`](super::ShadowCounts::starved)): its wall latency says how
///   busy live was, not how fast either build is; its CPU time, outcome and comparison are
///   evidence still. A build's timeout counts only the time the shadow had the CPU (it is
///   pushed back by the wait, up to twice the timeout), so a timeout stays the build's.
///   The wait is what the kernel says the thread spent runnable but not running
///   (`/proc/thread-self/schedstat` on Linux; other platforms do not tell, and there no
///   copy is starved). Whether a copy is starved depends on live's load during it, not on
///   the copy: copies are far shorter than the deadline, so a long one is hardly likelier
///   to be starved than a short one, and leaving starved ones out does not favour fast
///   copies.
/// * **Adaptive share** ([`adaptive`](Self::adaptive), off by default): see
///   [`AdaptiveShare`].
/// * **Off-peak windows** ([`off_peak`](Self::off_peak)): daily UTC windows with their own
///   share, the ceiling of the share while they last.
/// * **Cost cap** ([`cpu_seconds_per_hour`](Self::cpu_seconds_per_hour)): once the
///   shadow's threads have used this much CPU in the current UTC hour, nothing more is
///   mirrored until the next hour begins. The governor looks once per interval, so the
///   cap may be overrun by at most what the shadow spends in one interval.
///
/// The governor, a thread of the process's own class that wakes once per
/// [`interval`](Self::interval), applies all of these; [`ShadowCounts`](super::ShadowCounts)
/// says what is in force, why, and what the shadow has cost.
///
/// ```
/// use std::time::Duration;
/// use shadowlib::Share;
/// use shadowlib::shadow::{ShadowConfig, ShadowResources};
///
/// // 100% of reads from 01:00 to 05:00 UTC, 5% otherwise, at most 15 CPU-minutes an hour.
/// let resources = ShadowResources::from_toml(r#"
///     queue_capacity = 512
///     timeout = "2s"
///     cpu_seconds_per_hour = 900
///
///     [[off_peak]]
///     from = "01:00"
///     to = "05:00"
///     share = 100
/// "#)?;
/// assert_eq!(resources.budget.timeout, Duration::from_secs(2));
/// let config = ShadowConfig::new()
///     .with_mirror_share(Share::from_percent(5.0)?)
///     .with_resources(resources);
/// assert_eq!(config.budget().queue_capacity, 512);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowResources {
    /// What one copy may spend, and the most copies queued and running.
    pub budget: ShadowBudget,
    /// Whether the shadow's concurrency and queue follow what live uses (within the
    /// budget's).
    pub follow_live: bool,
    /// The longest the shadow's thread may wait for CPU on a copy's behalf.
    pub max_cpu_wait: Duration,
    /// How often the governor looks at live and sets what is in force.
    pub interval: Duration,
    /// The adaptive mirror share, when it is on.
    pub adaptive: Option<AdaptiveShare>,
    /// Daily UTC windows with their own mirror share; they must not overlap.
    pub off_peak: Vec<OffPeakWindow>,
    /// The most CPU-seconds the shadow's threads may use per UTC hour.
    pub cpu_seconds_per_hour: Option<f64>,
}

impl Default for ShadowResources {
    /// The default budget, following live, 100 ms of CPU wait, a look every second, no
    /// adaptive share, no windows, no cap.
    fn default() -> Self {
        Self {
            budget: ShadowBudget::default(),
            follow_live: true,
            max_cpu_wait: Duration::from_millis(100),
            interval: Duration::from_secs(1),
            adaptive: None,
            off_peak: Vec::new(),
            cpu_seconds_per_hour: None,
        }
    }
}

/// The file's shape: the budget's keys beside the resources' own, in one flat table.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ResourcesFile {
    queue_capacity: usize,
    concurrency: usize,
    #[serde(with = "crate::duration")]
    timeout: Duration,
    follow_live: bool,
    #[serde(with = "crate::duration")]
    max_cpu_wait: Duration,
    #[serde(with = "crate::duration")]
    interval: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_seconds_per_hour: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adaptive: Option<AdaptiveShare>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    off_peak: Vec<OffPeakWindow>,
}

impl Default for ResourcesFile {
    fn default() -> Self {
        ShadowResources::default().into()
    }
}

impl From<ShadowResources> for ResourcesFile {
    fn from(resources: ShadowResources) -> Self {
        let ShadowResources {
            budget,
            follow_live,
            max_cpu_wait,
            interval,
            adaptive,
            off_peak,
            cpu_seconds_per_hour,
        } = resources;
        Self {
            queue_capacity: budget.queue_capacity,
            concurrency: budget.concurrency,
            timeout: budget.timeout,
            follow_live,
            max_cpu_wait,
            interval,
            cpu_seconds_per_hour,
            adaptive,
            off_peak,
        }
    }
}

impl From<ResourcesFile> for ShadowResources {
    fn from(file: ResourcesFile) -> Self {
        Self {
            budget: ShadowBudget {
                queue_capacity: file.queue_capacity,
                concurrency: file.concurrency,
                timeout: file.timeout,
            },
            follow_live: file.follow_live,
            max_cpu_wait: file.max_cpu_wait,
            interval: file.interval,
            adaptive: file.adaptive,
            off_peak: file.off_peak,
            cpu_seconds_per_hour: file.cpu_seconds_per_hour,
        }
    }
}

impl ShadowResources {
    /// Parses and validates resources written in TOML: the [`ShadowBudget`]'s keys
    /// (`queue_capacity`, `concurrency`, `timeout`) and the resources' own
    /// (`follow_live`, `max_cpu_wait`, `interval`, `cpu_seconds_per_hour`, an `[adaptive]`
    /// table, `[[off_peak]]` windows), every one optional.
    pub fn from_toml(text: &str) -> Result<Self, ResourcesError> {
        let file: ResourcesFile =
            toml::from_str(text).map_err(|e| ResourcesError::Toml(e.to_string()))?;
        let resources = Self::from(file);
        resources.validate()?;
        Ok(resources)
    }

    /// Checks every field; the first violation found is returned.
    pub fn validate(&self) -> Result<(), ResourcesError> {
        self.budget.validate()?;
        if self.interval.is_zero() {
            return Err(ResourcesError::ZeroInterval);
        }
        if self.max_cpu_wait.is_zero() {
            return Err(ResourcesError::ZeroCpuWait);
        }
        if let Some(cap) = self.cpu_seconds_per_hour
            && !(cap.is_finite() && cap > 0.0)
        {
            return Err(ResourcesError::CostCap(cap));
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate()?;
        }
        for (index, window) in self.off_peak.iter().enumerate() {
            if window.from == window.to {
                return Err(ResourcesError::EmptyWindow {
                    index,
                    at: window.from,
                });
            }
            if let Some(earlier) = self.off_peak[..index]
                .iter()
                .position(|other| other.overlaps(window))
            {
                return Err(ResourcesError::OverlappingWindows {
                    earlier,
                    later: index,
                });
            }
        }
        Ok(())
    }

    /// The off-peak window `at` falls in, if any.
    pub(crate) fn window_at(&self, at: TimeOfDay) -> Option<&OffPeakWindow> {
        self.off_peak.iter().find(|window| window.contains(at))
    }

    /// Whether anything here needs the governor: something that changes with live's load
    /// or with the time of day.
    pub(crate) fn needs_governor(&self) -> bool {
        self.follow_live
            || self.adaptive.is_some()
            || !self.off_peak.is_empty()
            || self.cpu_seconds_per_hour.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_toml(resources: &ShadowResources) -> String {
        toml::to_string(&ResourcesFile::from(resources.clone())).expect("serializes")
    }

    fn at(text: &str) -> TimeOfDay {
        text.parse().expect("a valid time of day")
    }

    #[test]
    fn default_is_valid_and_round_trips() {
        let resources = ShadowResources::default();
        resources.validate().expect("default is valid");
        assert_eq!(
            ShadowResources::from_toml(&to_toml(&resources)).expect("parses"),
            resources
        );
        let full = ShadowResources {
            adaptive: Some(AdaptiveShare::default()),
            off_peak: vec![OffPeakWindow::new(at("22:30"), at("02:00"), Share::FULL)],
            cpu_seconds_per_hour: Some(120.5),
            ..ShadowResources::default()
        };
        assert_eq!(
            ShadowResources::from_toml(&to_toml(&full)).expect("parses"),
            full
        );
    }

    #[test]
    fn each_bad_field_has_its_own_error() {
        let error = |text| ShadowResources::from_toml(text).expect_err("invalid");
        assert_eq!(error("interval = \"0s\""), ResourcesError::ZeroInterval);
        assert_eq!(error("max_cpu_wait = \"0ms\""), ResourcesError::ZeroCpuWait);
        assert_eq!(
            error("cpu_seconds_per_hour = -1.0"),
            ResourcesError::CostCap(-1.0)
        );
        assert_eq!(
            error("concurrency = 0"),
            ResourcesError::Budget(BudgetError::ZeroConcurrency)
        );
        assert!(matches!(
            error("[adaptive]\ncut = 1.0"),
            ResourcesError::Adaptive { field: "cut", .. }
        ));
        assert!(matches!(
            error("[adaptive]\nstep = 0"),
            ResourcesError::Adaptive { field: "step", .. }
        ));
        assert!(matches!(
            error("[adaptive]\ncpu_ceiling = 0"),
            ResourcesError::Adaptive {
                field: "cpu_ceiling",
                ..
            }
        ));
        assert_eq!(
            error("[[off_peak]]\nfrom = \"03:00\"\nto = \"03:00\"\nshare = 50"),
            ResourcesError::EmptyWindow {
                index: 0,
                at: at("03:00")
            }
        );
        let overlapping = "[[off_peak]]\nfrom = \"01:00\"\nto = \"05:00\"\nshare = 100\n\
                           [[off_peak]]\nfrom = \"23:00\"\nto = \"01:30\"\nshare = 50";
        assert_eq!(
            error(overlapping),
            ResourcesError::OverlappingWindows {
                earlier: 0,
                later: 1
            }
        );
        // Errors the parser finds name the key.
        for (text, key) in [
            (
                "[[off_peak]]\nfrom = \"1:00\"\nto = \"05:00\"\nshare = 1",
                "from",
            ),
            (
                "[[off_peak]]\nfrom = \"01:00\"\nto = \"05:00\"\nshare = 101",
                "share",
            ),
            ("workers = 3", "workers"),
            ("[adaptive]\nceiling = 3", "ceiling"),
        ] {
            let message = error(text).to_string();
            assert!(message.contains(key), "{message}");
        }
    }

    #[test]
    fn windows_contain_their_start_not_their_end_and_may_wrap() {
        let night = OffPeakWindow::new(at("22:00"), at("02:00"), Share::FULL);
        for inside in ["22:00", "23:59", "00:00", "01:59"] {
            assert!(night.contains(at(inside)), "{inside}");
        }
        for outside in ["02:00", "12:00", "21:59"] {
            assert!(!night.contains(at(outside)), "{outside}");
        }
        let early = OffPeakWindow::new(at("01:00"), at("05:00"), Share::FULL);
        let late = OffPeakWindow::new(at("05:00"), at("06:00"), Share::FULL);
        assert!(!early.overlaps(&late), "touching windows do not overlap");
        assert!(early.overlaps(&night));
    }

    #[test]
    fn times_of_day_read_from_unix_seconds_and_reject_bad_text() {
        // 2024-01-01T01:30:15Z.
        assert_eq!(TimeOfDay::of_unix_seconds(1_704_072_615), at("01:30"));
        for bad in [
            "", "1:00", "01:0", "24:00", "12:60", "ab:cd", "01:00:00", "+1:00",
        ] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
    }
}
