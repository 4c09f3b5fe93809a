//! The header that pins a live request to one build, and the signature it must carry.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;

use super::RequestHead;
use super::headers::{HeaderNameError, header_name};
use crate::model::{Arm, LivePhase, Phase, Version};

type HmacSha256 = Hmac<Sha256>;

/// The shortest secret [`ArmOverride::signed`] accepts: 128 bits, the strength of the
/// HMAC-SHA256 tag it keys, below which guessing the secret beats forging the tag.
pub const MIN_OVERRIDE_SECRET: usize = 16;

/// The default longest time a signed value may be valid for, from now: a value minted for
/// a day of testing, not a master key.
pub const DEFAULT_OVERRIDE_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// What the signature of an override value covers, before the arm, the build and the
/// expiry: a fixed label, so that a tag made with the same secret for something else is
/// never a valid override.
const SIGNED_LABEL: &str = "shadowlib-arm-override-v1";

/// An [`ArmOverride`] that cannot be made, or a value that cannot be signed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OverrideError {
    /// The header name is not one.
    #[error(transparent)]
    HeaderName(#[from] HeaderNameError),
    /// The secret is shorter than [`MIN_OVERRIDE_SECRET`] bytes.
    #[error(
        "the override secret has {given} bytes; at least {MIN_OVERRIDE_SECRET} are needed \
         (use 32 random bytes)"
    )]
    ShortSecret {
        /// How many bytes were given.
        given: usize,
    },
    /// The expiry given to [`ArmOverride::sign`] is before 1970.
    #[error("an override cannot expire before 1970")]
    ExpiryBeforeEpoch,
}

/// What the override header did, readable at any time through
/// [`Rollout::override_counts`](crate::Rollout::override_counts). Requests it pinned are
/// [`ShadowCounts::overridden`](crate::shadow::ShadowCounts::overridden).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OverrideCounts {
    /// Values ignored because they carried no signature (a bare `candidate`, say), or
    /// one that is not `arm.expiry.tag`.
    pub unsigned: u64,
    /// Values ignored because their tag was not the one the secret makes for that arm,
    /// build and expiry: forged, made for another build, or with another secret.
    pub bad_signature: u64,
    /// Values ignored because their expiry had passed, or was further ahead than the
    /// longest lifetime allowed.
    pub expired: u64,
    /// Valid requests for the candidate refused because they were writes while the
    /// candidate served no live traffic.
    pub refused_write: u64,
}

/// The counters behind [`OverrideCounts`], shared by every clone of one override.
#[derive(Debug, Default)]
struct Counters {
    unsigned: AtomicU64,
    bad_signature: AtomicU64,
    expired: AtomicU64,
    refused_write: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The keyed HMAC state, made once: each check clones it rather than hash the key again.
#[derive(Clone)]
struct Key(HmacSha256);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret, nor anything derived from it.
        f.write_str("Key(..)")
    }
}

