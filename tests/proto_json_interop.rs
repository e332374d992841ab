//! The proto3 JSON mapping of every message in the schema, checked both ways against an independent
//! implementation: Google's `google.protobuf.json_format` for Python, run by
//! `tests/interop/proto_json.py` (one process for the whole batch, JSON lines over its stdin and
//! stdout). Seeded random messages of every type, with every field, defaults, extremes, unicode,
//! unknown enum numbers and timestamps of 0 to 9 fractional digits, are checked for:
//!
//! - (a) our JSON is read by Python as the same message, and is the JSON Python writes for it (as a
//!   JSON value: the same keys, numbers, enum names and timestamp strings);
//! - (b) Python's JSON, in MessageToJson's option combinations and with nulls put in, is read by our
//!   codec as the same message;
//! - (c) our timestamps are Python's, byte for byte, across the whole range, and both read the same
//!   RFC 3339 strings (any offset, 0 to 9 digits) as the same instant.
//!
//! Needs `python3` with the `protobuf` package (`python3 -m pip install protobuf`); without them the
//! test fails and says so. `INTEROP_SEED=<n>` runs another sample.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;

use autoclaim::wire::timestamp::{self, MAX_SECONDS, MIN_SECONDS};
use autoclaim::wire::{codec, pb, Format, FILE_DESCRIPTOR_SET};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use pbjson_types::Timestamp;
use prost::Message;
use prost_types::{DescriptorProto, FileDescriptorSet};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

const DEFAULT_SEED: u64 = 0x13_0004;
/// Random messages of each type (the oneof's record type gets this many of each member too).
const MESSAGES_PER_TYPE: usize = 150;
const TIMESTAMPS: usize = 1500;
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/proto_json.py");

// ---------------------------------------------------------------- random values

