//! Topics of a bench run: names, creation, deletion.
use std::time::Duration;

use anyhow::bail;
use autoclaim::pipeline::config::{KafkaArgs, Topics};
use autoclaim::pipeline::{clients, topics};
use rdkafka::error::RDKafkaErrorCode;

pub(crate) fn topic_set(prefix: &str, tables: &str, outputs: &str, activity: &str) -> Topics {
    Topics {
        activity: format!("{prefix}.{activity}.activity"),
        directory: format!("{prefix}.{tables}.directory"),
        inventory: format!("{prefix}.{tables}.inventory"),
        policies: format!("{prefix}.{tables}.policies"),
        assignments: format!("{prefix}.{outputs}.assignments"),
        failures: format!("{prefix}.{outputs}.failures"),
        dead_letters: format!("{prefix}.{outputs}.dlq"),
        audit: format!("{prefix}.{tables}.audit"),
        repartition: format!("{prefix}.{outputs}.repartition"),
        claims: format!("{prefix}.{outputs}.claims"),
        notices: format!("{prefix}.{outputs}.notices"),
        // The copy depends on the activity partition count, not on the run.
        directory_by_partition: format!("{prefix}.{tables}.{activity}.directory-by-partition"),
    }
}

pub(crate) struct Cluster {
    pub(crate) kafka: KafkaArgs,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) created: Vec<String>,
}

impl Cluster {
    pub(crate) fn create(&mut self, topics: &Topics, partitions: i32) -> anyhow::Result<()> {
        let created = self.runtime.block_on(topics::create_missing_topics(
            &self.kafka,
            topics,
            partitions,
            Default::default(),
            Duration::from_secs(7200),
            Default::default(),
        ))?;
        self.created.extend(created.0);
        topics::check_topics(&self.kafka, topics)?;
        Ok(())
    }

    pub(crate) fn create_plain(&mut self, name: &str, partitions: i32) -> anyhow::Result<()> {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            clients::admin(&self.kafka).create()?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(-1));
        let results = self.runtime.block_on(admin.create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))?;
        for r in results {
            match r {
                Ok(name) => self.created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => bail!("cannot create {t}: {e}"),
            }
        }
        Ok(())
    }

    pub(crate) fn delete(&mut self, names: &[String]) {
        use rdkafka::admin::{AdminClient, AdminOptions};
        if names.is_empty() {
            return;
        }
        let Ok(admin) = clients::admin(&self.kafka).create::<AdminClient<_>>() else {
            return;
        };
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = self.runtime.block_on(admin.delete_topics(
            &refs,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(60))),
        ));
        self.created.retain(|c| !names.contains(c));
    }
}
