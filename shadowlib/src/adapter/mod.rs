//! What an adapter author needs to put shadowlib in front of a web framework.
//!
//! `shadowlib-tower` and `shadowlib-actix` are written on this module alone. An adapter
//! translates; everything that decides — routing, classification through the rollout's
//! [`Mirror`](crate::mirror::Mirror), the hand-off to the shadow, comparison, recording —
//! is the core's. Per live request the adapter:
//!
//! 1. describes the request as a [`RequestHead`] (borrowed from the framework's request;
//!    [`HeaderPairs`] views a header map) and starts a [`Tracker`] with it. The tracker says
//!    which build serves the request ([`Tracker::arm`]) and, when the request is a mirrored
//!    read with a body, hands back a [`BodyTee`] to copy the body through as the live
//!    handler reads it;
//! 2. calls that build, and tells the tracker about the response: its head
//!    ([`Tracker::respond`]), each body chunk as it goes to the client
//!    ([`Tracker::chunk`]), and its end ([`Tracker::finish`]); or that the build failed
//!    ([`Tracker::fail`]) or panicked ([`Tracker::panicked`]). The tracker records the
//!    request when it is dropped.
//!
//! On the shadow's side, the adapter registers a [`ShadowTarget`] once
//! ([`Runtime::register`]): given a [`RequestCopy`], it calls a build's own instance and
//! summarizes the response ([`ResponseCapture`]). It runs on the shadow's thread, which the
//! core owns.
//!
//! ```
//! use std::time::Duration;
//! use shadowlib::adapter::{ResponseCapture, Runtime, ShadowCall, ShadowReply, ShadowTarget, TargetFactory, Tracker};
//! use shadowlib::mirror::{BodySize, HeaderList, RequestCopy, RequestHead};
//! use shadowlib::{Arm, Rollout, Version};
//!
//! /// The shadow's side: both builds answer 200 "same".
//! struct Same;
//!
//! impl ShadowTarget for Same {
//!     fn call(&self, _arm: Arm, _copy: &RequestCopy, capture: ResponseCapture) -> ShadowCall {
//!         Box::pin(async move {
//!             let mut summary = capture.head(200, &HeaderList::default());
//!             let mut body = capture.body();
//!             body.push(b"same");
//!             summary.set_body(body);
//!             Ok(ShadowReply { response: summary, latency: Duration::from_micros(80) })
//!         })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rollout = Rollout::builder(Version::new("api", "1"), Version::new("api", "2")).build()?;
//! let runtime = Runtime::new(&rollout);
//! let factory: TargetFactory = Box::new(|| Box::pin(async { Ok(Box::new(Same) as Box<dyn ShadowTarget>) }));
//! let target = runtime.register(factory);
//!
//! // The live side of one request.
//! let headers = HeaderList::default();
//! let head = RequestHead::new("GET", "/items", &headers);
//! let (mut tracker, tee) = Tracker::start(&runtime, target, &head, BodySize::Empty);
//! assert_eq!(tracker.arm(), Arm::Stable);
//! assert!(tee.is_none(), "no body to copy");
//! tracker.respond(200, &headers);
//! tracker.chunk(b"same");
//! tracker.finish();
//!
//! // The shadow compares in the background: wait for it, generously for a loaded machine.
//! for _ in 0..10_000 {
//!     if rollout.shadow_counts().compared == 1 {
//!         break;
//!     }
//!     tokio::time::sleep(Duration::from_millis(1)).await;
//! }
//! assert_eq!(rollout.shadow_counts().mismatched, 0);
//! # Ok(()) }
//! ```

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::compare::BodyCapture;
use crate::metrics::RequestRecord;
use crate::mirror::HeaderList;
use crate::mirror::redact::Redaction;
use crate::model::{Arm, Outcome};
use crate::rollout::Rollout;
use crate::shadow::{CopySlot, LiveProgress, ShadowRuntime, ShadowStats, is_bodiless};

