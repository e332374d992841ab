//! Hostile input on a real broker (AUTOCLAIM_TEST_BROKERS): a seeded random stream of bad records
//! (arbitrary bytes, wrong content types, truncated protobuf, deeply nested and oversized JSON up to
//! the broker's ~1 MiB limit, unknown enum values, missing tenant ids, future schema versions,
//! tombstones, misrouted tenants, over-long or control-character ids, impossible times) interleaved
//! with valid events in both encodings, published to the activity topic while the service runs.
//!
//! Every bad record must reach the dead-letter topic exactly once with a code and a reason; every
//! valid one must be processed (the outputs equal `replay`'s of the valid ones alone); the service
//! must keep running without a panic; its resident memory must stay bounded. Seed:
//! AUTOCLAIM_HOSTILE_SEED (default below); the figures are printed (run with --nocapture).
mod kafka_support;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use autoclaim::pipeline::partitioner::tenant_partition;
use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::wire::codec::{self, MAX_RECORD_BYTES};
use autoclaim::wire::{pb, Format};
use kafka_support::*;
use prost::Message as _;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const DEFAULT_SEED: u64 = 0x0bad_5eed;
const PARTITIONS: i32 = 3;
const VALID_EVENTS: usize = 3000;
const BAD_RECORDS: usize = 400;
/// Guards against a hang; not a performance threshold.
const GUARD: Duration = Duration::from_secs(600);
/// Resident memory the service may gain while it reads the hostile stream. Generous on purpose:
/// librdkafka may buffer up to 64 MiB of fetched records per consumer and the producer keeps the
/// dead letters (copies of records up to ~1 MiB) until they are acknowledged. A leak of the bad
/// records' bytes (about 40 MiB of them) or a blow-up on one of them would show.
const RSS_GROWTH_LIMIT_KIB: u64 = 256 * 1024;

fn seed() -> u64 {
    std::env::var("AUTOCLAIM_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED)
}

/// One record to publish. `id` is set for bad records: it travels in the `x-hostile-id` header,
/// which the dead letter keeps, so each dead letter is matched to the record it stands for.
struct Outgoing {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    bad: Option<Bad>,
}

struct Bad {
    id: usize,
    category: &'static str,
    /// Codes the dead letter may carry for this category.
    codes: &'static [&'static str],
}

/// Headers a producer sets in the service's namespace (in any case), which no dead letter may copy.
const FORGED_HEADERS: [(&str, &[u8]); 3] = [
    ("autoclaim.source.offset", b"0"),
    ("autoclaim.error.code", b"forged"),
    ("Autoclaim.Source.Partition", b"99"),
];

const JSON_CT: &[u8] = b"application/json";
const PROTOBUF_CT: &[u8] = b"application/x-protobuf";

struct Generator<'a> {
    rng: SmallRng,
    template: &'a [pb::ActivityEvent],
    next_id: usize,
}

