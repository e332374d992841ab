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
//!
//! The command runs in phases, each in a module of its own: the reads (`offsets`, `outputs` with
//! `dead_letters`, `activity` with `routes`), each checking what one record shows by itself as it
//! is read; then the checks across records (`activity`, `routes`, `dead_letters`, and `seats` and
//! `replay`, which read the tables they need), in the order their problems and notes appear in the
//! report (`report`).
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use rdkafka::message::BorrowedMessage;

use crate::pipeline::clients::{self, Watermarks};
use crate::pipeline::config::{EventTimeArgs, KafkaArgs, Topics};
use crate::pipeline::topic_reader::{OpenTopic, ReadError};
use crate::pipeline::topics;
use crate::progress::Progress;

mod activity;
mod dead_letters;
mod offsets;
mod outputs;
mod problems;
mod replay;
mod report;
mod routes;
mod seats;

pub use offsets::committed_offsets;
pub use problems::{Problem, ProblemKind};
pub use report::{Counts, PartitionStatus, Report};

use activity::Inputs;
use dead_letters::DeadLetters;
use offsets::GroupOffsets;
use outputs::Outputs;
use problems::Problems;

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

/// Runs every check; see the module documentation.
pub fn verify(args: &VerifyArgs) -> anyhow::Result<Report> {
    let started = Instant::now();
    let layout = Layout::read(&args.kafka, &args.topics)?;
    let mut findings = Findings::new(args.max_examples);
    // The reads, in the order that keeps a live stream from giving false alarms.
    let offsets = GroupOffsets::read(args, &layout, &mut findings.notes)?;
    let outputs = Outputs::read(args, layout.activity_partitions, &mut findings)?;
    let mut dead_letters = DeadLetters::read(args, &mut findings)?;
    let inputs = Inputs::read(args, &layout, &mut findings.counts)?;
    // The checks across records.
    let partitions = activity::check_partitions(&inputs, &offsets, args.allow_lag, &mut findings);
    activity::check_records(
        &inputs,
        &offsets,
        &mut dead_letters,
        layout.activity_partitions,
        &mut findings,
    );
    routes::check_undecided(&inputs.routes, args, &offsets.routes, &mut findings);
    dead_letters.check_left(&inputs.watermarks, &mut findings);
    seats::check_duplicates(&outputs.assignments, &mut findings);
    let inventory = seats::read_inventory(args, &mut findings.counts)?;
    seats::check_seats(&outputs.assignments, &inventory, &mut findings.problems);
    let compared = replay::compare(
        args,
        &layout,
        &inputs,
        &offsets,
        outputs,
        inventory,
        &mut findings,
    )?;
    let problems = findings.problems.into_list();
    Ok(Report {
        clean: problems.is_empty(),
        group_id: args.group_id.clone(),
        activity_topic: args.topics.activity.clone(),
        compared_with_replay: compared,
        counts: findings.counts,
        partitions,
        problems,
        notes: findings.notes,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// What the checks found so far: problems, notes, and the counts of what was read.
struct Findings {
    problems: Problems,
    notes: Vec<String>,
    counts: Counts,
}

impl Findings {
    fn new(max_examples: usize) -> Self {
        Findings {
            problems: Problems::new(max_examples),
            notes: Vec::new(),
            counts: Counts::default(),
        }
    }
}

/// Which topics exist, and how many partitions the activity topic has.
struct Layout {
    activity_partitions: i32,
    has_routes: bool,
    has_policies: bool,
    has_directory: bool,
}

impl Layout {
    /// Fails unless the activity, the outputs and the inventory exist; the repartition, policies
    /// and directory topics may be missing (nothing routed; a replay without those tables).
    fn read(kafka: &KafkaArgs, topics: &Topics) -> anyhow::Result<Self> {
        let counts = topics::partition_counts(
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
            if !counts.contains_key(name) {
                bail!("topic {name} does not exist");
            }
        }
        Ok(Layout {
            activity_partitions: counts[&topics.activity] as i32,
            has_routes: counts.contains_key(&topics.repartition),
            has_policies: counts.contains_key(&topics.policies),
            has_directory: counts.contains_key(&topics.directory),
        })
    }

    fn partition_ids(&self) -> Vec<i32> {
        (0..self.activity_partitions).collect()
    }
}

/// Reads every committed record of `topic` (read_committed, from the beginning to the end each
/// partition has now) and hands each to `each`. Returns the watermarks read at the start.
fn read_topic(
    kafka: &KafkaArgs,
    topic: &str,
    timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<Watermarks, ReadError> {
    let open = OpenTopic::new(&clients::table_reader(kafka), topic, timeout)?;
    let watermarks = open.watermarks().clone();
    let mut reader = open.read_all(timeout)?;
    let mut progress = Progress::on_stderr(format!("verify: reading {topic}"));
    while let Some(message) = reader.next_record()? {
        each(&message);
        progress.add(1);
    }
    Ok(watermarks)
}
