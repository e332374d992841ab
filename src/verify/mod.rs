//! `autoclaim verify`: an independent check of what the processor wrote, read back from Kafka with
//! `read_committed`, as an operator (or a test) sees it.
//!
//! It reports, per kind of problem, how many were found and the first examples:
//!
//! * `duplicate_assignment`: the same assignment (tenant, user, product and id) written more than
//!   once;
//! * `over_assignment`: per tenant and product, more assignments after the newest inventory
//!   snapshot's `asOf` than `purchased - assigned` of that snapshot (and any assignment of a product
//!   the tenant has no inventory for). An assignment is "after" by its `seatsCountedFrom` (its
//!   `occurredAt`, or just after the snapshot it was checked against when its event lagged behind
//!   that snapshot), or by `occurredAt` when the record has no `seatsCountedFrom`;
//! * `misplaced_assignment`: an assignment not on the partition number its tenant's activity is on
//!   (the partition's state would not see it when it is restored);
//! * `unprocessed_records`: activity records at or after the group's committed offset (neither
//!   processed nor dead-lettered yet), and routed records at or after the group's committed offset
//!   of the repartition topic (not decided yet); `--allow-lag` turns these into notes for a live
//!   stream;
//! * `missing_route`, `duplicate_route`, `unmatched_route`: every processed activity record on a
//!   partition that does not own its tenant has exactly one record in the repartition topic whose
//!   `autoclaim.route.partition/offset` headers name it, and no routed record names anything else;
//! * `missing_dead_letter`, `duplicate_dead_letter`, `valid_record_dead_lettered`,
//!   `unmatched_dead_letter`, `dead_letter_without_reason`: every processed activity record that
//!   cannot be read (the same rules as `run`: size, content type, encoding, schema version, fields,
//!   the tenant's partition, an event time beyond `--max-event-time-skew` after the record's
//!   timestamp) has exactly one dead letter whose `autoclaim.source.partition/offset`
//!   headers name it, with a code and a reason; no readable record is dead-lettered;
//! * with `--compare-replay`, `missing_output` and `unexpected_output`: the tables are replayed, then
//!   the readable activity on its tenant's partition in partition and offset order, then the routed
//!   records in the repartition topic's order, through the same engine as `run` (a tenant seen both
//!   ways is left out, with a note: its records have no order to rebuild); every
//!   assignment and failure replay gives for a processed record must be in the outputs, and every
//!   output must be one replay gives (duplicates included);
//! * `unreadable_output`: an assignment or failure record that cannot be decoded.
//!
//! The reads are ordered so that a live stream gives no false alarm about outputs: first the
//! group's committed offsets, then the outputs, then the activity. An output committed after the
//! offsets were read belongs to a record at or after the committed offset, which may have outputs
//! or not. The check is exact once the input is quiet.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::{json, Value};

use crate::domain::activity::Activity;
use crate::domain::catalog::Catalog;
use crate::domain::seats::Inventory;
use crate::domain::time::Timestamp;
use crate::pipeline::admin;
use crate::pipeline::clients::{self, QuietContext};
use crate::pipeline::config::{EventTimeArgs, KafkaArgs, Topics};
use crate::pipeline::feed::apply_table_update;
use crate::pipeline::partitioner::tenant_partition;
use crate::pipeline::records::{self, RawRecord, TableUpdate};
use crate::pipeline::restore::apply_directory_change;
use crate::pipeline::transaction::Input;
use crate::progress::Progress;
use crate::state::{self, PartitionState, Tables};
use crate::wire::convert::{self, InventoryRecord};
use crate::wire::{codec, output, pb, Format, WireError};

mod routes;
use routes::{RoutedEntry, Routes};

/// `autoclaim verify`.
#[derive(Args, Clone, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: Topics,
    /// Consumer group of the processor's instances (whose committed offsets say what was processed).
    #[arg(long, env = "AUTOCLAIM_GROUP_ID", default_value = "autoclaim")]
    pub group_id: String,
    /// The processor's propagation delay (used by --compare-replay).
    #[arg(long, env = "AUTOCLAIM_PROPAGATION_DELAY", value_parser = humantime::parse_duration, default_value = "2h")]
    pub propagation_delay: Duration,
    // The processor's bound of event time: which activity records it dead-letters.
    #[command(flatten)]
    pub event_time: EventTimeArgs,
    /// Also replay the tables, then the activity in partition and offset order, and compare the
    /// outputs with what replay gives.
    #[arg(long)]
    pub compare_replay: bool,
    /// Report records not yet processed as a note instead of a problem (a live stream always has
    /// some).
    #[arg(long)]
    pub allow_lag: bool,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Examples given per kind of problem.
    #[arg(long, default_value_t = 20)]
    pub max_examples: usize,
    /// Give up if a topic cannot be read to its end within this time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    pub timeout: Duration,
}

