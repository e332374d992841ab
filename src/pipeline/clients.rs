//! librdkafka client settings, in one place so that every client agrees on them.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use rdkafka::ClientContext;

use super::config::{Compression, KafkaArgs};

fn base(kafka: &KafkaArgs) -> ClientConfig {
    debug_assert!(
        kafka.is_resolved(),
        "KafkaArgs::resolve must turn the security flags into properties before a client is made"
    );
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    config
}

/// The settings exactly-once depends on; `--kafka-property` may not change them.
const PROTECTED: &[&str] = &[
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "transactional.id",
    "enable.idempotence",
    "acks",
    "partitioner",
    "partition.assignment.strategy",
];

/// Applies the operator's `--kafka-property` settings over our defaults (so e.g. timeouts and
/// security can be tuned), except those exactly-once depends on.
fn with_overrides(mut config: ClientConfig, kafka: &KafkaArgs) -> ClientConfig {
    for (key, value) in &kafka.properties {
        if PROTECTED.contains(&key.as_str()) {
            tracing::warn!(
                key,
                "ignoring --kafka-property: exactly-once depends on this setting"
            );
            continue;
        }
        config.set(key, value);
    }
    config
}

/// How much longer than the restore bound the group waits between polls before it gives the
/// member's partitions to others.
const POLL_INTERVAL_MARGIN: Duration = Duration::from_secs(60);

/// The activity consumer: a group member whose offsets commit only inside transactions.
pub fn activity_consumer(kafka: &KafkaArgs, group_id: &str) -> ClientConfig {
    let mut config = base(kafka);
    set_activity_consumer_defaults(&mut config, group_id);
    with_overrides(config, kafka)
}

fn set_activity_consumer_defaults(config: &mut ClientConfig, group_id: &str) {
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // The loop sometimes has to wait for a restore (a revocation or a rewind while one runs),
        // and does not poll meanwhile: the group must not take the member's partitions away while
        // the restore is within its own bound, or a large directory's restore would end in a
        // rebalance that makes another restore.
        .set(
            "max.poll.interval.ms",
            (super::restore::RESTORE_TIMEOUT + POLL_INTERVAL_MARGIN)
                .as_millis()
                .to_string(),
        )
        // Incremental rebalancing: partitions that stay with a member keep their state and go on
        // through a rebalance; only what moves is committed, dropped and restored. The group
        // assigns activity partitions only; the loop adds the repartition partitions of the same
        // numbers itself, so that a tenant's owner also reads the records routed to it.
        .set("partition.assignment.strategy", "cooperative-sticky")
        // librdkafka pauses fetching for this long once its queue is full (default 1 s): a stall
        // of a whole second whenever processing catches up with a full queue.
        .set("fetch.queue.backoff.ms", "10")
        // Statistics feed the per-partition lag metric, the stall watch and the round-trip gauges.
        .set(
            "statistics.interval.ms",
            STATISTICS_INTERVAL.as_millis().to_string(),
        );
}

/// The processing loop's consumer when it has more than one lane: the activity consumer, reading
/// each input partition into a queue of its own. librdkafka then bounds the bytes it fetches ahead
/// per partition rather than for the whole consumer, so that bound is divided among the partitions
/// (both inputs' of every number) to keep the whole within its default for one queue. The bound in
/// records stays librdkafka's: divided too, it kept each queue so short that the lanes ran dry
/// (BENCHMARKS.md). `--kafka-property` still overrides either.
pub fn split_queue_consumer(kafka: &KafkaArgs, group_id: &str, partitions: i32) -> ClientConfig {
    let mut config = base(kafka);
    let queues = 2 * u64::from(partitions.unsigned_abs().max(1));
    set_activity_consumer_defaults(&mut config, group_id);
    config.set(
        "queued.max.messages.kbytes",
        (FETCH_AHEAD_KBYTES / queues)
            .max(MIN_FETCH_AHEAD_KBYTES)
            .to_string(),
    );
    with_overrides(config, kafka)
}

/// librdkafka's default for a consumer's one queue, shared by the loop's partition queues.
const FETCH_AHEAD_KBYTES: u64 = 65_536;
/// Enough per partition queue for a fetch of a few hundred records.
const MIN_FETCH_AHEAD_KBYTES: u64 = 256;

/// How often the processing loop's clients hand librdkafka's statistics to their context.
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// A reader of whole topics (tables, changelogs): no group, no commits, committed data only.
pub fn table_reader(kafka: &KafkaArgs) -> ClientConfig {
    with_overrides(table_reader_defaults(kafka), kafka)
}

