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

    fn visit_str<E: Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(|e| {
            E::custom(format_args!(
                "{v:?} is not an integer of the field's type: {e}"
            ))
        })
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
    fn out_of_range_fractions_and_other_types_are_refused() {
        for json in [
            "-1",
            "4294967296",
            "1.5",
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
