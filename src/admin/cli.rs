//! Operator commands: `autoclaim report` (the report read straight from the assignments topic, so it
//! works without the API) and `autoclaim token` (a development token for a tenant and role, signed
//! with the configured HS256 secret).
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::auth::{self, DevClaims, GLOBAL_ADMINISTRATOR};
use super::report::{self, Report};
use super::view::AdminView;
use crate::domain::ids;
use crate::domain::time::Timestamp;
use crate::pipeline::clients;
use crate::pipeline::config::KafkaArgs;
use crate::pipeline::records::RawRecord;
use crate::pipeline::topic_reader::{OpenTopic, ReadError};
use crate::wire::{codec, pb, Format, WireError};

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
    let read_error = |e| report_read_error(e, kafka);
    let open = OpenTopic::new(&clients::table_reader(kafka), topic, timeout).map_err(read_error)?;
    // Records are timestamped when the processor writes them; an hour of margin for clock skew.
    let from = report::window_start(now, days).saturating_sub(Duration::from_secs(3600));
    let starts = offsets_by_time(&open, topic, from, timeout)?;
    let mut reader = open
        .read_from(timeout, |p, marks| {
            start_offset(starts.find_partition(topic, p).map(|e| e.offset()), marks)
        })
        .map_err(read_error)?;
    let mut view = AdminView::new(Duration::ZERO);
    let mut skipped = 0u64;
    while let Some(message) = reader.next_record().map_err(read_error)? {
        match tenant_assignment(&message, tenant) {
            Ok(Some(a)) => {
                if view.apply_assignment(a).is_err() {
                    skipped += 1;
                }
            }
            Ok(None) => {}
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        eprintln!("autoclaim report: skipped {skipped} unreadable records");
    }
    let rows = view.assignments_since(tenant, report::window_start(now, days));
    Ok(report::build(tenant, days, now, rows, &[]))
}

/// The first offset of each partition written at or after `from`.
fn offsets_by_time(
    open: &OpenTopic,
    topic: &str,
    from: Timestamp,
    timeout: Duration,
) -> anyhow::Result<TopicPartitionList> {
    let mut by_time = TopicPartitionList::new();
    for p in open.watermarks().keys() {
        by_time.add_partition_offset(topic, *p, Offset::Offset(from.as_millis()))?;
    }
    clients::retry_transient(timeout, topic, || {
        open.consumer().offsets_for_times(by_time.clone(), timeout)
    })
    .context("cannot look up offsets by time")
}

/// Where a partition with watermarks `(low, high)` is read from, given the offset found by time:
/// nothing to read when no record is that recent, the beginning when the lookup found none.
fn start_offset(found: Option<Offset>, (low, high): (i64, i64)) -> Option<Offset> {
    match found.unwrap_or(Offset::Beginning) {
        Offset::End => None,
        Offset::Offset(o) if o >= high => None,
        Offset::Offset(o) => Some(Offset::Offset(o.max(low))),
        _ => Some(Offset::Beginning),
    }
}

/// The tenant's assignment a record holds, if it holds one. Assignments are keyed by tenant: other
/// tenants' records are skipped undecoded.
fn tenant_assignment(
    message: &BorrowedMessage<'_>,
    tenant: &str,
) -> Result<Option<pb::LicenseAssignment>, WireError> {
    if message
        .key()
        .is_some_and(|k| !std::str::from_utf8(k).is_ok_and(|k| ids::same(k, tenant)))
    {
        return Ok(None);
    }
    let raw = RawRecord::of(message);
    let Some(value) = raw.value else {
        return Ok(None);
    };
    let format = Format::from_content_type(raw.content_type)?;
    let a: pb::LicenseAssignment = codec::decode(value, format)?;
    Ok(ids::same(&a.tenant_id, tenant).then_some(a))
}

/// The report's wording of the errors it has its own words for.
fn report_read_error(error: ReadError, kafka: &KafkaArgs) -> anyhow::Error {
    match error {
        ReadError::Partitions { topic, source } => anyhow::Error::new(source).context(format!(
            "cannot read the partitions and offsets of {topic} from {}",
            kafka.brokers
        )),
        ReadError::Timeout { topic, timeout, .. } => {
            anyhow!("{topic} could not be read to its end within {timeout:?}")
        }
        other => other.into(),
    }
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