struct Gen(SmallRng);

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.0.random_bool(p)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.0.random_range(0..items.len())].clone()
    }

    /// Empty (the default) a third of the time; otherwise ASCII, escapes, control characters,
    /// non-Latin and astral text, or a long run.
    fn string(&mut self) -> String {
        const SPECIAL: &[&str] = &[
            "\"",
            "\\",
            "/",
            "\n",
            "\t",
            "\u{0}",
            "\u{1f}",
            "\u{7f}",
            "\u{85}",
            "\u{2028}",
            "\u{2029}",
            "\u{feff}",
            "\u{fffd}",
            "\u{10ffff}",
            "é",
            "東京",
            "😀",
            "👩‍👩‍👧",
            "\u{301}",
            "𝄞",
            "null",
            "0",
        ];
        if self.chance(0.33) {
            return String::new();
        }
        match self.0.random_range(0..4) {
            0 => format!("id-{}", self.0.random::<u32>()),
            1 => (0..self.0.random_range(1..6))
                .map(|_| self.pick(SPECIAL))
                .collect(),
            2 => (0..self.0.random_range(1..24))
                .map(|_| self.char())
                .collect(),
            _ => "x".repeat(self.0.random_range(100..400)),
        }
    }

    /// Any char: ASCII mostly, then the other planes (never a surrogate, which `char` cannot be).
    fn char(&mut self) -> char {
        let ranges: &[(u32, u32)] = &[
            (0x20, 0x7e),
            (0x00, 0x1f),
            (0x80, 0x7ff),
            (0x800, 0xd7ff),
            (0xe000, 0xffff),
            (0x1_0000, 0x10_ffff),
        ];
        let (lo, hi) = self.pick(ranges);
        char::from_u32(self.0.random_range(lo..=hi)).expect("no surrogates in the ranges")
    }

    fn strings(&mut self) -> Vec<String> {
        let n = self.pick(&[0, 0, 1, 2, 5]);
        // Elements may be empty strings: a repeated field keeps them.
        (0..n).map(|_| self.string()).collect()
    }

    fn bool(&mut self) -> bool {
        self.chance(0.5)
    }

    fn u32(&mut self) -> u32 {
        match self.0.random_range(0..4) {
            0 => 0,
            1 => self.pick(&[1, 2, u32::MAX, u32::MAX - 1, 1 << 31]),
            _ => self.0.random(),
        }
    }

    fn u64(&mut self) -> u64 {
        match self.0.random_range(0..4) {
            0 => 0,
            // 2^53 + 1 is the first integer a JSON number parsed as a double would lose.
            1 => self.pick(&[1, u64::MAX, u64::MAX - 1, (1 << 53) + 1, 1 << 63]),
            _ => self.0.random(),
        }
    }

    /// An enum field's number: 0, a named value (1..=`last`), or one the schema does not name
    /// (proto3 enums are open, so the mapping writes and reads it as a number).
    fn enum_number(&mut self, last: i32) -> i32 {
        match self.0.random_range(0..6) {
            0 => 0,
            1 => self.pick(&[last + 1, 99, -1, i32::MAX, i32::MIN]),
            _ => self.0.random_range(1..=last),
        }
    }

    /// Nanos that need 0, 3, 6 or 9 fractional digits, or any.
    fn nanos(&mut self) -> i32 {
        match self.0.random_range(0..5) {
            0 => 0,
            1 => self.0.random_range(1..1000) * 1_000_000,
            2 => self.0.random_range(1..1_000_000) * 1_000,
            3 => self.pick(&[1, 999_999_999, 500_000_000, 100, 10_000_000]),
            _ => self.0.random_range(0..1_000_000_000),
        }
    }

    /// A valid Timestamp: near today, anywhere in years 0001-9999, or at an end of the range.
    fn timestamp(&mut self) -> Timestamp {
        let seconds = match self.0.random_range(0..5) {
            0 => self.pick(&[MIN_SECONDS, MAX_SECONDS, 0, -1, 951_782_400, 1_772_447_460]),
            1 | 2 => self.0.random_range(1_700_000_000..1_900_000_000),
            _ => self.0.random_range(MIN_SECONDS..=MAX_SECONDS),
        };
        Timestamp {
            seconds,
            nanos: self.nanos(),
        }
    }

    fn opt_timestamp(&mut self) -> Option<Timestamp> {
        self.chance(0.7).then(|| self.timestamp())
    }

    /// `None`, the default message (written as `{}`), or a random one.
    fn opt<T: Default>(&mut self, make: impl FnOnce(&mut Gen) -> T) -> Option<T> {
        match self.0.random_range(0..4) {
            0 => None,
            1 => Some(T::default()),
            _ => Some(make(self)),
        }
    }

    fn repeated<T>(&mut self, make: impl Fn(&mut Gen) -> T) -> Vec<T> {
        let n = self.pick(&[0, 0, 1, 2, 4]);
        (0..n).map(|_| make(self)).collect()
    }
}

// ---------------------------------------------------------------- random messages

fn flow(g: &mut Gen) -> pb::Flow {
    pb::Flow {
        flow_id: g.string(),
        owner_user_id: g.string(),
        trigger_type: g.enum_number(3),
        uses_premium_connectors: g.bool(),
        uses_attended_rpa: g.bool(),
        environment_id: g.string(),
        managed_environment: g.bool(),
        covered_by_process_plan: g.bool(),
        runs_in_licensed_app_context: g.bool(),
    }
}

fn activity_event(g: &mut Gen) -> pb::ActivityEvent {
    pb::ActivityEvent {
        schema_version: g.u32(),
        event_id: g.string(),
        tenant_id: g.string(),
        occurred_at: g.opt_timestamp(),
        actor_user_id: g.string(),
        kind: g.enum_number(6),
        source: g.enum_number(2),
        flow: g.opt(flow),
        requested_product: g.string(),
    }
}

fn assigned_license(g: &mut Gen) -> pb::AssignedLicense {
    pb::AssignedLicense {
        sku_id: g.string(),
        disabled_plan_ids: g.strings(),
    }
}

