//! The `autoclaim` command line.
use std::fs::File;
use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use autoclaim::pipeline::admin;
use autoclaim::pipeline::config::{CatalogArgs, RunConfig};
use autoclaim::pipeline::processor::{Health, PipelineError, Processor};
use autoclaim::replay::Replayer;
use tracing::{info, warn};

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

// One value, parsed once at start-up: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the service: consume activity, decide, publish assignments exactly once.
    Run {
        #[command(flatten)]
        config: RunConfig,
        #[command(flatten)]
        admin_api: autoclaim::admin::AdminArgs,
        #[command(flatten)]
        catalog: CatalogArgs,
        #[command(flatten)]
        http: autoclaim::http::HttpLimits,
        /// Log as JSON lines.
        #[arg(long, env = "AUTOCLAIM_LOG_JSON")]
        log_json: bool,
    },
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
    Demo {
        /// Activity events to publish.
        #[arg(long, default_value_t = 5000)]
        events: usize,
        /// Seed of the workload (the same seed gives the same workload).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 40)]
        tenants: usize,
        #[arg(long, default_value_t = 50)]
        users_per_tenant: usize,
        /// Propagation delay of settings and policy changes.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        propagation_delay: Duration,
        /// Where /metrics (and with --serve the admin console) is served while the demo runs.
        #[arg(long, default_value = "127.0.0.1:9464")]
        http_addr: std::net::SocketAddr,
        /// Keep running after the workload, with the admin API and its console at --http-addr and
        /// live events, until Ctrl-C; prints the console's URL and a development token.
        #[arg(long)]
        serve: bool,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Create the topics the processor uses, with their partitions and configs (compaction for the
    /// tables, retention for the outputs); existing topics are left as they are.
    CreateTopics {
        #[command(flatten)]
        kafka: autoclaim::pipeline::config::KafkaArgs,
        #[command(flatten)]
        topics: autoclaim::pipeline::config::Topics,
        /// Partitions of the activity, directory and output topics.
        #[arg(long, env = "AUTOCLAIM_PARTITIONS", default_value_t = 6)]
        partitions: i32,
        #[command(flatten)]
        replication: autoclaim::pipeline::config::ReplicationArgs,
        /// Propagation delay the policies topic must keep superseded versions for.
        #[arg(long, env = "AUTOCLAIM_PROPAGATION_DELAY", value_parser = humantime::parse_duration, default_value = "2h")]
        propagation_delay: Duration,
    },
    /// Produce a realistic, seeded workload: the tables first, then activity at a chosen rate.
    Loadgen {
        #[command(flatten)]
        kafka: autoclaim::pipeline::config::KafkaArgs,
        #[command(flatten)]
        topics: autoclaim::pipeline::config::Topics,
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
    },
    /// Publish input records (JSON lines of ReplayRecord) to their topics, keyed as the processor
    /// expects: activity by tenant, tables by entity.
    Publish {
        #[command(flatten)]
        kafka: autoclaim::pipeline::config::KafkaArgs,
        #[command(flatten)]
        topics: autoclaim::pipeline::config::Topics,
        /// File of JSON lines; `-` for standard input.
        #[arg(long, default_value = "-")]
        input: String,
        /// Encoding of the published values.
        #[arg(long, value_enum, default_value = "json")]
        format: autoclaim::wire::Format,
    },
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
    Replay {
        /// File of JSON lines; `-` for standard input.
        #[arg(long, default_value = "-")]
        input: String,
        /// How long a settings or policy change takes to come into force (e.g. 2h, 30s).
        #[arg(long, env = "AUTOCLAIM_PROPAGATION_DELAY", value_parser = humantime::parse_duration, default_value = "2h")]
        propagation_delay: Duration,
        // Bounds an activity's occurredAt by its line's writtenAt (lines without one are not bounded).
        #[command(flatten)]
        event_time: autoclaim::pipeline::config::EventTimeArgs,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
}

/// mimalloc rather than glibc's malloc: the processing loop allocates and frees a few small buffers
/// per event (decoded strings, outputs), and glibc's malloc and free were a fifth of its time (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service and the load generator log their progress; a command's output is its result, so its log says only what
    // went wrong (warnings and errors) unless AUTOCLAIM_LOG asks for more.
    let (log_json, default_level) = match cli.command {
        Command::Run { log_json, .. } => (log_json, "info"),
        Command::Loadgen { .. } => (false, "info"),
        _ => (false, "warn"),
    };
    init_logging(log_json, default_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("autoclaim: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once: many errors already name their source in their own
/// message, which anyhow's `{:#}` would repeat.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// Every command logs the same way: to stderr, filtered by AUTOCLAIM_LOG (else `default_level`), in
/// colour only on a terminal and never with NO_COLOR set (https://no-color.org).
fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTOCLAIM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let colour = use_colour(
        std::env::var_os("NO_COLOR"),
        std::io::IsTerminal::is_terminal(&io::stderr()),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Colour only on a terminal, and not when NO_COLOR is set to anything but the empty string.
fn use_colour(no_color: Option<std::ffi::OsString>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// How long a command waits for the cluster to answer before it gives up (an authentication or TLS
/// failure stops it at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Command {
    /// The Kafka connection of a command that talks to a cluster.
    fn kafka_mut(&mut self) -> Option<&mut autoclaim::pipeline::config::KafkaArgs> {
        match self {
            Command::Run { config, .. } => Some(&mut config.kafka),
            Command::Report { args, .. } => Some(&mut args.kafka),
            Command::Verify { args, .. } => Some(&mut args.kafka),
            Command::CreateTopics { kafka, .. }
            | Command::Loadgen { kafka, .. }
            | Command::Publish { kafka, .. } => Some(kafka),
            Command::Token(_) | Command::Demo { .. } | Command::Replay { .. } => None,
        }
    }

    /// The catalog of a command that decides or validates products.
    fn catalog(&self) -> Option<&CatalogArgs> {
        match self {
            Command::Run { catalog, .. }
            | Command::Report { catalog, .. }
            | Command::Verify { catalog, .. }
            | Command::Demo { catalog, .. }
            | Command::Replay { catalog, .. } => Some(catalog),
            Command::Token(_)
            | Command::CreateTopics { .. }
            | Command::Loadgen { .. }
            | Command::Publish { .. } => None,
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
    if let Command::Run { admin_api, .. } = command {
        admin_api.auth_settings().context("admin API")?;
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
    match cli.command {
        Command::Run {
            config,
            admin_api,
            http,
            log_json: _,
            catalog: _,
        } => {
            info!(
                products = ?autoclaim::domain::catalog::Catalog::keys().collect::<Vec<_>>(),
                "catalog"
            );
            run_service(config, admin_api, http)
        }
        Command::Report { args, .. } => autoclaim::admin::cli::report_command(args),
        Command::Verify { args, .. } => autoclaim::verify::command(args),
        Command::Token(args) => autoclaim::admin::cli::token_command(args),
        Command::Demo {
            events,
            seed,
            tenants,
            users_per_tenant,
            propagation_delay,
            http_addr,
            serve,
            catalog: _,
        } => {
            let options = autoclaim::demo::DemoOptions {
                events,
                seed,
                tenants,
                users_per_tenant,
                partitions: 3,
                propagation_delay,
                http_addr,
                serve,
            };
            autoclaim::demo::run(&options, &mut io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CreateTopics {
            kafka,
            topics,
            partitions,
            replication,
            propagation_delay,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            let (created, replication) = runtime.block_on(admin::create_missing_topics(
                &kafka,
                &topics,
                partitions,
                replication,
                propagation_delay,
            ))?;
            eprintln!(
                "created {} topics ({replication}): {}",
                created.len(),
                created.join(", ")
            );
            let partitions = admin::check_topics(&kafka, &topics)?;
            eprintln!("topics ready: activity, assignments and repartition co-partitioned over {partitions} partitions");
            Ok(ExitCode::SUCCESS)
        }
        Command::Loadgen {
            kafka,
            topics,
            tenants,
            users_per_tenant,
            events,
            rate,
            seed,
            skip_tables,
            format,
            misplace_activity,
        } => {
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    if let Ok(rt) = runtime {
                        rt.block_on(shutdown_signal());
                        stop.store(true, Ordering::Relaxed);
                    }
                });
            }
            let options = autoclaim::loadgen::LoadOptions {
                scenario: autoclaim::scenario::ScenarioConfig {
                    tenants,
                    users_per_tenant,
                    seed,
                    ..Default::default()
                },
                events,
                rate,
                skip_tables,
                format,
                misplace_activity,
            };
            let report = autoclaim::loadgen::run(&kafka, &topics, &options, &|| {
                stop.load(Ordering::Relaxed)
            })?;
            eprintln!(
                "loadgen: {} table records, {} events in {:.1}s ({:.0} events/s)",
                report.table_records,
                report.events,
                report.elapsed.as_secs_f64(),
                report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            kafka,
            topics,
            input,
            format,
        } => {
            let publisher = autoclaim::pipeline::publish::Publisher::new(&kafka, &topics, format)?;
            let reader: Box<dyn io::BufRead> = if input == "-" {
                Box::new(io::stdin().lock())
            } else {
                Box::new(BufReader::new(
                    File::open(&input).with_context(|| format!("cannot open {input}"))?,
                ))
            };
            let mut sent = 0u64;
            let mut progress = autoclaim::progress::Progress::on_stderr("published");
            for (i, line) in io::BufRead::lines(reader).enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let record: autoclaim::wire::pb::ReplayRecord =
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
        Command::Replay {
            input,
            propagation_delay,
            event_time,
            catalog: _,
        } => {
            let mut replayer =
                Replayer::new(propagation_delay).with_max_event_time_skew(event_time.max_skew);
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

/// `autoclaim run`: the processing loop on its own thread, HTTP and signals on the async runtime.
fn run_service(
    config: RunConfig,
    admin_api: autoclaim::admin::AdminArgs,
    http: autoclaim::http::HttpLimits,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if config.create_topics {
        let created = runtime.block_on(admin::create_missing_topics(
            &config.kafka,
            &config.topics,
            config.partitions,
            config.replication,
            config.propagation_delay,
        ))?;
        if !created.0.is_empty() {
            info!(created = ?created.0, replication = %created.1, "created topics");
        }
    }
    let metrics = autoclaim::telemetry::install().context("cannot install the metrics recorder")?;
    autoclaim::telemetry::describe();
    // The admin API refuses a partial or invalid configuration before anything starts.
    let admin_api = autoclaim::admin::AdminService::start(
        &admin_api,
        &config.kafka,
        &config.topics,
        config.propagation_delay,
    )?;
    let health = Arc::new(Health::default());
    autoclaim::pipeline::health::spawn_watchdog(Arc::clone(&health), config.watchdog_timeout)
        .context("cannot start the watchdog thread")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    // Bind before anything consumes: a busy port is an error at start, not after a rebalance.
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.http_addr))
        .with_context(|| format!("cannot serve HTTP on {}", config.http_addr))?;
    info!(addr = %listener.local_addr()?, "serving HTTP (/metrics, /healthz, /readyz)");

    let pipeline = {
        let (config, health, stop) = (config.clone(), Arc::clone(&health), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("autoclaim-pipeline".into())
            .spawn(move || {
                // Start-up reads the tables with a time bound of its own.
                let result = Arc::clone(&health)
                    .excused(|| Processor::start(config, health))
                    .and_then(|p| p.run(&stop));
                let _ = done_tx.send(());
                result
            })
            .context("cannot start the pipeline thread")?
    };

    let mut router = autoclaim::http::router(Arc::clone(&health), metrics);
    if let Some(admin_api) = &admin_api {
        router = router.merge(admin_api.router());
    }
    let stop_on_signal = Arc::clone(&stop);
    runtime.block_on(async move {
        let shutdown = async move {
            tokio::select! {
                _ = shutdown_signal() => info!("signal received; finishing the open transaction"),
                _ = done_rx => {}
            }
            stop_on_signal.store(true, Ordering::Relaxed);
        };
        autoclaim::http::serve_on(listener, router, http, shutdown)
            .await
            .context("HTTP server failed")
    })?;

    match pipeline.join() {
        Ok(Ok(counts)) => {
            info!(?counts, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(PipelineError::Transaction(e))) if e.is_fenced() => {
            warn!("fenced by a newer instance with the same transactional id; exiting");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(PipelineError::Fenced(id))) => {
            warn!(
                transactional_id = id,
                "fenced by a newer instance with the same transactional id; exiting"
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!("the pipeline thread panicked"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_printed_again() {
        let cause = io::Error::other("connection refused");
        let error =
            anyhow::Error::new(cause).context("cannot reach the broker: connection refused");
        assert_eq!(
            error_text(&error),
            "cannot reach the broker: connection refused"
        );
        let error = anyhow::Error::new(io::Error::other("connection refused")).context("restoring");
        assert_eq!(error_text(&error), "restoring: connection refused");
    }

    #[test]
    fn no_color_turns_colour_off_even_on_a_terminal() {
        assert!(use_colour(None, true));
        assert!(!use_colour(None, false));
        assert!(!use_colour(Some("1".into()), true));
        assert!(
            use_colour(Some("".into()), true),
            "an empty NO_COLOR is unset"
        );
    }
}
