//! Operator commands: `autoclaim report` (the report read straight from the assignments topic, so it
//! works without the API) and `autoclaim token` (a development token for a tenant and role, signed
//! with the configured HS256 secret).
use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::auth::{self, DevClaims, GLOBAL_ADMINISTRATOR};
use super::report::{self, Report};
use super::view::AdminView;
use crate::domain::ids;
use crate::domain::time::Timestamp;
use crate::pipeline::clients::{self, QuietContext};
use crate::pipeline::config::KafkaArgs;
use crate::pipeline::records::RawRecord;
use crate::wire::{codec, pb, Format};

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

/// `autoclaim report`: licences assigned by each policy of a tenant in the last N days.
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
    /// The tenant to report on.
    #[arg(long)]
    pub tenant: String,
    /// The window: 1, 7, 30 or 90 days.
    #[arg(long, default_value_t = report::DEFAULT_DAYS, value_parser = parse_days)]
    pub days: u32,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Give up if the topic cannot be read to its end within this time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub timeout: Duration,
}

/// Reads a tenant's assignments of the last `days` days from the assignments topic (records
/// written before the window are skipped by timestamp) and builds the report.
pub fn report_from_topic(
    kafka: &KafkaArgs,
    topic: &str,
    tenant: &str,
    days: u32,
    now: Timestamp,
    timeout: Duration,
) -> anyhow::Result<Report> {
    let tenant = &*ids::canonical_str(tenant);
    let consumer: BaseConsumer<QuietContext> = clients::table_reader(kafka)
        .create_with_context(QuietContext)
        .context("cannot create a Kafka consumer")?;
    let marks = clients::watermarks(&consumer, topic, timeout).with_context(|| {
        format!(
            "cannot read the partitions and offsets of {topic} from {}",
            kafka.brokers
        )
    })?;
    if marks.is_empty() {
        bail!("topic {topic} does not exist");
    }
    let partitions: Vec<i32> = marks.keys().copied().collect();
    // Records are timestamped when the processor writes them; an hour of margin for clock skew.
    let from = report::window_start(now, days).saturating_sub(Duration::from_secs(3600));
    let mut by_time = TopicPartitionList::new();
    for p in &partitions {
        by_time.add_partition_offset(topic, *p, Offset::Offset(from.as_millis()))?;
    }
    let starts = clients::retry_transient(timeout, topic, || {
        consumer.offsets_for_times(by_time.clone(), timeout)
    })
    .context("cannot look up offsets by time")?;
    let mut assignment = TopicPartitionList::new();
    let mut pending = HashSet::new();
    for p in &partitions {
        let (low, high) = marks[p];
        let start = starts
            .find_partition(topic, *p)
            .map(|e| e.offset())
            .unwrap_or(Offset::Beginning);
        let start = match start {
            Offset::End => continue,
            Offset::Offset(o) if o >= high => continue,
            Offset::Offset(o) => Offset::Offset(o.max(low)),
            _ => Offset::Beginning,
        };
        if high > low {
            assignment.add_partition_offset(topic, *p, start)?;
            pending.insert(*p);
        }
    }
    let mut view = AdminView::new(Duration::ZERO);
    if !pending.is_empty() {
        consumer.assign(&assignment)?;
    }
    let deadline = Instant::now() + timeout;
    let mut skipped = 0u64;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            bail!("{topic} could not be read to its end within {timeout:?}");
        }
        let message = match consumer.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
                continue;
            }
            Some(Err(e)) if clients::is_transient(&e) => {
                tracing::warn!(topic, error = %e, "transient error while reading; going on");
                continue;
            }
            Some(Err(e)) => return Err(e).context(format!("reading {topic}")),
            Some(Ok(m)) => m,
        };
        // Assignments are keyed by tenant: other tenants' records are skipped undecoded.
        if message
            .key()
            .is_some_and(|k| !std::str::from_utf8(k).is_ok_and(|k| ids::same(k, tenant)))
        {
            continue;
        }
        let raw = RawRecord::of(&message);
        let Some(value) = raw.value else { continue };
        let decoded = Format::from_content_type(raw.content_type)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                codec::decode::<pb::LicenseAssignment>(value, f).map_err(|e| e.to_string())
            });
        match decoded {
            Ok(a) if ids::same(&a.tenant_id, tenant) => {
                if view.apply_assignment(a).is_err() {
                    skipped += 1;
                }
            }
            Ok(_) => {}
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        eprintln!("autoclaim report: skipped {skipped} unreadable records");
    }
    let rows = view.assignments_since(tenant, report::window_start(now, days));
    Ok(report::build(tenant, days, now, rows, &[]))
}

pub fn report_command(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let report = report_from_topic(
        &args.kafka,
        &args.assignments_topic,
        &args.tenant,
        args.days,
        Timestamp::now(),
        args.timeout,
    )?;
    let text = match args.format {
        ReportFormat::Table => report::to_table(&report),
        ReportFormat::Csv => report::to_csv(&report),
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
    let claims = DevClaims::new(&args.issuer, audience, &args.tenant, &oid, roles, args.ttl);
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