fn directory_user(g: &mut Gen) -> pb::DirectoryUser {
    pb::DirectoryUser {
        tenant_id: g.string(),
        user_id: g.string(),
        account_enabled: g.bool(),
        user_type: g.enum_number(2),
        usage_location: g.string(),
        licenses: g.repeated(assigned_license),
        as_of: g.opt_timestamp(),
    }
}

fn license_inventory(g: &mut Gen) -> pb::LicenseInventory {
    pb::LicenseInventory {
        tenant_id: g.string(),
        product: g.string(),
        purchased_units: g.u64(),
        assigned_units: g.u64(),
        as_of: g.opt_timestamp(),
    }
}

fn tenant_settings(g: &mut Gen) -> pb::TenantSettings {
    pb::TenantSettings {
        tenant_id: g.string(),
        autoclaim_enabled: g.bool(),
        scope: g.enum_number(2),
        changed_at: g.opt_timestamp(),
        changed_by: g.string(),
        low_seats_threshold: g.u32(),
    }
}

fn excluded_apps(g: &mut Gen) -> pb::ExcludedApps {
    pb::ExcludedApps {
        product: g.string(),
        plan_ids: g.strings(),
    }
}

fn policy(g: &mut Gen) -> pb::Policy {
    pb::Policy {
        tenant_id: g.string(),
        policy_id: g.string(),
        name: g.string(),
        product: g.string(),
        backup_products: g.strings(),
        excluded_apps: g.repeated(excluded_apps),
        enabled: g.bool(),
        deleted: g.bool(),
        created_at: g.opt_timestamp(),
        changed_at: g.opt_timestamp(),
        changed_by: g.string(),
    }
}

fn license_assignment(g: &mut Gen) -> pb::LicenseAssignment {
    pb::LicenseAssignment {
        assignment_id: g.string(),
        tenant_id: g.string(),
        user_id: g.string(),
        product: g.string(),
        sku_id: g.string(),
        sku_part_number: g.string(),
        disabled_plan_ids: g.strings(),
        policy_id: g.string(),
        policy_name: g.string(),
        trigger_event_id: g.string(),
        trigger_kind: g.enum_number(6),
        occurred_at: g.opt_timestamp(),
        decided_at: g.opt_timestamp(),
        seats_counted_from: g.opt_timestamp(),
        pending_since: g.opt_timestamp(),
    }
}

fn autoclaim_failure(g: &mut Gen) -> pb::AutoclaimFailure {
    pb::AutoclaimFailure {
        tenant_id: g.string(),
        user_id: g.string(),
        product: g.string(),
        policy_id: g.string(),
        trigger_event_id: g.string(),
        trigger_kind: g.enum_number(6),
        reason: g.enum_number(5),
        occurred_at: g.opt_timestamp(),
        decided_at: g.opt_timestamp(),
        pending_since: g.opt_timestamp(),
    }
}

fn license_claim(g: &mut Gen) -> pb::LicenseClaim {
    pb::LicenseClaim {
        tenant_id: g.string(),
        user_id: g.string(),
        needs: g.strings(),
        status: g.enum_number(5),
        trigger: g.opt(activity_event),
        first_seen: g.opt_timestamp(),
        last_seen: g.opt_timestamp(),
        events: g.u32(),
        product: g.string(),
        policy_id: g.string(),
        changed_at: g.opt_timestamp(),
        assignment_id: g.string(),
        ended_outcome: g.enum_number(8),
        ended_reason: g.enum_number(6),
        expires_at: g.opt_timestamp(),
    }
}

fn admin_notice(g: &mut Gen) -> pb::AdminNotice {
    pb::AdminNotice {
        notice_id: g.string(),
        tenant_id: g.string(),
        kind: g.enum_number(3),
        product: g.string(),
        at: g.opt_timestamp(),
        users_waiting: g.u32(),
        seats_available: g.u64(),
        claims_fulfilled: g.u32(),
        digest: g.bool(),
        low_seats_threshold: g.u32(),
    }
}

