//! With `--compare-replay`: the tables are replayed, then the readable activity in the order `run`
//! decided it, through the same engine; every output replay gives for a processed record must be
//! in the outputs, and every output must be one replay gives (as many times as it gives it).
use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::json;

use super::activity::{ActivityEntry, Inputs};
use super::offsets::GroupOffsets;
use super::outputs::{assignment_key, failure_key, OutputRecord, Outputs};
use super::problems::{ProblemKind, Problems};
use super::routes::Routes;
use super::{read_topic, Findings, Layout, VerifyArgs};
use crate::domain::activity::Activity;
use crate::pipeline::feed::apply_table_update;
use crate::pipeline::partitioner::{placement, Placement};
use crate::pipeline::records::{self, RawRecord, TableUpdate};
use crate::pipeline::restore::apply_directory_change;
use crate::pipeline::transaction::Input;
use crate::state::{self, PartitionState, Tables};
use crate::wire::convert::InventoryRecord;
use crate::wire::output;

/// Compares the outputs with replay's if asked and possible; true if it did.
pub(super) fn compare(
    args: &VerifyArgs,
    layout: &Layout,
    inputs: &Inputs,
    offsets: &GroupOffsets,
    outputs: Outputs,
    inventory: Vec<InventoryRecord>,
    findings: &mut Findings,
) -> anyhow::Result<bool> {
    if !args.compare_replay {
        return Ok(false);
    }
    let truncated: Vec<i32> = inputs
        .watermarks
        .iter()
        .filter(|(_, (low, _))| *low > 0)
        .map(|(p, _)| *p)
        .collect();
    if !truncated.is_empty() {
        findings.notes.push(format!(
            "replay comparison skipped: retention has deleted the first records of activity partitions {truncated:?}, so replay cannot rebuild the state"
        ));
        return Ok(false);
    }
    let (tables, mut state) = read_tables(args, layout, inventory, findings)?;
    let order = replay_order(
        &inputs.activity,
        &inputs.routes,
        layout.activity_partitions,
        |input, p, o| offsets.is_processed(input, p, o),
    );
    let mixed = mixed_tenants(&order);
    if !mixed.is_empty() {
        findings.notes.push(format!(
            "replay comparison left out {} tenants whose records reached their partition both directly and through the repartition topic (a producer that spreads one tenant over partitions): Kafka keeps no order between such records, so the order they were decided in cannot be rebuilt; their outputs were checked for duplicates and seats only",
            mixed.len()
        ));
    }
    let mut slots = expected_outputs(&tables, &mut state, &order, findings);
    let Outputs { records, keys, .. } = outputs;
    for (i, key) in keys.into_iter().enumerate() {
        slots.entry(key).or_default().actual.push(i);
    }
    let of_mixed = |slot: &Slot| {
        slot.due.iter().any(|d| mixed.contains(d.tenant.as_str()))
            || slot
                .actual
                .iter()
                .any(|i| mixed.contains(records[*i].tenant.as_str()))
    };
    for slot in slots.values().filter(|slot| !of_mixed(slot)) {
        check_slot(slot, &records, &mut findings.problems);
    }
    Ok(true)
}