/// A header that lets testers pin a live request to one build, if its value is signed.
///
/// The value is
/// `<arm>.<expiry>.<tag>`, where `<arm>` is `candidate` or `stable`, `<expiry>` the Unix
/// time in seconds after which the value is void, and `<tag>` the lowercase hex
/// HMAC-SHA256, keyed with the configured secret, of
/// `shadowlib-arm-override-v1\n<arm>\n<build>\n<expiry>`, `<build>` being the target
/// build as [`Version`] displays it (`shop@1.42.0`). A value without a valid tag, for
/// another build, expired, or valid for longer than the
/// [longest lifetime](ArmOverride::with_max_lifetime) is ignored and counted
/// ([`OverrideCounts`]); the request is then routed as if it had none. Tags are compared
/// in constant time. A value can be minted with [`ArmOverride::sign`], or in a shell:
///
/// ```text
/// exp=$(( $(date +%s) + 3600 ))
/// tag=$(printf 'shadowlib-arm-override-v1\ncandidate\nshop@1.42.0\n%s' "$exp" \
///       | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
/// curl -H "x-shadowlib-arm: candidate.$exp.$tag" http://127.0.0.1:8080/items
/// ```
///
/// Even signed, it never sends a write (a request the rollout's
/// [`Mirror`](super::Mirror) does not call a read) to the candidate while the candidate
/// serves no live traffic (shadowing, or paused while shadowing): that would make the
/// candidate change live data before any evidence says it may. Such a request goes to
/// stable, and is counted as [`refused_write`](OverrideCounts::refused_write). After a
/// rollback every override is ignored: rolled back means no request reaches the candidate.
///
/// There is no unsigned mode: a header anyone who can reach the service could set would
/// let them choose the build that serves them. Give it to the rollout with
/// [`RolloutBuilder::override_header`](crate::RolloutBuilder::override_header).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use shadowlib::{Arm, LivePhase, Phase, Version};
/// use shadowlib::mirror::{ArmOverride, HeaderList, RequestHead};
///
/// let candidate = Version::new("shop", "1.42.0");
/// let stable = Version::new("shop", "1.41.0");
/// let header = ArmOverride::signed("x-shadowlib-arm", *b"0123456789abcdef0123456789abcdef")?
///     .for_builds(&stable, &candidate);
/// let value = header.sign(Arm::Candidate, &candidate, SystemTime::now() + Duration::from_secs(600))?;
///
/// let signed = HeaderList(vec![("x-shadowlib-arm", value.as_bytes())]);
/// let read = RequestHead::new("GET", "/items", &signed);
/// assert_eq!(header.admit(&read, Phase::Shadowing, || true), Some(Arm::Candidate));
/// // A write while the candidate only shadows: refused, signed or not.
/// let write = RequestHead::new("POST", "/orders", &signed);
/// assert_eq!(header.admit(&write, Phase::Shadowing, || false), None);
/// assert_eq!(header.admit(&write, Phase::Canary { step: 0 }, || false), Some(Arm::Candidate));
///
/// // Anyone's "candidate" is not a signature.
/// let forged = HeaderList(vec![("x-shadowlib-arm", b"candidate".as_slice())]);
/// assert_eq!(header.admit(&RequestHead::new("GET", "/", &forged), Phase::Shadowing, || true), None);
/// let counts = header.counts();
/// assert_eq!((counts.unsigned, counts.refused_write), (1, 1));
/// # Ok::<(), shadowlib::mirror::OverrideError>(())
/// ```
#[derive(Clone)]
pub struct ArmOverride {
    name: String,
    key: Key,
    max_lifetime: Duration,
    /// The builds as [`Version`] displays them, stable then candidate: what a tag is for.
    builds: Arc<[String; 2]>,
    counters: Arc<Counters>,
}

impl fmt::Debug for ArmOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmOverride")
            .field("name", &self.name)
            .field("max_lifetime", &self.max_lifetime)
            .field("builds", &self.builds)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ArmOverride {
    /// The same header, signed or not alike, for the same builds (secrets are not compared).
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.max_lifetime == other.max_lifetime
            && self.builds == other.builds
    }
}

impl ArmOverride {
    /// An override read from header `name`, its values' tags keyed with `secret` (at
    /// least [`MIN_OVERRIDE_SECRET`] bytes; 32 random bytes is right). The rollout binds
    /// it to its two builds when it is given to
    /// [`RolloutBuilder::override_header`](crate::RolloutBuilder::override_header).
    pub fn signed(name: &str, secret: impl AsRef<[u8]>) -> Result<Self, OverrideError> {
        let name = header_name(name)?;
        let secret = secret.as_ref();
        if secret.len() < MIN_OVERRIDE_SECRET {
            return Err(OverrideError::ShortSecret {
                given: secret.len(),
            });
        }
        // HMAC takes a key of any length, so this cannot fail; the error is kept typed.
        let key = HmacSha256::new_from_slice(secret).map_err(|_| OverrideError::ShortSecret {
            given: secret.len(),
        })?;
        Ok(Self {
            name,
            key: Key(key),
            max_lifetime: DEFAULT_OVERRIDE_LIFETIME,
            builds: Arc::new([String::new(), String::new()]),
            counters: Arc::default(),
        })
    }

