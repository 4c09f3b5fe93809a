//! What the signed override header costs per request on the live path: the check of a
//! valid value (an HMAC-SHA256 of about 60 bytes, a constant-time compare, the clock), of
//! a forged one, and of a request without the header. Printed for the notes; the bound
//! asserted is loose (a debug build on a busy 2-core machine), the figure is the point.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use shadowlib::mirror::{ArmOverride, HeaderList, RequestHead};
use shadowlib::{Arm, Phase, Version};

fn per_check(header: &ArmOverride, headers: &HeaderList<'_>) -> Duration {
    const CHECKS: u32 = 20_000;
    let head = RequestHead::new("GET", "/items", headers);
    let started = Instant::now();
    for _ in 0..CHECKS {
        black_box(header.admit(black_box(&head), Phase::Shadowing, || true));
    }
    started.elapsed() / CHECKS
}

#[test]
fn the_override_check_costs_microseconds_at_most() {
    let (stable, candidate) = (
        Version::new("shop", "1.41.0"),
        Version::new("shop", "1.42.0"),
    );
    let header = ArmOverride::signed("x-shadowlib-arm", [42u8; 32])
        .expect("long enough")
        .for_builds(&stable, &candidate);
    let valid = header
        .sign(
            Arm::Candidate,
            &candidate,
            SystemTime::now() + Duration::from_secs(600),
        )
        .expect("signed");
    let forged = format!("{}0", &valid[..valid.len() - 1]);
    let cases = [
        ("no header", HeaderList(vec![("accept", b"*/*".as_slice())])),
        (
            "valid",
            HeaderList(vec![("x-shadowlib-arm", valid.as_bytes())]),
        ),
        (
            "forged",
            HeaderList(vec![("x-shadowlib-arm", forged.as_bytes())]),
        ),
    ];
    for (name, headers) in &cases {
        let cost = per_check(&header, headers);
        println!("override check, {name}: {} ns", cost.as_nanos());
        assert!(cost < Duration::from_micros(50), "{name}: {cost:?}");
    }
}
