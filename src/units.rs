//! Durations (`500ms`, `15m`, `1h`) and sizes (`16KiB`, `1MiB`) written the way operators say them.
//!
//! A bare number is refused on purpose: `timeout: 30` could mean seconds or milliseconds, and a
//! config that guesses is a config that surprises someone at 3 a.m.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A duration read from the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// A byte size read from the config file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Splits `"15m"` into `(15, "m")`; the number must be a plain non-negative integer.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse().ok()?;
    Some((number, text[digits..].trim_start()))
}

impl HumanDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid duration `{text}`: use a number and a unit (ms, s, m, h, d), e.g. `30s`"
            )
        };
        let (number, unit) = split_number(text).ok_or_else(invalid)?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        let millis = number.checked_mul(millis_per_unit).ok_or_else(invalid)?;
        Ok(Self(Duration::from_millis(millis)))
    }
}

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid size `{text}`: use a number and a unit (B, KiB, MiB, GiB), e.g. `16KiB`"
            )
        };
        let (number, unit) = split_number(text).ok_or_else(invalid)?;
        let multiplier: u64 = match unit {
            "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(invalid()),
        };
        number.checked_mul(multiplier).map(Self).ok_or_else(invalid)
    }
}

struct TextVisitor<T>(fn(&str) -> Result<T, String>, &'static str);

impl<T> de::Visitor<'_> for TextVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.1)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Err(E::custom(format!("`{v}` has no unit: {}", self.1)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        Err(E::custom(format!("`{v}` has no unit: {}", self.1)))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor(
            Self::parse,
            "a duration such as `500ms`, `30s`, `15m` or `1h`",
        ))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor(
            Self::parse,
            "a size such as `512B`, `16KiB` or `1MiB`",
        ))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            HumanDuration::parse("15m").unwrap().0,
            Duration::from_secs(900)
        );
        assert_eq!(
            HumanDuration::parse("1h").unwrap().0,
            Duration::from_secs(3600)
        );
        assert_eq!(
            HumanDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            HumanDuration::parse("2d").unwrap().0,
            Duration::from_secs(172_800)
        );
        for bad in [
            "",
            "15",
            "m",
            "1.5h",
            "-1s",
            "10 minutes",
            "99999999999999999999d",
        ] {
            assert!(HumanDuration::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("16KiB").unwrap().0, 16 * 1024);
        assert_eq!(ByteSize::parse("1MiB").unwrap().0, 1 << 20);
        assert_eq!(ByteSize::parse("512B").unwrap().0, 512);
        for bad in ["16", "16kb", "1.5MiB", "KiB", "18446744073709551615GiB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
