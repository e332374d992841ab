//! `autoclaim report` straight from the topics, so it works without the API: the tenant's
//! assignments of the window (records written before it are skipped by timestamp), and its claims
//! and failures, read whole so that the report aggregates them as the API's view does. A claims or
//! failures topic that does not exist leaves its part of the report empty.
use std::time::Duration;

use anyhow::{anyhow, Context};
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::claims::{ClaimTables, ClaimsUpdate};
use super::report::{self, Report};
use super::view::AdminView;
use crate::domain::ids;
use crate::domain::time::Timestamp;
use crate::pipeline::clients;
use crate::pipeline::config::KafkaArgs;
use crate::pipeline::records::RawRecord;
use crate::pipeline::topic_reader::{OpenTopic, ReadError, TopicReader};
use crate::wire::{codec, pb, Format, WireError};

/// The topics the report is read from.
#[derive(Clone, Copy, Debug)]
pub struct ReportTopics<'a> {
    pub assignments: &'a str,
    pub claims: &'a str,
    pub failures: &'a str,
}

/// How a topic's records are keyed.
#[derive(Clone, Copy)]
enum Keys {
    /// By tenant id (assignments, failures).
    Tenant,
    /// By `<tenant>/<user>/<need>` (claims).
    TenantPath,
}

/// Whether a record's key allows it to be the tenant's; records without a key are decoded and
/// judged by their tenant field.
fn may_be_tenants(message: &BorrowedMessage<'_>, tenant: &str, keys: Keys) -> bool {
    let Some(key) = message.key() else {
        return true;
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return false;
    };
    let key_tenant = match keys {
        Keys::Tenant => key,
        Keys::TenantPath => key.split_once('/').map_or(key, |(t, _)| t),
    };
    ids::same(key_tenant, tenant)
}

/// Reads a tenant's report of the last `days` days from the topics.
pub fn report_from_topics(
    kafka: &KafkaArgs,
    topics: ReportTopics<'_>,
    tenant: &str,
    days: u32,
    now: Timestamp,
    timeout: Duration,
) -> anyhow::Result<Report> {
    let tenant = &*ids::canonical_str(tenant);
    let mut view = AdminView::new(Duration::ZERO);
    let mut skipped = read_assignments(
        kafka,
        topics.assignments,
        tenant,
        days,
        now,
        timeout,
        &mut view,
    )?;
    let sources = [
        ClaimsSource {
            topic: topics.claims,
            keys: Keys::TenantPath,
            decode: ClaimsUpdate::claim,
        },
        ClaimsSource {
            topic: topics.failures,
            keys: Keys::Tenant,
            decode: ClaimsUpdate::failure,
        },
    ];
    for source in sources {
        skipped += read_claims(kafka, &source, tenant, timeout, view.claim_tables_mut())?;
    }
    if skipped > 0 {
        eprintln!("autoclaim report: skipped {skipped} unreadable records");
    }
    let rows = view.assignments_since(tenant, report::window_start(now, days));
    let mut report = report::build(tenant, days, now, rows, &[]);
    report::add_claims(&mut report, view.claim_tables(), now, &|_| None);
    Ok(report)
}

/// The tenant's assignments written from an hour before the window; returns how many records
/// could not be read.
fn read_assignments(
    kafka: &KafkaArgs,
    topic: &str,
    tenant: &str,
    days: u32,
    now: Timestamp,
    timeout: Duration,
    view: &mut AdminView,
) -> anyhow::Result<u64> {
    let read_error = |e| report_read_error(e, kafka);
    let open = OpenTopic::new(&clients::table_reader(kafka), topic, timeout).map_err(read_error)?;
    // Records are timestamped when the processor writes them; an hour of margin for clock skew.
    let from = report::window_start(now, days).saturating_sub(Duration::from_secs(3600));
    let starts = offsets_by_time(&open, topic, from, timeout)?;
    let reader = open
        .read_from(timeout, |p, marks| {
            start_offset(starts.find_partition(topic, p).map(|e| e.offset()), marks)
        })
        .map_err(read_error)?;
    drain(reader, kafka, tenant, Keys::Tenant, |raw| {
        let Some(value) = raw.value else {
            return Ok(());
        };
        let a: pb::LicenseAssignment =
            codec::decode(value, Format::from_content_type(raw.content_type)?)?;
        if ids::same(&a.tenant_id, tenant) {
            view.apply_assignment(a)?;
        }
        Ok(())
    })
}

/// The claims or the failures topic: its name, keys and records.
struct ClaimsSource<'a> {
    topic: &'a str,
    keys: Keys,
    decode: fn(&RawRecord<'_>) -> Result<Option<ClaimsUpdate>, WireError>,
}

/// The tenant's records of the claims or failures topic, whole; a topic that does not exist
/// gives none.
fn read_claims(
    kafka: &KafkaArgs,
    source: &ClaimsSource<'_>,
    tenant: &str,
    timeout: Duration,
    tables: &mut ClaimTables,
) -> anyhow::Result<u64> {
    let topic = source.topic;
    let open = match OpenTopic::new(&clients::table_reader(kafka), topic, timeout) {
        Ok(open) => open,
        Err(ReadError::Missing(_)) => {
            eprintln!("autoclaim report: {topic} does not exist; its part of the report is empty");
            return Ok(0);
        }
        Err(e) => return Err(report_read_error(e, kafka)),
    };
    let reader = open
        .read_all(timeout)
        .map_err(|e| report_read_error(e, kafka))?;
    drain(reader, kafka, tenant, source.keys, |raw| {
        let Some(update) = (source.decode)(raw)? else {
            return Ok(());
        };
        let tenants = match &update {
            ClaimsUpdate::Claim(c) => &c.tenant_id,
            ClaimsUpdate::Failure(f) => &f.tenant_id,
        };
        if ids::same(tenants, tenant) {
            tables.apply(update)?;
        }
        Ok(())
    })
}

/// Hands each record that may be the tenant's to `apply`; returns how many it could not read.
fn drain(
    mut reader: TopicReader,
    kafka: &KafkaArgs,
    tenant: &str,
    keys: Keys,
    mut apply: impl FnMut(&RawRecord<'_>) -> Result<(), WireError>,
) -> anyhow::Result<u64> {
    let mut skipped = 0;
    while let Some(message) = reader
        .next_record()
        .map_err(|e| report_read_error(e, kafka))?
    {
        if may_be_tenants(&message, tenant, keys) && apply(&RawRecord::of(&message)).is_err() {
            skipped += 1;
        }
    }
    Ok(skipped)
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