fn decision(g: &mut Gen) -> pb::Decision {
    pb::Decision {
        event_id: g.string(),
        tenant_id: g.string(),
        subject_user_id: g.string(),
        outcome: g.enum_number(8),
        reason: g.enum_number(5),
        product: g.string(),
        policy_id: g.string(),
        assignment: g.opt(license_assignment),
        failure: g.opt(autoclaim_failure),
        claims: g.repeated(license_claim),
        notices: g.repeated(admin_notice),
    }
}

fn directory_user_deleted(g: &mut Gen) -> pb::DirectoryUserDeleted {
    pb::DirectoryUserDeleted {
        tenant_id: g.string(),
        user_id: g.string(),
    }
}

fn audit_actor(g: &mut Gen) -> pb::AuditActor {
    pb::AuditActor {
        object_id: g.string(),
        display_name: g.string(),
    }
}

/// An audited version with either member of its oneof (or none), default or not.
fn audited_version(g: &mut Gen) -> pb::AuditedVersion {
    use pb::audited_version::Version;
    let version = match g.0.random_range(0..5) {
        0 => None,
        1 => Some(Version::Settings(pb::TenantSettings::default())),
        2 => Some(Version::Policy(pb::Policy::default())),
        3 => Some(Version::Settings(tenant_settings(g))),
        _ => Some(Version::Policy(policy(g))),
    };
    pb::AuditedVersion { version }
}

fn audit_entry(g: &mut Gen) -> pb::AuditEntry {
    pb::AuditEntry {
        entry_id: g.string(),
        tenant_id: g.string(),
        actor: g.opt(audit_actor),
        action: g.enum_number(6),
        policy_id: g.string(),
        before: g.opt(audited_version),
        after: g.opt(audited_version),
        made_at: g.opt_timestamp(),
        in_force_at: g.opt_timestamp(),
    }
}

/// A replay record with the `member`th member of its oneof (or none, past the last), default or not.
fn replay_record(g: &mut Gen, member: usize) -> pb::ReplayRecord {
    use pb::replay_record::Record;
    fn or_default<T: Default>(g: &mut Gen, make: fn(&mut Gen) -> T) -> T {
        if g.chance(0.2) {
            T::default()
        } else {
            make(g)
        }
    }
    let record = match member {
        0 => Some(Record::Activity(or_default(g, activity_event))),
        1 => Some(Record::DirectoryUser(or_default(g, directory_user))),
        2 => Some(Record::Inventory(or_default(g, license_inventory))),
        3 => Some(Record::Settings(or_default(g, tenant_settings))),
        4 => Some(Record::Policy(or_default(g, policy))),
        5 => Some(Record::DirectoryUserDeleted(or_default(
            g,
            directory_user_deleted,
        ))),
        _ => None,
    };
    pb::ReplayRecord {
        record,
        written_at: g.opt_timestamp(),
    }
}

// ---------------------------------------------------------------- the batch

type Check = Box<dyn FnOnce(&Value) -> Result<(), String>>;

/// Requests for the Python side, each with the check of its answer.
struct Batch {
    requests: Vec<Value>,
    checks: Vec<(String, Check)>,
    /// JSON keys our output used, per message type: every field must have been set somewhere.
    keys_written: BTreeMap<&'static str, BTreeSet<String>>,
    seed: u64,
}

trait Wire: Message + Serialize + DeserializeOwned + Default + PartialEq + Debug + 'static {}
impl<M: Message + Serialize + DeserializeOwned + Default + PartialEq + Debug + 'static> Wire for M {}

impl Batch {
    fn push(&mut self, label: String, mut request: Value, check: Check) {
        request["id"] = json!(self.requests.len());
        self.requests.push(request);
        self.checks.push((label, check));
    }

