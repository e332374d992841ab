//! `autoclaim replay`: input records applied in order, one Decision printed a line (one per activity,
//! and one per waiting claim decided again).
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use autoclaim::pipeline::config::{CatalogArgs, ClaimArgs, EventTimeArgs};
use autoclaim::replay::Replayer;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// File of JSON lines; `-` for standard input.
    #[arg(long, default_value = "-")]
    input: String,
    /// How long a settings or policy change takes to come into force (e.g. 2h, 30s).
    #[arg(long, env = "AUTOCLAIM_PROPAGATION_DELAY", value_parser = humantime::parse_duration, default_value = "2h")]
    propagation_delay: Duration,
    // Bounds an activity's occurredAt by its line's writtenAt (lines without one are not bounded).
    #[command(flatten)]
    event_time: EventTimeArgs,
    #[command(flatten)]
    claims: ClaimArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

impl ReplayArgs {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let mut replayer = Replayer::new(self.propagation_delay)
            .with_max_event_time_skew(self.event_time.max_skew)
            .with_claim_rules(self.claims.rules());
        let input = super::input_lines(&self.input)?;
        let summary = replayer
            .run(input, std::io::stdout().lock(), std::io::stderr().lock())
            .context("replay failed")?;
        eprintln!(
            "replay: {} lines, {} decisions, {} rejected",
            summary.lines, summary.decisions, summary.rejected
        );
        Ok(if summary.rejected > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}
