//! Durations in configuration files and exports, written as people write them: `"10s"`,
//! `"250ms"`, `"1h 30m"`.
//!
//! Written here rather than taken from `humantime-serde`: it is fifty lines against two
//! more crates in every user's build, and the core keeps its dependency tree small.
//!
//! A duration is one or more `<number><unit>` terms, optionally separated by spaces, whose
//! sum is the duration. Numbers are whole or decimal (`1.5s`); units are `ns`, `us` (or
//! `µs`), `ms`, `s`, `m` (or `min`), `h` and `d`. Serialized durations use the largest
//! units that keep them exact (`90s` is written `"1m 30s"`), so they read back unchanged.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer, de};

/// Nanoseconds per unit, largest first (the order they are written in).
const UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

fn unit_nanos(unit: &str) -> Option<u128> {
    let unit = match unit {
        "µs" => "us",
        "min" => "m",
        other => other,
    };
    UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|&(_, n)| n)
}

/// Parses a duration such as `"10s"`, `"1.5s"` or `"1h 30m"`; the error names what is
/// wrong with the text.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("an empty duration (write it like \"10s\" or \"250ms\")".to_owned());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!(
                "`{text}`: `{number}` needs a unit (ns, us, ms, s, m, h, d)"
            ));
        }
        let per_unit = unit_nanos(unit).ok_or_else(|| {
            format!("`{text}`: unit `{unit}` is not one of ns, us, ms, s, m, h, d")
        })?;
        let not_a_number = || format!("`{text}`: `{number}` is not a number");
        let too_long = || format!("`{text}` is too long a duration");
        // Whole numbers are exact; decimals go through f64, exact to well below a
        // nanosecond for any duration a configuration holds.
        let nanos = match number.parse::<u128>() {
            Ok(whole) => whole.checked_mul(per_unit).ok_or_else(too_long)?,
            Err(_) => {
                let value: f64 = number.parse().map_err(|_| not_a_number())?;
                let nanos = value * per_unit as f64;
                if !nanos.is_finite() || nanos > u64::MAX as f64 * 1e9 {
                    return Err(too_long());
                }
                nanos.round() as u128
            }
        };
        total = total.checked_add(nanos).ok_or_else(too_long)?;
        rest = after.trim_start();
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("`{text}` is too long a duration"))?;
    // Below 10^9 by construction.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Writes a duration in the largest exact units: `"1m 30s"`, `"250ms"`, `"0s"`.
pub(crate) fn format(duration: Duration) -> String {
    let mut left = duration.as_nanos();
    if left == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (name, per_unit) in UNITS {
        let count = left / per_unit;
        if count > 0 {
            if !text.is_empty() {
                text.push(' ');
            }
            // Writing to a String cannot fail.
            let _ = write!(text, "{count}{name}");
            left -= count * per_unit;
        }
    }
    text
}

/// For `#[serde(with = "crate::duration")]` on a `Duration` field.
pub(crate) fn serialize<S: Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

/// For `#[serde(with = "crate::duration")]` on a `Duration` field.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(de::Error::custom)
}

/// The same, for an optional duration (`null` when there is none).
pub(crate) mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        duration: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match duration {
            Some(duration) => serializer.serialize_some(&super::format(*duration)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_written() {
        let cases = [
            ("10s", Duration::from_secs(10)),
            ("250ms", Duration::from_millis(250)),
            ("1h 30m", Duration::from_secs(5_400)),
            ("1h30m", Duration::from_secs(5_400)),
            ("1.5s", Duration::from_millis(1_500)),
            ("5min", Duration::from_secs(300)),
            ("2d", Duration::from_secs(172_800)),
            ("20us", Duration::from_micros(20)),
            ("20µs", Duration::from_micros(20)),
            ("7ns", Duration::from_nanos(7)),
            ("0s", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_durations_name_what_is_wrong() {
        assert!(parse("").expect_err("invalid").contains("empty"));
        assert!(parse("10").expect_err("invalid").contains("needs a unit"));
        assert!(
            parse("10 parsecs")
                .expect_err("invalid")
                .contains("parsecs")
        );
        assert!(
            parse("1..5s")
                .expect_err("invalid")
                .contains("not a number")
        );
        assert!(
            parse("99999999999999999999999d")
                .expect_err("invalid")
                .contains("too long")
        );
    }

    #[test]
    fn written_durations_read_back_unchanged() {
        for duration in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(250),
            Duration::from_secs(90),
            Duration::new(3_725, 5_000_123),
            Duration::from_secs(u64::MAX / 2),
        ] {
            assert_eq!(
                parse(&format(duration)),
                Ok(duration),
                "{}",
                format(duration)
            );
        }
        assert_eq!(format(Duration::from_secs(90)), "1m 30s");
    }
}