    /// Checks (a) and (b) for one message of the schema type `type_name`.
    fn message<M: Wire>(&mut self, type_name: &'static str, m: M) {
        let ours = codec::encode(&m, Format::Json);
        let ours = String::from_utf8(ours).expect("JSON is UTF-8");
        let ours_value: Value = serde_json::from_str(&ours).expect("our JSON parses");
        let keys = self.keys_written.entry(type_name).or_default();
        keys.extend(ours_value.as_object().expect("an object").keys().cloned());
        let binary = BASE64.encode(m.encode_to_vec());
        let label = format!("{type_name} {m:?}\n  our JSON: {ours}");
        let m = Rc::new(m);

        let expected = m.clone();
        self.push(
            format!("(a) Python reads our JSON: {label}"),
            json!({"op": "parse", "type": type_name, "json": ours}),
            Box::new(move |answer| {
                let theirs: M = decode_binary(answer)?;
                same(&theirs, &*expected, "the message Python read")
            }),
        );
        let seed = self.seed ^ self.requests.len() as u64;
        self.push(
            format!("(b) we read Python's JSON: {label}"),
            json!({"op": "render", "type": type_name, "binary": binary, "seed": seed}),
            Box::new(move |answer| check_renderings(answer, &*m, &ours_value)),
        );
    }

    /// Check (c) for one Timestamp: the same text, or both refuse it.
    fn timestamp_format(&mut self, t: Timestamp) {
        let ours = timestamp::to_rfc3339(&t);
        self.push(
            format!(
                "(c) timestamp {}s {}ns written as {ours:?}",
                t.seconds, t.nanos
            ),
            json!({"op": "timestamp_format", "seconds": t.seconds, "nanos": t.nanos}),
            Box::new(move |answer| match (&ours, ok(answer)) {
                (Ok(text), Ok(())) if answer["text"] == *text => Ok(()),
                (Err(_), Err(_)) => Ok(()),
                _ => Err(format!("Python: {answer}")),
            }),
        );
    }

    /// Check (c) for one RFC 3339 string: the same instant (`expected`, when known), or both refuse
    /// it; with `lenient`, only what we accept must be accepted by Python (which is laxer, e.g. it
    /// takes one-digit months).
    fn timestamp_parse(&mut self, text: String, expected: Option<Timestamp>, lenient: bool) {
        let ours = timestamp::parse_rfc3339(&text);
        self.push(
            format!("(c) {text:?} read as {ours:?}"),
            json!({"op": "timestamp_parse", "text": text}),
            Box::new(move |answer| match (&ours, ok(answer)) {
                (Ok(t), _) if expected.is_some_and(|e| e != *t) => {
                    Err(format!("expected {expected:?}"))
                }
                (Ok(t), Ok(()))
                    if answer["seconds"] == json!(t.seconds)
                        && answer["nanos"] == json!(t.nanos) =>
                {
                    Ok(())
                }
                (Err(_), Err(_)) => Ok(()),
                (Err(_), Ok(())) if lenient => Ok(()),
                _ => Err(format!("Python: {answer}")),
            }),
        );
    }
}

fn ok(answer: &Value) -> Result<(), String> {
    match answer["ok"].as_bool() {
        Some(true) => Ok(()),
        _ => Err(answer["error"]
            .as_str()
            .unwrap_or("no error given")
            .to_owned()),
    }
}

fn decode_binary<M: Wire>(answer: &Value) -> Result<M, String> {
    ok(answer).map_err(|e| format!("Python refused it: {e}"))?;
    binary_field(&answer["binary"])
}

fn binary_field<M: Wire>(value: &Value) -> Result<M, String> {
    let bytes = BASE64
        .decode(value.as_str().ok_or("no binary in the answer")?)
        .map_err(|e| e.to_string())?;
    M::decode(bytes.as_slice()).map_err(|e| format!("Python's protobuf does not decode: {e}"))
}

fn same<M: Wire>(got: &M, expected: &M, what: &str) -> Result<(), String> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("{what} differs: {got:?}"))
    }
}