fn table_reader_defaults(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = base(kafka);
    config
        .set("group.id", "autoclaim-table-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // Restore reads as fast as it can apply: do not pause a second each time the queue fills.
        .set("fetch.queue.backoff.ms", "10")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed");
    config
}

/// A reader of a topic up to its end (state restore): as `table_reader`, but a caught-up or empty
/// partition answers a fetch after 10 ms rather than the default 500, since that answer is how the
/// reader learns it has reached the end.
pub fn restore_reader(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = table_reader_defaults(kafka);
    config.set("fetch.wait.max.ms", "10");
    with_overrides(config, kafka)
}

/// How long a producer connection may stay idle before librdkafka closes it.
const IDLE_CONNECTION_CLOSE: Duration = Duration::from_secs(10);

/// The transactional producer of assignments, failures, dead letters and routed records.
pub fn transactional_producer(
    kafka: &KafkaArgs,
    transactional_id: &str,
    settings: ProducerSettings,
) -> ClientConfig {
    let mut config = base(kafka);
    config
        .set("transactional.id", transactional_id)
        .set("compression.type", settings.compression.property())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Also librdkafka's bound on a message's delivery: long enough for a partition leader or
        // the transaction coordinator to move to another broker (ARCHITECTURE.md has the
        // trade-off: a crashed instance's open transaction blocks read_committed readers as long).
        .set(
            "transaction.timeout.ms",
            settings.transaction_timeout.as_millis().to_string(),
        )
        // Right after a commit the coordinator may still be writing its markers and answer the next
        // transaction's first request with CONCURRENT_TRANSACTIONS; librdkafka retries after this
        // (default 100 ms, a stall in every such commit cycle).
        .set("retry.backoff.ms", "10")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        // librdkafka 2.12 can wait for ever in send_offsets_to_transaction when the group
        // coordinator's broker leaves the cluster cleanly: it waits for a broker state change that
        // never comes (librdkafka issues 5511 and 5456). Closing idle connections makes one
        // within seconds, and the request then looks the new coordinator up.
        .set(
            "connections.max.idle.ms",
            IDLE_CONNECTION_CLOSE.as_millis().to_string(),
        );
    // Only for a context that reads them (`kafka_stats::ProducerStats`): rdkafka's default context
    // logs every statistics report.
    if settings.statistics {
        config.set(
            "statistics.interval.ms",
            STATISTICS_INTERVAL.as_millis().to_string(),
        );
    }
    with_overrides(config, kafka)
}

/// What the operator chooses of the transactional producer.
#[derive(Clone, Copy, Debug)]
pub struct ProducerSettings {
    pub compression: Compression,
    pub transaction_timeout: Duration,
    /// Emit librdkafka's statistics (the producer's context must read them).
    pub statistics: bool,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            compression: Compression::default(),
            transaction_timeout: Duration::from_secs(60),
            statistics: false,
        }
    }
}

/// A plain idempotent producer (admin API writes, load generation, tests).
pub fn idempotent_producer(kafka: &KafkaArgs) -> ClientConfig {
    let mut config = base(kafka);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random");
    with_overrides(config, kafka)
}

pub fn admin(kafka: &KafkaArgs) -> ClientConfig {
    with_overrides(base(kafka), kafka)
}

/// Whether librdkafka reports something it recovers from by itself: a broker that is down or
/// restarting, a partition leader that moved, a request that timed out, a coordinator not yet
/// loaded. A reader goes on (within its own deadline) rather than stop on these. What a retry can
/// never fix (authentication, TLS, authorization, a missing topic, a fatal client error) is not.
pub fn is_transient(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
        return false;
    }
    !matches!(
        error.rdkafka_error_code(),
        Some(
            C::Authentication
                | C::SSL
                | C::SaslAuthenticationFailed
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::UnknownPartition
                | C::InvalidArgument
                | C::Fatal
                | C::Fenced
                | C::ProducerFenced
        )
    )
}

/// Runs `op` until it succeeds, fails with an error that is not transient, or `within` has passed
/// (then the last error is returned): metadata, watermark and offset requests that a broker's loss
/// or a leader's move fails for a few seconds.
pub fn retry_transient<T>(
    within: Duration,
    what: &str,
    mut op: impl FnMut() -> KafkaResult<T>,
) -> KafkaResult<T> {
    let deadline = Instant::now() + within;
    loop {
        match op() {
            Err(e) if is_transient(&e) && Instant::now() < deadline => {
                tracing::warn!(error = %e, what, "transient Kafka error; retrying");
                std::thread::sleep(TRANSIENT_RETRY_PAUSE);
            }
            other => return other,
        }
    }
}

/// Low and high watermarks by partition: the first offset still in the topic and the next one to
/// be written (of committed records, for a read_committed consumer).
pub type Watermarks = BTreeMap<i32, (i64, i64)>;

/// The partitions of `topic`, retrying transient errors; empty when the topic does not exist.
pub fn topic_partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Vec<i32>> {
    let metadata = retry_transient(timeout, topic, || {
        client.fetch_metadata(Some(topic), timeout)
    })?;
    Ok(partition_ids(&metadata, topic))
}

/// The partitions of `topic` in a metadata answer; empty when the answer says it does not exist.
pub fn partition_ids(metadata: &Metadata, topic: &str) -> Vec<i32> {
    metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect()
}

