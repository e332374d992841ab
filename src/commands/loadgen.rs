//! `autoclaim loadgen`: a realistic, seeded workload, the tables first, then activity at a rate.
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use autoclaim::loadgen::{LoadOptions, LoadReport};
use autoclaim::pipeline::config::{KafkaArgs, Topics};
use autoclaim::scenario::ScenarioConfig;

#[derive(clap::Args)]
pub struct LoadgenArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    topics: Topics,
    #[arg(long, default_value_t = 200)]
    tenants: usize,
    #[arg(long, default_value_t = 100)]
    users_per_tenant: usize,
    /// Activity events to send (0: until stopped).
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Events per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Only activity (the tables were published before).
    #[arg(long)]
    skip_tables: bool,
    /// Encoding of the published values.
    #[arg(long, value_enum, default_value = "json")]
    format: autoclaim::wire::Format,
    /// Send every activity record to the partition after its tenant's, as a producer with
    /// another partitioner would, so that every record is routed (to measure routing).
    #[arg(long)]
    misplace_activity: bool,
}

impl LoadgenArgs {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        // Ctrl-C ends an endless run (--events 0) with the report of what was sent.
        let stop = autoclaim::signal::stop_on_signal("autoclaim-signals")?;
        let options = self.options();
        let report = autoclaim::loadgen::run(&self.kafka, &self.topics, &options, &|| {
            stop.load(Ordering::Relaxed)
        })?;
        eprintln!("{}", summary(&report));
        Ok(ExitCode::SUCCESS)
    }

    fn options(&self) -> LoadOptions {
        LoadOptions {
            scenario: ScenarioConfig {
                tenants: self.tenants,
                users_per_tenant: self.users_per_tenant,
                seed: self.seed,
                ..Default::default()
            },
            events: self.events,
            rate: self.rate,
            skip_tables: self.skip_tables,
            format: self.format,
            misplace_activity: self.misplace_activity,
        }
    }
}

fn summary(report: &LoadReport) -> String {
    format!(
        "loadgen: {} table records, {} events in {:.1}s ({:.0} events/s)",
        report.table_records,
        report.events,
        report.elapsed.as_secs_f64(),
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
    )
}
