//! What the admin API and the report show of claims and failures: the rows of the claims listing
//! (filtered and sorted, as JSON or CSV), a failure row, and one user's history.
use pbjson_types::Timestamp as WireTimestamp;
use serde::Serialize;

use super::claims::{ClaimRow, ClaimTables, FailureRow, RowStatus};
use super::csv;
use super::view::AssignmentRow;
use crate::domain::catalog::{Catalog, ProductId};
use crate::domain::time::Timestamp;
use crate::wire::convert::to_wire_timestamp;

/// The current name of a policy, when it still exists.
pub type PolicyNames<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The order of the listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Newest last seen first: what happened lately.
    LastSeen,
    /// Oldest first seen first: who has waited longest.
    FirstSeen,
}

/// Which rows the listing holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Empty: every status.
    pub statuses: Vec<RowStatus>,
    pub product: Option<ProductId>,
    /// Rows seen (or, for a claim, changed) at or after this time.
    pub since: Timestamp,
    pub sort: Sort,
}

/// One row of the listing: a claim, or failures that leave no claim waiting.
#[derive(Clone, Copy, Debug)]
pub enum Listed<'a> {
    Claim(&'a ClaimRow),
    Failed(&'a FailureRow),
}

impl Listed<'_> {
    pub fn status(self) -> RowStatus {
        match self {
            Listed::Claim(c) => c.status,
            Listed::Failed(_) => RowStatus::Failed,
        }
    }

    pub fn product(self) -> Option<ProductId> {
        match self {
            Listed::Claim(c) => c.product,
            Listed::Failed(f) => f.product,
        }
    }

    fn user(&self) -> &str {
        match self {
            Listed::Claim(c) => &c.user_id,
            Listed::Failed(f) => &f.user_id,
        }
    }

    pub fn first_seen(self) -> Timestamp {
        match self {
            Listed::Claim(c) => c.first_seen,
            Listed::Failed(f) => f.first_seen,
        }
    }

    pub fn last_seen(self) -> Timestamp {
        match self {
            Listed::Claim(c) => c.last_seen,
            Listed::Failed(f) => f.last_seen,
        }
    }

    /// What the window is judged by: the last event, or a claim's last change if later (a claim
    /// fulfilled today may have last been asked for weeks ago).
    fn active_at(self) -> Timestamp {
        match self {
            Listed::Claim(c) => c.last_activity(),
            Listed::Failed(f) => f.last_seen,
        }
    }

    fn policy_id(&self) -> &str {
        match self {
            Listed::Claim(c) => &c.policy_id,
            Listed::Failed(f) => &f.policy_id,
        }
    }
}

impl Filter {
    fn keeps(&self, row: Listed<'_>) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&row.status()))
            && self.product.is_none_or(|p| row.product() == Some(p))
            && row.active_at() >= self.since
    }
}

/// The tenant's rows that the filter keeps, in its order (ties by user, status, product, policy,
/// so that the order is total).
pub fn list<'a>(tables: &'a ClaimTables, tenant: &str, filter: &Filter) -> Vec<Listed<'a>> {
    let claims = tables.claims(tenant).map(Listed::Claim);
    let failed = tables
        .failures(tenant)
        .filter(|f| f.leaves_no_claim())
        .map(Listed::Failed);
    let mut rows: Vec<Listed<'a>> = claims.chain(failed).filter(|r| filter.keeps(*r)).collect();
    match filter.sort {
        Sort::LastSeen => {
            rows.sort_by(|a, b| (b.last_seen(), tie(a)).cmp(&(a.last_seen(), tie(b))));
        }
        Sort::FirstSeen => {
            rows.sort_by(|a, b| (a.first_seen(), tie(a)).cmp(&(b.first_seen(), tie(b))));
        }
    }
    rows
}

/// What orders rows seen at the same time.
fn tie<'b>(r: &'b Listed<'_>) -> (&'b str, RowStatus, Option<ProductId>, &'b str) {
    (r.user(), r.status(), r.product(), r.policy_id())
}

fn product_key(product: Option<ProductId>) -> String {
    product
        .map(|p| Catalog::product(p).key.to_owned())
        .unwrap_or_default()
}

