//! `google.protobuf.Timestamp` in the proto3 JSON mapping. pbjson-types writes a UTC offset of
//! `+00:00` (the mapping prescribes `Z`), prints years outside 0001-9999 (`+10000-01-01…`), and reads
//! lowercase `t`/`z`, a space for `T`, a leap second (as 1 000 000 000 nanos) and a tenth fractional
//! digit (dropped). `build.rs` points the generated code's Timestamp fields at [`ProtoJson`] instead,
//! which writes `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z` and reads RFC 3339 with any offset and
//! 0 to 9 fractional digits, both within the range the mapping allows.
use std::fmt;

use pbjson_types::Timestamp as WireTimestamp;
use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// 0001-01-01T00:00:00Z, the earliest instant a Timestamp may hold.
pub const MIN_SECONDS: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the last whole second a Timestamp may hold.
pub const MAX_SECONDS: i64 = 253_402_300_799;
const NANOS_PER_SECOND: i32 = 1_000_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Why a Timestamp could not be written or read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error(
        "{seconds}s {nanos}ns is outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z"
    )]
    OutOfRange { seconds: i64, nanos: i32 },
    #[error(
        "{0:?} is not an RFC 3339 time like 2026-03-02T10:31:00.120Z or 2026-03-02T12:31:00+02:00"
    )]
    Syntax(String),
    #[error("{0:?} has more than 9 fractional digits")]
    TooPrecise(String),
    #[error("{0:?} names no date and time of day (a day past the month's end, hour 24 or a leap second)")]
    NoSuchTime(String),
}

/// Whether `t` is a Timestamp the mapping can write.
pub fn is_valid(t: &WireTimestamp) -> bool {
    (MIN_SECONDS..=MAX_SECONDS).contains(&t.seconds) && (0..NANOS_PER_SECOND).contains(&t.nanos)
}

fn check(t: &WireTimestamp) -> Result<(), TimestampError> {
    if is_valid(t) {
        Ok(())
    } else {
        Err(TimestampError::OutOfRange {
            seconds: t.seconds,
            nanos: t.nanos,
        })
    }
}

/// Writes `t` Z-normalised, with as many of 0, 3, 6 or 9 fractional digits as it needs.
pub fn to_rfc3339(t: &WireTimestamp) -> Result<String, TimestampError> {
    let mut out = Rfc3339Buf::default();
    write_rfc3339(t, &mut out)?;
    Ok(out.as_str().to_owned())
}

/// Longest output: `9999-12-31T23:59:59.999999999Z`.
const MAX_LEN: usize = 30;

