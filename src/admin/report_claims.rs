//! The report's claims part, beside the assignments: failures per policy and reason in the window,
//! and the claims pending now per product; as JSON (fields of the report), CSV tables and lines of
//! the terminal table.
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use pbjson_types::Timestamp as WireTimestamp;
use serde::Serialize;

use super::claim_rows::{FailureView, PolicyNames};
use super::claims::ClaimTables;
use super::csv;
use crate::domain::catalog::Catalog;
use crate::domain::time::Timestamp;
use crate::wire::convert::to_wire_timestamp;
use crate::wire::pb;

/// Failures of one policy and reason whose users were last refused in the window.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureReport {
    /// Empty when no policy was consulted (USAGE_LOCATION_MISSING).
    pub policy_id: String,
    /// The policy's current name (the API), or the name it assigned under (`autoclaim report`);
    /// empty when unknown.
    pub policy_name: String,
    pub reason: &'static str,
    /// Users last refused in the window.
    pub users: u64,
    /// The refusals those rows count, since each was first seen.
    pub events: u64,
    /// Oldest last seen first.
    pub rows: Vec<FailureView>,
}

/// The claims of one product waiting for a seat now.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingClaims {
    /// Catalog key; empty for claims that named no product.
    pub product: String,
    pub product_name: String,
    pub pending: u64,
    /// When the claim waiting longest was first refused.
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub oldest_pending_since: WireTimestamp,
}

/// Failures per policy and reason, of rows last seen at or after `from`. Groups come in `order`
/// (the report's policies), then by policy id; within a policy, by reason.
pub fn failures(
    tables: &ClaimTables,
    tenant: &str,
    from: Timestamp,
    order: &[&str],
    names: PolicyNames<'_>,
) -> Vec<FailureReport> {
    let mut groups: BTreeMap<(usize, String, pb::Reason), FailureReport> = BTreeMap::new();
    for row in tables.failures(tenant).filter(|f| f.last_seen >= from) {
        let rank = order
            .iter()
            .position(|id| *id == row.policy_id)
            .unwrap_or(usize::MAX);
        let group = groups
            .entry((rank, row.policy_id.clone(), row.reason))
            .or_insert_with(|| FailureReport {
                policy_id: row.policy_id.clone(),
                policy_name: names(&row.policy_id).unwrap_or_default(),
                reason: row.reason.as_str_name(),
                users: 0,
                events: 0,
                rows: Vec::new(),
            });
        group.events += row.count;
        group.rows.push(FailureView::of(row, names));
    }
    let mut out: Vec<FailureReport> = groups.into_values().collect();
    for group in &mut out {
        group.rows.sort_by(|a, b| {
            (millis(&a.last_seen), &a.user_id).cmp(&(millis(&b.last_seen), &b.user_id))
        });
        // A user may have rows of two products under one policy (one per need).
        let users: HashSet<&str> = group.rows.iter().map(|r| r.user_id.as_str()).collect();
        group.users = users.len() as u64;
    }
    out
}

fn millis(t: &WireTimestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos / 1_000_000)
}

fn rfc3339(t: &WireTimestamp) -> String {
    Timestamp::from_millis(millis(t)).to_string()
}

/// The tenant's pending claims per product, by catalog order.
pub fn pending(tables: &ClaimTables, tenant: &str) -> Vec<PendingClaims> {
    tables
        .pending_by_product(tenant)
        .into_iter()
        .map(|p| {
            let product = p.product.map(Catalog::product);
            PendingClaims {
                product: product.map(|p| p.key.to_owned()).unwrap_or_default(),
                product_name: product
                    .map(|p| p.display_name.to_owned())
                    .unwrap_or_default(),
                pending: p.pending,
                oldest_pending_since: to_wire_timestamp(p.oldest),
            }
        })
        .collect()
}

pub const FAILURES_CSV_HEADER: &str =
    "policyId,policyName,reason,userId,product,firstSeen,lastSeen,count";
pub const PENDING_CSV_HEADER: &str = "product,productName,pending,oldestPendingSince";

/// The failures as CSV, one line per row.
pub fn failures_csv(failures: &[FailureReport]) -> String {
    let mut out = format!("{FAILURES_CSV_HEADER}\r\n");
    for group in failures {
        for row in &group.rows {
            let fields = [
                group.policy_id.clone(),
                group.policy_name.clone(),
                group.reason.to_owned(),
                row.user_id.clone(),
                row.product.clone(),
                rfc3339(&row.first_seen),
                rfc3339(&row.last_seen),
                row.count.to_string(),
            ];
            csv::line(&mut out, &fields);
        }
    }
    out
}

/// The pending claims as CSV, one line per product.
pub fn pending_csv(pending: &[PendingClaims]) -> String {
    let mut out = format!("{PENDING_CSV_HEADER}\r\n");
    for p in pending {
        let fields = [
            p.product.clone(),
            p.product_name.clone(),
            p.pending.to_string(),
            rfc3339(&p.oldest_pending_since),
        ];
        csv::line(&mut out, &fields);
    }
    out
}

/// The terminal table's lines for failures and pending claims; `printable` makes text safe to
/// print.
pub fn table_lines(
    out: &mut String,
    failures: &[FailureReport],
    pending: &[PendingClaims],
    printable: fn(&str) -> String,
) {
    let _ = writeln!(
        out,
        "\nFailures of users last refused in the window, per policy and reason:"
    );
    if failures.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for f in failures {
        let policy = match (f.policy_name.as_str(), f.policy_id.as_str()) {
            (_, "") => "no policy".to_owned(),
            ("", id) => printable(id),
            (name, id) => format!("{} ({})", printable(name), printable(id)),
        };
        let _ = writeln!(
            out,
            "  {policy}, {}: {} users, {} events",
            f.reason, f.users, f.events
        );
    }
    let waiting: u64 = pending.iter().map(|p| p.pending).sum();
    let _ = writeln!(out, "\nClaims waiting for a licence now: {waiting}");
    for p in pending {
        let product = if p.product.is_empty() {
            "no product"
        } else {
            &p.product
        };
        let _ = writeln!(
            out,
            "  {product}: {} (the oldest since {})",
            p.pending,
            rfc3339(&p.oldest_pending_since)
        );
    }
}
