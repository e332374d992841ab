//! Assignments against each other and against the seats: no assignment written twice, and per
//! tenant and product no more assignments after the newest inventory snapshot than it left seats.
use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use super::outputs::{AssignmentKey, Copies};
use super::problems::{ProblemKind, Problems};
use super::report::Counts;
use super::{read_topic, Findings, VerifyArgs};
use crate::domain::catalog::Catalog;
use crate::domain::seats::Inventory;
use crate::pipeline::records::{self, RawRecord, TableUpdate};
use crate::wire::convert::InventoryRecord;

pub(super) fn check_duplicates(
    assignments: &BTreeMap<AssignmentKey, Copies>,
    findings: &mut Findings,
) {
    findings.counts.distinct_assignments = assignments.len() as u64;
    for ((tenant, user, product, id), copies) in assignments {
        if copies.at.len() > 1 {
            findings.problems.add(
                ProblemKind::DuplicateAssignment,
                json!({"tenant": tenant, "user": user, "product": product, "assignmentId": id, "count": copies.at.len(), "assignments": copies.at}),
            );
        }
    }
}

/// The inventory, in topic order (replay applies it in this order too).
pub(super) fn read_inventory(
    args: &VerifyArgs,
    counts: &mut Counts,
) -> anyhow::Result<Vec<InventoryRecord>> {
    let mut inventory = Vec::new();
    read_topic(&args.kafka, &args.topics.inventory, args.timeout, |m| {
        counts.table_records += 1;
        match records::inventory_record(&RawRecord::of(m)) {
            Ok(Some(TableUpdate::Inventory(i))) => inventory.push(i),
            Ok(_) => {}
            Err(_) => counts.unreadable_table_records += 1,
        }
    })?;
    Ok(inventory)
}

/// Per tenant and product, the assignments counted after the newest snapshot against the seats it
/// left (none without a snapshot).
pub(super) fn check_seats(
    assignments: &BTreeMap<AssignmentKey, Copies>,
    inventory: &[InventoryRecord],
    problems: &mut Problems,
) {
    let newest = newest_snapshots(inventory);
    let mut after_snapshot: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((tenant, _, product, _), copies) in assignments {
        let key = (tenant.clone(), product.clone());
        let counted = match newest.get(&key) {
            Some(inv) => copies.counted_from > inv.as_of,
            None => true,
        };
        let n = after_snapshot.entry(key).or_default();
        if counted {
            *n += 1;
        }
    }
    for ((tenant, product), n) in after_snapshot {
        let inv = newest.get(&(tenant.clone(), product.clone()));
        let allowed = inv.map_or(0, |i| i.purchased_units.saturating_sub(i.assigned_units));
        if n > allowed {
            problems.add(
                ProblemKind::OverAssignment,
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
}

/// The newest snapshot per tenant and product, as the processor keeps it.
fn newest_snapshots(inventory: &[InventoryRecord]) -> HashMap<(String, String), Inventory> {
    let mut newest: HashMap<(String, String), Inventory> = HashMap::new();
    for i in inventory {
        let key = (
            i.tenant_id.clone(),
            Catalog::product(i.product).key.to_owned(),
        );
        match newest.get(&key) {
            Some(old) if old.as_of > i.inventory.as_of => {}
            _ => {
                newest.insert(key, i.inventory);
            }
        }
    }
    newest
}
