//! Configuration of `autoclaim run`, from flags and `AUTOCLAIM_*` environment variables.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::security::{is_secret_property, SecurityArgs, SecurityError};
use crate::domain::catalog::{Catalog, CatalogError};
use crate::domain::claims::ClaimRules;
use crate::wire::Format;

/// The product catalog of a command that decides or validates.
#[derive(Args, Clone, Debug, Default)]
pub struct CatalogArgs {
    /// JSON file of products added to the two built-in ones (README, "Adding products"); checked
    /// at start, before any connection
    #[arg(long = "catalog", env = "AUTOCLAIM_CATALOG", value_name = "PATH")]
    pub catalog: Option<PathBuf>,
}

impl CatalogArgs {
    /// Installs the file's products as this process's catalog (the built-ins alone without a file);
    /// the number of products in the catalog.
    pub fn install(&self) -> Result<usize, CatalogError> {
        match &self.catalog {
            Some(path) => Catalog::install_file(path),
            None => Ok(Catalog::keys().count()),
        }
    }
}

/// Names of the topics the processor reads and writes.
#[derive(Args, Clone, Debug)]
pub struct Topics {
    /// Input: flow activity, keyed by tenant id.
    #[arg(
        long = "activity-topic",
        env = "AUTOCLAIM_ACTIVITY_TOPIC",
        default_value = "flow.activity.v1"
    )]
    pub activity: String,
    /// Input table: directory user snapshots, keyed by "<tenantId>/<userId>" (compacted).
    #[arg(
        long = "directory-topic",
        env = "AUTOCLAIM_DIRECTORY_TOPIC",
        default_value = "directory.users.v1"
    )]
    pub directory: String,
    /// Input table: licence inventory, keyed by "<tenantId>/<product>" (compacted).
    #[arg(
        long = "inventory-topic",
        env = "AUTOCLAIM_INVENTORY_TOPIC",
        default_value = "licensing.inventory.v1"
    )]
    pub inventory: String,
    /// Input table: tenant settings and policy versions (compacted).
    #[arg(
        long = "policies-topic",
        env = "AUTOCLAIM_POLICIES_TOPIC",
        default_value = "autoclaim.policies.v1"
    )]
    pub policies: String,
    /// Output: licence assignments, co-partitioned with activity; also the state changelog.
    #[arg(
        long = "assignments-topic",
        env = "AUTOCLAIM_ASSIGNMENTS_TOPIC",
        default_value = "autoclaim.assignments.v1"
    )]
    pub assignments: String,
    /// Output: claims that could not be fulfilled.
    #[arg(
        long = "failures-topic",
        env = "AUTOCLAIM_FAILURES_TOPIC",
        default_value = "autoclaim.failures.v1"
    )]
    pub failures: String,
    /// Output: records that could not be read, with the reason in headers.
    #[arg(
        long = "dlq-topic",
        env = "AUTOCLAIM_DLQ_TOPIC",
        default_value = "autoclaim.dlq.v1"
    )]
    pub dead_letters: String,
    /// Output of the admin API: every change made through it, with who made it and the versions
    /// before and after (never compacted; written in the same transaction as the change).
    #[arg(
        long = "audit-topic",
        env = "AUTOCLAIM_AUDIT_TOPIC",
        default_value = "autoclaim.audit.v1"
    )]
    pub audit: String,
    /// Internal: activity records that arrived on a partition that does not own their tenant,
    /// routed to the one that does (co-partitioned with activity; written and read only by
    /// autoclaim).
    #[arg(
        long = "repartition-topic",
        env = "AUTOCLAIM_REPARTITION_TOPIC",
        default_value = "autoclaim.activity-repartition.v1"
    )]
    pub repartition: String,
    /// Output: pending claims, each change of one (co-partitioned with activity; compacted, keyed
    /// by "<tenantId>/<userId>/<need>"); also the changelog pending claims are restored from.
    #[arg(
        long = "claims-topic",
        env = "AUTOCLAIM_CLAIMS_TOPIC",
        default_value = "autoclaim.claims.v1"
    )]
    pub claims: String,
    /// Output: notices for tenants' administrators (co-partitioned with activity).
    #[arg(
        long = "notices-topic",
        env = "AUTOCLAIM_NOTICES_TOPIC",
        default_value = "autoclaim.notices.v1"
    )]
    pub notices: String,
    /// Internal: the directory rows copied from the directory topic, each to the partition number
    /// that owns its tenant (co-partitioned with activity; compacted, keyed as the directory
    /// topic), so that a partition's restore reads only its own share of the directory.
    #[arg(
        long = "directory-by-partition-topic",
        env = "AUTOCLAIM_DIRECTORY_BY_PARTITION_TOPIC",
        default_value = "autoclaim.directory-by-partition.v1"
    )]
    pub directory_by_partition: String,
}

