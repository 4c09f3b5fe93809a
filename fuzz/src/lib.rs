//! The fuzzed entry points, one per input a user or a client controls. Each takes any
//! bytes and must neither panic nor hang; what it checks beyond that is said on it.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, run by
//! `scripts/fuzz.sh`) and by the bounded harness `tests/tests/safe_operation_fuzz.rs`,
//! which `cargo test` runs on stable with the crashes found kept as regression inputs.

use std::time::{Duration, SystemTime};

use shadowlib::admin::{AdminApi, AdminRequest};
use shadowlib::compare::{
    Comparator, CompareConfig, CompareResponses, ResponseParts, ResponseSummary,
};
use shadowlib::mirror::{
    ArmOverride, HeaderList, HeaderPolicy, HttpMirror, Mirror, PathPattern, RequestCopy,
    RequestHead,
};
use shadowlib::redact::Redaction;
use shadowlib::shadow::ShadowBudget;
use shadowlib::{Arm, Phase, Rollout, RolloutPolicy, Version};

/// Splits `data` at its first `sep` byte: what comes before, and after.
fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == sep) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A rollout policy file: parsed and validated, or a typed error. One that parses must
/// survive a round trip through TOML and validate again.
pub fn policy_file(data: &[u8]) {
    if let Ok(policy) = RolloutPolicy::from_toml(&text(data)) {
        policy.validate().expect("a parsed policy is valid");
        let _ = Rollout::builder(Version::new("s", "1"), Version::new("s", "2"))
            .policy(policy)
            .without_process_sampling()
            .build_driven()
            .expect("a valid policy builds");
    }
}

/// A shadow budget file.
pub fn budget_file(data: &[u8]) {
    if let Ok(budget) = ShadowBudget::from_toml(&text(data)) {
        budget.validate().expect("a parsed budget is valid");
    }
}

/// Read rules and path patterns (one per line, the last line the request): whatever
/// parses classifies any request, and a denied route is never a read.
pub fn read_rules(data: &[u8]) {
    let text = text(data);
    let mut lines: Vec<&str> = text.lines().collect();
    let request = lines.pop().unwrap_or_default();
    // Read as a rule is (two words, any whitespace between), so that a denied rule and a
    // request with the same words are the same route.
    let (method, path) = match request.split_whitespace().collect::<Vec<_>>()[..] {
        [method, path] => (method, path),
        _ => ("GET", request),
    };
    let mut mirror = HttpMirror::new();
    let mut denied = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if let Ok(pattern) = PathPattern::new(line) {
            let _ = pattern.matches(path);
        }
        let ruled = if i % 2 == 0 {
            mirror.clone().allow(line)
        } else {
            let ruled = mirror.clone().deny(line);
            if ruled.is_ok() {
                denied.push(line.split_whitespace().collect::<Vec<_>>());
            }
            ruled
        };
        if let Ok(ruled) = ruled {
            mirror = ruled;
        }
    }
    let headers = HeaderList::default();
    let head = RequestHead::new(method, path, &headers);
    let class = mirror.classify(&head);
    if denied.contains(&vec![method, path]) {
        assert!(!class.is_read(), "denied `{request}` classified a read");
    }
}

/// The JSON comparator on two bodies (split at the first `0xff`), with ignore patterns
/// from the bodies' first line: no panic, and a response never differs from itself.
pub fn json_comparator(data: &[u8]) {
    let (first, second) = split(data, 0xff);
    let patterns: Vec<String> = text(first).lines().take(4).map(str::to_owned).collect();
    let comparator = Comparator::new(CompareConfig {
        ignore_json_paths: patterns,
        ..CompareConfig::default()
    })
    .unwrap_or_default();
    let live = ResponseParts::new(200, first).header(b"content-type", b"application/json");
    let shadow = ResponseParts::new(200, second).header(b"Content-Type", second);
    let _ = comparator.fields(&live, &shadow);
    assert!(
        comparator.fields(&live, &live).is_empty(),
        "a body differs from itself"
    );
    let summary = |body: &[u8]| {
        let mut summary = ResponseSummary::new(200);
        summary.body = body.to_vec();
        summary.body_len = body.len() as u64;
        summary
    };
    let _ = comparator.compare("GET /", &summary(first), &summary(second));
}

