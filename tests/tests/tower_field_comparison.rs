//! The field-level comparator plugged into the tower adapter: fields that differ by design
//! are ignored, a real change is a mismatch named by its JSON path.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http_body_util::BodyExt;
use shadowlib::compare::{Comparator, CompareConfig};
use shadowlib::mirror::PathPattern;
use shadowlib::shadow::{ShadowConfig, ShadowCounts};
use shadowlib::{Rollout, RolloutPolicy, Version};
use shadowlib_tower::ShadowLayer;
use tower::{Layer, ServiceExt};

/// A build that answers every read with its price and the time it served it.
fn build(price: u32) -> Router {
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    Router::new().route(
        "/items/{id}",
        get(move || {
            let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                (
                    [("content-type", "application/json")],
                    format!(r#"{{"price": {price}, "served_at": "12:00:{n:02}"}}"#),
                )
            }
        }),
    )
}

/// Sends `reads` reads through the layer over v1 with `candidate` as the shadow, and
/// returns the comparator once every copy was compared.
async fn mirror_reads(candidate: Router, reads: u64) -> (Arc<Comparator>, ShadowCounts) {
    let comparator = Arc::new(
        Comparator::new(CompareConfig {
            ignore_json_paths: vec!["/served_at".into()],
            ..CompareConfig::default()
        })
        .expect("valid comparison settings"),
    );
    let items = PathPattern::new("/items/{id}").expect("a valid pattern");
    let (rollout, _driver) = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2"))
        .policy(RolloutPolicy::default())
        .shadow(ShadowConfig::new().with_comparator(Arc::clone(&comparator)))
        .route_patterns([items])
        .without_process_sampling()
        .build_driven()
        .expect("a valid configuration");
    let service = ShadowLayer::new(candidate, &rollout).layer(build(10));
    for id in 0..reads {
        let request = http::Request::get(format!("/items/{id}"))
            .body(axum::body::Body::empty())
            .expect("valid request");
        let response = service.clone().oneshot(request).await.expect("infallible");
        response
            .into_body()
            .collect()
            .await
            .expect("the live body reads");
    }
    // A liveness wait only: generous for a loaded machine, and a shadow that never
    // catches up fails here by name rather than as a short count below.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rollout.shadow_counts().compared < reads {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {reads} comparisons: {:?}",
            rollout.shadow_counts()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (comparator, rollout.shadow_counts())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_that_differ_by_design_are_not_mismatches() {
    let (comparator, counts) = mirror_reads(build(10), 20).await;
    assert_eq!((counts.compared, counts.mismatched), (20, 0));
    let report = comparator.report();
    assert_eq!(report.routes.len(), 1, "{report}");
    assert_eq!(
        (report.routes[0].compared, report.routes[0].mismatched),
        (20, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_field_is_a_mismatch_named_by_its_path() {
    let (comparator, counts) = mirror_reads(build(12), 20).await;
    assert_eq!((counts.compared, counts.mismatched), (20, 20));
    let report = comparator.report();
    let route = &report.routes[0];
    assert_eq!(route.route, "GET /items/{id}");
    assert_eq!(route.mismatched, 20);
    assert!(
        route.top_fields.iter().any(|f| f.field == "/price"),
        "{report}"
    );
}