/// The tables as replay starts from them: settings and policies, the inventory, the directory.
fn read_tables(
    args: &VerifyArgs,
    layout: &Layout,
    inventory: Vec<InventoryRecord>,
    findings: &mut Findings,
) -> anyhow::Result<(Tables, PartitionState)> {
    let (kafka, topics, timeout) = (&args.kafka, &args.topics, args.timeout);
    let counts = &mut findings.counts;
    let mut tables = Tables::new(args.propagation_delay);
    let mut state = PartitionState::default();
    if layout.has_policies {
        read_topic(kafka, &topics.policies, timeout, |m| {
            counts.table_records += 1;
            match records::policies_record(&RawRecord::of(m)) {
                Ok(Some(u)) => apply_table_update(&mut tables, u),
                Ok(None) => {}
                Err(_) => counts.unreadable_table_records += 1,
            }
        })?;
    } else {
        findings.notes.push(format!(
            "topic {} does not exist: replay has no settings or policies",
            topics.policies
        ));
    }
    for i in inventory {
        apply_table_update(&mut tables, TableUpdate::Inventory(i));
    }
    if layout.has_directory {
        read_topic(kafka, &topics.directory, timeout, |m| {
            counts.table_records += 1;
            match records::directory_record(&RawRecord::of(m)) {
                Ok(change) => apply_directory_change(&mut state, change),
                Err(_) => counts.unreadable_table_records += 1,
            }
        })?;
    } else {
        findings.notes.push(format!(
            "topic {} does not exist: replay has no directory",
            topics.directory
        ));
    }
    Ok((tables, state))
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
    // As `run`: a record is decided only on its tenant's partition, of either input.
    let owned = |event: &Activity, p: i32, input: Input| {
        placement(&event.tenant_id, p, input, partitions) == Placement::Owned
    };
    let direct = activity.iter().flat_map(|(p, entries)| {
        entries.iter().filter_map(move |e| {
            let event = e.outcome.as_ref().ok()?;
            owned(event, *p, Input::Activity).then_some((*p, e.offset, event))
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
            if let Some(event) = e
                .event
                .as_ref()
                .filter(|ev| owned(ev, *p, Input::Repartition))
            {
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

/// One distinct output: the records replay gives it for, and the indexes of the actual copies.
#[derive(Default)]
struct Slot {
    due: Vec<Due>,
    actual: Vec<usize>,
}

/// Replays `order` on the tables and returns what it gives, by output; counts what is expected of
/// the processed records.
fn expected_outputs(
    tables: &Tables,
    state: &mut PartitionState,
    order: &[ReplayInput<'_>],
    findings: &mut Findings,
) -> HashMap<Vec<u8>, Slot> {
    let mut slots: HashMap<Vec<u8>, Slot> = HashMap::new();
    let (mut expected_assignments, mut expected_failures) = (0, 0);
    for r in order {
        let (event, processed) = (r.event, r.processed);
        let decided = state::decide_and_record(tables, state, event);
        // Waiting claims decided again before the event are due with it.
        for decision in decided
            .redecided
            .assignments
            .iter()
            .chain([&decided.decision])
        {
            let due = |what, tenant: &str, user: &str, product: &str| Due {
                partition: r.source.0,
                offset: r.source.1,
                processed,
                what,
                event_id: decision.event_id.clone(),
                tenant: tenant.to_owned(),
                user: user.to_owned(),
                product: product.to_owned(),
            };
            if let Some(a) = output::assignment(decision, decision.occurred_at) {
                if processed {
                    expected_assignments += 1;
                }
                let d = due("assignment", &a.tenant_id, &a.user_id, &a.product);
                slots.entry(assignment_key(a)).or_default().due.push(d);
            }
            if let Some(f) = output::failure(decision, decision.occurred_at) {
                if processed {
                    expected_failures += 1;
                }
                let d = due("failure", &f.tenant_id, &f.user_id, &f.product);
                slots.entry(failure_key(f)).or_default().due.push(d);
            }
        }
    }
    findings.counts.expected_assignments = Some(expected_assignments);
    findings.counts.expected_failures = Some(expected_failures);
    slots
}

/// One output's expected and actual copies. Outputs cover the processed records' first; pending
/// records may or may not have theirs.
fn check_slot(slot: &Slot, records: &[OutputRecord], problems: &mut Problems) {
    for d in slot
        .due
        .iter()
        .filter(|d| d.processed)
        .skip(slot.actual.len())
    {
        problems.add(
            ProblemKind::MissingOutput,
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
    for i in slot.actual.iter().skip(slot.due.len()) {
        problems.add(ProblemKind::UnexpectedOutput, records[*i].json());
    }
}