impl Topics {
    /// These topics as the command-line flags that name them, for starting another autoclaim
    /// process (`run`, `verify`) on the same topics.
    pub fn command_line_args(&self) -> Vec<String> {
        [
            ("--activity-topic", &self.activity),
            ("--directory-topic", &self.directory),
            ("--inventory-topic", &self.inventory),
            ("--policies-topic", &self.policies),
            ("--assignments-topic", &self.assignments),
            ("--failures-topic", &self.failures),
            ("--dlq-topic", &self.dead_letters),
            ("--audit-topic", &self.audit),
            ("--repartition-topic", &self.repartition),
            ("--claims-topic", &self.claims),
            ("--notices-topic", &self.notices),
            (
                "--directory-by-partition-topic",
                &self.directory_by_partition,
            ),
        ]
        .into_iter()
        .flat_map(|(flag, topic)| [flag.to_owned(), topic.clone()])
        .collect()
    }
}

/// Connection to the Kafka cluster.
#[derive(Args, Clone, Default)]
pub struct KafkaArgs {
    /// Bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "AUTOCLAIM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[command(flatten)]
    pub security: SecurityArgs,
    /// Extra librdkafka properties for every client, key=value (repeat the flag for more; a value
    /// may contain commas, e.g. debug=broker,topic), e.g. timeouts or `compression.type`. In the
    /// environment variable, one property per line. TLS and SASL have flags of their own
    /// (--kafka-security-protocol, ...).
    // Lines, not commas, separate properties in the environment: librdkafka values (debug contexts,
    // broker lists) contain commas, never newlines.
    #[arg(long = "kafka-property", env = "AUTOCLAIM_KAFKA_PROPERTIES", value_delimiter = '\n', value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

impl KafkaArgs {
    /// Plain connection to these brokers, with no extra properties.
    pub fn plaintext(brokers: impl Into<String>) -> KafkaArgs {
        KafkaArgs {
            brokers: brokers.into(),
            ..KafkaArgs::default()
        }
    }

    /// Checks the security flags and turns them into properties ahead of the operator's own, so
    /// that every client made from the result gets them. Done once, where the flags are parsed.
    pub fn resolve(mut self) -> Result<KafkaArgs, SecurityError> {
        // Blank lines of the environment variable (a trailing newline) are no property.
        self.properties.retain(|(key, _)| !key.is_empty());
        let mut properties = self.security.properties(&self.properties)?;
        properties.extend(self.properties);
        Ok(KafkaArgs {
            brokers: self.brokers,
            security: SecurityArgs::default(),
            properties,
        })
    }

    /// Whether `resolve` has nothing left to do (clients are made only from resolved arguments).
    pub fn is_resolved(&self) -> bool {
        self.security == SecurityArgs::default()
    }
}

/// Values of secret properties (passwords, keys) are never printed.
impl std::fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_property(k) {
                    "<redacted>"
                } else {
                    v
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaArgs")
            .field("brokers", &self.brokers)
            .field("security", &self.security)
            .field("properties", &properties)
            .finish()
    }
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    if s.trim().is_empty() {
        return Ok((String::new(), String::new()));
    }
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// Codecs of produced batches. Inputs in any of them are read whatever this is. zstd by default:
/// measured end to end (BENCHMARKS.md), its outputs took half the bytes of lz4's and a tenth of
/// uncompressed ones, for 2-5% more CPU per event than lz4.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    #[default]
    Zstd,
}

impl Compression {
    pub fn property(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How created topics are replicated.
#[derive(Args, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicationArgs {
    /// Replication factor of created topics. Default: 3, or the number of brokers if fewer.
    #[arg(long, env = "AUTOCLAIM_REPLICATION_FACTOR")]
    pub replication_factor: Option<i32>,
    /// `min.insync.replicas` of created topics: how many replicas must have a write before it is
    /// acknowledged. Default: 2 with three or more replicas (one broker may be lost), else 1.
    #[arg(long, env = "AUTOCLAIM_MIN_INSYNC_REPLICAS")]
    pub min_insync_replicas: Option<i32>,
}

/// How long created topics keep their records, where the operator chooses.
#[derive(Args, Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionArgs {
    /// `retention.ms` of the audit topic when it is created (e.g. 365d, 2years): how far back the
    /// admin API's audit log reaches. The topic is never compacted.
    #[arg(id = "audit_retention", long = "audit-retention", value_name = "AUDIT_RETENTION", env = "AUTOCLAIM_AUDIT_RETENTION", value_parser = humantime::parse_duration, default_value = "365d")]
    pub audit: Duration,
}

