//! Whole numbers as JSON Schema counts them: `3` and `3.0` are the same
//! integer, `3.5` is none. serde's integer types take only the first
//! spelling; fields of request bodies the OpenAPI document calls
//! `integer` use these instead (`#[serde(deserialize_with = …)]`), so a
//! client whose JSON writer spells whole numbers with a fraction (many
//! do) is not refused. Out of range, fractional or non-finite values are
//! refused as before.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, Error, Unexpected, Visitor};

/// An integer of any spelling, then narrowed to `T`.
pub fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    let wide = deserializer.deserialize_any(Whole)?;
    T::try_from(wide).map_err(|_| {
        D::Error::invalid_value(
            Unexpected::Other(&format!("{wide}")),
            &format!("an integer that fits {}", std::any::type_name::<T>()).as_str(),
        )
    })
}

/// [`deserialize`] for an optional field (`null` or absent: `None`; give
/// the field `#[serde(default)]`).
pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    deserializer.deserialize_option(Optional(PhantomData))
}

struct Whole;

impl Visitor<'_> for Whole {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<i128, E> {
        Ok(i128::from(v))
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<i128, E> {
        Ok(i128::from(v))
    }

    fn visit_i128<E: Error>(self, v: i128) -> Result<i128, E> {
        Ok(v)
    }

    #[allow(clippy::cast_possible_truncation)] // checked: whole and in range
    fn visit_f64<E: Error>(self, v: f64) -> Result<i128, E> {
        // 2^64: past it no u64 nor i64 fits, and the cast below is exact.
        const LIMIT: f64 = 18_446_744_073_709_551_616.0;
        if v.is_finite() && v.fract() == 0.0 && v.abs() < LIMIT {
            Ok(v as i128)
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }
}

struct Optional<T>(PhantomData<T>);

impl<'de, T: TryFrom<i128>> Visitor<'de> for Optional<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Body {
        #[serde(deserialize_with = "super::deserialize")]
        n: u32,
        #[serde(default, deserialize_with = "super::option")]
        o: Option<i32>,
    }

    fn parse(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_in_either_spelling_are_taken() {
        assert_eq!(parse(r#"{"n": 3}"#), Ok(Body { n: 3, o: None }));
        assert_eq!(
            parse(r#"{"n": 3.0, "o": -2.0}"#),
            Ok(Body { n: 3, o: Some(-2) })
        );
        assert_eq!(
            parse(r#"{"n": 1e3, "o": null}"#),
            Ok(Body { n: 1000, o: None })
        );
    }

    #[test]
    fn fractions_out_of_range_and_other_types_are_refused() {
        for bad in [
            r#"{"n": 3.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 1e300}"#,
            r#"{"n": "3"}"#,
            r#"{"n": 1, "o": 2147483648.0}"#,
            r#"{"n": 1, "o": true}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} is refused");
        }
    }
}
