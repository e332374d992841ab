//! The report: every licence assigned by each policy in the last 1, 7, 30 or 90 days, with the count
//! per policy and the rows (user, product, assigned at, trigger), and beside them the failures per
//! policy and reason and the claims pending per product (`report_claims`). Built from the admin
//! view by the API, and from the topics by `autoclaim report`; rendered as JSON, CSV or a table.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use pbjson_types::Timestamp as WireTimestamp;
use serde::Serialize;

use super::claim_rows::PolicyNames;
use super::claims::ClaimTables;
use super::csv;
use super::report_claims::{self, FailureReport, PendingClaims};
use super::view::AssignmentRow;
use crate::domain::catalog::Catalog;
use crate::domain::time::Timestamp;
use crate::wire::convert::to_wire_timestamp;

/// The windows an admin can ask for, in days.
pub const WINDOWS: [u32; 4] = [1, 7, 30, 90];
pub const DEFAULT_DAYS: u32 = 90;

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReportRow {
    pub user_id: String,
    /// Catalog key of the product assigned.
    pub product: String,
    pub product_name: String,
    /// When the processor assigned the licence.
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub assigned_at: WireTimestamp,
    /// The kind of event that triggered the claim, e.g. CLOUD_FLOW_SAVED.
    pub trigger: String,
    pub trigger_event_id: String,
    /// When the triggering event occurred.
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub triggered_at: WireTimestamp,
    pub assignment_id: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    pub policy_id: String,
    /// The policy's current name, or the name it had when it assigned (if it is gone).
    pub policy_name: String,
    pub count: u64,
    pub rows: Vec<ReportRow>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub tenant_id: String,
    pub days: u32,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub from: WireTimestamp,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub to: WireTimestamp,
    pub total: u64,
    pub policies: Vec<PolicyReport>,
    /// Failures per policy and reason, of users last refused in the window.
    pub failures: Vec<FailureReport>,
    /// Claims waiting for a licence now, per product.
    pub pending_claims: Vec<PendingClaims>,
}

/// The tables the report's CSV can hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CsvTable {
    /// One line per assignment.
    #[default]
    Assignments,
    /// One line per user, product, policy and reason refused in the window.
    Failures,
    /// One line per product with claims waiting.
    Pending,
}

impl CsvTable {
    pub fn parse(name: &str) -> Option<CsvTable> {
        match name {
            "assignments" => Some(CsvTable::Assignments),
            "failures" => Some(CsvTable::Failures),
            "pending" => Some(CsvTable::Pending),
            _ => None,
        }
    }
}

/// The start of a window of `days` ending at `now`.
pub fn window_start(now: Timestamp, days: u32) -> Timestamp {
    now.saturating_sub(Duration::from_secs(u64::from(days) * 24 * 3600))
}

/// Builds the report from the rows of one tenant. `policies` lists the policies to show even when
/// they assigned nothing (id and current name, in display order); `current_name` gives the current
/// name of a policy that assigned, if it still exists.
pub fn build<'a>(
    tenant: &str,
    days: u32,
    now: Timestamp,
    rows: impl IntoIterator<Item = &'a AssignmentRow>,
    policies: &[(String, String)],
) -> Report {
    let from = window_start(now, days);
    let mut by_policy: BTreeMap<String, PolicyReport> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for (id, name) in policies {
        order.push(id.clone());
        by_policy.insert(
            id.clone(),
            PolicyReport {
                policy_id: id.clone(),
                policy_name: name.clone(),
                count: 0,
                rows: Vec::new(),
            },
        );
    }
    let mut total = 0;
    for row in rows {
        if row.assigned_at < from || row.assigned_at > now {
            continue;
        }
        total += 1;
        let entry = by_policy.entry(row.policy_id.clone()).or_insert_with(|| {
            order.push(row.policy_id.clone());
            PolicyReport {
                policy_id: row.policy_id.clone(),
                policy_name: row.policy_name.clone(),
                count: 0,
                rows: Vec::new(),
            }
        });
        let product = Catalog::product(row.product);
        entry.count += 1;
        entry.rows.push(ReportRow {
            user_id: row.user_id.clone(),
            product: product.key.to_owned(),
            product_name: product.display_name.to_owned(),
            assigned_at: to_wire_timestamp(row.assigned_at),
            trigger: row.trigger_kind.as_str_name().to_owned(),
            trigger_event_id: row.trigger_event_id.clone(),
            triggered_at: to_wire_timestamp(row.occurred_at),
            assignment_id: row.assignment_id.clone(),
        });
    }
    let policies = order
        .into_iter()
        .filter_map(|id| by_policy.remove(&id))
        .collect();
    Report {
        tenant_id: tenant.to_owned(),
        days,
        from: to_wire_timestamp(from),
        to: to_wire_timestamp(now),
        total,
        policies,
        failures: Vec::new(),
        pending_claims: Vec::new(),
    }
}

