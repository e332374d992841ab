//! The JSON fast path for activity events (`wire::activity_json`) against the general decoder
//! (serde_json into the pbjson message, then the same validation): on generated records, valid and
//! broken, the two give the same event or the same error, and the fast path reads the records
//! producers write.
use autoclaim::domain::activity::Activity;
use autoclaim::domain::catalog::Catalog;
use autoclaim::wire::activity_json::{decode, fast_fields};
use autoclaim::wire::{codec, pb, Format};
use pbjson_types::Timestamp as WireTimestamp;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// The general decoder, as the pipeline used it for every JSON record before the fast path.
fn general(bytes: &[u8]) -> Result<Activity, String> {
    codec::decode::<pb::ActivityEvent>(bytes, Format::Json)
        .and_then(Activity::try_from)
        .map_err(|e| e.to_string())
}

fn fast_then_general(bytes: &[u8]) -> Result<Activity, String> {
    decode(bytes).map_err(|e| e.to_string())
}

fn guid() -> impl Strategy<Value = String> {
    (any::<u128>(), any::<bool>()).prop_map(|(n, upper)| {
        let h = format!("{n:032x}");
        let g = format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        );
        if upper {
            g.to_uppercase()
        } else {
            g
        }
    })
}

/// Ids as producers send them, and ones that need escapes or break the rules.
fn an_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => guid(),
        1 => Just(String::new()),
        1 => "[a-zA-Z0-9_.-]{1,12}",
        1 => "\\PC{0,6}",
        1 => ".{0,4}[\"\\\\\u{0}-\u{1f}\u{7f}-\u{9f}].{0,4}",
        1 => "x{257}",
    ]
}

fn an_enum() -> impl Strategy<Value = i32> {
    prop_oneof![8 => 1..7i32, 1 => Just(0), 1 => -2..12i32]
}

fn a_time() -> impl Strategy<Value = Option<WireTimestamp>> {
    prop_oneof![
        8 => (0i64..4_000_000_000, 0i32..1_000_000_000)
            .prop_map(|(seconds, nanos)| Some(WireTimestamp { seconds, nanos })),
        1 => Just(None),
    ]
}

fn a_flow() -> impl Strategy<Value = pb::Flow> {
    ((an_id(), an_id(), an_enum(), an_id()), any::<[bool; 5]>()).prop_map(
        |((flow_id, owner_user_id, trigger_type, environment_id), b)| pb::Flow {
            flow_id,
            owner_user_id,
            trigger_type,
            uses_premium_connectors: b[0],
            uses_attended_rpa: b[1],
            environment_id,
            managed_environment: b[2],
            covered_by_process_plan: b[3],
            runs_in_licensed_app_context: b[4],
        },
    )
}

fn a_product() -> impl Strategy<Value = String> {
    let keys: Vec<String> = Catalog::keys().map(str::to_owned).collect();
    prop_oneof![4 => proptest::sample::select(keys), 1 => an_id()]
}

fn an_event() -> impl Strategy<Value = pb::ActivityEvent> {
    (
        (prop_oneof![4 => Just(1u32), 2 => Just(0), 1 => 2..5u32, 1 => any::<u32>()],),
        (an_id(), an_id(), a_time(), an_id()),
        (
            an_enum(),
            an_enum(),
            proptest::option::weighted(0.8, a_flow()),
            a_product(),
        ),
    )
        .prop_map(
            |(
                (schema_version,),
                (event_id, tenant_id, occurred_at, actor_user_id),
                (kind, source, flow, requested_product),
            )| {
                pb::ActivityEvent {
                    schema_version,
                    event_id,
                    tenant_id,
                    occurred_at,
                    actor_user_id,
                    kind,
                    source,
                    flow,
                    requested_product,
                }
            },
        )
}

fn snake_case(key: &str) -> String {
    key.chars()
        .flat_map(|c| {
            let lower = c.to_ascii_lowercase();
            (c.is_ascii_uppercase())
                .then_some('_')
                .into_iter()
                .chain([lower])
        })
        .collect()
}

/// What is done to a record's JSON before it is decoded.
#[derive(Clone, Debug)]
enum Change {
    None,
    Pretty,
    ProtoNames,
    /// The same member twice: once in each of its names where it has two.
    Duplicate(usize),
    Null(usize),
    Unknown,
    NumberAsString,
    EnumAsNumber(usize),
    Whitespace(usize, &'static str),
    DeleteByte(usize),
    InsertByte(usize, u8),
    Truncate(usize),
}

fn a_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        6 => Just(Change::None),
        1 => Just(Change::Pretty),
        1 => Just(Change::ProtoNames),
        1 => any::<usize>().prop_map(Change::Duplicate),
        1 => any::<usize>().prop_map(Change::Null),
        1 => Just(Change::Unknown),
        1 => Just(Change::NumberAsString),
        1 => any::<usize>().prop_map(Change::EnumAsNumber),
        1 => (any::<usize>(), prop_oneof![Just(" "), Just("\t"), Just("\r\n"), Just("\u{a0}"), Just("\u{feff}")])
            .prop_map(|(at, ws)| Change::Whitespace(at, ws)),
        2 => any::<usize>().prop_map(Change::DeleteByte),
        2 => (any::<usize>(), proptest::sample::select(b"{}[]\":,\\ 0-1etrufalsn\x00\x7f".to_vec()))
            .prop_map(|(at, b)| Change::InsertByte(at, b)),
        1 => any::<usize>().prop_map(Change::Truncate),
    ]
}

