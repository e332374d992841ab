//! Operator commands: `autoclaim report` (the report read straight from the topics, so it works
//! without the API: see `report_source`) and `autoclaim token` (a development token for a tenant
//! and role, signed with the configured HS256 secret).
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::auth::{self, DevClaims, GLOBAL_ADMINISTRATOR};
use super::report::{self, CsvTable};
use super::report_source::{report_from_topics, ReportTopics};
use crate::domain::time::Timestamp;
use crate::pipeline::config::KafkaArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Csv,
    Json,
}

fn parse_days(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|d| report::WINDOWS.contains(d))
        .ok_or_else(|| "days must be 1, 7, 30 or 90".to_owned())
}

/// `autoclaim report`: licences assigned by each policy of a tenant in the last N days, failures
/// per policy and reason, and the claims waiting for a licence.
#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The assignments topic.
    #[arg(
        long = "assignments-topic",
        env = "AUTOCLAIM_ASSIGNMENTS_TOPIC",
        default_value = "autoclaim.assignments.v1"
    )]
    pub assignments_topic: String,
    /// The claims topic (pending claims and what became of them).
    #[arg(
        long = "claims-topic",
        env = "AUTOCLAIM_CLAIMS_TOPIC",
        default_value = "autoclaim.claims.v1"
    )]
    pub claims_topic: String,
    /// The failures topic.
    #[arg(
        long = "failures-topic",
        env = "AUTOCLAIM_FAILURES_TOPIC",
        default_value = "autoclaim.failures.v1"
    )]
    pub failures_topic: String,
    /// The tenant to report on.
    #[arg(long)]
    pub tenant: String,
    /// The window: 1, 7, 30 or 90 days.
    #[arg(long, default_value_t = report::DEFAULT_DAYS, value_parser = parse_days)]
    pub days: u32,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// With --format csv: which table (the JSON and the table hold them all).
    #[arg(long, value_enum, default_value = "assignments")]
    pub table: CsvTable,
    /// Give up if the topic cannot be read to its end within this time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub timeout: Duration,
}

pub fn report_command(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let topics = ReportTopics {
        assignments: &args.assignments_topic,
        claims: &args.claims_topic,
        failures: &args.failures_topic,
    };
    let report = report_from_topics(
        &args.kafka,
        topics,
        &args.tenant,
        args.days,
        Timestamp::now(),
        args.timeout,
    )?;
    let text = match args.format {
        ReportFormat::Table => report::to_table(&report),
        ReportFormat::Csv => report::to_csv_table(&report, args.table),
        ReportFormat::Json => {
            let mut s = serde_json::to_string_pretty(&report)?;
            s.push('\n');
            s
        }
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `autoclaim token`: a development token, signed with the HS256 secret the API is configured with.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The HS256 secret the admin API is configured with.
    #[arg(
        long = "admin-hs256-secret",
        env = "AUTOCLAIM_ADMIN_HS256_SECRET",
        hide_env_values = true
    )]
    pub secret: String,
    /// The issuer the admin API expects (`{tenantid}` is replaced by the tenant).
    #[arg(long = "admin-issuer", env = "AUTOCLAIM_ADMIN_ISSUER")]
    pub issuer: String,
    /// The audience the admin API expects (the first one if several are listed).
    #[arg(long = "admin-audience", env = "AUTOCLAIM_ADMIN_AUDIENCE")]
    pub audience: String,
    /// The tenant the token is for (`tid`).
    #[arg(long)]
    pub tenant: String,
    /// The user (`oid`) recorded as who made changes; a new random id if left out.
    #[arg(long)]
    pub oid: Option<String>,
    /// The user's display name (`name`), recorded in the audit log beside the oid.
    #[arg(long)]
    pub name: Option<String>,
    /// Directory roles (`wids`): global-administrator or a role template id. Repeatable.
    #[arg(long = "role", default_value = "global-administrator")]
    pub roles: Vec<String>,
    /// A token without any role (`wids` left out).
    #[arg(long, conflicts_with = "roles")]
    pub no_roles: bool,
    /// How long the token is valid.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub ttl: Duration,
}

fn role_id(role: &str) -> String {
    match role.to_ascii_lowercase().as_str() {
        "global-administrator" | "global-admin" | "ga" => GLOBAL_ADMINISTRATOR.to_owned(),
        _ => role.to_owned(),
    }
}

/// Mints the token that `autoclaim token` prints.
pub fn mint(args: &TokenArgs) -> anyhow::Result<(String, DevClaims)> {
    let audience = args
        .audience
        .split(',')
        .map(str::trim)
        .find(|a| !a.is_empty())
        .context("the audience is empty")?;
    if args.tenant.is_empty() {
        bail!("--tenant is empty");
    }
    let roles = if args.no_roles {
        Vec::new()
    } else {
        args.roles.iter().map(|r| role_id(r)).collect()
    };
    let oid = args
        .oid
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut claims = DevClaims::new(&args.issuer, audience, &args.tenant, &oid, roles, args.ttl);
    claims.name = args.name.clone();
    let token = auth::mint_hs256(args.secret.as_bytes(), &claims)?;
    Ok((token, claims))
}

pub fn token_command(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let (token, claims) = mint(&args)?;
    println!("{token}");
    eprintln!(
        "token for tenant {} (oid {}, roles {:?}), valid for {}",
        claims.tid,
        claims.oid,
        claims.wids,
        humantime::format_duration(args.ttl)
    );
    Ok(ExitCode::SUCCESS)
}
