//! The shadow's threads: the worker's, a one-thread tokio runtime with a `LocalSet` (so that
//! targets whose builds cannot move between threads, actix-web's, live and run there) in
//! the lowest scheduling class the OS offers; and the governor's, at the process's own
//! class, which sizes and paces the shadow from what live does.

use std::io;
use std::thread;

use serde::{Deserialize, Serialize};
use tokio::task::LocalSet;

use super::governor::Governor;
use super::worker::Worker;

/// The scheduling class the shadow's worker thread runs in: how readily the kernel gives
/// its CPU to live threads instead (see [`ShadowCounts::scheduling`](super::ShadowCounts)).
///
/// The shadow is an in-process spot instance: it runs on CPU that live does not want. Its
/// thread lowers itself when it starts, into the lowest class that the OS lets an
/// unprivileged thread enter, and every thread it spawns (tokio's blocking pool, say)
/// inherits that class:
///
/// | platform | class | what the kernel does |
/// |---|---|---|
/// | Linux, Android | `SCHED_IDLE` ([`Idle`](Self::Idle)) | runs it only when no normal thread wants the core; a waking live thread preempts it at once |
/// | Linux, if `SCHED_IDLE` is refused (a seccomp filter, say) | nice 19 ([`LowestNice`](Self::LowestNice)) | gives it about 1.5% of a core against each busy normal thread |
/// | macOS, iOS, the BSDs | the lowest `SCHED_OTHER` priority ([`LowestPriority`](Self::LowestPriority)) | favours every default-priority thread over it |
/// | Windows | `THREAD_PRIORITY_IDLE` ([`LowestPriority`](Self::LowestPriority)) | runs it when nothing of normal priority is ready |
/// | anything else, or a refusal | unchanged ([`Unchanged`](Self::Unchanged)), logged | competes with live as any thread does |
///
/// ```
/// use shadowlib::shadow::{SchedulingClass, ShadowCounts};
///
/// // Before the shadow's thread has started, nothing is known of its class.
/// assert_eq!(ShadowCounts::default().scheduling, SchedulingClass::NotStarted);
/// assert!(SchedulingClass::Idle.yields_to_live());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SchedulingClass {
    /// The shadow's thread has not started (no adapter has registered yet).
    #[default]
    NotStarted,
    /// Linux's `SCHED_IDLE`: CPU no normal thread wants, and nothing else.
    Idle,
    /// The lowest nice value, 19, where `SCHED_IDLE` was refused.
    LowestNice,
    /// The platform's lowest thread priority.
    LowestPriority,
    /// The OS refused every lowering (the reason is logged): the shadow competes with live.
    Unchanged,
}

impl SchedulingClass {
    /// Whether the shadow's thread gives way to live threads: any class but
    /// [`Unchanged`](Self::Unchanged) and [`NotStarted`](Self::NotStarted).
    pub fn yields_to_live(self) -> bool {
        matches!(self, Self::Idle | Self::LowestNice | Self::LowestPriority)
    }

    pub(crate) fn to_code(self) -> u8 {
        match self {
            Self::NotStarted => 0,
            Self::Idle => 1,
            Self::LowestNice => 2,
            Self::LowestPriority => 3,
            Self::Unchanged => 4,
        }
    }

    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Idle,
            2 => Self::LowestNice,
            3 => Self::LowestPriority,
            4 => Self::Unchanged,
            _ => Self::NotStarted,
        }
    }
}

/// Lowers the calling thread into the lowest scheduling class it may enter (see
/// [`SchedulingClass`]), and says which one it got.
pub(crate) fn lower_current_thread() -> SchedulingClass {
    lowering::lower()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod lowering {
    use thread_priority::ThreadPriority;
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };

    use super::SchedulingClass;

    pub(super) fn lower() -> SchedulingClass {
        let this = thread_native_id();
        // Entering SCHED_IDLE needs no privilege (leaving it would), so it normally works;
        // its priority must be 0, which `Min` maps to.
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let Err(refused) = set_thread_priority_and_policy(this, ThreadPriority::Min, idle) else {
            return SchedulingClass::Idle;
        };
        // Nice 19 under the ordinary policy: what `Min` maps to there.
        let ordinary = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
        match set_thread_priority_and_policy(this, ThreadPriority::Min, ordinary) {
            Ok(()) => {
                tracing::warn!(error = ?refused, "SCHED_IDLE refused; the shadow runs at nice 19");
                SchedulingClass::LowestNice
            }
            Err(error) => {
                tracing::warn!(
                    ?error,
                    "the shadow's thread could not be lowered; it competes with live"
                );
                SchedulingClass::Unchanged
            }
        }
    }
}