fn product_name(product: Option<ProductId>) -> String {
    product
        .map(|p| Catalog::product(p).display_name.to_owned())
        .unwrap_or_default()
}

fn policy_name(names: PolicyNames<'_>, policy_id: &str) -> Option<String> {
    (!policy_id.is_empty()).then(|| names(policy_id)).flatten()
}

/// A row of the claims listing and of a user's history.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimListRow {
    pub user_id: String,
    /// pending, fulfilled, failed, ended_entitled, ended_not_eligible or expired.
    pub status: &'static str,
    /// Catalog key; absent when no policy named one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub product: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub product_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub policy_id: String,
    /// The policy's current name, while it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    /// Why it was refused: NO_LICENSES_AVAILABLE for a claim.
    pub reason: &'static str,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub first_seen: WireTimestamp,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub last_seen: WireTimestamp,
    /// Events refused (for a claim: events for its need while it was pending).
    pub count: u64,
    /// A claim's: since when it waited (its first refusal).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire::timestamp::serialize_option"
    )]
    pub pending_since: Option<WireTimestamp>,
    /// A fulfilled claim's assignment.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub assignment_id: String,
    /// A claim's capabilities, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// When a claim last changed.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire::timestamp::serialize_option"
    )]
    pub changed_at: Option<WireTimestamp>,
    /// When a pending claim lapses unless another event for it comes.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire::timestamp::serialize_option"
    )]
    pub expires_at: Option<WireTimestamp>,
    /// Why an ended_not_eligible claim ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_outcome: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_reason: Option<&'static str>,
}

impl ClaimListRow {
    pub fn of(row: Listed<'_>, names: PolicyNames<'_>) -> ClaimListRow {
        match row {
            Listed::Claim(c) => Self::of_claim(c, names),
            Listed::Failed(f) => ClaimListRow {
                user_id: f.user_id.clone(),
                status: RowStatus::Failed.name(),
                product: product_key(f.product),
                product_name: product_name(f.product),
                policy_id: f.policy_id.clone(),
                policy_name: policy_name(names, &f.policy_id),
                reason: f.reason.as_str_name(),
                first_seen: to_wire_timestamp(f.first_seen),
                last_seen: to_wire_timestamp(f.last_seen),
                count: f.count,
                pending_since: None,
                assignment_id: String::new(),
                needs: Vec::new(),
                changed_at: None,
                expires_at: None,
                ended_outcome: None,
                ended_reason: None,
            },
        }
    }

    fn of_claim(c: &ClaimRow, names: PolicyNames<'_>) -> ClaimListRow {
        let ended = c.status == RowStatus::EndedNotEligible;
        ClaimListRow {
            user_id: c.user_id.clone(),
            status: c.status.name(),
            product: product_key(c.product),
            product_name: product_name(c.product),
            policy_id: c.policy_id.clone(),
            policy_name: policy_name(names, &c.policy_id),
            reason: crate::wire::pb::Reason::NoLicensesAvailable.as_str_name(),
            first_seen: to_wire_timestamp(c.first_seen),
            last_seen: to_wire_timestamp(c.last_seen),
            count: u64::from(c.events),
            pending_since: Some(to_wire_timestamp(c.first_seen)),
            assignment_id: c.assignment_id.clone(),
            needs: c.needs.clone(),
            changed_at: Some(to_wire_timestamp(c.changed_at)),
            expires_at: c
                .expires_at
                .filter(|_| c.status == RowStatus::Pending)
                .map(to_wire_timestamp),
            ended_outcome: ended.then(|| c.ended_outcome.as_str_name()),
            ended_reason: ended.then(|| c.ended_reason.as_str_name()),
        }
    }
}

/// The claims listing.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimList {
    pub tenant_id: String,
    pub days: u32,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub from: WireTimestamp,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub to: WireTimestamp,
    pub rows: Vec<ClaimListRow>,
}

pub const CSV_HEADER: &str = "userId,status,product,policyId,policyName,reason,firstSeen,lastSeen,count,pendingSince,assignmentId";

fn rfc3339(t: &WireTimestamp) -> String {
    let millis = t.seconds * 1000 + i64::from(t.nanos / 1_000_000);
    Timestamp::from_millis(millis).to_string()
}

