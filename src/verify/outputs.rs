//! The outputs read back: every assignment and failure decoded, checked on its own (it reads; an
//! assignment is on its tenant's partition number) and kept for the checks across records
//! (duplicates, seats, the replay comparison).
use std::collections::BTreeMap;

use prost::Message as _;
use rdkafka::message::{BorrowedMessage, Message};
use serde_json::{json, Value};

use super::problems::{ProblemKind, Problems};
use super::{read_topic, Findings, VerifyArgs};
use crate::domain::time::Timestamp;
use crate::pipeline::partitioner::tenant_partition;
use crate::pipeline::records::RawRecord;
use crate::wire::{codec, convert, pb, Format, WireError};

/// An output record read back: where it is, and what it says (decidedAt cleared).
pub(super) struct OutputRecord {
    pub topic: &'static str,
    pub partition: i32,
    pub offset: i64,
    pub tenant: String,
    pub user: String,
    pub product: String,
    pub trigger_event_id: String,
}

impl OutputRecord {
    fn of(topic: &'static str, message: &BorrowedMessage<'_>, output: OutputFields<'_>) -> Self {
        OutputRecord {
            topic,
            partition: message.partition(),
            offset: message.offset(),
            tenant: output.tenant.to_owned(),
            user: output.user.to_owned(),
            product: output.product.to_owned(),
            trigger_event_id: output.trigger_event_id.to_owned(),
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "tenant": self.tenant,
            "user": self.user,
            "product": self.product,
            "triggerEventId": self.trigger_event_id,
        })
    }
}

/// What assignments and failures have in common.
struct OutputFields<'a> {
    tenant: &'a str,
    user: &'a str,
    product: &'a str,
    trigger_event_id: &'a str,
}

/// An assignment: tenant, user, product and assignment id. The id is part of it: a product assigned
/// again after the directory showed the first assignment removed is a distinct assignment.
pub(super) type AssignmentKey = (String, String, String, String);

/// Every copy of one assignment.
pub(super) struct Copies {
    /// From when it counts against seats: the earliest copy's.
    pub counted_from: Timestamp,
    /// Each copy as `triggerEventId@partition/offset`.
    pub at: Vec<String>,
}

#[derive(Default)]
pub(super) struct Outputs {
    /// Every readable output, assignments first.
    pub records: Vec<OutputRecord>,
    /// The canonical bytes of each of `records` (same index), to compare with replay's.
    pub keys: Vec<Vec<u8>>,
    pub assignments: BTreeMap<AssignmentKey, Copies>,
}

impl Outputs {
    /// Reads the assignments, then the failures.
    pub fn read(
        args: &VerifyArgs,
        activity_partitions: i32,
        findings: &mut Findings,
    ) -> anyhow::Result<Self> {
        let (kafka, topics, timeout) = (&args.kafka, &args.topics, args.timeout);
        let mut outputs = Outputs::default();
        read_topic(kafka, &topics.assignments, timeout, |m| {
            findings.counts.assignments += 1;
            match decode_output::<pb::LicenseAssignment>(m) {
                Ok(a) => outputs.add_assignment(m, a, activity_partitions, &mut findings.problems),
                Err(e) => unreadable(&mut findings.problems, "assignments", m, &e),
            }
        })?;
        read_topic(kafka, &topics.failures, timeout, |m| {
            findings.counts.failures += 1;
            match decode_output::<pb::AutoclaimFailure>(m) {
                Ok(f) => outputs.add_failure(m, f),
                Err(e) => unreadable(&mut findings.problems, "failures", m, &e),
            }
        })?;
        Ok(outputs)
    }

    fn add_assignment(
        &mut self,
        message: &BorrowedMessage<'_>,
        a: pb::LicenseAssignment,
        activity_partitions: i32,
        problems: &mut Problems,
    ) {
        // From when it counts against seats: seatsCountedFrom (the event's time, or just after
        // the snapshot it was checked against), or occurredAt for older records.
        let counted_from = match a.seats_counted_from {
            Some(t) => convert::timestamp("seatsCountedFrom", Some(t)).ok(),
            None => convert::timestamp("occurredAt", a.occurred_at).ok(),
        };
        let fields = OutputFields {
            tenant: &a.tenant_id,
            user: &a.user_id,
            product: &a.product,
            trigger_event_id: &a.trigger_event_id,
        };
        let record = OutputRecord::of("assignments", message, fields);
        let owner = tenant_partition(&a.tenant_id, activity_partitions);
        if owner != message.partition() {
            problems.add(
                ProblemKind::MisplacedAssignment,
                json!({"assignment": record.json(), "expectedPartition": owner}),
            );
        }
        let key = (
            a.tenant_id.clone(),
            a.user_id.clone(),
            a.product.clone(),
            a.assignment_id.clone(),
        );
        let copies = self.assignments.entry(key).or_insert_with(|| Copies {
            counted_from: Timestamp::MAX,
            at: Vec::new(),
        });
        if let Some(t) = counted_from {
            copies.counted_from = copies.counted_from.min(t);
        }
        copies.at.push(format!(
            "{}@{}/{}",
            a.trigger_event_id,
            message.partition(),
            message.offset()
        ));
        self.keys.push(assignment_key(a));
        self.records.push(record);
    }

    fn add_failure(&mut self, message: &BorrowedMessage<'_>, f: pb::AutoclaimFailure) {
        let fields = OutputFields {
            tenant: &f.tenant_id,
            user: &f.user_id,
            product: &f.product,
            trigger_event_id: &f.trigger_event_id,
        };
        self.records
            .push(OutputRecord::of("failures", message, fields));
        self.keys.push(failure_key(f));
    }
}

fn unreadable(
    problems: &mut Problems,
    topic: &str,
    message: &BorrowedMessage<'_>,
    error: &WireError,
) {
    problems.add(
        ProblemKind::UnreadableOutput,
        json!({"topic": topic, "partition": message.partition(), "offset": message.offset(), "error": error.to_string()}),
    );
}

fn decode_output<M>(message: &BorrowedMessage<'_>) -> Result<M, WireError>
where
    M: prost::Message + serde::de::DeserializeOwned + Default,
{
    let raw = RawRecord::of(message);
    let value = raw
        .value
        .ok_or_else(|| WireError::field("value", "an output cannot be a tombstone"))?;
    let format = Format::from_content_type(raw.content_type)?;
    codec::decode(value, format)
}

/// Canonical bytes of an output (decidedAt, the wall-clock part, cleared): equal outputs, equal
/// bytes.
pub(super) fn assignment_key(mut a: pb::LicenseAssignment) -> Vec<u8> {
    a.decided_at = None;
    let mut key = vec![b'A'];
    key.extend(a.encode_to_vec());
    key
}

pub(super) fn failure_key(mut f: pb::AutoclaimFailure) -> Vec<u8> {
    f.decided_at = None;
    let mut key = vec![b'F'];
    key.extend(f.encode_to_vec());
    key
}
