//! The report: every licence assigned by each policy in the last 1, 7, 30 or 90 days, with the count
//! per policy and the rows (user, product, assigned at, trigger). Built from the admin view by the
//! API, and from the assignments topic by `autoclaim report`; rendered as JSON, CSV or a table.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use pbjson_types::Timestamp as WireTimestamp;
use serde::Serialize;

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
    }
}

fn rfc3339(t: &WireTimestamp) -> String {
    let millis = t.seconds * 1000 + i64::from(t.nanos / 1_000_000);
    Timestamp::from_millis(millis).to_string()
}

/// One CSV field: quoted when needed, and with a leading `'` when a spreadsheet would read it as a
/// formula (OWASP's advice against CSV injection).
fn csv_field(out: &mut String, value: &str) {
    let guarded;
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        guarded = format!("'{value}");
        guarded.as_str()
    } else {
        value
    };
    if value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
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
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                csv_field(&mut out, f);
            }
            out.push_str("\r\n");
        }
    }
    out
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
    fn csv_quotes_and_guards_formulas() {
        let mut out = String::new();
        csv_field(&mut out, "a,\"b\"");
        assert_eq!(out, "\"a,\"\"b\"\"\"");
        let mut out = String::new();
        csv_field(&mut out, "=HYPERLINK(1)");
        assert_eq!(out, "'=HYPERLINK(1)");
        let now = Timestamp::from_millis(10_000_000);
        let r = build("t", 1, now, &[row("x", "p", 9_000_000)], &[]);
        let csv = to_csv(&r);
        assert!(csv.starts_with(CSV_HEADER));
        assert_eq!(csv.lines().count(), 2);
        assert!(to_table(&r).contains("user-x"));
    }
}