/// (b) for each of Python's renderings, and (a)'s second half: Python's default rendering is our
/// JSON, as a JSON value.
fn check_renderings<M: Wire>(answer: &Value, m: &M, ours: &Value) -> Result<(), String> {
    ok(answer).map_err(|e| format!("Python could not render it: {e}"))?;
    let renderings = answer["renderings"].as_array().ok_or("no renderings")?;
    for (i, r) in renderings.iter().enumerate() {
        let text = r["json"].as_str().ok_or("no json")?;
        let options = r["options"].as_str().unwrap_or_default();
        if i == 0 {
            let theirs: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
            if theirs != *ours {
                return Err(format!("Python writes other JSON: {theirs}"));
            }
        }
        let expected: M = binary_field(&r["binary"])?;
        if options.contains("nulls") {
            // The cleared fields are gone from the message the nulls leave, nothing else.
        } else {
            same(&expected, m, "Python's message")?;
        }
        match codec::decode::<M>(text.as_bytes(), Format::Json) {
            Ok(read) => same(
                &read,
                &expected,
                &format!("what we read of Python's ({options}) {text}"),
            )?,
            Err(e) => {
                return Err(format!(
                    "we refuse Python's JSON ({options}): {e}\n  {text}"
                ))
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- timestamps

/// Check (c): formats across the range and just past it, and RFC 3339 strings with offsets and
/// 0 to 9 fractional digits.
fn timestamps(batch: &mut Batch, g: &mut Gen) {
    for (seconds, nanos) in [
        (MIN_SECONDS, 0),
        (MAX_SECONDS, 999_999_999),
        (MIN_SECONDS - 1, 999_999_999),
        (MAX_SECONDS + 1, 0),
        (0, -1),
        (0, 1_000_000_000),
        (i64::MIN, 0),
    ] {
        batch.timestamp_format(Timestamp { seconds, nanos });
    }
    for _ in 0..TIMESTAMPS {
        let t = g.timestamp();
        batch.timestamp_format(t);
        let digits = g.0.random_range(0..=9);
        let offset_minutes = match g.0.random_range(0..3) {
            0 => 0,
            _ => g.0.random_range(-(23 * 60 + 59)..=(23 * 60 + 59)),
        };
        if let Some(text) = rfc3339_with(t, digits, offset_minutes, g.chance(0.5)) {
            let kept = 10i32.pow(9 - digits as u32);
            let expected = Timestamp {
                seconds: t.seconds,
                nanos: t.nanos / kept * kept,
            };
            batch.timestamp_parse(text, Some(expected), false);
        }
    }
    // Local times in range whose offset takes them out of it (both must refuse), or just in.
    for (local_seconds, offset_minutes) in [
        (MIN_SECONDS + 30, 60),
        (MIN_SECONDS + 3600, 60),
        (MAX_SECONDS - 30, -60),
        (MAX_SECONDS - 3600, -60),
        (MIN_SECONDS, -(23 * 60 + 59)),
        (MAX_SECONDS, 23 * 60 + 59),
    ] {
        let local = Timestamp {
            seconds: local_seconds,
            nanos: 0,
        };
        let text = local_text(local, 0, offset_minutes, false).expect("a time in range");
        batch.timestamp_parse(text, None, false);
    }
    for text in [
        "2026-03-02t10:31:00Z",
        "2026-03-02T10:31:00z",
        "2026-03-02 10:31:00Z",
        "2026-03-02T10:31:00.Z",
        "2026-03-02T10:31:00.1234567891Z",
        "2026-12-31T23:59:60Z",
        "2026-02-29T00:00:00Z",
        "2026-3-2T10:31:00Z",
        "2026-03-02T10:31:00+2:00",
        "2026-03-02T10:31:00+0200",
        "0000-12-31T23:59:59Z",
        "10000-01-01T00:00:00Z",
    ] {
        batch.timestamp_parse(text.to_owned(), None, true);
    }
}

/// `t` written at a UTC offset of `offset_minutes`, with `digits` fractional digits (nanos beyond
/// them dropped), or `None` when the local time is outside years 0001-9999.
fn rfc3339_with(t: Timestamp, digits: usize, offset_minutes: i64, z: bool) -> Option<String> {
    let local = Timestamp {
        seconds: t.seconds + offset_minutes * 60,
        nanos: t.nanos,
    };
    local_text(local, digits, offset_minutes, z)
}

fn local_text(local: Timestamp, digits: usize, offset_minutes: i64, z: bool) -> Option<String> {
    let whole = Timestamp {
        seconds: local.seconds,
        nanos: 0,
    };
    // The date and time of day from our writer; were they wrong, Python would read another instant.
    let text = timestamp::to_rfc3339(&whole).ok()?;
    let mut out = text.get(..19)?.to_owned();
    if digits > 0 {
        out.push('.');
        out.push_str(&format!("{:09}", local.nanos)[..digits]);
    }
    if offset_minutes == 0 && z {
        out.push('Z');
    } else {
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        let m = offset_minutes.abs();
        out.push_str(&format!("{sign}{:02}:{:02}", m / 60, m % 60));
    }
    Some(out)
}

// ---------------------------------------------------------------- the Python side

/// What the Python side needs: protobuf 5.26 or later (MessageToJson's
/// `always_print_fields_with_no_presence`).
const PROBE: &str = "import sys, google.protobuf as p, google.protobuf.json_format
print(p.__version__)
sys.exit(3 if tuple(int(x) for x in p.__version__.split('.')[:2]) < (5, 26) else 0)";
const INSTALL: &str = "python3 -m pip install -U 'protobuf>=5.26'";

/// Fails, saying what to install, when python3 or its protobuf package is missing or too old.
fn require_python() {
    let out = match Command::new("python3").args(["-c", PROBE]).output() {
        Ok(out) => out,
        Err(e) => {
            panic!("this test needs python3 (not found: {e}): install Python 3, then `{INSTALL}`")
        }
    };
    match out.status.code() {
        Some(0) => {}
        Some(3) => panic!(
            "Python's protobuf {} is too old for this test: `{INSTALL}`",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        _ => panic!(
            "this test needs Python's protobuf package: `{INSTALL}`\n{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Runs every request through one Python process; the answers, in order.
fn ask_python(descriptor_set: &Path, requests: Vec<Value>) -> Vec<Value> {
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(descriptor_set)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let count = requests.len();
    let mut stdin = child.stdin.take().expect("piped");
    // A thread writes while this one reads, so that neither pipe can fill up and stall both.
    let writer = std::thread::spawn(move || {
        for r in requests {
            writeln!(stdin, "{r}").expect("write to python3");
        }
    });
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).ok();
        text
    });
    let answers: Vec<Value> = BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map(|line| serde_json::from_str(&line.expect("read from python3")).expect("a JSON answer"))
        .collect();
    writer.join().expect("writer");
    let status = child.wait().expect("python3 ends");
    let errors = errors.join().expect("stderr reader");
    assert!(
        status.success() && answers.len() == count,
        "{SCRIPT} ended with {status} after {} of {count} answers:\n{errors}",
        answers.len()
    );
    answers
}

fn descriptor_file() -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("autoclaim-descriptor-{}.binpb", std::process::id()));
    std::fs::write(&path, FILE_DESCRIPTOR_SET).expect("write the descriptor set");
    path
}

/// Every message of the schema, with the JSON names of its fields.
fn schema_messages() -> BTreeMap<String, BTreeSet<String>> {
    fn walk(scope: &str, m: &DescriptorProto, out: &mut BTreeMap<String, BTreeSet<String>>) {
        let name = format!("{scope}.{}", m.name());
        let fields = m.field.iter().map(|f| f.json_name().to_owned()).collect();
        for nested in &m.nested_type {
            walk(&name, nested, out);
        }
        out.insert(name, fields);
    }
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut out = BTreeMap::new();
    for file in set
        .file
        .iter()
        .filter(|f| f.package().starts_with("autoclaim"))
    {
        for m in &file.message_type {
            walk(file.package(), m, &mut out);
        }
    }
    out
}

// ---------------------------------------------------------------- the test

fn generate(batch: &mut Batch, g: &mut Gen) {
    macro_rules! messages {
        ($($name:literal => $make:expr),* $(,)?) => {
            $(for _ in 0..MESSAGES_PER_TYPE {
                let m = $make(&mut *g);
                batch.message($name, m);
            })*
        };
    }
    messages!(
        "autoclaim.v1.Flow" => flow,
        "autoclaim.v1.ActivityEvent" => activity_event,
        "autoclaim.v1.AssignedLicense" => assigned_license,
        "autoclaim.v1.DirectoryUser" => directory_user,
        "autoclaim.v1.LicenseInventory" => license_inventory,
        "autoclaim.v1.TenantSettings" => tenant_settings,
        "autoclaim.v1.ExcludedApps" => excluded_apps,
        "autoclaim.v1.Policy" => policy,
        "autoclaim.v1.LicenseAssignment" => license_assignment,
        "autoclaim.v1.AutoclaimFailure" => autoclaim_failure,
        "autoclaim.v1.Decision" => decision,
        "autoclaim.v1.LicenseClaim" => license_claim,
        "autoclaim.v1.AdminNotice" => admin_notice,
        "autoclaim.v1.DirectoryUserDeleted" => directory_user_deleted,
        "autoclaim.v1.AuditActor" => audit_actor,
        "autoclaim.v1.AuditedVersion" => audited_version,
        "autoclaim.v1.AuditEntry" => audit_entry,
    );
    for member in 0..=6 {
        for _ in 0..MESSAGES_PER_TYPE / 3 {
            let m = replay_record(g, member);
            batch.message("autoclaim.v1.ReplayRecord", m);
        }
    }
    // Every type also with every field at its default (`{}`).
    batch.message("autoclaim.v1.ActivityEvent", pb::ActivityEvent::default());
    batch.message("autoclaim.v1.ReplayRecord", pb::ReplayRecord::default());
    timestamps(batch, g);
}

#[test]
fn proto3_json_agrees_with_googles_python_implementation_both_ways() {
    require_python();
    let seed = std::env::var("INTEROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut g = Gen(SmallRng::seed_from_u64(seed));
    let mut batch = Batch {
        requests: Vec::new(),
        checks: Vec::new(),
        keys_written: BTreeMap::new(),
        seed,
    };
    generate(&mut batch, &mut g);

    // Every message type of the schema is generated, each with every one of its fields set.
    let schema = schema_messages();
    let generated: BTreeSet<&str> = batch.keys_written.keys().copied().collect();
    let in_schema: BTreeSet<&str> = schema.keys().map(String::as_str).collect();
    assert_eq!(
        generated, in_schema,
        "message types generated vs in the schema"
    );
    for (name, fields) in &schema {
        assert_eq!(
            &batch.keys_written[name.as_str()],
            fields,
            "{name}: fields set"
        );
    }

    let descriptor_set = descriptor_file();
    let requests = std::mem::take(&mut batch.requests);
    let count = requests.len();
    let answers = ask_python(&descriptor_set, requests);
    std::fs::remove_file(&descriptor_set).ok();

    let mut failures = Vec::new();
    for ((label, check), answer) in batch.checks.into_iter().zip(&answers) {
        if let Err(why) = check(answer) {
            failures.push(format!("{label}\n  {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} checks failed (INTEROP_SEED={seed}); the first:\n{}",
        failures.len(),
        failures
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    eprintln!("{count} checks agreed with json_format (INTEROP_SEED={seed})");
}
