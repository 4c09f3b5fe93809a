//! What every HTTP adapter does around a live request, whatever its framework: the rollout
//! it serves, and the recording of each live response once it has been sent.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{LiveBodyObserver, ShadowRuntime};
use crate::{
    Arm, KpiRecorder, Outcome, Predictor, RolloutController, RolloutHandle, RolloutPolicy,
    ThresholdPredictor, TrafficSteerer, Version, WeightedSteerer,
};

/// The rollout an adapter serves: the handle whose phase it follows, the steerer the
/// controller drives, and the recorder the controller reads.
///
/// ```
/// use std::sync::Arc;
/// use shadowlib::mirror::Rollout;
/// use shadowlib::*;
///
/// let (v1, v2) = (Version::new("shop", "1"), Version::new("shop", "2"));
/// let recorder = Arc::new(KpiRecorder::new(v1.clone(), v2.clone()));
/// let controller = RolloutController::new(v1, v2, RolloutPolicy::default(),
///         ThresholdPredictor::default(), Arc::new(WeightedSteerer::new()))?
///     .with_metric_source(recorder.clone());
/// let rollout = Rollout::of(&controller, recorder);
/// assert_eq!(rollout.handle.status().phase, Phase::Idle);
/// # Ok::<(), shadowlib::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Rollout {
    /// The rollout's handle.
    pub handle: RolloutHandle,
    /// The steerer the controller sets the share on.
    pub steerer: Arc<dyn TrafficSteerer>,
    /// The recorder the controller collects from (`with_metric_source`).
    pub recorder: Arc<KpiRecorder>,
}

impl Rollout {
    /// The rollout `controller` runs, recording into `recorder`. Register the same
    /// recorder with the controller's `with_metric_source`, or it will see no data.
    pub fn of<P, T>(controller: &RolloutController<P, T>, recorder: Arc<KpiRecorder>) -> Self
    where
        P: Predictor,
        T: TrafficSteerer + 'static,
    {
        Self {
            handle: controller.handle(),
            steerer: controller.steerer().clone(),
            recorder,
        }
    }
}

impl Rollout {
    /// A rollout that only shadows: started under the default policy with no controller
    /// looking at it, so every read is mirrored to the candidate and compared, and no live
    /// request is ever sent to the candidate. For comparing two builds without rolling
    /// anything out (the way GitHub Scientist or Diffy are used), and for tests and
    /// benchmarks of a middleware.
    ///
    /// ```
    /// use shadowlib::mirror::Rollout;
    /// use shadowlib::{Phase, Share, Version};
    ///
    /// let rollout = Rollout::shadow_only(Version::new("shop", "1"), Version::new("shop", "2"));
    /// assert_eq!(rollout.handle.status().phase, Phase::Shadowing);
    /// assert_eq!(rollout.steerer.share(), Share::ZERO);
    /// ```
    pub fn shadow_only(stable: Version, candidate: Version) -> Self {
        let recorder = Arc::new(KpiRecorder::new(stable.clone(), candidate.clone()));
        let controller = RolloutController::new(
            stable,
            candidate,
            RolloutPolicy::default(),
            ThresholdPredictor::default(),
            Arc::new(WeightedSteerer::new()),
        )
        .expect("the default policy is valid");
        let rollout = Self::of(&controller, recorder);
        rollout
            .handle
            .start()
            .expect("a rollout that was just built is idle, and idle rollouts start");
        rollout
    }
}

impl fmt::Debug for Rollout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollout")
            .field("status", &self.handle.status().phase)
            .field("share", &self.steerer.share())
            .finish_non_exhaustive()
    }
}

/// A live response on its way to the client: records the request once the body has been
/// sent, and for a mirrored read hands the response to the shadow to compare.
///
/// Made by [`ShadowRuntime::live_response`] when the response head is known. The adapter
/// feeds it each chunk of the body as it passes ([`chunk`](Self::chunk)) and calls
/// [`finish`](Self::finish) when the body has ended. The request is recorded when it is
/// finished or dropped (the client went away, the body failed): latency to the head,
/// outcome from the status, request bytes, and the response bytes that passed. Only a
/// response seen whole is compared with the shadow's.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use shadowlib::mirror::{Rollout, ShadowConfig, ShadowRuntime};
/// use shadowlib::*;
///
/// let (v1, v2) = (Version::new("api", "1"), Version::new("api", "2"));
/// let recorder = Arc::new(KpiRecorder::new(v1.clone(), v2.clone()));
/// let controller = RolloutController::new(v1, v2, RolloutPolicy::default(),
///     ThresholdPredictor::default(), Arc::new(WeightedSteerer::new()))?;
/// let rollout = Rollout::of(&controller, recorder.clone());
/// let (runtime, _workers) = ShadowRuntime::new(
///     ShadowConfig::new(), rollout.steerer, &rollout.handle, rollout.recorder)?;
///
/// let mut response = runtime.live_response(Arm::Stable, 200, Duration::from_millis(3), 0, None);
/// response.chunk(b"hello");
/// response.finish();
/// let stable = recorder.snapshot(Arm::Stable);
/// assert_eq!((stable.outcomes.success, stable.response_bytes), (1, 5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LiveResponse {
    recorder: Arc<KpiRecorder>,
    arm: Arm,
    outcome: Outcome,
    latency: Duration,
    request_bytes: u64,
    response_bytes: u64,
    observer: Option<LiveBodyObserver>,
    whole: bool,
}

