//! Enum fields in the proto3 JSON mapping. proto3 enums are open: a field holds any int32, and a
//! number the schema does not name is written as that number and read back as it. pbjson refuses
//! such numbers both ways (writing one fails, so `codec::encode` would panic), so `build.rs` points
//! the generated code's enum fields at [`OpenEnum`]. Whether a number is one this build knows is
//! `wire::convert`'s question, which names the field, as it does for protobuf input.
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::StrDeserializer;
use serde::de::{DeserializeOwned, Error, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum field's number, read from the value's name or its number, and written as its name when
/// `E` has one (else as the number).
pub struct OpenEnum<E> {
    pub number: i32,
    kind: PhantomData<E>,
}

impl<E> OpenEnum<E> {
    pub fn new(number: i32) -> Self {
        OpenEnum {
            number,
            kind: PhantomData,
        }
    }
}

impl<E> Serialize for OpenEnum<E>
where
    E: TryFrom<i32> + Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match E::try_from(self.number) {
            Ok(known) => known.serialize(serializer),
            Err(_) => serializer.serialize_i32(self.number),
        }
    }
}

impl<'de, E> Deserialize<'de> for OpenEnum<E>
where
    E: DeserializeOwned + Into<i32>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NameOrNumber(PhantomData::<E>))
    }
}

struct NameOrNumber<E>(PhantomData<E>);

impl<E> Visitor<'_> for NameOrNumber<E>
where
    E: DeserializeOwned + Into<i32>,
{
    type Value = OpenEnum<E>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a value name of {} or an int32",
            std::any::type_name::<E>().rsplit("::").next().unwrap_or("")
        )
    }

    /// A name is looked up by the generated code of `E`, whose error lists the names it knows.
    fn visit_str<Err: Error>(self, v: &str) -> Result<OpenEnum<E>, Err> {
        E::deserialize(StrDeserializer::<Err>::new(v)).map(|e| OpenEnum::new(e.into()))
    }

    fn visit_i64<Err: Error>(self, v: i64) -> Result<OpenEnum<E>, Err> {
        i32::try_from(v)
            .map(OpenEnum::new)
            .map_err(|_| Err::invalid_value(Unexpected::Signed(v), &self))
    }

    fn visit_u64<Err: Error>(self, v: u64) -> Result<OpenEnum<E>, Err> {
        i32::try_from(v)
            .map(OpenEnum::new)
            .map_err(|_| Err::invalid_value(Unexpected::Unsigned(v), &self))
    }
}

#[cfg(test)]
mod tests {
    use super::OpenEnum;
    use crate::wire::pb::TriggerType;

    fn read(json: &str) -> Result<i32, String> {
        serde_json::from_str::<OpenEnum<TriggerType>>(json)
            .map(|e| e.number)
            .map_err(|e| e.to_string())
    }

    fn write(number: i32) -> String {
        serde_json::to_string(&OpenEnum::<TriggerType>::new(number)).unwrap()
    }

    #[test]
    fn names_and_any_int32_are_read() {
        assert_eq!(read("\"SCHEDULED\""), Ok(2));
        assert_eq!(read("\"TRIGGER_TYPE_UNSPECIFIED\""), Ok(0));
        assert_eq!(read("2"), Ok(2));
        assert_eq!(read("99"), Ok(99));
        assert_eq!(read("-7"), Ok(-7));
        assert_eq!(read("2147483647"), Ok(i32::MAX));
        assert_eq!(read("-2147483648"), Ok(i32::MIN));
    }

    #[test]
    fn unknown_names_other_types_and_out_of_range_numbers_are_refused() {
        let error = read("\"scheduled\"").unwrap_err();
        assert!(error.contains("SCHEDULED"), "{error}");
        for json in [
            "2147483648",
            "-2147483649",
            "1.5",
            "true",
            "[]",
            "{}",
            "\"2\"",
        ] {
            assert!(read(json).is_err(), "{json}");
        }
    }

    #[test]
    fn known_numbers_are_written_as_names_and_others_as_numbers() {
        assert_eq!(write(1), "\"AUTOMATED\"");
        assert_eq!(write(0), "\"TRIGGER_TYPE_UNSPECIFIED\"");
        assert_eq!(write(99), "99");
        assert_eq!(write(i32::MIN), "-2147483648");
    }
}
