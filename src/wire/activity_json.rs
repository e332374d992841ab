//! A fast path for activity events written as JSON, the bulk of the input. The general decoder
//! (serde_json into the pbjson-generated message) spends most of an event's cost scanning strings
//! byte by byte, matching field names through serde's visitors and copying every string into an
//! owned message. This reader takes the records producers usually write (one object of known
//! fields, strings without escapes, enums by name, plain numbers) in one pass, borrowing the
//! strings from the record. Anything else, including every malformed record, makes it give up
//! (`None`) and the general decoder reads the record and gives its error. Both feed the same
//! validation (`convert::activity`), and tests/activity_json.rs checks on generated records that
//! whatever this path accepts decodes exactly as the general decoder decodes it.
use std::borrow::Cow;

use super::activity_fields::{ActivityFields, FlowFields};
use super::codec::{self, Format, MAX_RECORD_BYTES};
use super::timestamp::parse_rfc3339;
use super::{convert, pb, WireError};
use crate::domain::activity::Activity;

/// Decodes and validates an activity event written as JSON.
pub fn decode(bytes: &[u8]) -> Result<Activity, WireError> {
    if bytes.len() <= MAX_RECORD_BYTES {
        if let Some(fields) = std::str::from_utf8(bytes).ok().and_then(fast_fields) {
            return convert::activity(fields);
        }
    }
    let event: pb::ActivityEvent = codec::decode(bytes, Format::Json)?;
    event.try_into()
}

/// The event's fields, unvalidated, if `text` is a record this path reads; `None` sends it to the
/// general decoder.
pub fn fast_fields(text: &str) -> Option<ActivityFields<'_>> {
    let mut reader = Reader { text, at: 0 };
    let fields = reader.object(ActivityFields::default(), event_member)?;
    reader.skip_whitespace();
    (reader.at == text.len()).then_some(fields)
}

/// Which members an object has had, so that a repeated one (under either of its names) goes to the
/// general decoder, which refuses it.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    fn first(&mut self, member: u32) -> Option<()> {
        let bit = 1 << member;
        let fresh = self.0 & bit == 0;
        self.0 |= bit;
        fresh.then_some(())
    }
}

type Member<'a, T> = fn(&mut Reader<'a>, &'a str, &mut T, &mut Seen) -> Option<()>;

fn event_member<'a>(
    r: &mut Reader<'a>,
    key: &'a str,
    e: &mut ActivityFields<'a>,
    seen: &mut Seen,
) -> Option<()> {
    match key {
        "schemaVersion" | "schema_version" => {
            seen.first(0)?;
            e.schema_version = r.small_number()?;
        }
        "eventId" | "event_id" => {
            seen.first(1)?;
            e.event_id = r.text()?;
        }
        "tenantId" | "tenant_id" => {
            seen.first(2)?;
            e.tenant_id = r.text()?;
        }
        "occurredAt" | "occurred_at" => {
            seen.first(3)?;
            e.occurred_at = Some(parse_rfc3339(r.string()?).ok()?);
        }
        "actorUserId" | "actor_user_id" => {
            seen.first(4)?;
            e.actor_user_id = r.text()?;
        }
        "kind" => {
            seen.first(5)?;
            e.kind = pb::ActivityKind::from_str_name(r.string()?)? as i32;
        }
        "source" => {
            seen.first(6)?;
            e.source = pb::ActivitySource::from_str_name(r.string()?)? as i32;
        }
        "flow" => {
            seen.first(7)?;
            e.flow = Some(r.object(FlowFields::default(), flow_member)?);
        }
        "requestedProduct" | "requested_product" => {
            seen.first(8)?;
            e.requested_product = r.text()?;
        }
        _ => return None,
    }
    Some(())
}

fn flow_member<'a>(
    r: &mut Reader<'a>,
    key: &'a str,
    f: &mut FlowFields<'a>,
    seen: &mut Seen,
) -> Option<()> {
    match key {
        "flowId" | "flow_id" => {
            seen.first(0)?;
            f.flow_id = r.text()?;
        }
        "ownerUserId" | "owner_user_id" => {
            seen.first(1)?;
            f.owner_user_id = r.text()?;
        }
        "triggerType" | "trigger_type" => {
            seen.first(2)?;
            f.trigger_type = pb::TriggerType::from_str_name(r.string()?)? as i32;
        }
        "environmentId" | "environment_id" => {
            seen.first(3)?;
            f.environment_id = r.text()?;
        }
        _ => {
            let flag = flow_flag(f, key, seen)?;
            *flag = r.boolean()?;
        }
    }
    Some(())
}