pub use crate::mirror::{
    Attach, BodySize, HeaderPairs, HeaderView, HttpVersion, RequestCopy, RequestHead,
};
pub use crate::shadow::ShadowCounts;
pub use crate::shadow::target::{
    ResponseCapture, ShadowCall, ShadowError, ShadowReply, ShadowResult, ShadowTarget,
    TargetFactory, TargetId,
};

/// An adapter's handle on a rollout's shadow: cheap to clone, one per middleware.
#[derive(Clone)]
pub struct Runtime {
    shadow: ShadowRuntime,
    rollout: Rollout,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("rollout", &self.rollout)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// The shadow runtime of `rollout`.
    pub fn new(rollout: &Rollout) -> Self {
        Self {
            shadow: rollout.shadow_runtime().clone(),
            rollout: rollout.clone(),
        }
    }

    /// Registers a target, built by `factory` on the shadow's thread, and starts that
    /// thread if it has not started yet (a thread that cannot start is logged, and no read
    /// is shadowed: see [`ShadowCounts::no_executor`]). Register once per distinct pair of
    /// builds, not per request.
    pub fn register(&self, factory: TargetFactory) -> TargetId {
        self.shadow.register(factory)
    }

    /// The rollout this runtime serves.
    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    /// The candidate cannot serve (its app failed to start on a worker thread): the
    /// rollout is rolled back, with `why` as the reason.
    pub fn candidate_cannot_start(&self, why: &str) {
        self.rollout.candidate_cannot_start(why);
    }
}

/// One live request, from its head to the end of its response: which build serves it, and
/// what it measured. See the [module docs](self).
///
/// Dropping it records the request (latency to the response head, outcome from the status,
/// bytes), unless no response was reported: a request the client abandoned before any
/// response is not the build's doing. Only a response sent whole is compared with the
/// shadow's.
pub struct Tracker {
    runtime: ShadowRuntime,
    arm: Arm,
    /// The route label's index, while live requests are recorded per route.
    label: Option<usize>,
    /// Whether the request was mirrored: it paid for its copy, so it is counted, and kept
    /// out of the canary's comparison of live requests.
    mirrored: bool,
    /// When the build was called ([`calling`](Tracker::calling)): the clock is read
    /// there, not at the start too, since a reading costs about 30 ns on the live path.
    started: Option<Instant>,
    request_bytes: u64,
    response: Option<Responded>,
    live: LiveCapture,
    /// The credentials a live request to the candidate carried (sensitive headers' values):
    /// scrubbed from its panic message, which may quote them. Kept only for the
    /// candidate's live requests, the only ones whose panics the adapter logs.
    credentials: Option<Credentials>,
}

/// The response, once its head is known.
struct Responded {
    outcome: Outcome,
    /// `None` when the adapter never said when it called the build.
    latency: Option<Duration>,
    bytes: u64,
    whole: bool,
}

/// How far the live response of a mirrored read has been captured for comparison.
enum LiveCapture {
    /// Not a mirrored read, or its response already handed to the shadow.
    None,
    /// Waiting for the response head.
    Head {
        slot: Arc<CopySlot>,
        /// The response is whole once its head is known.
        bodiless: bool,
    },
    /// Capturing the response body.
    Body {
        slot: Arc<CopySlot>,
        body: BodyCapture,
    },
}