/// Adds the failures of the window and the pending claims. Failures of a policy that `names`
/// does not know take the name the report shows for it, if any.
pub fn add_claims(
    report: &mut Report,
    tables: &ClaimTables,
    now: Timestamp,
    names: PolicyNames<'_>,
) {
    let from = window_start(now, report.days);
    let shown: Vec<(&str, &str)> = report
        .policies
        .iter()
        .map(|p| (p.policy_id.as_str(), p.policy_name.as_str()))
        .collect();
    let order: Vec<&str> = shown.iter().map(|(id, _)| *id).collect();
    let name_of = |id: &str| {
        names(id).or_else(|| {
            shown
                .iter()
                .find(|(shown_id, _)| *shown_id == id)
                .map(|(_, name)| (*name).to_owned())
        })
    };
    report.failures = report_claims::failures(tables, &report.tenant_id, from, &order, &name_of);
    report.pending_claims = report_claims::pending(tables, &report.tenant_id);
}

fn rfc3339(t: &WireTimestamp) -> String {
    let millis = t.seconds * 1000 + i64::from(t.nanos / 1_000_000);
    Timestamp::from_millis(millis).to_string()
}

pub const CSV_HEADER: &str =
    "policyId,policyName,userId,product,assignedAt,trigger,triggerEventId,triggeredAt,assignmentId";

/// The rows as CSV (RFC 4180, CRLF line ends), one line per assignment, with a header line.
pub fn to_csv(report: &Report) -> String {
    let mut out = String::new();
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for policy in &report.policies {
        for row in &policy.rows {
            let fields = [
                policy.policy_id.as_str(),
                policy.policy_name.as_str(),
                row.user_id.as_str(),
                row.product.as_str(),
                &rfc3339(&row.assigned_at),
                row.trigger.as_str(),
                row.trigger_event_id.as_str(),
                &rfc3339(&row.triggered_at),
                row.assignment_id.as_str(),
            ];
            csv::line(&mut out, &fields);
        }
    }
    out
}

/// The CSV of one of the report's tables.
pub fn to_csv_table(report: &Report, table: CsvTable) -> String {
    match table {
        CsvTable::Assignments => to_csv(report),
        CsvTable::Failures => report_claims::failures_csv(&report.failures),
        CsvTable::Pending => report_claims::pending_csv(&report.pending_claims),
    }
}

/// A plain-text table for a terminal.
pub fn to_table(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Licences assigned for tenant {} in the last {} days ({} to {}): {}",
        report.tenant_id,
        report.days,
        rfc3339(&report.from),
        rfc3339(&report.to),
        report.total
    );
    for policy in &report.policies {
        let _ = writeln!(
            out,
            "\n{} ({}): {}",
            printable(&policy.policy_name),
            printable(&policy.policy_id),
            policy.count
        );
        if policy.rows.is_empty() {
            continue;
        }
        let header = ["user", "product", "assigned at", "trigger"];
        let rows: Vec<[String; 4]> = policy
            .rows
            .iter()
            .map(|r| {
                [
                    printable(&r.user_id),
                    r.product.clone(),
                    rfc3339(&r.assigned_at),
                    r.trigger.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 4]| {
            let mut l = String::from(" ");
            for (cell, w) in cells.iter().zip(widths) {
                let _ = write!(l, " {cell:<w$}");
            }
            l.trim_end().to_owned()
        };
        let _ = writeln!(out, "{}", line(header));
        for row in &rows {
            let _ = writeln!(out, "{}", line([&row[0], &row[1], &row[2], &row[3]]));
        }
    }
    report_claims::table_lines(
        &mut out,
        &report.failures,
        &report.pending_claims,
        printable,
    );
    out
}

/// Text safe to print on a terminal: control characters become `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb;

    fn row(id: &str, policy: &str, at: i64) -> AssignmentRow {
        AssignmentRow {
            assignment_id: id.into(),
            user_id: format!("user-{id}"),
            product: Catalog::by_key("power_automate_premium").unwrap(),
            policy_id: policy.into(),
            policy_name: format!("name of {policy}"),
            trigger_kind: pb::ActivityKind::CloudFlowSaved,
            trigger_event_id: format!("e-{id}"),
            occurred_at: Timestamp::from_millis(at),
            assigned_at: Timestamp::from_millis(at),
            pending_since: None,
        }
    }

    #[test]
    fn windows_counts_and_zero_count_policies() {
        const DAY: i64 = 24 * 3600 * 1000;
        let now = Timestamp::from_millis(100 * DAY);
        let rows = [
            row("old", "p1", 100 * DAY - 8 * DAY),
            row("a", "p1", 100 * DAY - 2 * DAY),
            row("b", "gone", 100 * DAY - DAY / 2),
        ];
        let policies = vec![
            ("p1".to_owned(), "Current".to_owned()),
            ("p2".to_owned(), "Idle".to_owned()),
        ];
        let r = build("t", 7, now, &rows, &policies);
        assert_eq!(r.total, 2);
        let counts: Vec<_> = r
            .policies
            .iter()
            .map(|p| (p.policy_name.as_str(), p.count))
            .collect();
        assert_eq!(counts, [("Current", 1), ("Idle", 0), ("name of gone", 1)]);
        let r = build("t", 1, now, &rows, &[]);
        assert_eq!(r.total, 1);
        let r = build("t", 90, now, &rows, &[]);
        assert_eq!(r.total, 3);
    }

    #[test]
    fn csv_has_a_header_and_a_line_per_assignment() {
        let now = Timestamp::from_millis(10_000_000);
        let r = build("t", 1, now, &[row("x", "p", 9_000_000)], &[]);
        let csv = to_csv(&r);
        assert!(csv.starts_with(CSV_HEADER));
        assert_eq!(csv.lines().count(), 2);
        assert!(to_table(&r).contains("user-x"));
    }
}