/// A year of audit records, unless the operator chooses otherwise.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(365 * 24 * 3600);

impl Default for RetentionArgs {
    fn default() -> Self {
        RetentionArgs {
            audit: DEFAULT_AUDIT_RETENTION,
        }
    }
}

/// How far an activity's event time may be ahead of the time its record was written: the same for
/// `run`, `replay` and `verify`, so that they refuse the same records.
#[derive(Args, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventTimeArgs {
    /// How much later than the time its record was written to Kafka (the record's timestamp) an
    /// activity's occurredAt may be, for producers' clocks that run ahead (e.g. 5m, 30s). A later
    /// event is dead-lettered with code event_time_in_future: decided, it would be judged by
    /// policies not yet in force and hold a seat until its date. Records without a timestamp are
    /// not bounded, nor are events in the past. Give run, replay and verify the same value.
    #[arg(long = "max-event-time-skew", value_name = "MAX_EVENT_TIME_SKEW", env = "AUTOCLAIM_MAX_EVENT_TIME_SKEW", value_parser = humantime::parse_duration, default_value = "5m")]
    pub max_skew: Duration,
}

impl Default for EventTimeArgs {
    fn default() -> Self {
        EventTimeArgs {
            max_skew: crate::domain::activity::DEFAULT_MAX_EVENT_TIME_SKEW,
        }
    }
}

/// How long pending claims wait and how often notices repeat: the same for `run` and `replay`, so
/// that they decide the same.
#[derive(Args, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimArgs {
    /// How long a claim refused for want of a seat stays pending without another event for it
    /// (e.g. 30d, 12h); it is assigned if a seat frees up in that time, and expires after.
    #[arg(long = "pending-claim-ttl", env = "AUTOCLAIM_PENDING_CLAIM_TTL", value_parser = humantime::parse_duration, default_value = "30d")]
    pub ttl: Duration,
    /// The least time between two SEATS_EXHAUSTED digests (or LOW_SEATS notices) of one tenant's
    /// product, by event time.
    #[arg(long = "notice-digest-window", env = "AUTOCLAIM_NOTICE_DIGEST_WINDOW", value_parser = humantime::parse_duration, default_value = "1h")]
    pub digest_window: Duration,
}

impl Default for ClaimArgs {
    fn default() -> Self {
        let rules = ClaimRules::default();
        ClaimArgs {
            ttl: rules.ttl,
            digest_window: rules.digest_window,
        }
    }
}

impl ClaimArgs {
    pub fn rules(&self) -> ClaimRules {
        ClaimRules {
            ttl: self.ttl,
            digest_window: self.digest_window,
        }
    }
}

