//! `autoclaim publish`: input records (JSON lines of ReplayRecord) sent to their topics, keyed as
//! the processor expects.
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use autoclaim::pipeline::config::{KafkaArgs, Topics};
use autoclaim::pipeline::publish::Publisher;
use autoclaim::wire::pb::ReplayRecord;

#[derive(clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    topics: Topics,
    /// File of JSON lines; `-` for standard input.
    #[arg(long, default_value = "-")]
    input: String,
    /// Encoding of the published values.
    #[arg(long, value_enum, default_value = "json")]
    format: autoclaim::wire::Format,
}

impl PublishArgs {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let publisher = Publisher::new(&self.kafka, &self.topics, self.format)?;
        let mut sent = 0u64;
        let mut progress = autoclaim::progress::Progress::on_stderr("published");
        for (i, line) in io::BufRead::lines(super::input_lines(&self.input)?).enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let record: ReplayRecord =
                serde_json::from_str(&line).with_context(|| format!("line {}", i + 1))?;
            publisher.send(&record)?;
            sent += 1;
            progress.add(1);
        }
        progress.finish();
        publisher.flush(Duration::from_secs(60))?;
        eprintln!("published {sent} records");
        Ok(ExitCode::SUCCESS)
    }
}