impl VerifyArgs {
    /// Options for a check of `topics` processed by `group_id`, with the defaults of the command.
    pub fn new(kafka: KafkaArgs, topics: Topics, group_id: &str) -> Self {
        VerifyArgs {
            kafka,
            topics,
            group_id: group_id.to_owned(),
            propagation_delay: crate::state::tables::DEFAULT_PROPAGATION_DELAY,
            event_time: EventTimeArgs::default(),
            compare_replay: false,
            allow_lag: false,
            json: false,
            max_examples: 20,
            timeout: Duration::from_secs(120),
        }
    }
}

/// One kind of problem: how many, and the first examples.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: &'static str,
    pub description: &'static str,
    pub count: u64,
    pub examples: Vec<Value>,
}

/// What was read and checked.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub activity_records: u64,
    pub readable_records: u64,
    pub unreadable_records: u64,
    pub processed_records: u64,
    pub unprocessed_records: u64,
    pub assignments: u64,
    pub distinct_assignments: u64,
    pub failures: u64,
    pub dead_letters: u64,
    /// Records of the repartition topic (activity routed to the partition owning its tenant).
    pub routed_records: u64,
    /// Of those, the ones not decided yet (at or after the group's committed offset).
    pub unprocessed_routed_records: u64,
    /// Dead letters of other source topics (not checked).
    pub dead_letters_of_other_topics: u64,
    pub table_records: u64,
    pub unreadable_table_records: u64,
    /// With --compare-replay: what replay gives for the processed records.
    pub expected_assignments: Option<u64>,
    pub expected_failures: Option<u64>,
}

/// Whether `offset` of partition `p` is before the committed offset (processed).
fn is_before(committed: &BTreeMap<i32, Option<i64>>, p: i32, offset: i64) -> bool {
    committed
        .get(&p)
        .copied()
        .flatten()
        .is_some_and(|c| offset < c)
}

/// One activity partition: where the group stands and what is left.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub partition: i32,
    /// First offset still in the topic (retention may have deleted earlier records).
    pub low_watermark: i64,
    pub high_watermark: i64,
    /// The group's committed offset (next record to process), if any.
    pub committed: Option<i64>,
    pub records: u64,
    pub unprocessed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub clean: bool,
    pub group_id: String,
    pub activity_topic: String,
    pub compared_with_replay: bool,
    pub counts: Counts,
    pub partitions: Vec<PartitionStatus>,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
    pub elapsed_ms: u64,
}

impl Report {
    /// Count of one kind of problem (0 when absent).
    pub fn count(&self, kind: &str) -> u64 {
        self.problems
            .iter()
            .find(|p| p.kind == kind)
            .map_or(0, |p| p.count)
    }

    /// The report for people: a summary, each problem with its examples, and notes.
    pub fn human(&self) -> String {
        let c = &self.counts;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "autoclaim verify: group {}, topic {} ({} partitions)",
            self.group_id,
            self.activity_topic,
            self.partitions.len()
        ));
        line(format!(
            "  activity:     {} records ({} readable, {} to dead-letter); {} processed, {} not yet",
            c.activity_records,
            c.readable_records,
            c.unreadable_records,
            c.processed_records,
            c.unprocessed_records
        ));
        if c.routed_records > 0 {
            line(format!(
                "  routed:       {} records to the partition owning their tenant, {} not decided yet",
                c.routed_records, c.unprocessed_routed_records
            ));
        }
        line(format!(
            "  outputs:      {} assignments ({} distinct tenant/user/product), {} failures, {} dead letters",
            c.assignments, c.distinct_assignments, c.failures, c.dead_letters
        ));
        if let (Some(a), Some(f)) = (c.expected_assignments, c.expected_failures) {
            line(format!(
                "  replay:       {a} assignments and {f} failures expected for the processed records ({} table records read, {} unreadable)",
                c.table_records, c.unreadable_table_records
            ));
        }
        for p in &self.partitions {
            line(format!(
                "  partition {:>3}: offsets {}..{}, committed {}, {} records, {} not yet processed",
                p.partition,
                p.low_watermark,
                p.high_watermark,
                p.committed
                    .map_or_else(|| "none".to_owned(), |o| o.to_string()),
                p.records,
                p.unprocessed
            ));
        }
        if self.problems.is_empty() {
            line("OK: no problem found".to_owned());
        } else {
            let total: u64 = self.problems.iter().map(|p| p.count).sum();
            line(format!("PROBLEMS: {total}"));
            for p in &self.problems {
                line(format!("  {} ({}): {}", p.kind, p.count, p.description));
                for e in &p.examples {
                    line(format!("    {e}"));
                }
                if (p.examples.len() as u64) < p.count {
                    line(format!(
                        "    ... and {} more",
                        p.count - p.examples.len() as u64
                    ));
                }
            }
        }
        for n in &self.notes {
            line(format!("note: {n}"));
        }
        out
    }
}

