//! `autoclaim run`: the service. The processing loop runs on a thread of its own (it blocks on
//! librdkafka); HTTP (metrics, health, the admin API) and signals run on a small async runtime.
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context;
use autoclaim::admin::{AdminArgs, AdminService};
use autoclaim::http::HttpLimits;
use autoclaim::pipeline::config::{CatalogArgs, RunConfig};
use autoclaim::pipeline::processor::{Health, LoopCounts, PipelineError, Processor};
use autoclaim::pipeline::topics;
use tokio::runtime::Runtime;
use tracing::{info, warn};

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: RunConfig,
    #[command(flatten)]
    pub admin_api: AdminArgs,
    #[command(flatten)]
    pub catalog: CatalogArgs,
    #[command(flatten)]
    http: HttpLimits,
    /// Log as JSON lines.
    #[arg(long, env = "AUTOCLAIM_LOG_JSON")]
    pub log_json: bool,
}

type PipelineThread = JoinHandle<Result<LoopCounts, PipelineError>>;

impl RunArgs {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        info!(
            products = ?autoclaim::domain::catalog::Catalog::keys().collect::<Vec<_>>(),
            "catalog"
        );
        let RunArgs {
            config,
            admin_api,
            http,
            ..
        } = self;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        if config.create_topics {
            create_topics(&runtime, &config)?;
        }
        let metrics =
            autoclaim::telemetry::install().context("cannot install the metrics recorder")?;
        autoclaim::telemetry::describe();
        // The admin API refuses a partial or invalid configuration before anything starts.
        let admin_api = AdminService::start(
            &admin_api,
            &config.kafka,
            &config.topics,
            config.propagation_delay,
            &config.transactional_id(),
        )?;
        let health = Arc::new(Health::default());
        autoclaim::pipeline::health::spawn_watchdog(Arc::clone(&health), config.watchdog_timeout)
            .context("cannot start the watchdog thread")?;
        // Bind before anything consumes: a busy port is an error at start, not after a rebalance.
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(config.http_addr))
            .with_context(|| format!("cannot serve HTTP on {}", config.http_addr))?;
        info!(addr = %listener.local_addr()?, "serving HTTP (/metrics, /healthz, /readyz)");

        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let pipeline = spawn_pipeline(config, Arc::clone(&health), Arc::clone(&stop), done_tx)?;
        let mut router = autoclaim::http::router(health, metrics);
        if let Some(admin_api) = &admin_api {
            router = router.merge(admin_api.router());
        }
        runtime.block_on(async move {
            let shutdown = async move {
                tokio::select! {
                    _ = autoclaim::signal::shutdown_signal() => info!("signal received; finishing the open transaction"),
                    _ = done_rx => {}
                }
                stop.store(true, Ordering::Relaxed);
            };
            autoclaim::http::serve_on(listener, router, http, shutdown)
                .await
                .context("HTTP server failed")
        })?;
        outcome(pipeline)
    }
}

fn create_topics(runtime: &Runtime, config: &RunConfig) -> anyhow::Result<()> {
    let (created, replication) = runtime.block_on(topics::create_missing_topics(
        &config.kafka,
        &config.topics,
        config.partitions,
        config.replication,
        config.propagation_delay,
        config.retention,
    ))?;
    if !created.is_empty() {
        info!(?created, %replication, "created topics");
    }
    Ok(())
}

/// The processing loop on its own thread; `done` fires when it ends, for whatever reason, so that
/// the HTTP server stops with it.
fn spawn_pipeline(
    config: RunConfig,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    done: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<PipelineThread> {
    std::thread::Builder::new()
        .name("autoclaim-pipeline".into())
        .spawn(move || {
            // Start-up reads the tables with a time bound of its own.
            let result = Arc::clone(&health)
                .excused(|| Processor::start(config, health))
                .and_then(|p| p.run(&stop));
            let _ = done.send(());
            result
        })
        .context("cannot start the pipeline thread")
}

/// Being fenced by a newer instance with the same transactional id is a clean exit: that instance
/// has taken over the work.
fn outcome(pipeline: PipelineThread) -> anyhow::Result<ExitCode> {
    match pipeline.join() {
        Ok(Ok(counts)) => {
            info!(?counts, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) if e.is_fenced() => {
            warn!(
                transactional_id = e.fenced_id(),
                "fenced by a newer instance with the same transactional id; exiting"
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) => Err(e.into()),
        Err(_) => anyhow::bail!("the pipeline thread panicked"),
    }
}