/// The partitions of `topic` with their watermarks, retrying transient errors; empty when the
/// topic does not exist.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> KafkaResult<Watermarks> {
    topic_partitions(consumer.client(), topic, timeout)?
        .into_iter()
        .map(|p| {
            retry_transient(timeout, topic, || {
                consumer.fetch_watermarks(topic, p, timeout)
            })
            .map(|marks| (p, marks))
        })
        .collect()
}

const TRANSIENT_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How long one-off requests go on retrying transient errors: a leader election after a broker's
/// loss takes seconds; this leaves room for a slow one without hiding a cluster that is gone.
pub const TRANSIENT_WINDOW: Duration = Duration::from_secs(60);

/// A client context that logs librdkafka's errors through `tracing`, except the end-of-partition
/// events that table readers ask for on purpose, and leaves statistics to whoever asked for them.
pub struct QuietContext;

impl ClientContext for QuietContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }

    fn stats(&self, _: rdkafka::Statistics) {}
}

impl ConsumerContext for QuietContext {}

pub fn log_client_error(error: KafkaError, reason: &str) {
    match error {
        KafkaError::PartitionEOF(_) => {}
        KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
        // Brokers going away and coming back is routine; librdkafka reconnects by itself.
        KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
        ) => tracing::warn!(%error, reason, "Kafka connection problem"),
        _ => tracing::error!(%error, reason, "Kafka client error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_waits_for_a_restore_within_its_bound_before_giving_its_partitions_away() {
        let config = activity_consumer(&KafkaArgs::plaintext("127.0.0.1:9092"), "g");
        let interval: u64 = config
            .get("max.poll.interval.ms")
            .and_then(|ms| ms.parse().ok())
            .expect("set");
        let restore = super::super::restore::RESTORE_TIMEOUT.as_millis() as u64;
        assert!(interval > restore, "{interval} ms <= {restore} ms");
    }

    #[test]
    fn the_loop_s_partition_queues_share_one_queue_s_fetch_ahead_bytes_and_overrides_win() {
        let kafka = KafkaArgs::plaintext("127.0.0.1:9092");
        let get = |config: &ClientConfig, key: &str| -> u64 {
            config.get(key).and_then(|v| v.parse().ok()).expect(key)
        };
        let six = split_queue_consumer(&kafka, "g", 6);
        assert_eq!(get(&six, "queued.max.messages.kbytes"), 65_536 / 12);
        assert_eq!(six.get("queued.min.messages"), None, "librdkafka's own");
        assert_eq!(six.get("isolation.level"), Some("read_committed"));
        let many = split_queue_consumer(&kafka, "g", 480);
        assert_eq!(get(&many, "queued.max.messages.kbytes"), 256);
        let mut tuned = kafka.clone();
        tuned
            .properties
            .push(("queued.max.messages.kbytes".into(), "4096".into()));
        assert_eq!(
            get(
                &split_queue_consumer(&tuned, "g", 6),
                "queued.max.messages.kbytes"
            ),
            4096
        );
    }

    #[test]
    fn a_broker_away_is_transient_and_a_refusal_is_not() {
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::NotCoordinator,
        ] {
            assert!(
                is_transient(&KafkaError::MessageConsumption(code)),
                "{code:?}"
            );
            assert!(is_transient(&KafkaError::MetadataFetch(code)), "{code:?}");
        }
        for code in [
            RDKafkaErrorCode::Authentication,
            RDKafkaErrorCode::SSL,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(
                !is_transient(&KafkaError::MessageConsumption(code)),
                "{code:?}"
            );
        }
        assert!(!is_transient(&KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }

    #[test]
    fn retry_transient_gives_up_on_a_refusal_at_once_and_on_a_broker_away_at_the_deadline() {
        let mut calls = 0;
        let refused: KafkaResult<()> = retry_transient(Duration::from_secs(60), "test", || {
            calls += 1;
            Err(KafkaError::MetadataFetch(RDKafkaErrorCode::Authentication))
        });
        assert!(refused.is_err());
        assert_eq!(calls, 1);
        let mut calls = 0;
        let recovered = retry_transient(Duration::from_secs(60), "test", || {
            calls += 1;
            if calls < 3 {
                Err(KafkaError::MetadataFetch(RDKafkaErrorCode::AllBrokersDown))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(recovered.unwrap(), 3);
    }
    /// The protocols and codecs the flags and docs offer are compiled in (rdkafka-sys features).
    #[test]
    fn librdkafka_is_built_with_every_protocol_and_codec_offered() {
        let native = rdkafka::ClientConfig::new()
            .create_native_config()
            .expect("a native config");
        let features = native.get("builtin.features").expect("builtin.features");
        for feature in [
            "ssl",
            "sasl_plain",
            "sasl_scram",
            "sasl_oauthbearer",
            "oidc",
            "gzip",
            "snappy",
            "lz4",
            "zstd",
        ] {
            assert!(
                features.split(',').any(|f| f == feature),
                "librdkafka lacks {feature}: {features}"
            );
        }
    }
}