impl ShadowRuntime {
    /// Starts recording a live response of `arm` whose head, with `status`, was ready
    /// `latency` after the request arrived. `observer` is the mirrored read's
    /// [`LiveObserver`](super::LiveObserver), already given the head, if there is one.
    pub fn live_response(
        &self,
        arm: Arm,
        status: u16,
        latency: Duration,
        request_bytes: u64,
        observer: Option<LiveBodyObserver>,
    ) -> LiveResponse {
        LiveResponse {
            recorder: Arc::clone(self.recorder()),
            arm,
            outcome: Outcome::from_http_status(status),
            latency,
            request_bytes,
            response_bytes: 0,
            observer,
            whole: false,
        }
    }
}

impl LiveResponse {
    /// A chunk of the body went to the client.
    pub fn chunk(&mut self, data: &[u8]) {
        self.response_bytes += data.len() as u64;
        if let Some(observer) = &mut self.observer {
            observer.chunk(data);
        }
    }

    /// The body was sent whole: records the request and lets the shadow compare.
    pub fn finish(mut self) {
        self.whole = true;
    }
}

impl fmt::Debug for LiveResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveResponse")
            .field("arm", &self.arm)
            .field("outcome", &self.outcome)
            .field("response_bytes", &self.response_bytes)
            .field("compared", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for LiveResponse {
    fn drop(&mut self) {
        self.recorder.record(
            self.arm,
            self.outcome,
            self.latency,
            self.request_bytes,
            self.response_bytes,
        );
        // Dropping the observer unfinished tells the shadow there is nothing to compare.
        if let Some(observer) = self.observer.take()
            && self.whole
        {
            observer.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;
    use crate::mirror::{HeaderList, HttpVersion, RequestHead, ResponseSummary, ShadowConfig};
    use crate::mirror::{ShadowReply, ShadowResult};

    fn runtime() -> (ShadowRuntime, Arc<KpiRecorder>) {
        let rollout = Rollout::shadow_only(Version::new("t", "1"), Version::new("t", "2"));
        let recorder = Arc::clone(&rollout.recorder);
        let (runtime, worker) = ShadowRuntime::new(
            ShadowConfig::new(),
            rollout.steerer,
            &rollout.handle,
            rollout.recorder,
        )
        .expect("valid budget");
        // The candidate answers `200 "same"` to everything.
        tokio::spawn(worker.run(|_copy, capture| {
            let mut body = capture.body();
            body.push(b"same");
            let reply: ShadowResult = Ok(ShadowReply {
                response: ResponseSummary::new(200).with_body(body),
                latency: Duration::from_millis(1),
            });
            std::future::ready(reply)
        }));
        (runtime, recorder)
    }

    /// Mirrors one read, and returns the live side's response recorder.
    fn mirrored_read(runtime: &ShadowRuntime) -> LiveResponse {
        let headers = HeaderList::default();
        let head = RequestHead::new("GET", "/r", &headers);
        let mut ticket = runtime.route(&head).mirror.expect("a read while shadowing");
        ticket.copy_head(&head, "/r", HttpVersion::Http11, None);
        let observer = ticket.observe_live().head(200, &headers);
        assert!(ticket.submit());
        runtime.live_response(
            Arm::Stable,
            200,
            Duration::from_millis(2),
            7,
            Some(observer),
        )
    }

    async fn settled(runtime: &ShadowRuntime) {
        for _ in 0..10_000 {
            let counts = runtime.stats().counts();
            if counts.compared + counts.comparison_missed == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the shadow never settled");
    }

    #[tokio::test]
    async fn a_finished_response_is_recorded_and_compared() {
        let (runtime, recorder) = runtime();
        let mut live = mirrored_read(&runtime);
        live.chunk(b"sa");
        live.chunk(b"me");
        live.finish();
        settled(&runtime).await;
        let counts = runtime.stats().counts();
        assert_eq!((counts.compared, counts.mismatched), (1, 0));
        let stable = recorder.snapshot(Arm::Stable);
        assert_eq!(
            (
                stable.outcomes.success,
                stable.request_bytes,
                stable.response_bytes
            ),
            (1, 7, 4)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_dropped_midway_is_recorded_but_not_compared() {
        let (runtime, recorder) = runtime();
        let mut live = mirrored_read(&runtime);
        live.chunk(b"sa");
        drop(live);
        settled(&runtime).await;
        assert_eq!(runtime.stats().counts().comparison_missed, 1);
        assert_eq!(recorder.snapshot(Arm::Stable).response_bytes, 2);
    }

    #[tokio::test]
    async fn error_statuses_are_recorded_as_their_class() {
        let (runtime, recorder) = runtime();
        runtime
            .live_response(Arm::Candidate, 503, Duration::from_millis(1), 0, None)
            .finish();
        drop(runtime.live_response(Arm::Candidate, 404, Duration::from_millis(1), 0, None));
        let candidate = recorder.snapshot(Arm::Candidate);
        assert_eq!(
            (
                candidate.outcomes.server_error,
                candidate.outcomes.client_error
            ),
            (1, 1)
        );
    }
}