impl fmt::Debug for Tracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracker")
            .field("arm", &self.arm)
            .field("mirrored", &!matches!(self.live, LiveCapture::None))
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// Starts tracking a request: picks its build, and when it is a read to mirror, copies
    /// its head for `target`. A mirrored read with a body comes with the [`BodyTee`] to copy
    /// the body through; one without is handed to the shadow now.
    pub fn start(
        runtime: &Runtime,
        target: TargetId,
        head: &RequestHead<'_>,
        body: BodySize,
    ) -> (Tracker, Option<BodyTee>) {
        let shadow = &runtime.shadow;
        let route = shadow.route(head, body);
        let request_bytes = match body {
            BodySize::Empty => 0,
            BodySize::Exact(bytes) | BodySize::AtLeast(bytes) => bytes,
        };
        let mirrored = route.copy.is_some();
        let (live, tee) = match route.copy {
            None => (LiveCapture::None, None),
            Some(slot) => {
                let live = LiveCapture::Head {
                    slot: Arc::clone(&slot),
                    bodiless: is_bodiless(head.method),
                };
                if body == BodySize::Empty {
                    shadow.submit(slot, target);
                    (live, None)
                } else {
                    let tee = BodyTee {
                        runtime: shadow.clone(),
                        slot: Some(slot),
                        target,
                    };
                    (live, Some(tee))
                }
            }
        };
        let credentials = match route.arm {
            Arm::Candidate => credentials(head.headers, &shadow.shared().config.redaction),
            Arm::Stable => None,
        };
        let tracker = Tracker {
            credentials,
            runtime: shadow.clone(),
            arm: route.arm,
            label: route.label,
            mirrored,
            started: None,
            request_bytes,
            response: None,
            live,
        };
        (tracker, tee)
    }

    /// The build that serves the request.
    pub fn arm(&self) -> Arm {
        self.arm
    }

    /// The build is being called now: its latency counts from here, not from
    /// [`start`](Self::start). Call it right before calling the build's service, whichever
    /// build it is, so that what the adapter does first (classifying, copying, preparing
    /// the candidate's request) is paid by neither build's latency, and the two builds'
    /// live requests are measured alike.
    ///
    /// A request whose tracker was never told is counted, without a latency.
    pub fn calling(&mut self) {
        self.started = Some(Instant::now());
    }

    /// The latency so far, from [`calling`](Self::calling).
    fn latency(&self) -> Option<Duration> {
        self.started.map(|started| started.elapsed())
    }

    /// The response head is ready, with `status` and `headers`: the request's latency is
    /// measured now. Report a response's head once.
    pub fn respond(&mut self, status: u16, headers: &dyn HeaderView) {
        let latency = self.latency();
        self.response = Some(Responded {
            outcome: Outcome::from_http_status(status),
            latency,
            bytes: 0,
            whole: false,
        });
        let shared = self.runtime.shared();
        // Where live's state stood once it had served the read: it is compared only if
        // that is where it stood when the read arrived.
        let state_position = shared.state.as_ref().map(|state| state.live_position());
        self.live = match std::mem::replace(&mut self.live, LiveCapture::None) {
            // A response to HEAD is whole at its head (it has no body on the wire, and
            // servers may drop the handler's unread).
            LiveCapture::Head {
                slot,
                bodiless: true,
            } => {
                {
                    let mut live = slot.live();
                    live.fill_head(status, latency, &shared.config.compared_headers, headers);
                    live.clear_body();
                    live.state_position = state_position;
                    live.progress = LiveProgress::Seen;
                }
                shared.slots.give_back(slot);
                LiveCapture::None
            }
            LiveCapture::Head { slot, .. } => {
                let body = {
                    let mut live = slot.live();
                    live.fill_head(status, latency, &shared.config.compared_headers, headers);
                    live.state_position = state_position;
                    BodyCapture::reusing(shared.config.body_limit, std::mem::take(&mut live.body))
                };
                LiveCapture::Body { slot, body }
            }
            other => other,
        };
    }

    /// A chunk of the response body went to the client.
    pub fn chunk(&mut self, data: &[u8]) {
        if let Some(response) = &mut self.response {
            response.bytes += data.len() as u64;
        }
        if let LiveCapture::Body { body, .. } = &mut self.live {
            body.push(data);
        }
    }

    /// The response body was sent whole: the request is recorded, and compared if it was
    /// mirrored.
    pub fn finish(mut self) {
        if let Some(response) = &mut self.response {
            response.whole = true;
        }
    }

    /// The build answered with an error value instead of a response; the framework answers
    /// the client with `status`, which is what is recorded.
    pub fn fail(mut self, status: u16) {
        self.response = Some(Responded {
            outcome: Outcome::from_http_status(status),
            latency: self.latency(),
            bytes: 0,
            whole: false,
        });
    }

    /// The candidate panicked on this live request: the adapter answers `500 Internal
    /// Server Error`, and the panic is logged with its message and recorded.
    pub fn panicked(mut self, panic: &(dyn Any + Send)) {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let quoted: Vec<(&str, &[u8])> = self
            .credentials
            .iter()
            .flat_map(|credentials| credentials.iter())
            .map(|(name, value)| (name.as_str(), value.as_slice()))
            .collect();
        let message = self
            .runtime
            .shared()
            .config
            .redaction
            .redact_text_of_request(message, &HeaderList(quoted));
        tracing::error!(
            panic = %message,
            "the candidate panicked on a live request; answered 500"
        );
        ShadowStats::bump(&self.runtime.shared().stats.canary_panics);
        self.response = Some(Responded {
            outcome: Outcome::Panic,
            latency: self.latency(),
            bytes: 0,
            whole: false,
        });
    }
}