/// The flow's boolean member named `key`, if it is one.
fn flow_flag<'f>(f: &'f mut FlowFields<'_>, key: &str, seen: &mut Seen) -> Option<&'f mut bool> {
    let (member, flag) = match key {
        "usesPremiumConnectors" | "uses_premium_connectors" => (4, &mut f.uses_premium_connectors),
        "usesAttendedRpa" | "uses_attended_rpa" => (5, &mut f.uses_attended_rpa),
        "managedEnvironment" | "managed_environment" => (6, &mut f.managed_environment),
        "coveredByProcessPlan" | "covered_by_process_plan" => (7, &mut f.covered_by_process_plan),
        "runsInLicensedAppContext" | "runs_in_licensed_app_context" => {
            (8, &mut f.runs_in_licensed_app_context)
        }
        _ => return None,
    };
    seen.first(member)?;
    Some(flag)
}

/// A cursor over the record. Every method returns `None` where the record leaves the shapes this
/// path reads.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        &self.text.as_bytes()[self.at..]
    }

    fn skip_whitespace(&mut self) {
        let blank = self
            .bytes()
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
        self.at += blank;
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.bytes().first() == Some(&byte)).then(|| self.at += 1)
    }

    /// `{ "key": value, ... }`, each member read by `member`.
    fn object<T>(&mut self, mut into: T, member: Member<'a, T>) -> Option<T> {
        self.eat(b'{')?;
        let mut seen = Seen::default();
        if self.eat(b'}').is_some() {
            return Some(into);
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            self.skip_whitespace();
            member(self, key, &mut into, &mut seen)?;
            if self.eat(b',').is_none() {
                return self.eat(b'}').map(|()| into);
            }
        }
    }

    /// A string without escapes (or raw control characters, which JSON forbids), borrowed.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = self.bytes();
        let end = string_end(rest)?;
        if rest[end] != b'"' {
            return None;
        }
        // Both ends are ASCII quotes, so they are character boundaries.
        let value = &self.text[self.at..self.at + end];
        self.at += end + 1;
        Some(value)
    }

    fn text(&mut self) -> Option<Cow<'a, str>> {
        self.string().map(Cow::Borrowed)
    }

    fn boolean(&mut self) -> Option<bool> {
        for (word, value) in [("true", true), ("false", false)] {
            if self.bytes().starts_with(word.as_bytes()) {
                self.at += word.len();
                return Some(value);
            }
        }
        None
    }

    /// A non-negative integer without a leading zero that fits a `u32`, which is what a schema
    /// version is; any other number (sign, fraction, exponent) goes to the general decoder.
    fn small_number(&mut self) -> Option<u32> {
        let digits = self
            .bytes()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.text[self.at..self.at + digits];
        let plain = (1..=10).contains(&digits) && (digits == 1 || !text.starts_with('0'));
        let next = self.bytes().get(digits);
        if !plain || matches!(next, Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.at += digits;
        text.parse().ok()
    }
}

/// Where a string's text stops: its closing quote, an escape, or a raw control character (which
/// JSON forbids). Eight bytes are looked at as one word (SWAR): each test flags the bytes it
/// matches in their top bit, and the lowest flag is exact (a false flag can only follow a true one).
/// A scan that stops at each byte costs about three times as much on an event's ids and names.
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const TOPS: u64 = ONES << 7;
    let below = |word: u64, limit: u8| word.wrapping_sub(ONES * u64::from(limit)) & !word & TOPS;
    let equal = |word: u64, byte: u8| below(word ^ (ONES * u64::from(byte)), 1);
    let mut words = bytes.chunks_exact(8);
    for (n, chunk) in words.by_ref().enumerate() {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        let flags = equal(word, b'"') | equal(word, b'\\') | below(word, 0x20);
        if flags != 0 {
            return Some(n * 8 + flags.trailing_zeros() as usize / 8);
        }
    }
    let scanned = bytes.len() - words.remainder().len();
    let stops = |b: &u8| *b == b'"' || *b == b'\\' || *b < 0x20;
    let tail = words.remainder().iter().position(stops)?;
    Some(scanned + tail)
}

#[cfg(test)]
mod tests {
    use super::string_end;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn string_end_finds_the_first_quote_escape_or_control_byte(
            bytes in proptest::collection::vec(
                prop_oneof![4 => 0x20u8..0x7f, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 2 => 0x7fu8..=0xff],
                0..64,
            )
        ) {
            let expected = bytes.iter().position(|b| *b == b'"' || *b == b'\\' || *b < 0x20);
            prop_assert_eq!(string_end(&bytes), expected);
        }
    }
}
