//! What the signed override header costs a live request: the check of a request without
//! the header (what every request pays once an override is configured), of a valid value
//! (an HMAC-SHA256 over about 60 bytes, a constant-time compare, the clock) and of a forged
//! one (the same HMAC, refused).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use shadowlib::mirror::{ArmOverride, HeaderList, RequestHead};
use shadowlib::{Arm, Phase, Version};

fn bench_override_check(c: &mut Criterion) {
    let (stable, candidate) = (
        Version::new("shop", "1.41.0"),
        Version::new("shop", "1.42.0"),
    );
    let Ok(header) = ArmOverride::signed("x-shadowlib-arm", [42u8; 32]) else {
        panic!("a 32-byte secret is long enough");
    };
    let header = header.for_builds(&stable, &candidate);
    let Ok(valid) = header.sign(
        Arm::Candidate,
        &candidate,
        SystemTime::now() + Duration::from_secs(3_600),
    ) else {
        panic!("an expiry an hour ahead can be signed");
    };
    let forged = format!("{}0", &valid[..valid.len() - 1]);
    let cases = [
        ("no_header", HeaderList(vec![("accept", b"*/*".as_slice())])),
        (
            "valid",
            HeaderList(vec![("x-shadowlib-arm", valid.as_bytes())]),
        ),
        (
            "forged",
            HeaderList(vec![("x-shadowlib-arm", forged.as_bytes())]),
        ),
    ];
    let mut group = c.benchmark_group("override_check");
    for (name, headers) in &cases {
        let head = RequestHead::new("GET", "/items", headers);
        group.bench_function(*name, |b| {
            b.iter(|| header.admit(black_box(&head), Phase::Shadowing, || true))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_override_check
}
criterion_main!(benches);
