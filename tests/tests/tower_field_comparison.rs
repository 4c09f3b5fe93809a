//! The field-level comparator behind the tower adapter: fields ignored by rule are not
//! compared, a field that differs between live and the stable twin is noise, and a real
//! change is a mismatch named by its JSON path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http_body_util::BodyExt;
use shadowlib::PairedEvidence;
use shadowlib::compare::{Comparator, CompareConfig, ComparisonReport};
use shadowlib::mirror::PathPattern;
use shadowlib::shadow::{ShadowConfig, ShadowCounts};
use shadowlib::{Rollout, RolloutPolicy, Version};
use shadowlib_tower::ShadowLayer;
use tower::{Layer, ServiceExt};

/// A build that answers every read with its price and the "time" it served it: a tick
/// every build shares, as a clock would be, so no two responses carry the same.
fn build(price: u32) -> Router {
    static TICKS: AtomicU64 = AtomicU64::new(0);
    Router::new().route(
        "/items/{id}",
        get(move || {
            let n = TICKS.fetch_add(1, Ordering::Relaxed);
            async move {
                (
                    [("content-type", "application/json")],
                    format!(r#"{{"price": {price}, "served_at": "12:00:{n:02}"}}"#),
                )
            }
        }),
    )
}

/// Sends `reads` reads through the layer over v1 with `candidate` as the shadow,
/// comparing with `comparator`, and returns the shadow's pairs once every copy was
/// compared.
async fn mirror_reads(
    candidate: Router,
    reads: u64,
    comparator: Comparator,
) -> (PairedEvidence, ShadowCounts) {
    let items = PathPattern::new("/items/{id}").expect("a valid pattern");
    let (rollout, _driver) = Rollout::builder(Version::new("shop", "1"), Version::new("shop", "2"))
        .policy(RolloutPolicy::default())
        .shadow(ShadowConfig::new().with_comparator(comparator))
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
    (rollout.evidence().shadow.pairs, rollout.shadow_counts())
}

/// A comparator that ignores the timestamp by rule.
fn ignoring_the_timestamp() -> Comparator {
    Comparator::new(CompareConfig {
        ignore_json_paths: vec!["/served_at".into()],
        ..CompareConfig::default()
    })
    .expect("valid comparison settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_ignored_by_rule_are_not_compared() {
    let (pairs, counts) = mirror_reads(build(10), 20, ignoring_the_timestamp()).await;
    assert_eq!((counts.compared, counts.mismatched), (20, 0));
    let report = ComparisonReport::from_pairs(&pairs, 5);
    assert_eq!(report.routes.len(), 1, "{report}");
    let route = &report.routes[0];
    assert_eq!((route.compared, route.candidate_only), (20, 0));
    assert!(route.top_fields.is_empty(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_no_rule_names_is_learned_as_noise_from_the_twin() {
    let (pairs, counts) = mirror_reads(build(10), 20, Comparator::default()).await;
    // Live, the twin and the candidate each stamp their own time: the twin differs from
    // live in it as the candidate does, so it is noise, not a mismatch.
    assert_eq!((counts.compared, counts.mismatched), (20, 0));
    let served_at = pairs.total.fields["/served_at"];
    assert_eq!(served_at.both, 20, "{served_at:?}");
    assert!(served_at.is_noise());
    assert_eq!(pairs.total.mismatches.net_rate(), 0.0);
    let report = ComparisonReport::from_pairs(&pairs, 5);
    assert!(report.routes[0].top_fields[0].is_noise, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_field_is_a_mismatch_named_by_its_path() {
    let (pairs, counts) = mirror_reads(build(12), 20, Comparator::default()).await;
    assert_eq!((counts.compared, counts.mismatched), (20, 20));
    let report = ComparisonReport::from_pairs(&pairs, 5);
    let route = &report.routes[0];
    assert_eq!(route.route, "GET /items/{id}");
    assert_eq!(route.candidate_only, 20);
    assert_eq!(route.top_fields[0].field, "/price", "{report}");
    assert!(!route.top_fields[0].is_noise);
}
