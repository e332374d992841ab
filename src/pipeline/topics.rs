//! Topic set-up and the start-up checks: every topic exists, and activity, assignments and the
//! repartition topic are co-partitioned (one partition number holds one set of tenants in each).
use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use thiserror::Error;

use super::clients;
use super::config::{KafkaArgs, ReplicationArgs, RetentionArgs, Topics};

const METADATA_TIMEOUT: Duration = Duration::from_secs(15);
/// Assignments must stay readable for the 90-day report.
pub const ASSIGNMENTS_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);
/// Kafka's default retention, which the activity topic is created with too.
pub const REPARTITION_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Error)]
pub enum TopicError {
    #[error("cannot read cluster metadata from {brokers}: {source}")]
    Metadata {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {0} does not exist (create it, or start with --create-topics)")]
    Missing(String),
    #[error("topics {activity} ({activity_partitions} partitions) and {other} ({other_partitions} partitions) must have the same number of partitions: {why}")]
    NotCoPartitioned {
        activity: String,
        activity_partitions: usize,
        other: String,
        other_partitions: usize,
        why: &'static str,
    },
    #[error("topic {topic} has {partitions} partitions; it must have one: {why}")]
    NotOnePartition {
        topic: String,
        partitions: usize,
        why: &'static str,
    },
    #[error("cannot create topic {topic}: {reason}")]
    Create { topic: String, reason: String },
    #[error("cannot create topics: {0}")]
    Replication(String),
}

/// A client of the cluster's metadata (a consumer or the admin client), with the cluster named
/// when it cannot be created.
fn admin_client<C: rdkafka::config::FromClientConfig>(kafka: &KafkaArgs) -> Result<C, TopicError> {
    clients::admin(kafka)
        .create()
        .map_err(|source| TopicError::Metadata {
            brokers: kafka.brokers.clone(),
            source,
        })
}

/// Partition counts of the named topics that exist.
pub fn partition_counts(
    kafka: &KafkaArgs,
    names: &[&str],
) -> Result<HashMap<String, usize>, TopicError> {
    let consumer: BaseConsumer = admin_client(kafka)?;
    let metadata = clients::retry_transient(clients::TRANSIENT_WINDOW, "topic metadata", || {
        consumer.fetch_metadata(None, METADATA_TIMEOUT)
    })
    .map_err(|source| TopicError::Metadata {
        brokers: kafka.brokers.clone(),
        source,
    })?;
    Ok(names
        .iter()
        .map(|name| (*name, clients::partition_ids(&metadata, name).len()))
        .filter(|(_, count)| *count > 0)
        .map(|(name, count)| (name.to_owned(), count))
        .collect())
}

/// How long a topic missing from the metadata is looked for again: one created a moment ago (by
/// `create-topics` just before the service starts) may not be in every broker's metadata yet.
const NEW_TOPIC_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The partition counts of `names`, asked again for up to `NEW_TOPIC_GRACE` while some are missing.
fn counts_once_all_known(
    kafka: &KafkaArgs,
    names: &[&str],
) -> Result<HashMap<String, usize>, TopicError> {
    let deadline = std::time::Instant::now() + NEW_TOPIC_GRACE;
    loop {
        let counts = partition_counts(kafka, names)?;
        let all_known = names.iter().all(|n| counts.contains_key(*n));
        if all_known || std::time::Instant::now() >= deadline {
            return Ok(counts);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Checks that every topic exists, that activity, assignments and the repartition topic are
/// co-partitioned, and that the audit topic has one partition; returns the number of activity
/// partitions.
pub fn check_topics(kafka: &KafkaArgs, topics: &Topics) -> Result<i32, TopicError> {
    let names = all_names(topics);
    let counts = counts_once_all_known(kafka, &names)?;
    for name in &names {
        if !counts.contains_key(*name) {
            return Err(TopicError::Missing((*name).to_owned()));
        }
    }
    let activity_partitions = counts[&topics.activity];
    let co_partitioned = [
        (
            &topics.assignments,
            "assignments are written to the partition number of the activity they come from",
        ),
        (
            &topics.repartition,
            "a routed record goes to the partition number that owns its tenant",
        ),
        (
            &topics.claims,
            "pending claims are written to the partition number of their tenant and restored from it",
        ),
        (
            &topics.notices,
            "notices are written to the partition number of their tenant and restored from it",
        ),
        (
            &topics.directory_by_partition,
            "directory rows are copied to the partition number of their tenant and restored from it",
        ),
    ];
    for (other, why) in co_partitioned {
        if counts[other] != activity_partitions {
            return Err(TopicError::NotCoPartitioned {
                activity: topics.activity.clone(),
                activity_partitions,
                other: other.clone(),
                other_partitions: counts[other],
                why,
            });
        }
    }
    if counts[&topics.audit] != 1 {
        return Err(TopicError::NotOnePartition {
            topic: topics.audit.clone(),
            partitions: counts[&topics.audit],
            why: "the audit log's order is the order of its one partition",
        });
    }
    Ok(activity_partitions as i32)
}

fn all_names(topics: &Topics) -> Vec<&str> {
    vec![
        &topics.activity,
        &topics.directory,
        &topics.inventory,
        &topics.policies,
        &topics.assignments,
        &topics.failures,
        &topics.dead_letters,
        &topics.audit,
        &topics.repartition,
        &topics.claims,
        &topics.notices,
        &topics.directory_by_partition,
    ]
}

/// How one topic is created.
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub configs: Vec<(&'static str, String)>,
}

/// How each topic is created: partitions and configs.
pub fn topic_specs(
    topics: &Topics,
    partitions: i32,
    propagation_delay: Duration,
    retention: RetentionArgs,
) -> Vec<TopicSpec> {
    let compacted = || vec![("cleanup.policy", "compact".to_owned())];
    // Superseded policy versions must stay until the version after them is in force.
    let policy_lag_ms = (propagation_delay.as_millis() as u64).max(60_000) * 2;
    let retained = || {
        vec![
            ("cleanup.policy", "delete".to_owned()),
            (
                "retention.ms",
                ASSIGNMENTS_RETENTION.as_millis().to_string(),
            ),
        ]
    };
    let spec = |name: &String, partitions: i32, configs| TopicSpec {
        name: name.clone(),
        partitions,
        configs,
    };
    let mut policies = compacted();
    policies.push(("min.compaction.lag.ms", policy_lag_ms.to_string()));
    // A directory row that reflected an own assignment must outlive the assignment's changelog
    // record: a restore that met only a later row without the product could not tell a removal
    // from a directory that has not caught up, and would count the assignment as held again.
    // The same holds for the copy a restore reads.
    let directory = || {
        let mut directory = compacted();
        directory.push((
            "min.compaction.lag.ms",
            ASSIGNMENTS_RETENTION.as_millis().to_string(),
        ));
        directory
    };
    vec![
        spec(&topics.activity, partitions, vec![]),
        spec(&topics.directory, partitions, directory()),
        spec(&topics.directory_by_partition, partitions, directory()),
        spec(&topics.inventory, 1, compacted()),
        spec(&topics.policies, 1, policies),
        spec(&topics.assignments, partitions, retained()),
        spec(&topics.failures, partitions, retained()),
        spec(&topics.dead_letters, partitions, retained()),
        // The latest change of each claim is kept (compaction) for as long as the changelog:
        // longer than a claim waits (--pending-claim-ttl, 30 days by default).
        spec(
            &topics.claims,
            partitions,
            vec![
                ("cleanup.policy", "compact,delete".to_owned()),
                (
                    "retention.ms",
                    ASSIGNMENTS_RETENTION.as_millis().to_string(),
                ),
            ],
        ),
        spec(&topics.notices, partitions, retained()),
        // The audit log of administration outlives the versions compaction removes from the
        // policies topic. Admin changes are rare: one partition gives them one order.
        spec(
            &topics.audit,
            1,
            vec![
                ("cleanup.policy", "delete".to_owned()),
                ("retention.ms", retention.audit.as_millis().to_string()),
            ],
        ),
        // Routed records are read within moments; a week covers an instance down for days, and
        // `verify` reads them back as long as the activity they came from.
        spec(
            &topics.repartition,
            partitions,
            vec![
                ("cleanup.policy", "delete".to_owned()),
                (
                    "retention.ms",
                    REPARTITION_RETENTION.as_millis().to_string(),
                ),
            ],
        ),
    ]
}

/// The replication of created topics, as chosen for the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub factor: i32,
    pub min_insync: i32,
    pub brokers: usize,
}

impl Replication {
    /// What the operator asked for, with the defaults filled in for a cluster of `brokers`.
    pub fn choose(asked: ReplicationArgs, brokers: usize) -> Result<Replication, TopicError> {
        let available = brokers.max(1) as i32;
        let factor = asked.replication_factor.unwrap_or(available.min(3));
        let min_insync = asked
            .min_insync_replicas
            .unwrap_or(if factor >= 3 { 2 } else { 1 });
        if factor < 1 || factor > available {
            return Err(TopicError::Replication(format!(
                "replication factor {factor} needs 1 to {available} brokers (the cluster has {brokers})"
            )));
        }
        if min_insync < 1 || min_insync > factor {
            return Err(TopicError::Replication(format!(
                "min.insync.replicas {min_insync} must be between 1 and the replication factor {factor}"
            )));
        }
        Ok(Replication {
            factor,
            min_insync,
            brokers,
        })
    }
}

impl std::fmt::Display for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replication factor {}, min.insync.replicas {} ({} brokers)",
            self.factor, self.min_insync, self.brokers
        )
    }
}

