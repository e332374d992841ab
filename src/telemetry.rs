//! Metrics: every name in one place, following Prometheus conventions (an `autoclaim_` prefix, base
//! units, `_total` for counters, no user ids as labels), and the exporter that serves them.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod process;

/// Activity records decided in committed transactions, by event kind and outcome.
pub const EVENTS: &str = "autoclaim_events_total";
/// Licence assignments published, by product.
pub const ASSIGNMENTS: &str = "autoclaim_assignments_total";
/// Claims that could not be fulfilled, by reason.
pub const FAILURES: &str = "autoclaim_failures_total";
/// Changes of pending claims published, by status (pending, fulfilled, ended_entitled,
/// ended_not_eligible, expired).
pub const CLAIM_CHANGES: &str = "autoclaim_claim_changes_total";
/// Notices for administrators published, by kind.
pub const NOTICES: &str = "autoclaim_notices_total";
/// Claims waiting for a seat in owned partitions.
pub const PENDING_CLAIMS: &str = "autoclaim_pending_claims";
/// Input records sent to the dead-letter topic, by reason code.
pub const DEAD_LETTERS: &str = "autoclaim_dead_letters_total";
/// Time the engine takes to decide one event.
pub const DECISION_SECONDS: &str = "autoclaim_decision_duration_seconds";
/// From the activity record's Kafka timestamp to the commit of the transaction that carried it.
pub const EVENT_TO_COMMIT_SECONDS: &str = "autoclaim_event_to_commit_seconds";
/// Transactions, by result (committed, aborted).
pub const TRANSACTIONS: &str = "autoclaim_transactions_total";
/// Activity records sent on to the partition that owns their tenant (committed).
pub const ROUTED: &str = "autoclaim_records_routed_total";
/// Records between the consumer's position and the end of each owned partition.
pub const CONSUMER_LAG: &str = "autoclaim_consumer_lag_records";
/// The same, of the repartition topic: routed records not yet decided.
pub const REPARTITION_LAG: &str = "autoclaim_repartition_lag_records";
/// Errors the activity consumer reported (failed fetches, undecodable batches), by librdkafka code.
pub const CONSUMER_ERRORS: &str = "autoclaim_consumer_errors_total";
/// 1 while an owned activity partition has input waiting and is not consumed, by partition.
pub const PARTITION_STALLED: &str = "autoclaim_partition_stalled";
/// Policies known, by status (active, propagating, off).
pub const POLICIES: &str = "autoclaim_policies";
/// Seconds since a table record (policies, inventory, directory) was last applied.
pub const TABLES_AGE: &str = "autoclaim_tables_last_update_age_seconds";
/// Table records applied or rejected, by table and result.
pub const TABLE_RECORDS: &str = "autoclaim_table_records_total";
/// Activity partitions this instance owns.
pub const PARTITIONS_OWNED: &str = "autoclaim_partitions_owned";
/// Time to rebuild the state of newly assigned partitions.
pub const RESTORE_SECONDS: &str = "autoclaim_state_restore_duration_seconds";
/// Users tracked in the state of owned partitions.
pub const TRACKED_USERS: &str = "autoclaim_tracked_users";
/// Fetches of the admin API's JWKS URL, by result (ok, failed).
pub const ADMIN_JWKS_FETCHES: &str = "autoclaim_admin_jwks_fetches_total";
/// 1, with the version of the running binary as a label.
pub const BUILD_INFO: &str = "autoclaim_build_info";
/// 1 while `/readyz` answers 200 (partitions restored, none stalled, the loop moving).
pub const READY: &str = "autoclaim_ready";
/// Rebalance callbacks, by kind (assigned, revoked, lost).
pub const REBALANCES: &str = "autoclaim_rebalances_total";
/// Activity partitions whose state was rebuilt (at assignment, or after an aborted transaction).
pub const PARTITIONS_RESTORED: &str = "autoclaim_partitions_restored_total";
/// Records read while rebuilding partition state, by source topic (changelog, directory).
pub const RESTORE_RECORDS: &str = "autoclaim_state_restore_records_total";
/// Round-trip time of requests to each broker, by client (producer, consumer) and quantile, over
/// librdkafka's last statistics window.
pub const KAFKA_BROKER_RTT: &str = "autoclaim_kafka_broker_rtt_seconds";
/// Messages in the transactional producer's queue, not yet acknowledged by a broker.
pub const PRODUCER_QUEUE: &str = "autoclaim_kafka_producer_queue_messages";
/// Messages the transactional producer has sent to brokers.
pub const PRODUCER_SENT: &str = "autoclaim_kafka_producer_messages_sent_total";
/// The standard process metrics (the names every Prometheus client library uses), read from
/// `/proc/self` at each scrape; see `telemetry::process`.
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

