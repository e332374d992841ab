//! `autoclaim create-topics`: the topics the processor uses, with their partitions and configs.
use std::process::ExitCode;
use std::time::Duration;

use autoclaim::pipeline::config::{KafkaArgs, ReplicationArgs, RetentionArgs, Topics};
use autoclaim::pipeline::topics;

#[derive(clap::Args)]
pub struct CreateTopicsArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    topics: Topics,
    /// Partitions of the activity, directory and output topics.
    #[arg(long, env = "AUTOCLAIM_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    #[command(flatten)]
    replication: ReplicationArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Propagation delay the policies topic must keep superseded versions for.
    #[arg(long, env = "AUTOCLAIM_PROPAGATION_DELAY", value_parser = humantime::parse_duration, default_value = "2h")]
    propagation_delay: Duration,
}

impl CreateTopicsArgs {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new()?;
        let (created, replication) = runtime.block_on(topics::create_missing_topics(
            &self.kafka,
            &self.topics,
            self.partitions,
            self.replication,
            self.propagation_delay,
            self.retention,
        ))?;
        eprintln!(
            "created {} topics ({replication}): {}",
            created.len(),
            created.join(", ")
        );
        let partitions = topics::check_topics(&self.kafka, &self.topics)?;
        eprintln!("topics ready: activity, assignments and repartition co-partitioned over {partitions} partitions");
        Ok(ExitCode::SUCCESS)
    }
}
