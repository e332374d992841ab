//! The `autoclaim` command line.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use autoclaim::pipeline::config::{CatalogArgs, KafkaArgs};
use clap::{Parser, Subcommand};

mod commands;

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

// One value, parsed once at start: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the service: consume activity, decide, publish assignments exactly once.
    Run(commands::service::RunArgs),
    /// Licences assigned by each policy of a tenant in the last 1, 7, 30 or 90 days, read from the
    /// assignments topic (works without the admin API).
    Report {
        #[command(flatten)]
        args: autoclaim::admin::cli::ReportArgs,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Mint a development token for the admin API, signed with its HS256 secret.
    Token(autoclaim::admin::cli::TokenArgs),
    /// The whole pipeline on an embedded broker, with no set-up: publishes a realistic workload,
    /// processes it and prints what happened.
    Demo(commands::demo::DemoArgs),
    /// Create the topics the processor uses, with their partitions and configs (compaction for the
    /// tables, retention for the outputs); existing topics are left as they are.
    CreateTopics(commands::create_topics::CreateTopicsArgs),
    /// Produce a realistic, seeded workload: the tables first, then activity at a chosen rate.
    Loadgen(commands::loadgen::LoadgenArgs),
    /// Publish input records (JSON lines of ReplayRecord) to their topics, keyed as the processor
    /// expects: activity by tenant, tables by entity.
    Publish(commands::publish::PublishArgs),
    /// Check what the processor wrote, read back with read_committed: duplicate or over-assigned
    /// licences, records neither processed nor dead-lettered, dead letters, and (with
    /// --compare-replay) outputs against a replay of the inputs. Exits with 1 if a problem is found.
    Verify {
        #[command(flatten)]
        args: autoclaim::verify::VerifyArgs,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Apply input records (JSON lines of ReplayRecord) in order and print one Decision a line.
    /// Exits with 1 if any line was rejected (each is reported on stderr with its line number and
    /// code). An activity whose occurredAt is more than --max-event-time-skew after its line's
    /// writtenAt is rejected (event_time_in_future), as `run` dead-letters it.
    Replay(commands::replay::ReplayArgs),
}

/// mimalloc rather than glibc's malloc: the processing loop allocates and frees a few small buffers
/// per event (decoded strings, outputs), and with glibc, malloc and free took 11-13.5% of its samples (perf, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service and the load generator log their progress; a command's output is its result, so its log says only what
    // went wrong (warnings and errors) unless AUTOCLAIM_LOG asks for more.
    let (log_json, default_level) = match cli.command {
        Command::Run(ref args) => (args.log_json, "info"),
        Command::Loadgen(_) => (false, "info"),
        _ => (false, "warn"),
    };
    autoclaim::logging::init(log_json, default_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "autoclaim: {}",
                autoclaim::error_text::error_text(e.as_ref())
            );
            ExitCode::from(2)
        }
    }
}

/// How long a command waits for the cluster to answer before it gives up (an authentication or TLS
/// failure stops it at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Command {
    /// The Kafka connection of a command that talks to a cluster.
    fn kafka_mut(&mut self) -> Option<&mut KafkaArgs> {
        match self {
            Command::Run(args) => Some(&mut args.config.kafka),
            Command::Report { args, .. } => Some(&mut args.kafka),
            Command::Verify { args, .. } => Some(&mut args.kafka),
            Command::CreateTopics(args) => Some(&mut args.kafka),
            Command::Loadgen(args) => Some(&mut args.kafka),
            Command::Publish(args) => Some(&mut args.kafka),
            Command::Token(_) | Command::Demo(_) | Command::Replay(_) => None,
        }
    }

    /// The catalog of a command that decides or validates products.
    fn catalog(&self) -> Option<&CatalogArgs> {
        match self {
            Command::Run(args) => Some(&args.catalog),
            Command::Demo(args) => Some(&args.catalog),
            Command::Replay(args) => Some(&args.catalog),
            Command::Report { catalog, .. } | Command::Verify { catalog, .. } => Some(catalog),
            Command::Token(_)
            | Command::CreateTopics(_)
            | Command::Loadgen(_)
            | Command::Publish(_) => None,
        }
    }

    fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Run(args) => args.execute(),
            Command::Report { args, .. } => autoclaim::admin::cli::report_command(args),
            Command::Verify { args, .. } => autoclaim::verify::command(args),
            Command::Token(args) => autoclaim::admin::cli::token_command(args),
            Command::Demo(args) => args.execute(),
            Command::CreateTopics(args) => args.execute(),
            Command::Loadgen(args) => args.execute(),
            Command::Publish(args) => args.execute(),
            Command::Replay(args) => args.execute(),
        }
    }
}

/// Installs the command's catalog before anything reads it, so that a bad file stops the command
/// before it contacts Kafka.
fn install_catalog(command: &Command) -> anyhow::Result<()> {
    if let Some(catalog) = command.catalog() {
        catalog.install().context("catalog")?;
    }
    Ok(())
}

/// Turns the security flags into client properties and makes the first contact, so that a command
/// with settings that cannot work stops with the cause before it does anything.
fn connect(command: &mut Command) -> anyhow::Result<()> {
    // Local configuration is refused before anything goes over the network.
    if let Command::Run(args) = command {
        args.admin_api.auth_settings().context("admin API")?;
    }
    if let Some(kafka) = command.kafka_mut() {
        *kafka = std::mem::take(kafka).resolve()?;
        autoclaim::pipeline::connect::check(kafka, CONNECT_TIMEOUT)?;
    }
    Ok(())
}

fn run(mut cli: Cli) -> anyhow::Result<ExitCode> {
    install_catalog(&cli.command)?;
    connect(&mut cli.command)?;
    cli.command.execute()
}