impl Generator<'_> {
    fn event(&mut self) -> pb::ActivityEvent {
        let i = self.rng.random_range(0..self.template.len());
        let mut e = self.template[i].clone();
        e.event_id = format!("bad-{}", self.next_id);
        e
    }

    fn json_of(e: &pb::ActivityEvent) -> Value {
        serde_json::to_value(e).unwrap()
    }

    fn home(e: &pb::ActivityEvent) -> i32 {
        tenant_partition(&e.tenant_id, PARTITIONS)
    }

    /// An event encoded as JSON or protobuf (half each), with its content type.
    fn encode_in_either_format(&mut self, event: &pb::ActivityEvent) -> (Vec<u8>, &'static [u8]) {
        if self.rng.random_bool(0.5) {
            (codec::encode(event, Format::Protobuf), PROTOBUF_CT)
        } else {
            (codec::encode(event, Format::Json), JSON_CT)
        }
    }

    fn bad(
        &mut self,
        category: &'static str,
        codes: &'static [&'static str],
        partition: i32,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        content_type: Option<&[u8]>,
    ) -> Outgoing {
        let id = self.next_id;
        self.next_id += 1;
        Outgoing {
            partition,
            key,
            value,
            content_type: content_type.map(<[u8]>::to_vec),
            bad: Some(Bad {
                id,
                category,
                codes,
            }),
        }
    }

    fn random_bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.rng.random_range(0..max);
        (0..n).map(|_| self.rng.random()).collect()
    }

    /// One bad record of a random category.
    fn next_bad(&mut self) -> Outgoing {
        let e = self.event();
        let p = Self::home(&e);
        let key = Some(e.tenant_id.clone().into_bytes());
        match self.rng.random_range(0..20) {
            0 => {
                let bytes = self.random_bytes(4096);
                self.bad(
                    "arbitrary bytes (JSON by default)",
                    &["json", "invalid_field"],
                    p,
                    key,
                    Some(bytes),
                    None,
                )
            }
            1 => {
                let bytes = self.random_bytes(4096);
                self.bad(
                    "arbitrary bytes as protobuf",
                    &["protobuf", "invalid_field", "schema_version"],
                    p,
                    key,
                    Some(bytes),
                    Some(PROTOBUF_CT),
                )
            }
            2 => {
                let types: [&[u8]; 6] = [
                    b"text/plain",
                    b"application/xml",
                    b"",
                    b"application/jsonx",
                    b"\xff\xfe\x00garbage",
                    b"application/avro",
                ];
                let ct = types[self.rng.random_range(0..types.len())];
                let value = codec::encode(&e, Format::Json);
                self.bad(
                    "wrong content type",
                    &["content_type"],
                    p,
                    key,
                    Some(value),
                    Some(ct),
                )
            }
            3 => {
                let full = e.encode_to_vec();
                let cut = self.rng.random_range(0..full.len());
                self.bad(
                    "truncated protobuf",
                    &["protobuf", "invalid_field"],
                    p,
                    key,
                    Some(full[..cut].to_vec()),
                    Some(PROTOBUF_CT),
                )
            }
            4 => {
                let mut text = serde_json::to_string(&e).unwrap();
                let cut = self.rng.random_range(0..text.len());
                text.truncate(cut);
                self.bad(
                    "truncated JSON",
                    &["json"],
                    p,
                    key,
                    Some(text.into_bytes()),
                    None,
                )
            }
            5 => {
                // Nested deeper than any parser should recurse, but under the size limit.
                let depth = self.rng.random_range(200..30_000);
                let value = match self.rng.random_range(0..3) {
                    0 => "[".repeat(depth) + &"]".repeat(depth),
                    1 => format!(
                        "{{\"eventId\":\"x\",\"flow\":{}1{}}}",
                        "{\"a\":".repeat(depth.min(10_000)),
                        "}".repeat(depth.min(10_000))
                    ),
                    _ => format!(
                        "{{\"tenantId\":\"t\",\"extra\":{}",
                        "[{\"b\":".repeat(depth.min(6_000))
                    ),
                };
                self.bad(
                    "deeply nested JSON",
                    &["json"],
                    p,
                    key,
                    Some(value.into_bytes()),
                    Some(JSON_CT),
                )
            }
            6 => {
                // Over our 64 KiB limit, under the broker's ~1 MiB one.
                let sizes = [
                    MAX_RECORD_BYTES + 1,
                    MAX_RECORD_BYTES * 2,
                    200_000,
                    500_000,
                    900_000,
                    999_000,
                    1_040_000,
                ];
                let size = sizes[self.rng.random_range(0..sizes.len())];
                let mut v = Self::json_of(&e);
                let pad = size.saturating_sub(v.to_string().len());
                v["padding"] = json!("p".repeat(pad));
                debug_assert!(v.to_string().len() > size.max(MAX_RECORD_BYTES));
                self.bad(
                    "oversized JSON",
                    &["too_large"],
                    p,
                    key,
                    Some(v.to_string().into_bytes()),
                    Some(JSON_CT),
                )
            }
            7 => {
                let mut v = Self::json_of(&e);
                let field = ["kind", "source"][self.rng.random_range(0..2)];
                v[field] = if self.rng.random_bool(0.5) {
                    json!("TELEPORTED")
                } else {
                    json!(self.rng.random_range(7..1000))
                };
                self.bad(
                    "unknown enum value (JSON)",
                    &["json", "invalid_field"],
                    p,
                    key,
                    Some(v.to_string().into_bytes()),
                    None,
                )
            }
            8 => {
                let mut m = e.clone();
                if self.rng.random_bool(0.5) {
                    m.kind = self.rng.random_range(7..100_000);
                } else {
                    m.source = self.rng.random_range(3..100_000);
                }
                self.bad(
                    "unknown enum value (protobuf)",
                    &["invalid_field"],
                    p,
                    key,
                    Some(m.encode_to_vec()),
                    Some(PROTOBUF_CT),
                )
            }
            9 => {
                let mut m = e.clone();
                m.tenant_id = String::new();
                let (value, content_type) = self.encode_in_either_format(&m);
                self.bad(
                    "missing tenant id",
                    &["invalid_field"],
                    p,
                    key,
                    Some(value),
                    Some(content_type),
                )
            }
            10 => {
                let mut m = e.clone();
                m.schema_version = [2, 3, 99, u32::MAX][self.rng.random_range(0..4)];
                let (value, content_type) = self.encode_in_either_format(&m);
                self.bad(
                    "future schema version",
                    &["schema_version"],
                    p,
                    key,
                    Some(value),
                    Some(content_type),
                )
            }
            11 | 12 => {
                let ct = if self.rng.random_bool(0.5) {
                    Some(JSON_CT)
                } else {
                    None
                };
                self.bad(
                    "tombstone (null value)",
                    &["invalid_field"],
                    p,
                    key,
                    None,
                    ct,
                )
            }
            13 => {
                // A valid event whose key names another tenant (or is not text at all).
                let key = if self.rng.random_bool(0.5) {
                    format!("{}-other", e.tenant_id).into_bytes()
                } else {
                    vec![0xff, 0xfe, b't']
                };
                self.bad(
                    "key naming another tenant",
                    &["key_mismatch"],
                    p,
                    Some(key),
                    Some(codec::encode(&e, Format::Json)),
                    None,
                )
            }
            14 => {
                let mut m = e.clone();
                match self.rng.random_range(0..3) {
                    0 => m.actor_user_id = "u".repeat(self.rng.random_range(257..5000)),
                    1 => m.event_id = "evt\u{0}\u{7}".into(),
                    _ => m.tenant_id = format!("{}\n", m.tenant_id),
                }
                self.bad(
                    "over-long or control-character id",
                    &["invalid_field"],
                    p,
                    key,
                    Some(codec::encode(&m, Format::Protobuf)),
                    Some(PROTOBUF_CT),
                )
            }
            15 => {
                let mut m = e.clone();
                m.occurred_at = Some(match self.rng.random_range(0..3) {
                    0 => pbjson_types::Timestamp {
                        seconds: -5,
                        nanos: 0,
                    },
                    1 => pbjson_types::Timestamp {
                        seconds: 300_000_000_000,
                        nanos: 0,
                    },
                    _ => pbjson_types::Timestamp {
                        seconds: 1_772_438_400,
                        nanos: -1,
                    },
                });
                self.bad(
                    "impossible time",
                    &["invalid_field"],
                    p,
                    key,
                    Some(m.encode_to_vec()),
                    Some(PROTOBUF_CT),
                )
            }
            16 => {
                let mut m = e.clone();
                m.kind = pb::ActivityKind::LicenseRequested as i32;
                m.source = pb::ActivitySource::Portal as i32;
                m.flow = None;
                m.requested_product = "power_automate_deluxe".into();
                self.bad(
                    "unknown product",
                    &["invalid_field"],
                    p,
                    key,
                    Some(codec::encode(&m, Format::Json)),
                    None,
                )
            }
            17 => {
                let values: [&[u8]; 8] = [
                    b"null",
                    b"[]",
                    b"42",
                    b"\"event\"",
                    b"{}",
                    b"\xef\xbb\xbf{}",
                    b"{\"eventId\":\"\xff\xfe\"}",
                    b"{\"eventId\":1e999}",
                ];
                let v = values[self.rng.random_range(0..values.len())];
                self.bad(
                    "JSON of the wrong shape",
                    &["json", "invalid_field"],
                    p,
                    key,
                    Some(v.to_vec()),
                    None,
                )
            }
            18 => {
                // A key that is no tenant at all, or none, on a valid value's own partition.
                let key = if self.rng.random_bool(0.5) {
                    None
                } else {
                    Some(self.random_bytes(64))
                };
                let mut m = e.clone();
                m.flow = None;
                m.kind = pb::ActivityKind::CloudFlowSaved as i32;
                self.bad(
                    "cloud-flow event without its flow",
                    &["invalid_field"],
                    p,
                    key,
                    Some(codec::encode(&m, Format::Json)),
                    None,
                )
            }
            _ => {
                let mut m = e.clone();
                m.occurred_at = None;
                self.bad(
                    "missing time",
                    &["invalid_field"],
                    p,
                    key,
                    Some(codec::encode(&m, Format::Protobuf)),
                    Some(PROTOBUF_CT),
                )
            }
        }
    }
}

