//! What the processing loop reports. Counts of a batch are kept locally and published only when its
//! transaction commits, so the exported counters describe committed work and the hot path does no
//! label lookups.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashbrown::HashMap;
use metrics::{counter, histogram};

use super::restore::RestoreStats;
use crate::domain::activity::ActivityKind;
use crate::domain::catalog::Catalog;
use crate::domain::claims::{ClaimChange, ClaimStatus, Notice, NoticeKind};
use crate::domain::decision::{Decision, FailureReason, Ineligibility, Outcome};
use crate::telemetry;

fn kind_label(kind: ActivityKind) -> &'static str {
    match kind {
        ActivityKind::CloudFlowSaved => "cloud_flow_saved",
        ActivityKind::CloudFlowTriggered => "cloud_flow_triggered",
        ActivityKind::CloudFlowTurnedOn => "cloud_flow_turned_on",
        ActivityKind::LicenseRequested => "license_requested",
        ActivityKind::GoPremiumSelected => "go_premium_selected",
        ActivityKind::PremiumTrialRpaUsed => "premium_trial_rpa_used",
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Assigned(_) => "assigned",
        Outcome::AlreadyEntitled => "already_entitled",
        Outcome::NotRequired => "not_required",
        Outcome::OutOfScope => "out_of_scope",
        Outcome::AutoclaimOff => "autoclaim_off",
        Outcome::NoPolicy => "no_policy",
        Outcome::NotEligible(Ineligibility::AccountDisabled) => "not_eligible_account_disabled",
        Outcome::NotEligible(Ineligibility::Guest) => "not_eligible_guest",
        Outcome::NotEligible(Ineligibility::UnknownUser) => "not_eligible_unknown_user",
        Outcome::Failed(_) => "failed",
    }
}

fn failure_label(reason: FailureReason) -> &'static str {
    match reason {
        FailureReason::NoLicensesAvailable => "no_licenses_available",
        FailureReason::GrantingPlanDisabled => "granting_plan_disabled",
        FailureReason::UsageLocationMissing => "usage_location_missing",
    }
}

fn claim_status_label(status: &ClaimStatus) -> &'static str {
    match status {
        ClaimStatus::Pending => "pending",
        ClaimStatus::Fulfilled { .. } => "fulfilled",
        ClaimStatus::Entitled => "ended_entitled",
        ClaimStatus::NotEligible(_) => "ended_not_eligible",
        ClaimStatus::Expired => "expired",
    }
}

fn notice_label(kind: NoticeKind) -> &'static str {
    match kind {
        NoticeKind::SeatsExhausted { .. } => "seats_exhausted",
        NoticeKind::LowSeats { .. } => "low_seats",
        NoticeKind::SeatsAvailableAgain { .. } => "seats_available_again",
    }
}

/// Counts of the open batch.
#[derive(Default)]
pub struct BatchMetrics {
    events: HashMap<(&'static str, &'static str), u64>,
    assignments: HashMap<&'static str, u64>,
    failures: HashMap<&'static str, u64>,
    dead_letters: HashMap<&'static str, u64>,
    claims: HashMap<&'static str, u64>,
    notices: HashMap<&'static str, u64>,
    routed: u64,
    /// Kafka timestamps (ms) of the batch's records, for event-to-commit latency.
    record_times: Vec<i64>,
}

impl BatchMetrics {
    pub fn decided(&mut self, decision: &Decision) {
        *self
            .events
            .entry((
                kind_label(decision.trigger_kind),
                outcome_label(&decision.outcome),
            ))
            .or_default() += 1;
        match &decision.outcome {
            Outcome::Assigned(a) => {
                *self
                    .assignments
                    .entry(Catalog::product(a.product).key)
                    .or_default() += 1
            }
            Outcome::Failed(f) => *self.failures.entry(failure_label(f.reason)).or_default() += 1,
            _ => {}
        }
    }

    pub fn claim_changed(&mut self, change: &ClaimChange) {
        *self
            .claims
            .entry(claim_status_label(&change.status))
            .or_default() += 1;
    }

    pub fn noticed(&mut self, notice: &Notice) {
        *self.notices.entry(notice_label(notice.kind)).or_default() += 1;
    }

    pub fn dead_lettered(&mut self, code: &'static str) {
        *self.dead_letters.entry(code).or_default() += 1;
    }

    pub fn routed(&mut self) {
        self.routed += 1;
    }