/// The text of one timestamp, on the stack: each output record has up to three.
#[derive(Default)]
struct Rfc3339Buf {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl Rfc3339Buf {
    fn push(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    /// `value` as exactly `width` decimal digits (callers pass values that fit).
    fn push_digits(&mut self, value: u32, width: usize) {
        for i in (0..width).rev() {
            let digit = (value / 10u32.pow(i as u32)) % 10;
            self.push(b'0' + digit as u8);
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("only ASCII digits and separators")
    }
}

fn write_rfc3339(t: &WireTimestamp, out: &mut Rfc3339Buf) -> Result<(), TimestampError> {
    check(t)?;
    let days = t.seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = t.seconds.rem_euclid(SECONDS_PER_DAY) as u32;
    let (year, month, day) = civil_from_days(days);
    // In range, the year is 1..=9999, so four digits always suffice.
    out.push_digits(year as u32, 4);
    out.push(b'-');
    out.push_digits(month, 2);
    out.push(b'-');
    out.push_digits(day, 2);
    out.push(b'T');
    out.push_digits(second_of_day / 3600, 2);
    out.push(b':');
    out.push_digits(second_of_day / 60 % 60, 2);
    out.push(b':');
    out.push_digits(second_of_day % 60, 2);
    write_fraction(t.nanos as u32, out);
    out.push(b'Z');
    Ok(())
}

/// The shortest of no, 3, 6 or 9 digits that holds `nanos` exactly, as the mapping prescribes.
fn write_fraction(nanos: u32, out: &mut Rfc3339Buf) {
    let (value, width) = match nanos {
        0 => return,
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    out.push(b'.');
    out.push_digits(value, width);
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.f…](Z|±HH:MM)`: RFC 3339 with 0 to 9 fractional digits and an
/// upper-case `T` and `Z` (as the mapping's conformance tests require), within years 0001-9999 once
/// the offset is applied.
pub fn parse_rfc3339(text: &str) -> Result<WireTimestamp, TimestampError> {
    let syntax = || TimestampError::Syntax(excerpt(text));
    let b = text.as_bytes();
    if b.len() < 20
        || !separators_at(
            b,
            &[(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')],
        )
    {
        return Err(syntax());
    }
    let field = |at: usize, len: usize| digits(&b[at..at + len]).ok_or_else(syntax);
    let (year, month, day) = (field(0, 4)?, field(5, 2)?, field(8, 2)?);
    let (hour, minute, second) = (field(11, 2)?, field(14, 2)?, field(17, 2)?);
    let (nanos, rest) = parse_fraction(text, &b[19..])?;
    let offset = parse_offset(rest).ok_or_else(syntax)?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(TimestampError::NoSuchTime(excerpt(text)));
    }
    let local = days_from_civil(i64::from(year), month, day) * SECONDS_PER_DAY
        + i64::from(hour * 3600 + minute * 60 + second);
    let t = WireTimestamp {
        seconds: local - offset,
        nanos,
    };
    check(&t)?;
    Ok(t)
}

fn separators_at(b: &[u8], at: &[(usize, u8)]) -> bool {
    at.iter().all(|&(i, c)| b[i] == c)
}

/// A run of ASCII digits as a number; `None` when empty or anything else is there.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// The nanoseconds of an optional `.` and 1 to 9 digits, and what follows them.
fn parse_fraction<'a>(text: &str, b: &'a [u8]) -> Result<(i32, &'a [u8]), TimestampError> {
    let Some(after_dot) = b.strip_prefix(b".") else {
        return Ok((0, b));
    };
    let len = after_dot.iter().take_while(|c| c.is_ascii_digit()).count();
    if len > 9 {
        return Err(TimestampError::TooPrecise(excerpt(text)));
    }
    let value = digits(&after_dot[..len]).ok_or_else(|| TimestampError::Syntax(excerpt(text)))?;
    let nanos = value * 10u32.pow(9 - len as u32);
    Ok((nanos as i32, &after_dot[len..]))
}

/// Seconds east of UTC of `Z` or `±HH:MM`, which must end the text.
fn parse_offset(b: &[u8]) -> Option<i64> {
    match b {
        [b'Z'] => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = i64::from(hours * 3600 + minutes * 60);
            Some(if *sign == b'+' { seconds } else { -seconds })
        }
        _ => None,
    }
}

/// The start of hostile input, for an error message.
fn excerpt(text: &str) -> String {
    text.chars().take(64).collect()
}

fn is_leap_year(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Proleptic Gregorian calendar arithmetic on 400-year eras (146 097 days each), counting years from
// March so that the leap day ends a year: no table, and exact for any year.
const DAYS_PER_ERA: i64 = 146_097;
/// Days from 0000-03-01 to 1970-01-01.
const EPOCH_FROM_MARCH_0000: i64 = 719_468;

/// Days since 1970-01-01 of a date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * DAYS_PER_ERA + day_of_era - EPOCH_FROM_MARCH_0000
}

/// The date (year, month, day) that is `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + EPOCH_FROM_MARCH_0000;
    let era = days.div_euclid(DAYS_PER_ERA);
    let day_of_era = days.rem_euclid(DAYS_PER_ERA);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A Timestamp field's value in the JSON mapping; the generated code reads and writes Timestamps
/// through it (see `build.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtoJson(pub WireTimestamp);

impl Serialize for ProtoJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = Rfc3339Buf::default();
        write_rfc3339(&self.0, &mut out).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(out.as_str())
    }
}

impl<'de> Deserialize<'de> for ProtoJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(Rfc3339Visitor)
    }
}

struct Rfc3339Visitor;

impl Visitor<'_> for Rfc3339Visitor {
    type Value = ProtoJson;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an RFC 3339 time string such as \"2026-03-02T10:31:00Z\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ProtoJson, E> {
        parse_rfc3339(v).map(ProtoJson).map_err(E::custom)
    }
}