    /// The longest a signed value may be valid for, counted from when it is checked
    /// (default [`DEFAULT_OVERRIDE_LIFETIME`]): a value whose expiry is further ahead is
    /// ignored, so a leaked value is worth little.
    pub fn with_max_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// The override for this pair of builds: a tag is valid only for the build it names.
    /// The rollout does this itself; call it to check values outside a rollout.
    pub fn for_builds(mut self, stable: &Version, candidate: &Version) -> Self {
        self.builds = Arc::new([stable.to_string(), candidate.to_string()]);
        self
    }

    /// The header's name, lowercase.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the header has ignored and refused so far (shared by every clone).
    pub fn counts(&self) -> OverrideCounts {
        let c = &self.counters;
        OverrideCounts {
            unsigned: c.unsigned.load(Ordering::Relaxed),
            bad_signature: c.bad_signature.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            refused_write: c.refused_write.load(Ordering::Relaxed),
        }
    }

    /// A signed value pinning a request to `arm` of build `build` until `expires_at`.
    pub fn sign(
        &self,
        arm: Arm,
        build: &Version,
        expires_at: SystemTime,
    ) -> Result<String, OverrideError> {
        let expiry = expires_at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| OverrideError::ExpiryBeforeEpoch)?
            .as_secs();
        let tag = tag(&self.key, arm, &build.to_string(), expiry)
            .finalize()
            .into_bytes();
        let mut value = format!("{arm}.{expiry}.");
        for byte in tag {
            value.push_str(&format!("{byte:02x}"));
        }
        Ok(value)
    }

    /// The build the request is pinned to, if its header is honoured in `phase`: signed,
    /// unexpired and for this build, not after a rollback, and — for the candidate — not a
    /// write while the candidate serves no live traffic. `is_read` is asked only for a
    /// valid request for the candidate. Ignored and refused values are counted.
    pub fn admit(
        &self,
        head: &RequestHead<'_>,
        phase: Phase,
        is_read: impl FnOnce() -> bool,
    ) -> Option<Arm> {
        let value = head.headers.first(&self.name)?.trim_ascii();
        if phase == Phase::RolledBack {
            return None;
        }
        let arm = self.verify(value)?;
        if arm == Arm::Candidate {
            let candidate_serves_live = !matches!(
                phase,
                Phase::Idle
                    | Phase::Shadowing
                    | Phase::Paused {
                        from: LivePhase::Shadowing
                    }
            );
            if !candidate_serves_live && !is_read() {
                Counters::bump(&self.counters.refused_write);
                return None;
            }
        }
        Some(arm)
    }

    /// The arm a signed value names, if its tag, build and expiry hold; counts why not.
    fn verify(&self, value: &[u8]) -> Option<Arm> {
        let counters = &self.counters;
        let Some((arm, expiry, tag_hex)) = split_signed(value) else {
            Counters::bump(&counters.unsigned);
            return None;
        };
        let mut given = [0u8; 32];
        if !decode_hex(tag_hex, &mut given) {
            Counters::bump(&counters.unsigned);
            return None;
        }
        let build = match arm {
            Arm::Stable => &self.builds[0],
            Arm::Candidate => &self.builds[1],
        };
        // The tag first: an unauthenticated caller learns nothing from how the expiry is
        // judged. `verify_slice` compares in constant time.
        if tag(&self.key, arm, build, expiry)
            .verify_slice(&given)
            .is_err()
        {
            Counters::bump(&counters.bad_signature);
            return None;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let latest = now.saturating_add(self.max_lifetime.as_secs());
        if expiry < now || expiry > latest {
            Counters::bump(&counters.expired);
            return None;
        }
        Some(arm)
    }
}