/// `autoclaim verify`: prints the report; exit status 0 when clean, 1 when a problem was found.
pub fn command(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let report = verify(&args)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", report.human())?;
    }
    stdout.flush()?;
    Ok(if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The group's committed offsets of `topic`'s partitions (None: nothing committed). Reads them with
/// `read_committed`, so offsets of a transaction still open are waited for, not returned; if one is
/// still held when `timeout` runs out, that is an error, never "nothing committed".
pub fn committed_offsets(
    kafka: &KafkaArgs,
    group_id: &str,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<BTreeMap<i32, Option<i64>>, KafkaError> {
    let mut config = clients::table_reader(kafka);
    config.set("group.id", group_id);
    let consumer: BaseConsumer<QuietContext> = config.create_with_context(QuietContext)?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = clients::retry_transient(timeout, "committed offsets", || {
        consumer.committed_offsets(tpl.clone(), timeout)
    })?;
    for element in committed.elements() {
        element.error()?;
    }
    Ok(partitions
        .iter()
        .map(|p| {
            let offset = committed
                .find_partition(topic, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                });
            (*p, offset)
        })
        .collect())
}

/// Low and high watermarks of every partition of `topic`.
pub fn watermarks(
    kafka: &KafkaArgs,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let consumer: BaseConsumer<QuietContext> = clients::table_reader(kafka)
        .create_with_context(QuietContext)
        .context("cannot create a Kafka consumer")?;
    partition_watermarks(&consumer, topic, timeout)
}

fn partition_watermarks(
    consumer: &BaseConsumer<QuietContext>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let marks = clients::watermarks(consumer, topic, timeout)
        .with_context(|| format!("cannot read the partitions and offsets of {topic}"))?;
    if marks.is_empty() {
        bail!("topic {topic} does not exist");
    }
    Ok(marks)
}

/// Reads every committed record of `topic` (read_committed, from the beginning to the end each
/// partition has now) and hands each to `each`. Returns the watermarks read at the start.
fn read_topic(
    kafka: &KafkaArgs,
    topic: &str,
    timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let consumer: BaseConsumer<QuietContext> = clients::table_reader(kafka)
        .create_with_context(QuietContext)
        .context("cannot create a Kafka consumer")?;
    let marks = partition_watermarks(&consumer, topic, timeout)?;
    let mut assignment = TopicPartitionList::new();
    let mut pending = HashSet::new();
    for (p, (low, high)) in &marks {
        if high > low {
            assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
            pending.insert(*p);
        }
    }
    if pending.is_empty() {
        return Ok(marks);
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let mut progress = Progress::on_stderr(format!("verify: reading {topic}"));
    while !pending.is_empty() {
        if started.elapsed() > timeout {
            bail!(
                "could not read {topic} to its end within {timeout:?} (partitions {pending:?} left)"
            );
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) if clients::is_transient(&e) => {
                tracing::warn!(topic, error = %e, "transient error while reading; going on");
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
            Some(Ok(m)) => {
                // Records appended after the watermarks were read belong to a later check.
                let (_, high) = marks.get(&m.partition()).copied().unwrap_or((0, 0));
                if m.offset() < high {
                    each(&m);
                    progress.add(1);
                }
                if m.offset() + 1 >= high {
                    pending.remove(&m.partition());
                }
            }
        }
    }
    Ok(marks)
}

fn header_map(message: &BorrowedMessage<'_>) -> HashMap<String, String> {
    records::header_pairs(message).into_iter().collect()
}

struct ActivityEntry {
    offset: i64,
    outcome: Result<Activity, &'static str>,
}

/// An output record read back: where it is, and what it says (decidedAt cleared).
struct OutputRecord {
    topic: &'static str,
    partition: i32,
    offset: i64,
    tenant: String,
    user: String,
    product: String,
    trigger_event_id: String,
}

impl OutputRecord {
    fn json(&self) -> Value {
        json!({
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "tenant": self.tenant,
            "user": self.user,
            "product": self.product,
            "triggerEventId": self.trigger_event_id,
        })
    }
}

struct DeadLetter {
    partition: i32,
    offset: i64,
    code: String,
}

/// A readable activity record at `source` and where it was routed to: one that arrived on a
/// partition that does not own its tenant (`misplaced`) exactly once if processed (at most once if
/// not: its route may have committed after the offsets were read), any other never.
fn check_route(
    problems: &mut Problems,
    source: (i32, i64),
    misplaced: bool,
    processed: bool,
    routed_to: &[(i32, i64)],
) {
    let example = || {
        json!({
            "sourcePartition": source.0,
            "sourceOffset": source.1,
            "routedTo": routed_to.iter().map(|(p, o)| format!("{p}/{o}")).collect::<Vec<_>>(),
        })
    };
    match (misplaced, routed_to.len()) {
        (true, 0) if processed => problems.add(
            "missing_route",
            "a processed activity record on a partition that does not own its tenant was not routed to the one that does",
            example(),
        ),
        (true, 0 | 1) | (false, 0) => {}
        (true, _) => problems.add(
            "duplicate_route",
            "an activity record was routed more than once",
            example(),
        ),
        (false, _) => problems.add(
            "unmatched_route",
            "a routed record names no activity record that needed routing (missing or invalid autoclaim.route.partition/offset headers, or a record on its tenant's own partition)",
            example(),
        ),
    }
}

/// Routed records that no activity record accounted for: no source headers, or a source that does
/// not exist.
fn unmatched_routes(
    problems: &mut Problems,
    routes: &Routes,
    left: HashMap<(i32, i64), Vec<(i32, i64)>>,
) {
    let without_source = routes.by_partition.iter().flat_map(|(p, entries)| {
        entries
            .iter()
            .filter(|e| e.source.is_none())
            .map(move |e| (*p, e.offset))
    });
    for (p, o) in without_source {
        problems.add(
            "unmatched_route",
            "a routed record names no activity record that needed routing (missing or invalid autoclaim.route.partition/offset headers, or a record on its tenant's own partition)",
            json!({"partition": p, "offset": o}),
        );
    }
    for (source, routed_to) in left {
        check_route(problems, source, false, true, &routed_to);
    }
}

/// Collects problems, keeping the first examples of each kind.
struct Problems {
    max_examples: usize,
    list: Vec<Problem>,
}

impl Problems {
    fn add(&mut self, kind: &'static str, description: &'static str, example: Value) {
        self.add_n(kind, description, 1, example);
    }

    fn add_n(&mut self, kind: &'static str, description: &'static str, n: u64, example: Value) {
        let index = match self.list.iter().position(|p| p.kind == kind) {
            Some(i) => i,
            None => {
                self.list.push(Problem {
                    kind,
                    description,
                    count: 0,
                    examples: Vec::new(),
                });
                self.list.len() - 1
            }
        };
        let problem = &mut self.list[index];
        problem.count += n;
        if problem.examples.len() < self.max_examples {
            problem.examples.push(example);
        }
    }
}

fn decode_output<M>(message: &BorrowedMessage<'_>) -> Result<M, WireError>
where
    M: prost::Message + serde::de::DeserializeOwned + Default,
{
    let raw = RawRecord::of(message);
    let value = raw
        .value
        .ok_or_else(|| WireError::field("value", "an output cannot be a tombstone"))?;
    let format = Format::from_content_type(raw.content_type)?;
    codec::decode(value, format)
}

/// Canonical bytes of an output (decidedAt, the wall-clock part, cleared): equal outputs, equal
/// bytes.
fn assignment_key(mut a: pb::LicenseAssignment) -> Vec<u8> {
    a.decided_at = None;
    let mut key = vec![b'A'];
    key.extend(a.encode_to_vec());
    key
}

fn failure_key(mut f: pb::AutoclaimFailure) -> Vec<u8> {
    f.decided_at = None;
    let mut key = vec![b'F'];
    key.extend(f.encode_to_vec());
    key
}

/// An event for the replay, with the activity record it comes from and whether it was decided.
struct ReplayInput<'a> {
    source: (i32, i64),
    via: Input,
    processed: bool,
    event: &'a Activity,
}

/// The readable records in the order replay decides them: those that arrived on their tenant's
/// partition in partition and offset order, then the routed ones in the repartition topic's order.
/// A tenant's records are decided in the order of the one topic they came through; only a tenant
/// that came through both (see `mixed_tenants`) has no order to rebuild.
fn replay_order<'a>(
    activity: &'a BTreeMap<i32, Vec<ActivityEntry>>,
    routes: &'a Routes,
    partitions: i32,
    processed: impl Fn(Input, i32, i64) -> bool,
) -> Vec<ReplayInput<'a>> {
    let direct = activity.iter().flat_map(|(p, entries)| {
        entries.iter().filter_map(move |e| {
            let event = e.outcome.as_ref().ok()?;
            (tenant_partition(&event.tenant_id, partitions) == *p).then_some((*p, e.offset, event))
        })
    });
    let mut order: Vec<ReplayInput<'a>> = direct
        .map(|(p, offset, event)| ReplayInput {
            source: (p, offset),
            via: Input::Activity,
            processed: processed(Input::Activity, p, offset),
            event,
        })
        .collect();
    for (p, entries) in &routes.by_partition {
        for e in entries {
            // As `run`: a routed record is decided only by its tenant's partition.
            let owned = |event: &&Activity| tenant_partition(&event.tenant_id, partitions) == *p;
            if let Some(event) = e.event.as_ref().filter(owned) {
                order.push(ReplayInput {
                    source: e.source.unwrap_or((*p, e.offset)),
                    via: Input::Repartition,
                    processed: processed(Input::Repartition, *p, e.offset),
                    event,
                });
            }
        }
    }
    order
}