fn valid(e: &pb::ActivityEvent, rng: &mut SmallRng) -> Outgoing {
    // Both encodings and the content types that mean them, including none (JSON).
    let (format, ct): (Format, Option<&[u8]>) = match rng.random_range(0..5) {
        0 => (Format::Json, None),
        1 => (Format::Json, Some(JSON_CT)),
        2 => (Format::Json, Some(b"application/json; charset=utf-8")),
        3 => (Format::Protobuf, Some(PROTOBUF_CT)),
        _ => (Format::Protobuf, Some(b"application/protobuf")),
    };
    Outgoing {
        partition: tenant_partition(&e.tenant_id, PARTITIONS),
        key: Some(e.tenant_id.clone().into_bytes()),
        value: Some(codec::encode(e, format)),
        content_type: ct.map(<[u8]>::to_vec),
        bad: None,
    }
}

fn send(producer: &RawProducer, topic: &str, o: &Outgoing) {
    let id = o.bad.as_ref().map(|b| b.id.to_string());
    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    if let Some(ct) = &o.content_type {
        headers.push(("content-type", ct));
    }
    if let Some(id) = &id {
        headers.push(("x-hostile-id", id.as_bytes()));
    }
    // Every other bad record claims to be a dead letter already: the service's headers must not
    // stand next to forged ones.
    if o.bad.as_ref().is_some_and(|b| b.id % 2 == 1) {
        headers.extend(FORGED_HEADERS);
    }
    producer.send(
        topic,
        Some(o.partition),
        o.key.as_deref(),
        o.value.as_deref(),
        &headers,
    );
}