/// The HMAC over what a value signs, ready to finalise or verify.
fn tag(key: &Key, arm: Arm, build: &str, expiry: u64) -> HmacSha256 {
    let mut mac = key.0.clone();
    mac.update(SIGNED_LABEL.as_bytes());
    mac.update(b"\n");
    mac.update(arm.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(build.as_bytes());
    mac.update(b"\n");
    mac.update(expiry.to_string().as_bytes());
    mac
}

/// `candidate` or `stable`, any case.
fn arm_word(value: &[u8]) -> Option<Arm> {
    if value.eq_ignore_ascii_case(b"candidate") {
        Some(Arm::Candidate)
    } else if value.eq_ignore_ascii_case(b"stable") {
        Some(Arm::Stable)
    } else {
        None
    }
}

/// `arm.expiry.tag` split into its parts; `None` for anything else.
fn split_signed(value: &[u8]) -> Option<(Arm, u64, &[u8])> {
    let mut parts = value.splitn(3, |b| *b == b'.');
    let arm = arm_word(parts.next()?)?;
    let expiry = parts.next()?;
    // Digits only, and few enough for a u64: `parse` would take a leading `+` too.
    if expiry.is_empty() || expiry.len() > 19 || !expiry.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let expiry = std::str::from_utf8(expiry).ok()?.parse().ok()?;
    Some((arm, expiry, parts.next()?))
}

/// Decodes lowercase or uppercase hex into exactly `out.len()` bytes. Written here rather
/// than with a hex crate: it is ten lines, and the core keeps its dependencies few.
fn decode_hex(hex: &[u8], out: &mut [u8]) -> bool {
    if hex.len() != out.len() * 2 {
        return false;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        match (nibble(pair[0]), nibble(pair[1])) {
            (Some(high), Some(low)) => *byte = (high << 4) | low,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::HeaderList;

    const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

    fn builds() -> (Version, Version) {
        (Version::new("svc", "1"), Version::new("svc", "2"))
    }

    fn header() -> ArmOverride {
        let (stable, candidate) = builds();
        ArmOverride::signed("x-arm", SECRET)
            .expect("long enough")
            .for_builds(&stable, &candidate)
    }

    fn admit(header: &ArmOverride, value: &str, method: &str, phase: Phase) -> Option<Arm> {
        let headers = HeaderList(vec![("x-arm", value.as_bytes())]);
        let head = RequestHead::new(method, "/r", &headers);
        header.admit(&head, phase, || method == "GET")
    }

    fn in_a_minute() -> SystemTime {
        SystemTime::now() + Duration::from_secs(60)
    }

    #[test]
    fn a_short_secret_is_a_typed_error() {
        assert_eq!(
            ArmOverride::signed("x-arm", b"short").err(),
            Some(OverrideError::ShortSecret { given: 5 })
        );
        assert!(matches!(
            ArmOverride::signed("x arm", SECRET),
            Err(OverrideError::HeaderName(_))
        ));
    }

    #[test]
    fn only_a_tag_for_this_build_and_arm_is_honoured() {
        let header = header();
        let (stable, candidate) = builds();
        let good = header
            .sign(Arm::Candidate, &candidate, in_a_minute())
            .expect("signed");
        assert_eq!(
            admit(&header, &good, "GET", Phase::Shadowing),
            Some(Arm::Candidate)
        );
        assert_eq!(
            admit(&header, &good.to_uppercase(), "GET", Phase::Shadowing),
            Some(Arm::Candidate),
            "arm word and hex in any case"
        );
        // The same tag with the arm changed, a tag for the stable build used for the
        // candidate, one for another candidate, and one made with another secret.
        let swapped = good.replacen("candidate", "stable", 1);
        let for_stable = header
            .sign(Arm::Candidate, &stable, in_a_minute())
            .expect("signed");
        let other_build = header
            .sign(Arm::Candidate, &Version::new("svc", "3"), in_a_minute())
            .expect("signed");
        let other_secret = ArmOverride::signed("x-arm", [7u8; 32])
            .expect("long enough")
            .sign(Arm::Candidate, &candidate, in_a_minute())
            .expect("signed");
        for forged in [swapped, for_stable, other_build, other_secret] {
            assert_eq!(admit(&header, &forged, "GET", Phase::Shadowing), None);
        }
        assert_eq!(header.counts().bad_signature, 4);
    }

    #[test]
    fn malformed_values_are_ignored_and_counted_never_a_panic() {
        let header = header();
        let values = [
            "candidate",
            "candidate.",
            "candidate..",
            "candidate.+1.00",
            "candidate.99999999999999999999.00",
            "candidate.1.zz",
            "candidate.1.0",
            "nobody.1.00",
            "",
            "\u{e9}.1.00",
        ];
        for value in values {
            assert_eq!(
                admit(&header, value, "GET", Phase::Shadowing),
                None,
                "{value}"
            );
        }
        let counts = header.counts();
        assert_eq!(counts.unsigned, values.len() as u64);
        assert_eq!(counts.bad_signature + counts.expired, 0);
    }

    #[test]
    fn expired_and_too_long_lived_values_are_ignored() {
        let header = header().with_max_lifetime(Duration::from_secs(3600));
        let candidate = builds().1;
        let past = header
            .sign(
                Arm::Candidate,
                &candidate,
                SystemTime::now() - Duration::from_secs(1),
            )
            .expect("signed");
        let far = header
            .sign(
                Arm::Candidate,
                &candidate,
                SystemTime::now() + Duration::from_secs(7200),
            )
            .expect("signed");
        assert_eq!(admit(&header, &past, "GET", Phase::Shadowing), None);
        assert_eq!(admit(&header, &far, "GET", Phase::Shadowing), None);
        assert_eq!(header.counts().expired, 2);
    }

    #[test]
    fn a_signed_write_reaches_the_candidate_only_once_it_serves_live_traffic() {
        let header = header();
        let candidate = builds().1;
        let value = header
            .sign(Arm::Candidate, &candidate, in_a_minute())
            .expect("signed");
        let paused_shadowing = Phase::Paused {
            from: LivePhase::Shadowing,
        };
        for phase in [Phase::Idle, Phase::Shadowing, paused_shadowing] {
            assert_eq!(admit(&header, &value, "POST", phase), None, "{phase}");
        }
        let paused_canary = Phase::Paused {
            from: LivePhase::Canary { step: 0 },
        };
        for phase in [Phase::Canary { step: 0 }, paused_canary, Phase::Promoted] {
            assert_eq!(
                admit(&header, &value, "POST", phase),
                Some(Arm::Candidate),
                "{phase}"
            );
        }
        assert_eq!(admit(&header, &value, "GET", Phase::RolledBack), None);
        assert_eq!(header.counts().refused_write, 3);
        // Pinning a write to stable is always safe.
        let stable = header
            .sign(Arm::Stable, &builds().0, in_a_minute())
            .expect("signed");
        assert_eq!(
            admit(&header, &stable, "POST", Phase::Shadowing),
            Some(Arm::Stable)
        );
    }

    #[test]
    fn a_bare_arm_word_is_no_signature_even_for_a_read() {
        let header = header();
        for value in ["candidate", " Candidate ", "stable", "v2"] {
            assert_eq!(
                admit(&header, value, "GET", Phase::Shadowing),
                None,
                "{value}"
            );
            assert_eq!(
                admit(&header, value, "GET", Phase::Canary { step: 1 }),
                None
            );
        }
        assert_eq!(header.counts().unsigned, 8);
        assert_eq!(
            header.counts().refused_write,
            0,
            "nothing valid was refused"
        );
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let text = format!("{:?}", ArmOverride::signed("x-arm", SECRET).expect("valid"));
        assert!(!text.contains("0123456789abcdef"), "{text}");
    }
}