fn members(json: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice(json).expect("the encoder writes JSON") {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn write(map: Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(&Value::Object(map)).unwrap()
}

fn nth_key(map: &Map<String, Value>, n: usize) -> Option<String> {
    (!map.is_empty()).then(|| map.keys().nth(n % map.len()).unwrap().clone())
}

fn apply(json: Vec<u8>, change: &Change) -> Vec<u8> {
    let mut map = members(&json);
    match change {
        Change::None => json,
        Change::Pretty => serde_json::to_vec_pretty(&Value::Object(map)).unwrap(),
        Change::ProtoNames => write(map.into_iter().map(|(k, v)| (snake_case(&k), v)).collect()),
        Change::Duplicate(n) => {
            let Some(key) = nth_key(&map, *n) else {
                return json;
            };
            let text = String::from_utf8(json).unwrap();
            let value = serde_json::to_string(&map[&key]).unwrap();
            let twin = format!("{{\"{}\":{value},", snake_case(&key));
            text.replacen('{', &twin, 1).into_bytes()
        }
        Change::Null(n) => {
            if let Some(key) = nth_key(&map, *n) {
                map.insert(key, Value::Null);
            }
            write(map)
        }
        Change::Unknown => {
            map.insert("comment".into(), Value::String("x".into()));
            write(map)
        }
        Change::NumberAsString => {
            if let Some(Value::Number(n)) = map.get("schemaVersion").cloned() {
                map.insert("schemaVersion".into(), Value::String(n.to_string()));
            }
            write(map)
        }
        Change::EnumAsNumber(n) => {
            let key = ["kind", "source"][n % 2];
            if let Some(Value::String(name)) = map.get(key).cloned() {
                let number = pb::ActivityKind::from_str_name(&name)
                    .map(|k| k as i32)
                    .or_else(|| pb::ActivitySource::from_str_name(&name).map(|s| s as i32));
                if let Some(number) = number {
                    map.insert(key.into(), Value::from(number));
                }
            }
            write(map)
        }
        Change::Whitespace(at, ws) => splice(json, *at, ws.as_bytes()),
        Change::DeleteByte(at) => {
            let mut json = json;
            if !json.is_empty() {
                let at = at % json.len();
                json.remove(at);
            }
            json
        }
        Change::InsertByte(at, b) => splice(json, *at, &[*b]),
        Change::Truncate(at) => {
            let mut json = json;
            json.truncate(at % (json.len() + 1));
            json
        }
    }
}

/// Inserts `bytes` at a position between two tokens or inside one: either way a record to decode.
fn splice(mut json: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    let at = at % (json.len() + 1);
    json.splice(at..at, bytes.iter().copied());
    json
}

/// The event with every enum a value the schema names (the encoder writes others as numbers, which
/// the fast path leaves to the general decoder).
fn with_known_enums(mut event: pb::ActivityEvent) -> pb::ActivityEvent {
    event.kind = event.kind.rem_euclid(7);
    event.source = event.source.rem_euclid(3);
    if let Some(flow) = &mut event.flow {
        flow.trigger_type = flow.trigger_type.rem_euclid(4);
    }
    event
}

/// Whether the encoder wrote every string without an escape: what the fast path must then read.
fn written_without_escapes(json: &[u8]) -> bool {
    !json.contains(&b'\\')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn the_fast_path_decodes_as_the_general_decoder(event in an_event(), change in a_change()) {
        let json = apply(codec::encode(&event, Format::Json), &change);
        prop_assert_eq!(fast_then_general(&json), general(&json), "record: {}", String::from_utf8_lossy(&json));
    }

    #[test]
    fn the_fast_path_reads_what_the_encoder_writes(event in an_event(), proto_names in any::<bool>(), pretty in any::<bool>()) {
        let event = with_known_enums(event);
        let change = if pretty { Change::Pretty } else if proto_names { Change::ProtoNames } else { Change::None };
        let json = apply(codec::encode(&event, Format::Json), &change);
        if written_without_escapes(&json) {
            let text = std::str::from_utf8(&json).unwrap();
            prop_assert!(fast_fields(text).is_some(), "not read by the fast path: {}", text);
        }
    }
}

#[test]
fn the_fast_path_reads_a_typical_trigger_and_gives_up_on_escapes_and_nulls() {
    let trigger = r#"{"schemaVersion":1,"eventId":"e-1","tenantId":"6F9619FF-8B86-D011-B42D-00C04FC964FF",
        "occurredAt":"2026-03-02T10:31:00.250Z","actorUserId":"u-1","kind":"CLOUD_FLOW_TRIGGERED",
        "source":"PORTAL","flow":{"flowId":"f-1","ownerUserId":"u-2","triggerType":"AUTOMATED",
        "usesPremiumConnectors":true,"usesAttendedRpa":false}}"#;
    let fields = fast_fields(trigger).expect("read by the fast path");
    assert_eq!(fields.tenant_id, "6F9619FF-8B86-D011-B42D-00C04FC964FF");
    let event = decode(trigger.as_bytes()).unwrap();
    assert_eq!(event.tenant_id, "6f9619ff-8b86-d011-b42d-00c04fc964ff");
    assert_eq!(Ok(event), general(trigger.as_bytes()));

    let escaped = trigger.replace("\"e-1\"", r#""e\u002d1""#);
    assert!(fast_fields(&escaped).is_none());
    assert_eq!(decode(escaped.as_bytes()).unwrap().event_id, "e-1");

    let null_flow = trigger.replace("\"flowId\":\"f-1\"", "\"flowId\":null");
    assert!(fast_fields(&null_flow).is_none());
    assert_eq!(
        fast_then_general(null_flow.as_bytes()),
        general(null_flow.as_bytes())
    );

    let twice = trigger.replace("\"kind\"", "\"eventId\":\"e-2\",\"kind\"");
    assert!(fast_fields(&twice).is_none());
    assert!(fast_then_general(twice.as_bytes())
        .unwrap_err()
        .contains("duplicate field"));
}