/// The HTTP copy path: a request of any method, path, query and headers (one `name:
/// value` per line after the first) classified, copied for the shadow, its override
/// header checked, and its credentials scrubbed from text. The copy carries no
/// hop-by-hop header.
pub fn http_copy(data: &[u8]) {
    let text = text(data);
    let mut lines = text.split('\n');
    let start = lines.next().unwrap_or_default();
    let mut words = start.splitn(3, ' ');
    let method = words.next().unwrap_or_default();
    let target = words.next().unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let owned: Vec<(String, Vec<u8>)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.as_bytes().to_vec()))
        .collect();
    let headers = HeaderList(
        owned
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect(),
    );
    let head = RequestHead::new(method, path, &headers).with_query(query);
    let policy = HeaderPolicy::new()
        .redact("authorization")
        .unwrap_or_default();
    let mirror = HttpMirror::new().with_headers(policy);
    let _ = mirror.classify(&head);
    let mut copy = RequestCopy::default();
    mirror.copy(&head, &mut copy);
    for (name, _) in copy.headers() {
        assert!(
            !shadowlib::mirror::HOP_BY_HOP.contains(&name),
            "hop-by-hop `{name}` copied"
        );
    }
    let _ = format!("{copy:?}");
    let (stable, candidate) = (Version::new("s", "1"), Version::new("s", "2"));
    if let Ok(header) = ArmOverride::signed("x-shadowlib-arm", [7u8; 32]) {
        let header = header.for_builds(&stable, &candidate);
        let admitted = header.admit(&head, Phase::Shadowing, || method == "GET");
        // Fuzzed bytes never carry a valid tag for this secret.
        assert_eq!(admitted, None, "a fuzzed value was honoured");
        let _ = header.sign(
            Arm::Candidate,
            &candidate,
            SystemTime::now() + Duration::from_secs(60),
        );
    }
    let _ = Redaction::new().redact_text_of_request(&text, &headers);
}

/// The admin API on any request: never a panic, never a `2xx` without a token.
pub fn admin_request(data: &[u8]) {
    let text = text(data);
    let mut parts = text.splitn(4, '\n');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let authorization = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let Ok((rollout, _driver)) = Rollout::builder(Version::new("s", "1"), Version::new("s", "2"))
        .without_process_sampling()
        .build_driven()
    else {
        return;
    };
    let Ok(api) = AdminApi::builder(&rollout)
        .operate_token("ops", "operate-token-0123456789")
        .build()
    else {
        return;
    };
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let request = AdminRequest::new(method, path)
        .with_query(query)
        .with_authorization(Some(authorization.as_bytes()))
        .with_body(body.as_bytes());
    let response = api.handle(&request);
    if !authorization.contains("operate-token-0123456789") {
        assert_eq!(response.status, 401, "let in without the token");
    }
}

/// Delta frames and snapshots (feature `delta`): a follower fed any frame bytes, and a
/// snapshot of any bytes when it resynchronises, stays up and decodes nothing wrong.
pub fn delta_frame(data: &[u8]) {
    use std::sync::Arc;

    use bytes::Bytes;
    use shadowlib::delta::{DeltaBus, Frame, KeyValueMap, SnapshotSource, Transport};

    struct FuzzedSnapshot(Bytes);

    impl SnapshotSource for FuzzedSnapshot {
        fn snapshot(&self) -> Result<Bytes, shadowlib::delta::CodecError> {
            Ok(self.0.clone())
        }
    }

    let (frame, snapshot) = split(data, 0xff);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let Ok(bus) = DeltaBus::<KeyValueMap<String, u64>>::in_process(8) else {
            return;
        };
        let source: Arc<dyn SnapshotSource> =
            Arc::new(FuzzedSnapshot(Bytes::copy_from_slice(snapshot)));
        bus.transport().serve_snapshots(Arc::downgrade(&source));
        let Ok(shadow) = bus.follow(KeyValueMap::new()) else {
            return;
        };
        for _ in 0..3 {
            bus.transport().publish(Frame {
                bytes: Bytes::copy_from_slice(frame),
                published_at: tokio::time::Instant::now(),
            });
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = shadow.stats();
        let _ = shadow.read(|state| state.len());
    });
}