/// Creates the topics that do not exist yet, replicated as `asked` (defaults for the cluster's
/// size). Existing topics are left as they are. Returns the topics created and the replication.
pub async fn create_missing_topics(
    kafka: &KafkaArgs,
    topics: &Topics,
    partitions: i32,
    asked: ReplicationArgs,
    propagation_delay: Duration,
    retention: RetentionArgs,
) -> Result<(Vec<String>, Replication), TopicError> {
    let replication = Replication::choose(asked, broker_count(kafka)?)?;
    let admin: AdminClient<DefaultClientContext> = admin_client(kafka)?;
    let specs = topic_specs(topics, partitions, propagation_delay, retention);
    let min_insync = replication.min_insync.to_string();
    let new_topics: Vec<NewTopic> = specs
        .iter()
        .map(|spec| {
            let mut topic = NewTopic::new(
                &spec.name,
                spec.partitions,
                TopicReplication::Fixed(replication.factor),
            )
            .set("min.insync.replicas", &min_insync);
            for (key, value) in &spec.configs {
                topic = topic.set(key, value);
            }
            topic
        })
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(|e| TopicError::Create {
            topic: "(all)".into(),
            reason: e.to_string(),
        })?;
    let mut created = Vec::new();
    for result in results {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok((created, replication))
}

/// Brokers the cluster's metadata lists.
fn broker_count(kafka: &KafkaArgs) -> Result<usize, TopicError> {
    let metadata_error = |source| TopicError::Metadata {
        brokers: kafka.brokers.clone(),
        source,
    };
    let consumer: BaseConsumer = admin_client(kafka)?;
    let metadata = clients::retry_transient(clients::TRANSIENT_WINDOW, "cluster metadata", || {
        consumer.fetch_metadata(None, METADATA_TIMEOUT)
    })
    .map_err(metadata_error)?;
    Ok(metadata.brokers().len())
}

#[cfg(test)]
mod replication_tests {
    use super::*;

    fn asked(factor: Option<i32>, min_insync: Option<i32>) -> ReplicationArgs {
        ReplicationArgs {
            replication_factor: factor,
            min_insync_replicas: min_insync,
        }
    }

    #[test]
    fn the_default_survives_losing_one_broker_where_the_cluster_allows() {
        let three = Replication::choose(asked(None, None), 5).unwrap();
        assert_eq!((three.factor, three.min_insync), (3, 2));
        let one = Replication::choose(asked(None, None), 1).unwrap();
        assert_eq!((one.factor, one.min_insync), (1, 1));
        let two = Replication::choose(asked(None, None), 2).unwrap();
        assert_eq!((two.factor, two.min_insync), (2, 1));
        assert_eq!(
            three.to_string(),
            "replication factor 3, min.insync.replicas 2 (5 brokers)"
        );
    }

    #[test]
    fn what_the_cluster_cannot_hold_is_refused() {
        assert!(Replication::choose(asked(Some(3), None), 1).is_err());
        assert!(Replication::choose(asked(Some(3), Some(4)), 3).is_err());
        assert!(Replication::choose(asked(Some(0), None), 3).is_err());
        let chosen = Replication::choose(asked(Some(3), Some(3)), 3).unwrap();
        assert_eq!((chosen.factor, chosen.min_insync), (3, 3));
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;

    fn config<'a>(specs: &'a [TopicSpec], topic: &str, key: &str) -> Option<&'a str> {
        let spec = specs.iter().find(|s| s.name == topic)?;
        spec.configs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn directory_rows_outlive_the_assignments_they_reflect() {
        let topics = Topics {
            activity: "a".into(),
            directory: "d".into(),
            inventory: "i".into(),
            policies: "p".into(),
            assignments: "o".into(),
            failures: "f".into(),
            dead_letters: "x".into(),
            audit: "au".into(),
            repartition: "r".into(),
            claims: "c".into(),
            notices: "n".into(),
            directory_by_partition: "dp".into(),
        };
        let specs = topic_specs(&topics, 6, Duration::from_secs(7200), Default::default());
        let retention: u128 = config(&specs, &topics.assignments, "retention.ms")
            .unwrap()
            .parse()
            .unwrap();
        for directory in [&topics.directory, &topics.directory_by_partition] {
            let lag: u128 = config(&specs, directory, "min.compaction.lag.ms")
                .unwrap()
                .parse()
                .unwrap();
            assert!(lag >= retention, "{directory}: {lag} < {retention}");
            assert_eq!(config(&specs, directory, "cleanup.policy"), Some("compact"));
        }
    }

    #[test]
    fn the_audit_log_is_never_compacted_and_kept_as_long_as_configured() {
        let topics = Topics {
            activity: "a".into(),
            directory: "d".into(),
            inventory: "i".into(),
            policies: "p".into(),
            assignments: "o".into(),
            failures: "f".into(),
            dead_letters: "x".into(),
            audit: "au".into(),
            repartition: "r".into(),
            claims: "c".into(),
            notices: "n".into(),
            directory_by_partition: "dp".into(),
        };
        let delay = Duration::from_secs(7200);
        let year = topic_specs(&topics, 6, delay, Default::default());
        let audit = year.iter().find(|s| s.name == "au").expect("an audit spec");
        assert_eq!(audit.partitions, 1, "one partition: one order of changes");
        assert_eq!(config(&year, "au", "cleanup.policy"), Some("delete"));
        assert_eq!(
            config(&year, "au", "retention.ms"),
            Some((365 * 24 * 3_600_000u64).to_string().as_str())
        );
        let two_days = RetentionArgs {
            audit: Duration::from_secs(2 * 24 * 3600),
        };
        let short = topic_specs(&topics, 6, delay, two_days);
        assert_eq!(config(&short, "au", "retention.ms"), Some("172800000"));
    }
}
