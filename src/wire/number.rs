//! How the JSON mapping's integer fields are read. pbjson's own reader buffers the value and tries it
//! as a string first, which for an ordinary number builds and drops a serde_json error (with a
//! line/column scan): about a quarter of an activity event's JSON decode, for one field. This reader
//! takes a number or a string holding one in a single pass. `build.rs` points the generated code at it.
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{Error, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};

/// An integer field's value, from a JSON number or a JSON string (the proto3 JSON mapping allows
/// both, and writes 64-bit integers as strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberDeserialize<T>(pub T);

impl<'de, T> Deserialize<'de> for NumberDeserialize<T>
where
    T: FromStr + TryFrom<u64> + TryFrom<i64>,
    <T as FromStr>::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(IntegerVisitor(PhantomData))
            .map(NumberDeserialize)
    }
}

struct IntegerVisitor<T>(PhantomData<T>);

impl<T> Visitor<'_> for IntegerVisitor<T>
where
    T: FromStr + TryFrom<u64> + TryFrom<i64>,
    <T as FromStr>::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an integer in the range of {}, or a string holding one",
            std::any::type_name::<T>()
        )
    }

    fn visit_u64<E: Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
    }

    fn visit_i64<E: Error>(self, v: i64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
    }

    /// `1e2` or `100.0`: the mapping (and its conformance tests) accept an integer written as a
    /// float, which serde_json hands over as an `f64`.
    fn visit_f64<E: Error>(self, v: f64) -> Result<T, E> {
        integral(v).ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
    }

    fn visit_str<E: Error>(self, v: &str) -> Result<T, E> {
        v.parse().or_else(|e| {
            // A string may hold an integer written as a float too; plain digits never get here.
            v.parse::<f64>().ok().and_then(integral).ok_or_else(|| {
                E::custom(format_args!(
                    "{v:?} is not an integer of the field's type: {e}"
                ))
            })
        })
    }
}

/// `v` as a `T` when it is a whole number in `T`'s range (a fraction, infinity or NaN is none).
fn integral<T: TryFrom<u64> + TryFrom<i64>>(v: f64) -> Option<T> {
    // 2^64 and -2^63 bound the casts, which would saturate instead of failing.
    const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
    const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;
    if v.fract() != 0.0 {
        return None;
    }
    if (0.0..TWO_POW_64).contains(&v) {
        T::try_from(v as u64).ok()
    } else if (MINUS_TWO_POW_63..0.0).contains(&v) {
        T::try_from(v as i64).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::NumberDeserialize;

    fn read<T>(json: &str) -> Result<T, String>
    where
        NumberDeserialize<T>: for<'de> serde::Deserialize<'de>,
    {
        serde_json::from_str::<NumberDeserialize<T>>(json)
            .map(|n| n.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_and_strings_holding_them_are_read() {
        assert_eq!(read::<u32>("1"), Ok(1));
        assert_eq!(read::<u32>("\"7\""), Ok(7));
        assert_eq!(read::<u64>("\"18446744073709551615\""), Ok(u64::MAX));
        assert_eq!(read::<i64>("-3"), Ok(-3));
    }

    #[test]
    fn integers_written_as_floats_are_read() {
        assert_eq!(read::<u32>("1e2"), Ok(100));
        assert_eq!(read::<u32>("100.0"), Ok(100));
        assert_eq!(read::<u32>("\"1e2\""), Ok(100));
        assert_eq!(read::<u32>("4.294967295e9"), Ok(u32::MAX));
        assert_eq!(read::<i64>("-1.5e1"), Ok(-15));
        assert_eq!(read::<u64>("-0.0"), Ok(0));
        for json in [
            "1.5",
            "1e-1",
            "4.294967296e9",
            "-1e0",
            "\"1.5\"",
            "\"NaN\"",
            "\"inf\"",
        ] {
            assert!(read::<u32>(json).is_err(), "{json}");
        }
        assert!(read::<u64>("1.8446744073709552e19").is_err());
    }

    #[test]
    fn out_of_range_fractions_and_other_types_are_refused() {
        for json in [
            "-1",
            "4294967296",
            "1.5",
            "1e400",
            "\"x\"",
            "\" 1\"",
            "true",
            "null",
            "[]",
        ] {
            assert!(read::<u32>(json).is_err(), "{json}");
        }
        assert!(read::<u32>("-1").unwrap_err().contains("u32"));
    }
}
