//! The live path of a mirrored read allocates nothing once warmed up: the copy and the
//! live response go into reused slots, and everything the candidate's request needs is
//! built, and freed, on the shadow's side. (Memory allocated on the live thread and freed
//! on the shadow's made the two threads fight over the allocator's lock at one copy per
//! request.)

use std::time::Duration;

use shadowlib::adapter::{
    BodySize, RequestCopy, ResponseCapture, Runtime, ShadowCall, ShadowReply, ShadowTarget,
    TargetId, Tracker,
};
use shadowlib::metrics::{CountingAllocator, thread_allocations};
use shadowlib::mirror::{HeaderList, RequestHead};
use shadowlib::{Arm, Rollout, RolloutPolicy, Version};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::system();

/// The candidate answers `{"id":42}` as JSON to every copy.
struct Answers;

impl ShadowTarget for Answers {
    fn call(&self, _arm: Arm, _copy: &RequestCopy, capture: ResponseCapture) -> ShadowCall {
        Box::pin(async move {
            let json = HeaderList(vec![("content-type", b"application/json".as_slice())]);
            let mut summary = capture.head(200, &json);
            let mut body = capture.body();
            body.push(b"{\"id\":42}");
            summary.set_body(body);
            Ok(ShadowReply {
                response: summary,
                latency: Duration::from_micros(900),
            })
        })
    }
}

/// One mirrored read as an adapter drives it on the live thread: the tracker started with
/// the request's head, the body copied through its tee and handed off, then the live
/// response reported.
fn mirrored_read(runtime: &Runtime, target: TargetId, headers: &HeaderList<'_>, body: &[u8]) {
    let head = RequestHead::new("GET", "/items/42", headers).with_query(Some("page=2"));
    let size = BodySize::Exact(body.len() as u64);
    let (mut tracker, tee) = Tracker::start(runtime, target, &head, size);
    let mut tee = tee.expect("a read while shadowing, with a body");
    assert!(tee.chunk(body));
    tee.end();
    tracker.respond(200, headers);
    tracker.chunk(b"{\"id\":42}");
    tracker.finish();
}

/// Runs `reads` mirrored reads in batches, waiting after each batch until the shadow has
/// compared them all, so the slots are back in the pool for the next batch.
async fn mirror(rollout: &Rollout, target: TargetId, reads: u64, headers: &HeaderList<'_>) {
    const BATCH: u64 = 50;
    let runtime = Runtime::new(rollout);
    let start = rollout.shadow_counts().compared;
    for done in (0..reads).step_by(BATCH as usize) {
        for _ in 0..BATCH {
            mirrored_read(&runtime, target, headers, b"q=shoes");
        }
        // A liveness wait only, generous for a loaded machine; a shadow that never
        // catches up fails here by name.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while rollout.shadow_counts().compared < start + done + BATCH {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the shadow to compare the batch: {:?}",
                rollout.shadow_counts()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_warmed_up_mirrored_read_allocates_nothing_on_the_live_thread() {
    let rollout = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2"))
        .policy(RolloutPolicy::default())
        .without_process_sampling()
        .shadow_only()
        .build()
        .expect("a valid configuration");
    let target = Runtime::new(&rollout).register(Box::new(|| {
        Box::pin(async { Ok(Box::new(Answers) as Box<dyn ShadowTarget>) })
    }));
    let headers = HeaderList(vec![
        ("accept", b"application/json".as_slice()),
        ("user-agent", b"test/1.0".as_slice()),
        ("authorization", b"Bearer secret".as_slice()),
        ("content-type", b"application/json".as_slice()),
    ]);

    mirror(&rollout, target, 2_000, &headers).await;
    let before = thread_allocations().expect("the counting allocator is installed");
    mirror(&rollout, target, 1_000, &headers).await;
    let after = thread_allocations().expect("the counting allocator is installed");

    let counts = rollout.shadow_counts();
    assert_eq!((counts.compared, counts.mismatched), (3_000, 0));
    assert_eq!(
        after.since(before).count,
        0,
        "the live path allocated while mirroring 1,000 reads"
    );
}