/// Everything `autoclaim run` needs.
#[derive(Args, Clone, Debug)]
pub struct RunConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub topics: Topics,
    /// Consumer group of the processor's instances.
    #[arg(long, env = "AUTOCLAIM_GROUP_ID", default_value = "autoclaim")]
    pub group_id: String,
    /// Transactional id of this instance. Stable across restarts of the same instance, unique among
    /// running instances; a new instance with the same id fences the old one. Default: the group id
    /// and the host name.
    #[arg(long, env = "AUTOCLAIM_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,
    /// How long a settings or policy change takes to come into force (e.g. 2h, 30s).
    #[arg(long, env = "AUTOCLAIM_PROPAGATION_DELAY", value_parser = humantime::parse_duration, default_value = "2h")]
    pub propagation_delay: Duration,
    #[command(flatten)]
    pub event_time: EventTimeArgs,
    #[command(flatten)]
    pub claims: ClaimArgs,
    /// Encoding of the records the processor writes.
    #[arg(
        long,
        env = "AUTOCLAIM_OUTPUT_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub output_format: Format,
    /// librdkafka's `transaction.timeout.ms`, which also bounds how long an output may wait for
    /// delivery: long enough to ride out a broker failover. A crashed instance's open transaction
    /// holds back read_committed readers of its partitions (and a restore) this long.
    #[arg(long, env = "AUTOCLAIM_TRANSACTION_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub transaction_timeout: Duration,
    /// Compression of the records the processor writes (librdkafka's `compression.type`).
    #[arg(
        long,
        env = "AUTOCLAIM_OUTPUT_COMPRESSION",
        value_enum,
        default_value_t = Compression::default()
    )]
    pub output_compression: Compression,
    /// Threads that decide and publish: each takes the partitions whose number falls to it, and
    /// all write into the one transaction of the batch. The loop's own thread is one of them.
    #[arg(long, env = "AUTOCLAIM_PROCESSING_THREADS", default_value_t = 1, value_parser = parse_threads)]
    pub processing_threads: usize,
    /// A transaction commits after this many input records...
    #[arg(long, env = "AUTOCLAIM_BATCH_MAX_RECORDS", default_value_t = 10_000)]
    pub batch_max_records: usize,
    /// ...or this long after its first record, whichever comes first.
    #[arg(long, env = "AUTOCLAIM_BATCH_MAX_TIME", value_parser = humantime::parse_duration, default_value = "100ms")]
    pub batch_max_time: Duration,
    /// A transaction also commits as soon as no more input is waiting, once it is this old: under
    /// a backlog batches fill up (throughput); at moderate rates each commit takes what arrived
    /// during the one before (latency). Set it to --batch-max-time to commit on the bounds only.
    #[arg(long, env = "AUTOCLAIM_BATCH_MIN_TIME", value_parser = humantime::parse_duration, default_value = "0ms")]
    pub batch_min_time: Duration,
    /// How long a newly assigned partition waits for its committed offset while a transaction holds
    /// it (a crashed instance's, which the broker aborts after its transaction.timeout.ms), before
    /// the service stops with an error naming the partitions.
    #[arg(long, env = "AUTOCLAIM_STABLE_OFFSETS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "120s")]
    pub stable_offsets_timeout: Duration,
    /// How long an owned activity partition may have committed input waiting while nothing of it is
    /// consumed (a batch that cannot be decompressed or parsed, a fetch that keeps failing) before
    /// the service stops with an error naming it. It is logged, counted and turns /readyz red at a
    /// quarter of this (10 s to 60 s).
    #[arg(long, env = "AUTOCLAIM_STALL_TIMEOUT", value_parser = humantime::parse_duration, default_value = "120s")]
    pub stall_timeout: Duration,
    /// How long the processing loop may go without coming round (blocked in a Kafka call) before
    /// /healthz and /readyz turn red; after twice this the process exits with status 2 so that it
    /// is restarted. Restores and the wait for held offsets have bounds of their own and are not
    /// counted.
    #[arg(long, env = "AUTOCLAIM_WATCHDOG_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub watchdog_timeout: Duration,
    /// Address of the HTTP server (/healthz, /readyz).
    #[arg(long, env = "AUTOCLAIM_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Create missing topics at start (partitions, compaction and retention as the processor needs).
    #[arg(long, env = "AUTOCLAIM_CREATE_TOPICS")]
    pub create_topics: bool,
    /// Partitions of created activity, assignments, failures and dead-letter topics.
    #[arg(long, env = "AUTOCLAIM_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    #[command(flatten)]
    pub replication: ReplicationArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

impl RunConfig {
    pub fn transactional_id(&self) -> String {
        self.transactional_id.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|| "local".to_owned());
            format!("{}-{host}", self.group_id)
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{KafkaArgs, Topics};

    #[derive(Parser)]
    struct KafkaOnly {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn a_property_value_may_contain_commas() {
        let parsed = KafkaOnly::try_parse_from([
            "autoclaim",
            "--kafka-property",
            "debug=broker,topic",
            "--kafka-property",
            "client.rack=eu-1a",
        ])
        .expect("the flags parse");
        let resolved = parsed.kafka.resolve().unwrap();
        assert!(resolved
            .properties
            .contains(&("debug".into(), "broker,topic".into())));
        assert!(resolved
            .properties
            .contains(&("client.rack".into(), "eu-1a".into())));
    }

    #[test]
    fn the_environment_variable_holds_one_property_per_line() {
        // One test sets the variable: the process environment is shared by the test threads.
        std::env::set_var(
            "AUTOCLAIM_KAFKA_PROPERTIES",
            "debug=broker,topic\nsocket.timeout.ms = 5000\n",
        );
        let parsed = KafkaOnly::try_parse_from(["autoclaim"]);
        std::env::remove_var("AUTOCLAIM_KAFKA_PROPERTIES");
        let resolved = parsed
            .expect("the variable parses")
            .kafka
            .resolve()
            .unwrap();
        let properties: Vec<(&str, &str)> = resolved
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            properties,
            vec![("debug", "broker,topic"), ("socket.timeout.ms", "5000")]
        );
    }