/// Every metric the service exports (the Grafana dashboard may query only these).
pub const ALL: &[&str] = &[
    EVENTS,
    ASSIGNMENTS,
    FAILURES,
    CLAIM_CHANGES,
    NOTICES,
    PENDING_CLAIMS,
    DEAD_LETTERS,
    DECISION_SECONDS,
    EVENT_TO_COMMIT_SECONDS,
    TRANSACTIONS,
    ROUTED,
    CONSUMER_LAG,
    REPARTITION_LAG,
    CONSUMER_ERRORS,
    PARTITION_STALLED,
    POLICIES,
    TABLES_AGE,
    TABLE_RECORDS,
    PARTITIONS_OWNED,
    RESTORE_SECONDS,
    TRACKED_USERS,
    ADMIN_JWKS_FETCHES,
    BUILD_INFO,
    READY,
    REBALANCES,
    PARTITIONS_RESTORED,
    RESTORE_RECORDS,
    KAFKA_BROKER_RTT,
    PRODUCER_QUEUE,
    PRODUCER_SENT,
    PROCESS_CPU,
    PROCESS_RESIDENT_MEMORY,
    PROCESS_VIRTUAL_MEMORY,
    PROCESS_OPEN_FDS,
    PROCESS_MAX_FDS,
    PROCESS_START_TIME,
];

/// Buckets of the decision time, from 62.5 ns up in powers of two. Measured on a release build
/// (300,000 events, BENCHMARKS.md "Decision time"), a decision takes 0.4 to 0.7 µs on average and
/// 91-95% take at most 1 µs: the latency buckets, whose lowest is 10 µs, would hold nearly every
/// sample in one bucket.
pub const DECISION_BUCKETS: &[f64] = &[
    0.000_000_062_5,
    0.000_000_125,
    0.000_000_25,
    0.000_000_5,
    0.000_001,
    0.000_002,
    0.000_004,
    0.000_008,
    0.000_016,
    0.000_064,
    0.000_256,
    0.001,
    0.01,
];

/// Installs the Prometheus recorder for this process and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let latency = [
        0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DECISION_SECONDS.into()), DECISION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)?
        .install_recorder()
}

