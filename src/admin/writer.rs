//! Where the admin API's changes go: the policies topic, keyed `<tenant>/settings` or
//! `<tenant>/policy/<policyId>`, through an idempotent producer that waits for every in-sync replica.
//! Behind a trait so that tests can run the API without a broker (their in-memory writer is in
//! tests/writer_support).
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use thiserror::Error;

use crate::pipeline::clients::{self, QuietContext};
use crate::pipeline::config::{KafkaArgs, Topics};
use crate::wire::{codec, pb, Format};

/// How long a write may wait for the brokers' acknowledgement before it is reported as failed.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// One record for the policies topic.
#[derive(Clone, Debug, PartialEq)]
pub enum TableWrite {
    Settings(pb::TenantSettings),
    Policy(pb::Policy),
}

impl TableWrite {
    /// The record's key: the entity it is a version of.
    pub fn key(&self) -> String {
        match self {
            TableWrite::Settings(s) => format!("{}/settings", s.tenant_id),
            TableWrite::Policy(p) => format!("{}/policy/{}", p.tenant_id, p.policy_id),
        }
    }

    /// The record's value in `format`.
    pub fn encode(&self, format: Format) -> Vec<u8> {
        match self {
            TableWrite::Settings(s) => codec::encode(s, format),
            TableWrite::Policy(p) => codec::encode(p, format),
        }
    }
}

#[derive(Debug, Error)]
pub enum WriteError {
    #[error("the policies topic did not acknowledge the change: {0}")]
    NotAcknowledged(String),
}

/// What `PolicyWriter::write` returns: resolves once the record is stored or the write failed.
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), WriteError>> + Send + 'a>>;

/// Writes one version and resolves once it is durably stored (or has failed).
pub trait PolicyWriter: Send + Sync {
    fn write(&self, record: TableWrite) -> WriteFuture<'_>;
}

/// The Kafka writer: acks=all, idempotent, JSON with its content-type header.
pub struct KafkaPolicyWriter {
    producer: FutureProducer<QuietContext>,
    topic: String,
    format: Format,
}

impl KafkaPolicyWriter {
    pub fn new(kafka: &KafkaArgs, topics: &Topics) -> Result<Self, rdkafka::error::KafkaError> {
        let mut config = clients::idempotent_producer(kafka);
        config
            .set("message.timeout.ms", WRITE_TIMEOUT.as_millis().to_string())
            .set("linger.ms", "0");
        Ok(KafkaPolicyWriter {
            producer: config.create_with_context(QuietContext)?,
            topic: topics.policies.clone(),
            format: Format::Json,
        })
    }
}

impl PolicyWriter for KafkaPolicyWriter {
    fn write(&self, record: TableWrite) -> WriteFuture<'_> {
        Box::pin(async move {
            let key = record.key();
            let value = record.encode(self.format);
            let headers = OwnedHeaders::new().insert(Header {
                key: codec::CONTENT_TYPE_HEADER,
                value: Some(self.format.content_type()),
            });
            let message = FutureRecord::to(&self.topic)
                .key(key.as_str())
                .payload(value.as_slice())
                .headers(headers);
            self.producer
                .send(message, WRITE_TIMEOUT)
                .await
                .map(|_| ())
                .map_err(|(e, _)| WriteError::NotAcknowledged(e.to_string()))
        })
    }
}
