//! The live path of a mirrored read allocates nothing once warmed up: the copy and the
//! live response go into reused slots, and everything the candidate's request needs is
//! built, and freed, on the shadow's side. (Memory allocated on the live thread and freed
//! on the shadow's made the two threads fight over the allocator's lock at one copy per
//! request.)

use std::time::Duration;

use shadowlib::metrics::{CountingAllocator, thread_allocations};
use shadowlib::mirror::{
    HeaderList, HttpVersion, Rollout, ShadowConfig, ShadowReply, ShadowResult, ShadowRuntime,
};
use shadowlib::{Arm, Version};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::system();

/// One mirrored read as an adapter drives it on the live thread: route, copy of the head
/// and body, hand-off, then the live response observed and recorded.
fn mirrored_read(runtime: &ShadowRuntime, headers: &HeaderList<'_>, body: &[u8]) {
    let head = shadowlib::mirror::RequestHead::new("GET", "/items/42", headers);
    let route = runtime.route(&head);
    let mut ticket = route.mirror.expect("a read while shadowing");
    ticket.copy_head(&head, "/items/42?page=2", HttpVersion::Http11, None);
    assert!(ticket.copy_body(body));
    let observer = ticket.observe_live();
    assert!(ticket.submit(), "the queue has room");
    let observer = observer.head(200, headers);
    let mut live = runtime.live_response(
        Arm::Stable,
        200,
        Duration::from_micros(900),
        body.len() as u64,
        Some(observer),
    );
    live.chunk(b"{\"id\":42}");
    live.finish();
}

/// Runs `reads` mirrored reads in batches, waiting after each batch until the shadow has
/// compared them all, so the slots are back in the pool for the next batch.
async fn mirror(runtime: &ShadowRuntime, reads: u64, headers: &HeaderList<'_>) {
    const BATCH: u64 = 50;
    let start = runtime.stats().counts().compared;
    for done in (0..reads).step_by(BATCH as usize) {
        for _ in 0..BATCH {
            mirrored_read(runtime, headers, b"q=shoes");
        }
        // A liveness wait only, generous for a loaded machine; a shadow that never
        // catches up fails here by name.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while runtime.stats().counts().compared < start + done + BATCH {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for the shadow to compare the batch: {:?}",
                runtime.stats().counts()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_warmed_up_mirrored_read_allocates_nothing_on_the_live_thread() {
    let rollout = Rollout::shadow_only(Version::new("shop", "1"), Version::new("shop", "2"));
    let (runtime, worker) = ShadowRuntime::new(
        ShadowConfig::new(),
        rollout.steerer,
        &rollout.handle,
        rollout.recorder,
    )
    .expect("the default budget is valid");
    // The worker runs on the runtime's worker thread; this test's body on its own.
    tokio::spawn(worker.run(|_copy, capture| {
        let mut body = capture.body();
        body.push(b"{\"id\":42}");
        let json = HeaderList(vec![("content-type", b"application/json".as_slice())]);
        let reply: ShadowResult = Ok(ShadowReply {
            response: capture.head(200, &json).with_body(body),
            latency: Duration::from_micros(900),
        });
        std::future::ready(reply)
    }));
    let headers = HeaderList(vec![
        ("accept", b"application/json".as_slice()),
        ("user-agent", b"test/1.0".as_slice()),
        ("authorization", b"Bearer secret".as_slice()),
        ("content-type", b"application/json".as_slice()),
    ]);

    mirror(&runtime, 2_000, &headers).await;
    let before = thread_allocations().expect("the counting allocator is installed");
    mirror(&runtime, 1_000, &headers).await;
    let after = thread_allocations().expect("the counting allocator is installed");

    let counts = runtime.stats().counts();
    assert_eq!((counts.compared, counts.mismatched), (3_000, 0));
    assert_eq!(
        after.since(before).count,
        0,
        "the live path allocated while mirroring 1,000 reads"
    );
}
