//! Publishing input records to their topics with the keys the processor expects: what producers
//! (and `autoclaim publish`, tests and the load generator) use.
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::clients;
use super::config::{KafkaArgs, Topics};
use super::partitioner::tenant_partition;
use crate::wire::pb::replay_record::Record;
use crate::wire::{codec, pb, Format};

/// The topic and key of a record.
pub fn destination<'t>(topics: &'t Topics, record: &Record) -> (&'t str, String) {
    match record {
        Record::Activity(e) => (&topics.activity, e.tenant_id.clone()),
        Record::DirectoryUser(u) => (&topics.directory, format!("{}/{}", u.tenant_id, u.user_id)),
        Record::DirectoryUserDeleted(d) => {
            (&topics.directory, format!("{}/{}", d.tenant_id, d.user_id))
        }
        Record::Inventory(i) => (&topics.inventory, format!("{}/{}", i.tenant_id, i.product)),
        Record::Settings(s) => (&topics.policies, format!("{}/settings", s.tenant_id)),
        Record::Policy(p) => (
            &topics.policies,
            format!("{}/policy/{}", p.tenant_id, p.policy_id),
        ),
    }
}

/// The value of a record (None for a tombstone).
pub fn encode_value(record: &Record, format: Format) -> Option<Vec<u8>> {
    Some(match record {
        Record::Activity(m) => codec::encode(m, format),
        Record::DirectoryUser(m) => codec::encode(m, format),
        Record::DirectoryUserDeleted(_) => return None,
        Record::Inventory(m) => codec::encode(m, format),
        Record::Settings(m) => codec::encode(m, format),
        Record::Policy(m) => codec::encode(m, format),
    })
}

pub struct Publisher {
    producer: BaseProducer,
    topics: Topics,
    format: Format,
    headers: OwnedHeaders,
    /// With the activity topic's partition count: send each activity record to the partition after
    /// its tenant's, as a producer with another partitioner would (every record is then routed).
    misplace_activity: Option<i32>,
}

impl Publisher {
    pub fn new(kafka: &KafkaArgs, topics: &Topics, format: Format) -> Result<Self, KafkaError> {
        let mut config = clients::idempotent_producer(kafka);
        config.set("queue.buffering.max.messages", "1000000");
        Ok(Publisher {
            producer: config.create()?,
            topics: topics.clone(),
            format,
            headers: OwnedHeaders::new().insert(Header {
                key: codec::CONTENT_TYPE_HEADER,
                value: Some(format.content_type()),
            }),
            misplace_activity: None,
        })
    }

    /// Sends every activity record to the partition after its tenant's, as a producer with another
    /// partitioner would (to measure routing).
    pub fn misplacing_activity(mut self) -> Result<Self, KafkaError> {
        let partitions = clients::topic_partitions(
            self.producer.client(),
            &self.topics.activity,
            Duration::from_secs(30),
        )?
        .len() as i32;
        if partitions == 0 {
            return Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
        self.misplace_activity = Some(partitions);
        Ok(self)
    }

    /// Queues one record, waiting while the local queue is full. Its `writtenAt`, if any, is the
    /// Kafka record's timestamp (so `run` bounds its event time as `replay` does); otherwise the
    /// producer stamps it with the time of sending.
    pub fn send(&self, record: &pb::ReplayRecord) -> Result<(), KafkaError> {
        let Some(inner) = &record.record else {
            return Ok(());
        };
        let timestamp = record
            .written_at
            .map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000));
        let value = encode_value(inner, self.format);
        self.send_stamped(inner, value.as_deref(), timestamp)
    }

    /// Queues a record with the given value bytes (which may be malformed on purpose, in tests).
    pub fn send_raw(&self, record: &Record, value: Option<&[u8]>) -> Result<(), KafkaError> {
        self.send_stamped(record, value, None)
    }

    /// Queues a record with the given value and Kafka timestamp (milliseconds; None: now).
    fn send_stamped(
        &self,
        record: &Record,
        value: Option<&[u8]>,
        timestamp: Option<i64>,
    ) -> Result<(), KafkaError> {
        let (topic, key) = destination(&self.topics, record);
        let mut base: BaseRecord<'_, str, [u8]> = BaseRecord::to(topic)
            .key(key.as_str())
            .headers(self.headers.clone());
        if let Some(v) = value {
            base = base.payload(v);
        }
        if let Some(millis) = timestamp {
            base = base.timestamp(millis);
        }
        if let (Record::Activity(event), Some(n)) = (record, self.misplace_activity) {
            base = base.partition((tenant_partition(&event.tenant_id, n) + 1) % n);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    base = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Sends arbitrary bytes to a topic with a key and optional content type (tests of hostile input).
    pub fn send_bytes(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        content_type: Option<&str>,
    ) -> Result<(), KafkaError> {
        let mut base: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
        if let Some(k) = key {
            base = base.key(k);
        }
        if let Some(ct) = content_type {
            base = base.headers(OwnedHeaders::new().insert(Header {
                key: codec::CONTENT_TYPE_HEADER,
                value: Some(ct),
            }));
        }
        self.producer.send(base).map_err(|(e, _)| e)?;
        Ok(())
    }

    /// Waits until everything queued is acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