/// Sensitive headers, as `(name, value)`.
type Credentials = Box<[(String, Vec<u8>)]>;

/// The values of the sensitive headers in `headers`; `None` without any.
fn credentials(headers: &dyn HeaderView, redaction: &Redaction) -> Option<Credentials> {
    let mut found = Vec::new();
    headers.each(&mut |name, value| {
        if redaction.is_sensitive_header(name, false) {
            found.push((name.to_owned(), value.to_vec()));
        }
    });
    (!found.is_empty()).then(|| found.into_boxed_slice())
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let shared = self.runtime.shared();
        let whole = self.response.as_ref().is_some_and(|r| r.whole);
        match &self.response {
            Some(_) if self.mirrored => shared.recorder.count_live(self.arm),
            Some(Responded {
                latency: Some(latency),
                outcome,
                bytes,
                ..
            }) => {
                let record = RequestRecord::new(self.arm, *outcome, *latency)
                    .bytes(self.request_bytes, *bytes);
                shared.recorder.record_indexed(&record, self.label);
            }
            Some(_) => shared.recorder.count_live(self.arm),
            None => {}
        }
        // The shadow compares only a response it saw whole; anything else is a miss.
        match std::mem::replace(&mut self.live, LiveCapture::None) {
            LiveCapture::None => {}
            LiveCapture::Head { slot, .. } => {
                slot.live().progress = LiveProgress::Lost;
                shared.slots.give_back(slot);
            }
            LiveCapture::Body { slot, body } => {
                {
                    let mut live = slot.live();
                    if whole {
                        live.set_body(body);
                        live.progress = LiveProgress::Seen;
                    } else {
                        // The buffer is kept for the slot's next read.
                        live.body = body.into_bytes();
                        live.progress = LiveProgress::Lost;
                    }
                }
                shared.slots.give_back(slot);
            }
        }
    }
}

/// The copy of a mirrored read's body, made as the live handler reads it: feed it each
/// chunk the handler reads ([`chunk`](Self::chunk)) and tell it when the body ended
/// ([`end`](Self::end)), which hands the copy to the shadow.
///
/// A body larger than the limit is given up at the chunk that crosses it (counted as
/// `skipped_oversize`); one never read to its end — dropped unfinished — is counted as
/// `skipped_unread_body`. The live handler never waits for the copy.
pub struct BodyTee {
    runtime: ShadowRuntime,
    /// Until the copy is handed over or given up.
    slot: Option<Arc<CopySlot>>,
    target: TargetId,
}

impl fmt::Debug for BodyTee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyTee")
            .field("copying", &self.slot.is_some())
            .finish_non_exhaustive()
    }
}

impl BodyTee {
    /// A chunk of the request body was read. Returns whether the copy goes on; `false`
    /// once the body has grown past the limit (the copy is given up then).
    pub fn chunk(&mut self, data: &[u8]) -> bool {
        let Some(slot) = &self.slot else {
            return false;
        };
        if slot.request().push_body(data) {
            return true;
        }
        if let Some(slot) = self.slot.take() {
            self.runtime.abandon(slot, true);
        }
        false
    }

    /// The body ended: the copy goes to the shadow.
    pub fn end(mut self) {
        if let Some(slot) = self.slot.take() {
            self.runtime.submit(slot, self.target);
        }
    }
}

impl Drop for BodyTee {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.runtime.abandon(slot, false);
        }
    }
}

#[cfg(test)]
mod tests;