#[test]
fn hostile_records_are_dead_lettered_and_valid_ones_processed_with_bounded_memory() {
    let started = Instant::now();
    let seed = seed();
    let topics = unique_topics("hostile");
    create_topics(&topics, PARTITIONS);
    let scenario = Scenario::new(ScenarioConfig {
        tenants: 30,
        users_per_tenant: 30,
        seed,
        ..ScenarioConfig::default()
    });
    let tables = scenario.tables();
    let events: Vec<pb::ActivityEvent> = scenario.activity(VALID_EVENTS).collect();
    let mut records: Vec<pb::ReplayRecord> = tables.clone();
    records.extend(activity_records(events.iter().cloned()));
    let expected = expected(&records, Duration::from_secs(3600));

    // The stream: the first 500 valid events alone (the baseline), then the rest interleaved with
    // the bad records at random places.
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut generator = Generator {
        rng: SmallRng::seed_from_u64(seed ^ 0xbad),
        template: &events,
        next_id: 0,
    };
    let (head, tail) = events.split_at(500);
    let head: Vec<Outgoing> = head.iter().map(|e| valid(e, &mut rng)).collect();
    let mut mixed: Vec<Outgoing> = tail.iter().map(|e| valid(e, &mut rng)).collect();
    for _ in 0..BAD_RECORDS {
        let at = rng.random_range(0..=mixed.len());
        let bad = generator.next_bad();
        mixed.insert(at, bad);
    }
    // Every bad record must indeed be unreadable (else the generator, or the decoder, is wrong).
    for o in &mixed {
        if let Some(b) = &o.bad {
            let raw = autoclaim::pipeline::records::RawRecord {
                key: o.key.as_deref(),
                value: o.value.as_deref(),
                content_type: o.content_type.as_deref(),
            };
            let r = autoclaim::pipeline::records::activity_record(&raw);
            assert!(
                r.is_err(),
                "bad record {} ({}) decodes as a valid event",
                b.id,
                b.category
            );
        }
    }
    let bad_bytes: usize = mixed
        .iter()
        .filter(|o| o.bad.is_some())
        .map(|o| o.value.as_ref().map_or(0, Vec::len))
        .sum();
    let largest = mixed
        .iter()
        .filter(|o| o.bad.is_some())
        .map(|o| o.value.as_ref().map_or(0, Vec::len))
        .max()
        .unwrap_or(0);

    publish(&topics, &tables, Format::Json);
    let group = format!("g-{}", topics.activity);
    let mut service = Service::start(&ServiceOptions {
        topics: &topics,
        group: &group,
        transactional_id: "hostile-1",
        delay: "1h",
        extra: vec![],
    });
    let pid = service.pid().unwrap();
    let producer = RawProducer::new();
    for o in &head {
        send(&producer, &topics.activity, o);
    }
    producer.flush();
    wait_processed_by(&mut service, &topics, &group, GUARD);
    let rss_before = vm_rss_kib(pid);

    for chunk in mixed.chunks(200) {
        for o in chunk {
            send(&producer, &topics.activity, o);
        }
        producer.flush();
        assert!(
            service.is_running(),
            "the service exited on hostile input; log:\n{}",
            service.log_text()
        );
    }
    wait_processed_by(&mut service, &topics, &group, GUARD);
    let report = wait_clean(&topics, &group, GUARD);
    let rss_after = vm_rss_kib(pid);

    // The service is the same process, running, and never panicked.
    assert!(
        service.is_running() && service.pid() == Some(pid),
        "the service must still be running; log:\n{}",
        service.log_text()
    );
    let log = service.log_text();
    assert!(!log.contains("panicked"), "the service panicked:\n{log}");

    // Valid events: exactly replay's outputs.
    assert_equal_to_replay(&topics, &expected);

    // Bad records: each dead-lettered exactly once, with a code its category allows and a reason.
    let dead = read_committed(&topics.dead_letters);
    let mut by_id: HashMap<usize, Vec<&Read>> = HashMap::new();
    for d in &dead {
        let id = d
            .headers
            .get("x-hostile-id")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a dead letter without x-hostile-id: {:?}", d.headers));
        by_id.entry(id).or_default().push(d);
    }
    let mut per_category: BTreeMap<&str, (usize, BTreeMap<String, usize>)> = BTreeMap::new();
    for o in &mixed {
        let Some(b) = &o.bad else { continue };
        let letters = by_id.remove(&b.id).unwrap_or_default();
        assert_eq!(
            letters.len(),
            1,
            "bad record {} ({}) must have exactly one dead letter",
            b.id,
            b.category
        );
        let d = letters[0];
        let code = &d.headers["autoclaim.error.code"];
        assert!(
            b.codes.contains(&code.as_str()),
            "bad record {} ({}) was dead-lettered as {code}: {}",
            b.id,
            b.category,
            d.headers["autoclaim.error.reason"]
        );
        assert!(!d.headers["autoclaim.error.reason"].trim().is_empty());
        // The original bytes (a null value may come back as an empty one, and an oversized
        // record may be cut short, never changed).
        let original = o.value.as_deref().unwrap_or_default();
        let kept = d.value.as_deref().unwrap_or_default();
        let cut_short = code == "too_large" && original.starts_with(kept) && !kept.is_empty();
        assert!(
            kept == original || cut_short,
            "bad record {} ({}): the dead letter must keep the original bytes ({} bytes, got {})",
            b.id,
            b.category,
            original.len(),
            kept.len()
        );
        assert_eq!(d.key, o.key, "the dead letter keeps the original key");
        for (name, _) in FORGED_HEADERS {
            assert_eq!(
                d.header_count(name),
                1,
                "bad record {}: the dead letter has exactly the service's {name} header: {:?}",
                b.id,
                d.header_list
            );
        }
        assert_eq!(
            d.headers["autoclaim.source.partition"],
            o.partition.to_string()
        );
        let entry = per_category.entry(b.category).or_default();
        entry.0 += 1;
        *entry.1.entry(code.clone()).or_default() += 1;
    }
    assert!(by_id.is_empty(), "dead letters of records never sent");

    // The checker, as an operator runs it: exit status 0 and a clean JSON report.
    let output = Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .args(["verify", "--json", "--compare-replay"])
        .args(["--brokers", &brokers()])
        .args(["--group-id", &group, "--propagation-delay", "1h"])
        .args(topics.command_line_args())
        .output()
        .expect("run autoclaim verify");
    let json: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "verify --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert!(
        output.status.success() && json["clean"] == json!(true),
        "autoclaim verify: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        json["counts"]["unreadable_records"].as_u64(),
        Some(BAD_RECORDS as u64)
    );

    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "hostile: FIGURES seed={seed} valid={VALID_EVENTS} bad={BAD_RECORDS} bad_bytes={bad_bytes} \
         largest_bad={largest} rss_before_kib={rss_before} rss_after_kib={rss_after} \
         growth_kib={growth} assignments={} failures={} dead_letters={} elapsed={:.1}s",
        report.counts.assignments,
        report.counts.failures,
        report.counts.dead_letters,
        started.elapsed().as_secs_f64()
    );
    for (category, (n, codes)) in &per_category {
        eprintln!("hostile:   {n:>4} {category}: {codes:?}");
    }
    assert!(
        growth <= RSS_GROWTH_LIMIT_KIB,
        "resident memory grew by {growth} KiB ({rss_before} -> {rss_after}), over {RSS_GROWTH_LIMIT_KIB} KiB"
    );
    assert!(
        service.stop().success(),
        "clean exit; log:\n{}",
        service.log_text()
    );
}