/// Describes every metric once (HELP lines), and sets the build info, which never changes. The
/// process metrics are not the recorder's (see `process`).
pub fn describe() {
    describe_decisions();
    describe_pipeline();
    describe_state();
    describe_kafka_clients();
    describe_service();
    // Spelled as elsewhere (`telemetry::NAME`) so that tests/dashboard.rs reads its label.
    metrics::gauge!(crate::telemetry::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// What the engine decided, and how long it took.
fn describe_decisions() {
    describe_counter!(
        EVENTS,
        "Activity records decided in committed transactions, by kind and outcome."
    );
    describe_counter!(ASSIGNMENTS, "Licence assignments published, by product.");
    describe_counter!(FAILURES, "Claims that could not be fulfilled, by reason.");
    describe_counter!(
        CLAIM_CHANGES,
        "Changes of pending claims published, by status."
    );
    describe_counter!(NOTICES, "Notices for administrators published, by kind.");
    describe_gauge!(
        PENDING_CLAIMS,
        "Claims waiting for a seat in owned partitions."
    );
    describe_counter!(DEAD_LETTERS, "Input records dead-lettered, by reason code.");
    describe_histogram!(
        DECISION_SECONDS,
        Unit::Seconds,
        "Time to decide one event (one event in 16 is timed)."
    );
    describe_histogram!(
        EVENT_TO_COMMIT_SECONDS,
        Unit::Seconds,
        "Activity record timestamp to transaction commit."
    );
}

/// The flow of records: transactions, routing, the consumer and its partitions.
fn describe_pipeline() {
    describe_counter!(TRANSACTIONS, "Transactions by result.");
    describe_counter!(
        ROUTED,
        "Activity records routed to the partition that owns their tenant (committed)."
    );
    describe_counter!(
        CONSUMER_ERRORS,
        "Errors of the activity consumer (fetch, decompression, parsing), by code."
    );
    describe_gauge!(
        PARTITION_STALLED,
        "1 while an owned activity partition has input waiting and nothing is consumed."
    );
    describe_counter!(
        REBALANCES,
        "Rebalance callbacks of the activity consumer, by kind (assigned, revoked, lost)."
    );
}

/// The tables and the per-partition state, and its rebuilds.
fn describe_state() {
    describe_gauge!(POLICIES, "Policies by status.");
    describe_gauge!(
        TABLES_AGE,
        Unit::Seconds,
        "Seconds since a table record was last applied."
    );
    describe_counter!(
        TABLE_RECORDS,
        "Table records applied or rejected, by table."
    );
    describe_gauge!(
        PARTITIONS_OWNED,
        "Activity partitions owned by this instance."
    );
    describe_histogram!(
        RESTORE_SECONDS,
        Unit::Seconds,
        "Time to restore the state of assigned partitions."
    );
    describe_gauge!(TRACKED_USERS, "Users tracked in owned partitions' state.");
    describe_counter!(
        PARTITIONS_RESTORED,
        "Activity partitions whose state was rebuilt from Kafka."
    );
    describe_counter!(
        RESTORE_RECORDS,
        "Records read to rebuild partition state, by source (changelog, directory, claims)."
    );
}

/// librdkafka's statistics of the clients.
fn describe_kafka_clients() {
    describe_gauge!(
        KAFKA_BROKER_RTT,
        Unit::Seconds,
        "Request round-trip time to each broker over librdkafka's last statistics window, by client and quantile."
    );
    describe_gauge!(
        PRODUCER_QUEUE,
        "Messages in the transactional producer's queue, not yet acknowledged."
    );
    describe_counter!(
        PRODUCER_SENT,
        "Messages the transactional producer has sent to brokers."
    );
}

/// The service around the pipeline: the admin API, the build, readiness.
fn describe_service() {
    describe_counter!(
        ADMIN_JWKS_FETCHES,
        "Fetches of the admin API's JWKS URL, by result."
    );
    describe_gauge!(BUILD_INFO, "1, labelled with the version of the binary.");
    describe_gauge!(
        READY,
        "1 while /readyz answers 200: partitions restored, none stalled, the loop moving."
    );
}

/// Gauges per owned partition, kept here rather than in the metrics recorder, which cannot drop a
/// series: a revoked partition's last value would go on being exported beside its new owner's, and a
/// sum over instances would count it twice. Rendered after the recorder's output.
pub struct PartitionGauges {
    series: Mutex<BTreeMap<&'static str, BTreeMap<i32, i64>>>,
}

static PARTITION_GAUGE_VALUES: PartitionGauges = PartitionGauges {
    series: Mutex::new(BTreeMap::new()),
};

/// The process's partition gauges (the recorder they sit beside is process-wide too).
pub fn partition_gauges() -> &'static PartitionGauges {
    &PARTITION_GAUGE_VALUES
}

/// The label of the gauges kept per partition.
pub const PARTITION_LABEL: &str = "partition";

/// The gauges kept per partition, with their HELP text.
pub const PARTITION_GAUGES: &[(&str, &str)] = &[
    (
        CONSUMER_LAG,
        "Records behind the end of each owned activity partition.",
    ),
    (
        REPARTITION_LAG,
        "Routed records behind the end of each owned repartition partition.",
    ),
];

impl PartitionGauges {
    /// Sets `metric` to exactly these partitions' values: partitions left out are no longer owned.
    pub fn replace(&self, metric: &'static str, values: impl IntoIterator<Item = (i32, i64)>) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        series.insert(metric, values.into_iter().collect());
    }

    /// Drops every series of these partitions (they were revoked).
    pub fn forget(&self, partitions: &[i32]) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for values in series.values_mut() {
            values.retain(|partition, _| !partitions.contains(partition));
        }
    }

    /// Appends the gauges in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for (metric, help) in PARTITION_GAUGES {
            let Some(values) = series.get(metric).filter(|v| !v.is_empty()) else {
                continue;
            };
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
            for (partition, value) in values {
                let _ = writeln!(out, "{metric}{{{PARTITION_LABEL}=\"{partition}\"}} {value}");
            }
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_or_left_out_partition_is_no_longer_exported() {
        let gauges = PartitionGauges {
            series: Mutex::new(BTreeMap::new()),
        };
        gauges.replace(CONSUMER_LAG, [(0, 5), (1, 7)]);
        gauges.replace(REPARTITION_LAG, [(1, 2)]);
        let mut text = String::new();
        gauges.render(&mut text);
        assert!(
            text.contains("autoclaim_consumer_lag_records{partition=\"1\"} 7"),
            "{text}"
        );
        assert!(text.contains("# TYPE autoclaim_repartition_lag_records gauge"));
        gauges.forget(&[1]);
        gauges.replace(CONSUMER_LAG, [(0, 4)]);
        let mut text = String::new();
        gauges.render(&mut text);
        assert!(text.contains("autoclaim_consumer_lag_records{partition=\"0\"} 4"));
        assert!(!text.contains("partition=\"1\""), "{text}");
        assert!(
            !text.contains(REPARTITION_LAG),
            "no series left, no HELP: {text}"
        );
    }
}
