//! The `autoclaim` command line.
use std::fs::File;
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use autoclaim::replay::Replayer;

#[derive(Parser)]
#[command(
    name = "autoclaim",
    version,
    about = "Assigns Power Automate licences through autoclaim policies, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply input records (JSON lines of ReplayRecord) in order and print one Decision a line.
    /// Exits with 1 if any line was rejected (each is reported on stderr with its line number).
    Replay {
        /// File of JSON lines; `-` for standard input.
        #[arg(long, default_value = "-")]
        input: String,
        /// How long a settings or policy change takes to come into force (e.g. 2h, 30s).
        #[arg(long, env = "AUTOCLAIM_PROPAGATION_DELAY", value_parser = humantime::parse_duration, default_value = "2h")]
        propagation_delay: Duration,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("autoclaim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay {
            input,
            propagation_delay,
        } => {
            let mut replayer = Replayer::new(propagation_delay);
            let stdout = io::stdout().lock();
            let stderr = io::stderr().lock();
            let summary = if input == "-" {
                replayer.run(io::stdin().lock(), stdout, stderr)
            } else {
                let path = PathBuf::from(&input);
                let file =
                    File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
                replayer.run(BufReader::new(file), stdout, stderr)
            }
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
}