/// For `#[serde(serialize_with = …)]` on a Timestamp outside the generated messages (e.g. a JSON
/// view that embeds one), so that it is written as the messages write theirs.
pub fn serialize<S: Serializer>(t: &WireTimestamp, serializer: S) -> Result<S::Ok, S::Error> {
    ProtoJson(*t).serialize(serializer)
}

/// [`serialize`] for an optional Timestamp (pair it with `skip_serializing_if = "Option::is_none"`).
pub fn serialize_option<S: Serializer>(
    t: &Option<WireTimestamp>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    t.map(ProtoJson).serialize(serializer)
}

/// Reads a Timestamp from a JSON string, as the messages read theirs.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<WireTimestamp, D::Error> {
    ProtoJson::deserialize(deserializer).map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> WireTimestamp {
        WireTimestamp { seconds, nanos }
    }

    fn write(seconds: i64, nanos: i32) -> String {
        to_rfc3339(&ts(seconds, nanos)).unwrap()
    }

    /// 2026-03-02T10:31:00Z
    const AT: i64 = 1_772_447_460;

    #[test]
    fn output_is_z_normalised_with_0_3_6_or_9_fractional_digits() {
        assert_eq!(write(AT, 0), "2026-03-02T10:31:00Z");
        assert_eq!(write(AT, 120_000_000), "2026-03-02T10:31:00.120Z");
        assert_eq!(write(AT, 1_000_000), "2026-03-02T10:31:00.001Z");
        assert_eq!(write(AT, 123_456_000), "2026-03-02T10:31:00.123456Z");
        assert_eq!(write(AT, 1_000), "2026-03-02T10:31:00.000001Z");
        assert_eq!(write(AT, 100), "2026-03-02T10:31:00.000000100Z");
        assert_eq!(write(AT, 999_999_999), "2026-03-02T10:31:00.999999999Z");
    }

    #[test]
    fn output_covers_the_whole_range_including_before_1970() {
        assert_eq!(write(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(write(-1, 500_000_000), "1969-12-31T23:59:59.500Z");
        assert_eq!(write(MIN_SECONDS, 0), "0001-01-01T00:00:00Z");
        assert_eq!(
            write(MAX_SECONDS, 999_999_999),
            "9999-12-31T23:59:59.999999999Z"
        );
        // Leap days, and the century rules (2000 is a leap year, 1900 and 2100 are not).
        assert_eq!(write(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(write(-2_203_977_600, 0), "1900-02-28T00:00:00Z");
        assert_eq!(write(-2_203_891_200, 0), "1900-03-01T00:00:00Z");
        assert_eq!(write(4_107_542_400, 0), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn values_the_mapping_cannot_write_are_errors() {
        for (seconds, nanos) in [
            (MIN_SECONDS - 1, 999_999_999),
            (MAX_SECONDS + 1, 0),
            (i64::MIN, 0),
            (i64::MAX, 0),
            (AT, -1),
            (AT, 1_000_000_000),
        ] {
            assert_eq!(
                to_rfc3339(&ts(seconds, nanos)),
                Err(TimestampError::OutOfRange { seconds, nanos })
            );
            assert!(serde_json::to_string(&ProtoJson(ts(seconds, nanos))).is_err());
        }
    }

    #[test]
    fn input_may_have_any_offset_and_0_to_9_fractional_digits() {
        let cases = [
            ("2026-03-02T10:31:00Z", 0),
            ("2026-03-02T12:31:00+02:00", 0),
            ("2026-03-02T05:01:00-05:30", 0),
            ("2026-03-02T10:31:00-00:00", 0),
            ("2026-03-02T10:31:00.1Z", 100_000_000),
            ("2026-03-02T10:31:00.12Z", 120_000_000),
            ("2026-03-02T10:31:00.1234Z", 123_400_000),
            ("2026-03-02T10:31:00.12345Z", 123_450_000),
            ("2026-03-02T10:31:00.1234567Z", 123_456_700),
            ("2026-03-02T10:31:00.12345678Z", 123_456_780),
            ("2026-03-02T10:31:00.123456789Z", 123_456_789),
            ("2026-03-02T11:31:00.000000001+01:00", 1),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse_rfc3339(text), Ok(ts(AT, nanos)), "{text}");
        }
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            Ok(ts(MIN_SECONDS, 0))
        );
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59.999999999Z"),
            Ok(ts(MAX_SECONDS, 999_999_999))
        );
        // An offset may bring a local time outside the range back into it.
        assert_eq!(
            parse_rfc3339("0000-12-31T23:00:00-01:00"),
            Ok(ts(MIN_SECONDS, 0))
        );
    }

    #[test]
    fn input_outside_the_grammar_or_the_range_is_refused() {
        for text in [
            "",
            "2026-03-02",
            "2026-03-02T10:31:00",
            "2026-03-02t10:31:00Z",
            "2026-03-02T10:31:00z",
            "2026-03-02 10:31:00Z",
            "2026-03-02T10:31:00.Z",
            "2026-03-02T10:31:00+0200",
            "2026-03-02T10:31:00+02",
            "2026-03-02T10:31:00+24:00",
            "2026-03-02T10:31:00+02:60",
            "2026-03-02T10:31:00Z ",
            " 2026-03-02T10:31:00Z",
            "2026-3-02T10:31:00Z",
            "+2026-03-02T10:31:00Z",
            "20260-03-02T10:31:00Z",
            "2026-03-02T10:31:00.1a2Z",
            "2026-03-02T10:31:00\u{0}Z",
            "２026-03-02T10:31:00Z",
        ] {
            assert!(
                matches!(parse_rfc3339(text), Err(TimestampError::Syntax(_))),
                "{text:?}: {:?}",
                parse_rfc3339(text)
            );
        }
        for text in [
            "2026-13-02T10:31:00Z",
            "2026-00-02T10:31:00Z",
            "2026-02-29T10:31:00Z",
            "2100-02-29T10:31:00Z",
            "2026-04-31T10:31:00Z",
            "2026-03-00T10:31:00Z",
            "2026-03-02T24:00:00Z",
            "2026-03-02T10:60:00Z",
            "2026-12-31T23:59:60Z",
        ] {
            assert!(
                matches!(parse_rfc3339(text), Err(TimestampError::NoSuchTime(_))),
                "{text:?}: {:?}",
                parse_rfc3339(text)
            );
        }
        assert!(matches!(
            parse_rfc3339("2026-03-02T10:31:00.1234567891Z"),
            Err(TimestampError::TooPrecise(_))
        ));
        for text in [
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
        ] {
            assert!(
                matches!(parse_rfc3339(text), Err(TimestampError::OutOfRange { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        // 1600-03-01 to 2400-03-01 covers every leap-year rule twice.
        let start = days_from_civil(1600, 3, 1);
        let end = days_from_civil(2400, 3, 1);
        let mut expected = (1600, 3, 1);
        for days in start..end {
            assert_eq!(civil_from_days(days), expected);
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), days);
            let (y, m, d) = expected;
            expected = if d < days_in_month(y as u32, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn the_serde_helpers_write_timestamps_outside_the_messages_alike() {
        #[derive(Serialize, Deserialize)]
        struct View {
            #[serde(serialize_with = "serialize", deserialize_with = "deserialize")]
            at: WireTimestamp,
            #[serde(
                serialize_with = "serialize_option",
                skip_serializing_if = "Option::is_none",
                default
            )]
            until: Option<WireTimestamp>,
        }
        let view = View {
            at: ts(AT, 0),
            until: Some(ts(AT, 5_000_000)),
        };
        assert_eq!(
            serde_json::to_string(&view).unwrap(),
            r#"{"at":"2026-03-02T10:31:00Z","until":"2026-03-02T10:31:00.005Z"}"#
        );
        let read: View = serde_json::from_str(r#"{"at":"2026-03-02T11:31:00+01:00"}"#).unwrap();
        assert_eq!((read.at, read.until), (ts(AT, 0), None));
    }

    #[test]
    fn json_reads_only_strings_and_writes_what_it_reads() {
        let read = |json: &str| serde_json::from_str::<ProtoJson>(json).map(|t| t.0);
        assert_eq!(read("\"2026-03-02T12:31:00+02:00\"").unwrap(), ts(AT, 0));
        for json in ["1772447460", "null", "{\"seconds\":1}", "\"yesterday\""] {
            assert!(read(json).is_err(), "{json}");
        }
        let t = ts(AT, 120_000_000);
        assert_eq!(
            serde_json::to_string(&ProtoJson(t)).unwrap(),
            "\"2026-03-02T10:31:00.120Z\""
        );
    }
}