    #[derive(Parser)]
    struct TopicsOnly {
        #[command(flatten)]
        topics: Topics,
    }

    #[test]
    fn command_line_args_name_every_topic_by_its_own_flag() {
        let topics = Topics {
            activity: "a".into(),
            directory: "d".into(),
            inventory: "i".into(),
            policies: "p".into(),
            assignments: "as".into(),
            failures: "f".into(),
            dead_letters: "dl".into(),
            audit: "au".into(),
            repartition: "r".into(),
            claims: "c".into(),
            notices: "n".into(),
            directory_by_partition: "dp".into(),
        };
        let parsed = TopicsOnly::try_parse_from(
            std::iter::once("autoclaim".to_owned()).chain(topics.command_line_args()),
        )
        .expect("the flags parse")
        .topics;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{topics:?}"),
            "parsing the args gives the same topics back"
        );
    }
}

#[cfg(test)]
mod event_time_tests {
    use clap::Parser;

    use super::EventTimeArgs;

    #[derive(Parser)]
    struct EventTimeOnly {
        #[command(flatten)]
        event_time: EventTimeArgs,
    }

    #[test]
    fn the_flags_default_is_the_domains_and_it_reads_humantime() {
        let parse = |args: &[&str]| {
            EventTimeOnly::try_parse_from(std::iter::once("autoclaim").chain(args.iter().copied()))
                .map(|p| p.event_time)
        };
        // The variable of the caller's environment would decide otherwise.
        if std::env::var_os("AUTOCLAIM_MAX_EVENT_TIME_SKEW").is_none() {
            assert_eq!(parse(&[]).unwrap(), EventTimeArgs::default());
        }
        let parsed = parse(&["--max-event-time-skew", "90s"]).unwrap();
        assert_eq!(parsed.max_skew, std::time::Duration::from_secs(90));
        assert!(parse(&["--max-event-time-skew", "soon"]).is_err());
    }
}

#[cfg(test)]
mod kafka_args_tests {
    use clap::Parser;

    use super::KafkaArgs;

    #[derive(Parser)]
    struct KafkaOnly {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn resolved_arguments_carry_the_security_properties_and_hide_the_secrets() {
        let parsed = KafkaOnly::try_parse_from([
            "autoclaim",
            "--brokers",
            "b:9093",
            "--kafka-sasl-mechanism",
            "scram-sha-256",
            "--kafka-sasl-username",
            "svc",
            "--kafka-sasl-password",
            "pa55word",
            "--kafka-property",
            "client.id=me",
        ])
        .expect("the flags parse")
        .kafka;
        assert!(!parsed.is_resolved());
        let resolved = parsed.resolve().expect("valid");
        assert!(resolved.is_resolved());
        let keys: Vec<&str> = resolved
            .properties
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "security.protocol",
                "sasl.mechanism",
                "sasl.username",
                "sasl.password",
                "client.id"
            ],
            "the flags' properties come first; the operator's own after"
        );
        let shown = format!("{resolved:?}");
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(
            shown.contains("svc") && shown.contains("client.id"),
            "{shown}"
        );
    }
}

#[cfg(test)]
mod retention_tests {
    use clap::Parser;

    use super::{RetentionArgs, DEFAULT_AUDIT_RETENTION};

    #[derive(Parser)]
    struct RetentionOnly {
        #[command(flatten)]
        retention: RetentionArgs,
    }

    #[test]
    fn the_audit_retention_is_a_year_unless_the_flag_says_otherwise() {
        let parse = |args: &[&str]| {
            RetentionOnly::try_parse_from(std::iter::once("autoclaim").chain(args.iter().copied()))
                .map(|p| p.retention)
        };
        if std::env::var_os("AUTOCLAIM_AUDIT_RETENTION").is_none() {
            assert_eq!(parse(&[]).unwrap().audit, DEFAULT_AUDIT_RETENTION);
            assert_eq!(RetentionArgs::default().audit, DEFAULT_AUDIT_RETENTION);
        }
        let two_years = parse(&["--audit-retention", "730d"]).unwrap();
        assert_eq!(two_years.audit, 2 * DEFAULT_AUDIT_RETENTION);
        assert!(parse(&["--audit-retention", "forever"]).is_err());
    }
}

/// `--processing-threads`: 1 to 64.
fn parse_threads(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ 1..=64) => Ok(n),
        _ => Err(format!("{text:?} is not a number of threads from 1 to 64")),
    }
}