/// Tenants with records both on their own partition and routed.
fn mixed_tenants<'a>(order: &[ReplayInput<'a>]) -> HashSet<&'a str> {
    let via = |input: Input| -> HashSet<&'a str> {
        order
            .iter()
            .filter(|r| r.via == input)
            .map(|r| r.event.tenant_id.as_str())
            .collect()
    };
    let routed = via(Input::Repartition);
    via(Input::Activity)
        .into_iter()
        .filter(|t| routed.contains(t))
        .collect()
}

/// An expected output and the record it comes from.
struct Due {
    partition: i32,
    offset: i64,
    processed: bool,
    what: &'static str,
    event_id: String,
    tenant: String,
    user: String,
    product: String,
}

#[derive(Default)]
struct Slot {
    due: Vec<Due>,
    actual: Vec<usize>,
}

/// Runs every check; see the module documentation.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<Report> {
    let started = Instant::now();
    let topics = &args.topics;
    let kafka = &args.kafka;
    let timeout = args.timeout;
    let counts_by_topic = admin::partition_counts(
        kafka,
        &[
            &topics.activity,
            &topics.assignments,
            &topics.failures,
            &topics.dead_letters,
            &topics.inventory,
            &topics.policies,
            &topics.directory,
            &topics.repartition,
        ],
    )?;
    for name in [
        &topics.activity,
        &topics.assignments,
        &topics.failures,
        &topics.dead_letters,
        &topics.inventory,
    ] {
        if !counts_by_topic.contains_key(name) {
            bail!("topic {name} does not exist");
        }
    }
    let activity_partitions = counts_by_topic[&topics.activity] as i32;
    let partition_ids: Vec<i32> = (0..activity_partitions).collect();
    let mut problems = Problems {
        max_examples: args.max_examples,
        list: Vec::new(),
    };
    let mut notes = Vec::new();
    let mut counts = Counts::default();

    // 1. Where the group stands.
    let committed = committed_offsets(
        kafka,
        &args.group_id,
        &topics.activity,
        &partition_ids,
        timeout,
    )
    .with_context(|| {
        format!(
            "cannot read the committed offsets of group {}",
            args.group_id
        )
    })?;
    let has_routes = counts_by_topic.contains_key(&topics.repartition);
    let committed_routes = if has_routes {
        committed_offsets(
            kafka,
            &args.group_id,
            &topics.repartition,
            &partition_ids,
            timeout,
        )
        .with_context(|| {
            format!(
                "cannot read the committed offsets of group {} on {}",
                args.group_id, topics.repartition
            )
        })?
    } else {
        notes.push(format!(
            "topic {} does not exist: no records were routed",
            topics.repartition
        ));
        BTreeMap::new()
    };

    // 2. The outputs.
    let mut outputs: Vec<OutputRecord> = Vec::new();
    let mut output_keys: Vec<Vec<u8>> = Vec::new();
    // Keyed by assignment id too: a product assigned again after the directory showed the first
    // assignment removed is a distinct assignment with an id of its own.
    type AssignmentKey = (String, String, String, String);
    let mut first_assignment: BTreeMap<AssignmentKey, (Timestamp, Vec<String>)> = BTreeMap::new();
    read_topic(kafka, &topics.assignments, timeout, |m| {
        counts.assignments += 1;
        match decode_output::<pb::LicenseAssignment>(m) {
            Ok(a) => {
                // From when it counts against seats: seatsCountedFrom (the event's time, or just
                // after the snapshot it was checked against), or occurredAt for older records.
                let counted_from = match a.seats_counted_from {
                    Some(t) => convert::timestamp("seatsCountedFrom", Some(t)).ok(),
                    None => convert::timestamp("occurredAt", a.occurred_at).ok(),
                };
                let owner = tenant_partition(&a.tenant_id, activity_partitions);
                let record = OutputRecord {
                    topic: "assignments",
                    partition: m.partition(),
                    offset: m.offset(),
                    tenant: a.tenant_id.clone(),
                    user: a.user_id.clone(),
                    product: a.product.clone(),
                    trigger_event_id: a.trigger_event_id.clone(),
                };
                if owner != m.partition() {
                    problems.add(
                        "misplaced_assignment",
                        "an assignment is not on the partition number of its tenant's activity (restores would not see it)",
                        json!({"assignment": record.json(), "expectedPartition": owner}),
                    );
                }
                let entry = first_assignment
                    .entry((
                        a.tenant_id.clone(),
                        a.user_id.clone(),
                        a.product.clone(),
                        a.assignment_id.clone(),
                    ))
                    .or_insert_with(|| (Timestamp::MAX, Vec::new()));
                if let Some(t) = counted_from {
                    entry.0 = entry.0.min(t);
                }
                entry
                    .1
                    .push(format!("{}@{}/{}", a.trigger_event_id, m.partition(), m.offset()));
                output_keys.push(assignment_key(a));
                outputs.push(record);
            }
            Err(e) => problems.add(
                "unreadable_output",
                "an output record cannot be decoded",
                json!({"topic": "assignments", "partition": m.partition(), "offset": m.offset(), "error": e.to_string()}),
            ),
        }
    })?;
    read_topic(kafka, &topics.failures, timeout, |m| {
        counts.failures += 1;
        match decode_output::<pb::AutoclaimFailure>(m) {
            Ok(f) => {
                outputs.push(OutputRecord {
                    topic: "failures",
                    partition: m.partition(),
                    offset: m.offset(),
                    tenant: f.tenant_id.clone(),
                    user: f.user_id.clone(),
                    product: f.product.clone(),
                    trigger_event_id: f.trigger_event_id.clone(),
                });
                output_keys.push(failure_key(f));
            }
            Err(e) => problems.add(
                "unreadable_output",
                "an output record cannot be decoded",
                json!({"topic": "failures", "partition": m.partition(), "offset": m.offset(), "error": e.to_string()}),
            ),
        }
    })?;
    let mut dead_letters: HashMap<(i32, i64), Vec<DeadLetter>> = HashMap::new();
    read_topic(kafka, &topics.dead_letters, timeout, |m| {
        let headers = header_map(m);
        if headers.get("autoclaim.source.topic") != Some(&topics.activity) {
            counts.dead_letters_of_other_topics += 1;
            return;
        }
        counts.dead_letters += 1;
        let code = headers
            .get("autoclaim.error.code")
            .cloned()
            .unwrap_or_default();
        let reason = headers
            .get("autoclaim.error.reason")
            .cloned()
            .unwrap_or_default();
        if code.trim().is_empty() || reason.trim().is_empty() {
            problems.add(
                "dead_letter_without_reason",
                "a dead letter has no autoclaim.error.code or autoclaim.error.reason",
                json!({"partition": m.partition(), "offset": m.offset()}),
            );
        }
        let source = headers
            .get("autoclaim.source.partition")
            .and_then(|p| p.parse::<i32>().ok())
            .zip(
                headers
                    .get("autoclaim.source.offset")
                    .and_then(|o| o.parse::<i64>().ok()),
            );
        match source {
            Some(source) => dead_letters.entry(source).or_default().push(DeadLetter {
                partition: m.partition(),
                offset: m.offset(),
                code,
            }),
            None => problems.add(
                "unmatched_dead_letter",
                "a dead letter names no activity record (missing or invalid autoclaim.source.partition/offset), or one that does not exist",
                json!({"partition": m.partition(), "offset": m.offset(), "code": code}),
            ),
        }
    })?;

    // 3. The activity.
    let mut activity: BTreeMap<i32, Vec<ActivityEntry>> = BTreeMap::new();
    let activity_marks = read_topic(kafka, &topics.activity, timeout, |m| {
        // As `run` reads it: on any partition (a record elsewhere than its tenant's is routed), with
        // its event time bounded by the record's timestamp (routed records were bounded here).
        let outcome = records::bounded_activity_record(
            &RawRecord::of(m),
            records::written_at(m),
            args.event_time.max_skew,
        )
        .map_err(|e| e.code());
        activity
            .entry(m.partition())
            .or_default()
            .push(ActivityEntry {
                offset: m.offset(),
                outcome,
            });
    })?;
    // The routed records, read after the activity: the route of every activity record processed
    // by then is committed with it.
    let mut routes = Routes::default();
    if has_routes {
        read_topic(kafka, &topics.repartition, timeout, |m| {
            routes.add(m.partition(), RoutedEntry::of(m));
        })?;
    }
    counts.routed_records = routes.len() as u64;
    let is_processed = |p: i32, offset: i64| is_before(&committed, p, offset);
    let is_route_processed = |p: i32, offset: i64| is_before(&committed_routes, p, offset);
    let mut partitions = Vec::new();
    for (p, (low, high)) in &activity_marks {
        let entries = activity.get(p).map_or(&[][..], Vec::as_slice);
        let unprocessed = entries
            .iter()
            .filter(|e| !is_processed(*p, e.offset))
            .count() as u64;
        let status = PartitionStatus {
            partition: *p,
            low_watermark: *low,
            high_watermark: *high,
            committed: committed.get(p).copied().flatten(),
            records: entries.len() as u64,
            unprocessed,
        };
        if unprocessed > 0 {
            let from = entries
                .iter()
                .find(|e| !is_processed(*p, e.offset))
                .map_or(0, |e| e.offset);
            let example = json!({"partition": p, "committed": status.committed, "firstUnprocessedOffset": from, "records": unprocessed});
            if args.allow_lag {
                notes.push(format!(
                    "partition {p}: {unprocessed} records from offset {from} not processed yet"
                ));
            } else {
                problems.add_n(
                    "unprocessed_records",
                    "activity records neither processed nor dead-lettered (at or after the group's committed offset)",
                    unprocessed,
                    example,
                );
            }
        }
        counts.unprocessed_records += unprocessed;
        partitions.push(status);
    }
    let mut destinations = routes.destinations();
    for (p, entries) in &activity {
        for e in entries {
            counts.activity_records += 1;
            let processed = is_processed(*p, e.offset);
            if processed {
                counts.processed_records += 1;
            }
            let letters = dead_letters.remove(&(*p, e.offset)).unwrap_or_default();
            match &e.outcome {
                Ok(event) => {
                    counts.readable_records += 1;
                    let routed_to = destinations.remove(&(*p, e.offset)).unwrap_or_default();
                    let misplaced = tenant_partition(&event.tenant_id, activity_partitions) != *p;
                    check_route(
                        &mut problems,
                        (*p, e.offset),
                        misplaced,
                        processed,
                        &routed_to,
                    );
                    for d in letters {
                        problems.add(
                            "valid_record_dead_lettered",
                            "a readable activity record was dead-lettered",
                            json!({"sourcePartition": p, "sourceOffset": e.offset, "deadLetterPartition": d.partition, "deadLetterOffset": d.offset, "code": d.code}),
                        );
                    }
                }
                Err(code) => {
                    counts.unreadable_records += 1;
                    if letters.is_empty() && processed {
                        problems.add(
                            "missing_dead_letter",
                            "a processed activity record that cannot be read has no dead letter",
                            json!({"sourcePartition": p, "sourceOffset": e.offset, "code": code}),
                        );
                    }
                    if letters.len() > 1 {
                        problems.add(
                            "duplicate_dead_letter",
                            "an activity record was dead-lettered more than once",
                            json!({"sourcePartition": p, "sourceOffset": e.offset, "deadLetters": letters.iter().map(|d| format!("{}/{}", d.partition, d.offset)).collect::<Vec<_>>()}),
                        );
                    }
                }
            }
        }
    }
    unmatched_routes(&mut problems, &routes, destinations);
    for (p, entries) in &routes.by_partition {
        let waiting: Vec<&RoutedEntry> = entries
            .iter()
            .filter(|e| !is_route_processed(*p, e.offset))
            .collect();
        let Some(first) = waiting.first() else {
            continue;
        };
        let n = waiting.len() as u64;
        counts.unprocessed_routed_records += n;
        if args.allow_lag {
            notes.push(format!(
                "repartition partition {p}: {n} routed records from offset {} not decided yet",
                first.offset
            ));
        } else {
            problems.add_n(
                "unprocessed_records",
                "activity records neither processed nor dead-lettered (at or after the group's committed offset)",
                n,
                json!({"topic": topics.repartition, "partition": p, "committed": committed_routes.get(p).copied().flatten(), "firstUnprocessedOffset": first.offset, "records": n}),
            );
        }
    }
    let mut out_of_retention = 0;
    for ((p, o), letters) in dead_letters {
        let low = activity_marks.get(&p).map_or(0, |m| m.0);
        if o < low {
            out_of_retention += letters.len();
            continue;
        }
        for d in letters {
            problems.add(
                "unmatched_dead_letter",
                "a dead letter names no activity record (missing or invalid autoclaim.source.partition/offset), or one that does not exist",
                json!({"partition": d.partition, "offset": d.offset, "sourcePartition": p, "sourceOffset": o, "code": d.code}),
            );
        }
    }
    if out_of_retention > 0 {
        notes.push(format!(
            "{out_of_retention} dead letters name activity records already deleted by retention (not checked)"
        ));
    }

    // 4. Duplicates and seats.
    counts.distinct_assignments = first_assignment.len() as u64;
    for ((tenant, user, product, id), (_, where_)) in &first_assignment {
        if where_.len() > 1 {
            problems.add(
                "duplicate_assignment",
                "the same assignment (tenant, user, product and assignment id) was written more than once",
                json!({"tenant": tenant, "user": user, "product": product, "assignmentId": id, "count": where_.len(), "assignments": where_}),
            );
        }
    }
    // The inventory, in topic order (replay applies it in this order too).
    let mut inventory_records: Vec<InventoryRecord> = Vec::new();
    read_topic(kafka, &topics.inventory, timeout, |m| {
        counts.table_records += 1;
        match records::inventory_record(&RawRecord::of(m)) {
            Ok(Some(TableUpdate::Inventory(i))) => inventory_records.push(i),
            Ok(_) => {}
            Err(_) => counts.unreadable_table_records += 1,
        }
    })?;
    // The newest snapshot per tenant and product, as the processor keeps it.
    let mut inventory: HashMap<(String, String), Inventory> = HashMap::new();
    for i in &inventory_records {
        let key = (
            i.tenant_id.clone(),
            Catalog::product(i.product).key.to_owned(),
        );
        match inventory.get(&key) {
            Some(old) if old.as_of > i.inventory.as_of => {}
            _ => {
                inventory.insert(key, i.inventory);
            }
        }
    }
    let mut after_snapshot: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((tenant, _, product, _), (occurred, _)) in &first_assignment {
        let key = (tenant.clone(), product.clone());
        let counted = match inventory.get(&key) {
            Some(inv) => *occurred > inv.as_of,
            None => true,
        };
        let n = after_snapshot.entry(key).or_default();
        if counted {
            *n += 1;
        }
    }
    for ((tenant, product), n) in after_snapshot {
        let inv = inventory.get(&(tenant.clone(), product.clone()));
        let allowed = inv.map_or(0, |i| i.purchased_units.saturating_sub(i.assigned_units));
        if n > allowed {
            problems.add(
                "over_assignment",
                "more assignments after the newest inventory snapshot than it left seats (or assignments without inventory)",
                json!({
                    "tenant": tenant,
                    "product": product,
                    "assignedAfterSnapshot": n,
                    "seatsInSnapshot": allowed,
                    "snapshotAsOf": inv.map(|i| i.as_of.to_string()),
                }),
            );
        }
    }

    // 5. Replay.
    let truncated: Vec<i32> = activity_marks
        .iter()
        .filter(|(_, (low, _))| *low > 0)
        .map(|(p, _)| *p)
        .collect();
    let compare = args.compare_replay && truncated.is_empty();
    if args.compare_replay && !truncated.is_empty() {
        notes.push(format!(
            "replay comparison skipped: retention has deleted the first records of activity partitions {truncated:?}, so replay cannot rebuild the state"
        ));
    }
    if compare {
        let mut tables = Tables::new(args.propagation_delay);
        let mut state = PartitionState::default();
        if counts_by_topic.contains_key(&topics.policies) {
            read_topic(kafka, &topics.policies, timeout, |m| {
                counts.table_records += 1;
                match records::policies_record(&RawRecord::of(m)) {
                    Ok(Some(u)) => apply_table_update(&mut tables, u),
                    Ok(None) => {}
                    Err(_) => counts.unreadable_table_records += 1,
                }
            })?;
        } else {
            notes.push(format!(
                "topic {} does not exist: replay has no settings or policies",
                topics.policies
            ));
        }
        for i in inventory_records {
            apply_table_update(&mut tables, TableUpdate::Inventory(i));
        }
        if counts_by_topic.contains_key(&topics.directory) {
            read_topic(kafka, &topics.directory, timeout, |m| {
                counts.table_records += 1;
                match records::directory_record(&RawRecord::of(m)) {
                    Ok(change) => apply_directory_change(&mut state, change),
                    Err(_) => counts.unreadable_table_records += 1,
                }
            })?;
        } else {
            notes.push(format!(
                "topic {} does not exist: replay has no directory",
                topics.directory
            ));
        }
        let mut slots: HashMap<Vec<u8>, Slot> = HashMap::new();
        let (mut expected_assignments, mut expected_failures) = (0, 0);
        let replayed =
            replay_order(
                &activity,
                &routes,
                activity_partitions,
                |input, p, o| match input {
                    Input::Activity => is_processed(p, o),
                    Input::Repartition => is_route_processed(p, o),
                },
            );
        let mixed = mixed_tenants(&replayed);
        if !mixed.is_empty() {
            notes.push(format!(
                "replay comparison left out {} tenants whose records reached their partition both directly and through the repartition topic (a producer that spreads one tenant over partitions): Kafka keeps no order between such records, so the order they were decided in cannot be rebuilt; their outputs were checked for duplicates and seats only",
                mixed.len()
            ));
        }
        {
            for r in &replayed {
                let (event, processed) = (r.event, r.processed);
                let decision = state::process(&tables, &mut state, event);
                let due = |what, tenant: &str, user: &str, product: &str| Due {
                    partition: r.source.0,
                    offset: r.source.1,
                    processed,
                    what,
                    event_id: event.event_id.clone(),
                    tenant: tenant.to_owned(),
                    user: user.to_owned(),
                    product: product.to_owned(),
                };
                if let Some(a) = output::assignment(&decision, decision.occurred_at) {
                    if processed {
                        expected_assignments += 1;
                    }
                    let d = due("assignment", &a.tenant_id, &a.user_id, &a.product);
                    slots.entry(assignment_key(a)).or_default().due.push(d);
                }
                if let Some(f) = output::failure(&decision, decision.occurred_at) {
                    if processed {
                        expected_failures += 1;
                    }
                    let d = due("failure", &f.tenant_id, &f.user_id, &f.product);
                    slots.entry(failure_key(f)).or_default().due.push(d);
                }
            }
        }
        counts.expected_assignments = Some(expected_assignments);
        counts.expected_failures = Some(expected_failures);
        for (i, key) in output_keys.into_iter().enumerate() {
            slots.entry(key).or_default().actual.push(i);
        }
        let of_mixed = |slot: &Slot| {
            slot.due.iter().any(|d| mixed.contains(d.tenant.as_str()))
                || slot
                    .actual
                    .iter()
                    .any(|i| mixed.contains(outputs[*i].tenant.as_str()))
        };
        for slot in slots.values().filter(|slot| !of_mixed(slot)) {
            let due_total = slot.due.len();
            let actual = slot.actual.len();
            // Outputs cover the processed records' first; pending records may or may not have theirs.
            for d in slot.due.iter().filter(|d| d.processed).skip(actual) {
                problems.add(
                    "missing_output",
                    "replay gives an output for a processed activity record that is not in the outputs",
                    json!({
                        "output": d.what,
                        "sourcePartition": d.partition,
                        "sourceOffset": d.offset,
                        "eventId": d.event_id,
                        "tenant": d.tenant,
                        "user": d.user,
                        "product": d.product,
                    }),
                );
            }
            for i in slot.actual.iter().skip(due_total) {
                problems.add(
                    "unexpected_output",
                    "an output replay does not give (or gives fewer times)",
                    outputs[*i].json(),
                );
            }
        }
    }

    let clean = problems.list.is_empty();
    Ok(Report {
        clean,
        group_id: args.group_id.clone(),
        activity_topic: topics.activity.clone(),
        compared_with_replay: compare,
        counts,
        partitions,
        problems: problems.list,
        notes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