#[cfg(windows)]
mod lowering {
    use thread_priority::windows::WinAPIThreadPriority;
    use thread_priority::{ThreadPriority, set_current_thread_priority};

    use super::SchedulingClass;

    pub(super) fn lower() -> SchedulingClass {
        // `ThreadPriority::Min` is only THREAD_PRIORITY_LOWEST on Windows; idle is asked
        // for by name.
        match set_current_thread_priority(ThreadPriority::Os(WinAPIThreadPriority::Idle.into())) {
            Ok(()) => SchedulingClass::LowestPriority,
            Err(error) => {
                tracing::warn!(
                    ?error,
                    "the shadow's thread could not be lowered; it competes with live"
                );
                SchedulingClass::Unchanged
            }
        }
    }
}

#[cfg(all(
    unix,
    not(any(target_os = "linux", target_os = "android")),
    any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    )
))]
mod lowering {
    use thread_priority::{ThreadPriority, set_current_thread_priority};

    use super::SchedulingClass;

    pub(super) fn lower() -> SchedulingClass {
        match set_current_thread_priority(ThreadPriority::Min) {
            Ok(()) => SchedulingClass::LowestPriority,
            Err(error) => {
                tracing::warn!(
                    ?error,
                    "the shadow's thread could not be lowered; it competes with live"
                );
                SchedulingClass::Unchanged
            }
        }
    }
}

#[cfg(not(any(
    windows,
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd",
    target_os = "dragonfly"
)))]
mod lowering {
    use super::SchedulingClass;

    pub(super) fn lower() -> SchedulingClass {
        tracing::warn!(
            "no way to lower the shadow's thread on this platform; it competes with live"
        );
        SchedulingClass::Unchanged
    }
}

/// Starts the shadow's worker thread, which lowers itself, reports its class to
/// `lowered`, and runs `worker` until every live-side handle is gone and the copies in
/// flight are done.
pub(crate) fn spawn_worker(
    worker: Worker,
    lowered: impl FnOnce(SchedulingClass) + Send + 'static,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    thread::Builder::new()
        .name("shadowlib-shadow".to_owned())
        .spawn(move || {
            lowered(lower_current_thread());
            LocalSet::new().block_on(&runtime, worker.run());
        })?;
    Ok(())
}

/// Starts the governor's thread, at the class of the thread that starts it: it must look
/// at live on time exactly when live is busiest, which a thread live preempts could not.
/// It wakes once per governor interval and ends with the shadow.
pub(crate) fn spawn_governor(governor: Governor) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    thread::Builder::new()
        .name("shadowlib-governor".to_owned())
        .spawn(move || runtime.block_on(governor.run()))?;
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The policy of the calling thread as the kernel reports it: field 41 of
    /// `/proc/thread-self/stat` (5 is `SCHED_IDLE`).
    fn policy_from_proc() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
        let after_name = &stat[stat.rfind(')').expect("a command name") + 1..];
        // Field 3 is the first after the name; the policy is field 41.
        after_name
            .split_whitespace()
            .nth(41 - 3)
            .and_then(|field| field.parse().ok())
            .expect("a policy field")
    }

    #[test]
    fn a_lowered_thread_is_sched_idle_as_the_kernel_reports_it() {
        let (class, policy) = thread::spawn(|| (lower_current_thread(), policy_from_proc()))
            .join()
            .expect("no panic");
        assert_eq!(class, SchedulingClass::Idle);
        assert_eq!(policy, 5, "SCHED_IDLE");
        assert_eq!(policy_from_proc(), 0, "the test's own thread is untouched");
    }

    #[test]
    fn codes_round_trip() {
        for class in [
            SchedulingClass::NotStarted,
            SchedulingClass::Idle,
            SchedulingClass::LowestNice,
            SchedulingClass::LowestPriority,
            SchedulingClass::Unchanged,
        ] {
            assert_eq!(SchedulingClass::from_code(class.to_code()), class);
        }
    }
}