/// The listing as CSV, one line per row, with a header line.
pub fn to_csv(rows: &[ClaimListRow]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    for r in rows {
        let fields = [
            r.user_id.clone(),
            r.status.to_owned(),
            r.product.clone(),
            r.policy_id.clone(),
            r.policy_name.clone().unwrap_or_default(),
            r.reason.to_owned(),
            rfc3339(&r.first_seen),
            rfc3339(&r.last_seen),
            r.count.to_string(),
            r.pending_since.as_ref().map(rfc3339).unwrap_or_default(),
            r.assignment_id.clone(),
        ];
        csv::line(&mut out, &fields);
    }
    out
}

/// Failures of one user, product, policy and reason, as the history and the report show them.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureView {
    pub user_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub product: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub product_name: String,
    /// Absent when no policy was consulted (USAGE_LOCATION_MISSING).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub policy_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    pub reason: &'static str,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub first_seen: WireTimestamp,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub last_seen: WireTimestamp,
    pub count: u64,
    /// The latest event refused.
    pub last_event_id: String,
}

impl FailureView {
    pub fn of(f: &FailureRow, names: PolicyNames<'_>) -> FailureView {
        FailureView {
            user_id: f.user_id.clone(),
            product: product_key(f.product),
            product_name: product_name(f.product),
            policy_id: f.policy_id.clone(),
            policy_name: policy_name(names, &f.policy_id),
            reason: f.reason.as_str_name(),
            first_seen: to_wire_timestamp(f.first_seen),
            last_seen: to_wire_timestamp(f.last_seen),
            count: f.count,
            last_event_id: f.last_event_id.clone(),
        }
    }
}

/// An assignment in a user's history.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryAssignment {
    pub assignment_id: String,
    pub product: String,
    pub product_name: String,
    pub policy_id: String,
    /// The policy's current name, or the name it had when it assigned.
    pub policy_name: String,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub assigned_at: WireTimestamp,
    pub trigger: &'static str,
    pub trigger_event_id: String,
    #[serde(serialize_with = "crate::wire::timestamp::serialize")]
    pub triggered_at: WireTimestamp,
    /// Set when the assignment fulfilled a claim that waited for a seat: since when it waited.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire::timestamp::serialize_option"
    )]
    pub pending_since: Option<WireTimestamp>,
}

impl HistoryAssignment {
    pub fn of(a: &AssignmentRow, names: PolicyNames<'_>) -> HistoryAssignment {
        HistoryAssignment {
            assignment_id: a.assignment_id.clone(),
            product: product_key(Some(a.product)),
            product_name: product_name(Some(a.product)),
            policy_id: a.policy_id.clone(),
            policy_name: policy_name(names, &a.policy_id).unwrap_or_else(|| a.policy_name.clone()),
            assigned_at: to_wire_timestamp(a.assigned_at),
            trigger: a.trigger_kind.as_str_name(),
            trigger_event_id: a.trigger_event_id.clone(),
            triggered_at: to_wire_timestamp(a.occurred_at),
            pending_since: a.pending_since.map(to_wire_timestamp),
        }
    }
}

/// What autoclaim did for one user: assignments, failures and claims, each oldest first.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub tenant_id: String,
    pub user_id: String,
    pub assignments: Vec<HistoryAssignment>,
    pub failures: Vec<FailureView>,
    pub claims: Vec<ClaimListRow>,
}

/// The user's history from the view's assignments (oldest first) and the claim tables.
pub fn history<'a>(
    tenant: &str,
    user: &str,
    assignments: impl IntoIterator<Item = &'a AssignmentRow>,
    tables: &ClaimTables,
    names: PolicyNames<'_>,
) -> History {
    let (claims, failures) = tables.of_user(tenant, user);
    History {
        tenant_id: tenant.to_owned(),
        user_id: user.to_owned(),
        assignments: assignments
            .into_iter()
            .filter(|a| a.user_id == user)
            .map(|a| HistoryAssignment::of(a, names))
            .collect(),
        failures: failures
            .into_iter()
            .map(|f| FailureView::of(f, names))
            .collect(),
        claims: claims
            .into_iter()
            .map(|c| ClaimListRow::of(Listed::Claim(c), names))
            .collect(),
    }
}