    pub fn record_time(&mut self, kafka_timestamp_ms: Option<i64>) {
        if let Some(t) = kafka_timestamp_ms {
            self.record_times.push(t);
        }
    }

    /// Adds another part of the batch (a lane's) to this one, leaving it empty.
    pub fn absorb(&mut self, other: &mut BatchMetrics) {
        fn add<K: std::hash::Hash + Eq>(to: &mut HashMap<K, u64>, from: &mut HashMap<K, u64>) {
            for (key, n) in from.drain() {
                *to.entry(key).or_default() += n;
            }
        }
        add(&mut self.events, &mut other.events);
        add(&mut self.assignments, &mut other.assignments);
        add(&mut self.failures, &mut other.failures);
        add(&mut self.dead_letters, &mut other.dead_letters);
        add(&mut self.claims, &mut other.claims);
        add(&mut self.notices, &mut other.notices);
        self.routed += std::mem::take(&mut other.routed);
        self.record_times.append(&mut other.record_times);
    }

    /// Publishes the batch's counts: its transaction committed.
    pub fn committed(&mut self) {
        for ((kind, outcome), n) in self.events.drain() {
            counter!(telemetry::EVENTS, "kind" => kind, "outcome" => outcome).increment(n);
        }
        for (product, n) in self.assignments.drain() {
            counter!(telemetry::ASSIGNMENTS, "product" => product).increment(n);
        }
        for (reason, n) in self.failures.drain() {
            counter!(telemetry::FAILURES, "reason" => reason).increment(n);
        }
        for (reason, n) in self.dead_letters.drain() {
            counter!(telemetry::DEAD_LETTERS, "reason" => reason).increment(n);
        }
        for (status, n) in self.claims.drain() {
            counter!(telemetry::CLAIM_CHANGES, "status" => status).increment(n);
        }
        for (kind, n) in self.notices.drain() {
            counter!(telemetry::NOTICES, "kind" => kind).increment(n);
        }
        if self.routed > 0 {
            counter!(telemetry::ROUTED).increment(std::mem::take(&mut self.routed));
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64;
        let latency = histogram!(telemetry::EVENT_TO_COMMIT_SECONDS);
        for t in self.record_times.drain(..) {
            latency.record((now_ms - t).max(0) as f64 / 1000.0);
        }
        counter!(telemetry::TRANSACTIONS, "result" => "committed").increment(1);
    }

    /// Forgets the batch's counts: its transaction was aborted and will be redone.
    pub fn aborted(&mut self) {
        *self = BatchMetrics::default();
        counter!(telemetry::TRANSACTIONS, "result" => "aborted").increment(1);
    }
}

/// Per-partition consumer lag: input waiting after the loop's position in each owned partition, as
/// the stall watch reads it. (librdkafka's own `consumer_lag` is measured from committed offsets,
/// which transactional commits do not update in its statistics.)
pub fn partition_lags(stats: &rdkafka::Statistics, topic: &str) -> Vec<(i32, i64)> {
    super::stall::readings(stats, topic)
        .into_iter()
        .map(|r| (r.partition, r.waiting))
        .collect()
}

/// The lag gauges of both inputs.
pub fn record_lags(stats: &rdkafka::Statistics, activity: &str, repartition: &str) {
    let gauges = telemetry::partition_gauges();
    gauges.replace(telemetry::CONSUMER_LAG, partition_lags(stats, activity));
    gauges.replace(
        telemetry::REPARTITION_LAG,
        partition_lags(stats, repartition),
    );
}

/// A rebalance callback of the activity consumer: "assigned", "revoked" or "lost".
pub fn rebalanced(kind: &'static str) {
    counter!(telemetry::REBALANCES, "kind" => kind).increment(1);
}

/// A restore of `partitions` activity partitions finished: its time, the partitions and the records
/// it read (a restore's cost grows with those, not with the partitions).
pub fn restored(partitions: usize, stats: &RestoreStats) {
    histogram!(telemetry::RESTORE_SECONDS).record(stats.elapsed.as_secs_f64());
    counter!(telemetry::PARTITIONS_RESTORED).increment(partitions as u64);
    counter!(telemetry::RESTORE_RECORDS, "source" => "changelog").increment(stats.changelog_read);
    counter!(telemetry::RESTORE_RECORDS, "source" => "directory").increment(stats.directory_read);
    counter!(telemetry::RESTORE_RECORDS, "source" => "claims").increment(stats.claims_read);
}
