//! `autoclaim demo`: the whole pipeline on an embedded broker, with no set-up.
use std::process::ExitCode;
use std::time::Duration;

use autoclaim::pipeline::config::CatalogArgs;

#[derive(clap::Args)]
pub struct DemoArgs {
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
    pub catalog: CatalogArgs,
}

impl DemoArgs {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let options = autoclaim::demo::DemoOptions {
            events: self.events,
            seed: self.seed,
            tenants: self.tenants,
            users_per_tenant: self.users_per_tenant,
            partitions: 3,
            propagation_delay: self.propagation_delay,
            http_addr: self.http_addr,
            serve: self.serve,
        };
        autoclaim::demo::run(&options, &mut std::io::stdout().lock())?;
        Ok(ExitCode::SUCCESS)
    }
}
