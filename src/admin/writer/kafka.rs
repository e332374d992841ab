//! The Kafka writer of admin changes: one transaction per change holds the new version (policies
//! topic) and its audit entry (audit topic), so that readers with `read_committed` see both or
//! neither. Its transactional id is derived from the service's own, so that a restarted instance
//! fences its predecessor's admin writer and aborts whatever transaction that one left open.
//!
//! librdkafka's transaction calls block: they run with `spawn_blocking`, never on the async
//! runtime's threads, and one transaction at a time (behind an async mutex, held across them).
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::sync::Mutex;

use super::{PolicyWriter, RecordedChange, WriteError, WriteFuture, Written, WRITE_TIMEOUT};
use crate::pipeline::clients::{self, ProducerSettings, QuietContext};
use crate::pipeline::config::{KafkaArgs, Topics};
use crate::wire::{codec, Format};

type Transactional = FutureProducer<QuietContext>;

/// The admin writer's transactional id: the service's own with `-admin` after it, unique among
/// running instances as the service's is, and stable across restarts.
pub fn admin_transactional_id(service_transactional_id: &str) -> String {
    format!("{service_transactional_id}-admin")
}

/// The producer, as far as it has got.
enum Slot {
    /// Made, not yet known to the transaction coordinator (that waits for the first write, so that
    /// a broker away at start does not hold the service up).
    Created(Transactional),
    Ready(Transactional),
    /// Dropped after an error that left it unusable; the next write makes a new one.
    Gone,
}

/// The Kafka writer: transactional, acks=all, JSON with its content-type header.
pub struct KafkaPolicyWriter {
    config: ClientConfig,
    policies_topic: String,
    audit_topic: String,
    format: Format,
    slot: Mutex<Slot>,
}

impl KafkaPolicyWriter {
    /// A writer for `topics` whose transactional id is `admin_transactional_id(service_id)`.
    pub fn new(kafka: &KafkaArgs, topics: &Topics, service_id: &str) -> KafkaResult<Self> {
        let settings = ProducerSettings {
            // A crashed instance's open transaction holds back every read_committed reader of the
            // policies topic (the processors' table feeds) this long, unless its restart fences it
            // first; an admin change takes milliseconds.
            transaction_timeout: WRITE_TIMEOUT,
            ..ProducerSettings::default()
        };
        let mut config =
            clients::transactional_producer(kafka, &admin_transactional_id(service_id), settings);
        config
            .set("message.timeout.ms", WRITE_TIMEOUT.as_millis().to_string())
            .set("linger.ms", "0");
        let producer = config.create_with_context(QuietContext)?;
        Ok(KafkaPolicyWriter {
            config,
            policies_topic: topics.policies.clone(),
            audit_topic: topics.audit.clone(),
            format: Format::Json,
            slot: Mutex::new(Slot::Created(producer)),
        })
    }

    /// The initialised producer; made and initialised first if need be. Initialising fences an
    /// earlier producer with the same transactional id.
    async fn ready(&self, slot: &mut Slot) -> KafkaResult<Transactional> {
        let producer = match std::mem::replace(slot, Slot::Gone) {
            Slot::Ready(producer) => {
                *slot = Slot::Ready(producer.clone());
                return Ok(producer);
            }
            Slot::Created(producer) => producer,
            Slot::Gone => self.config.create_with_context(QuietContext)?,
        };
        blocking(&producer, |p| p.init_transactions(WRITE_TIMEOUT)).await?;
        *slot = Slot::Ready(producer.clone());
        Ok(producer)
    }

    /// Both records in one transaction; on failure the transaction is aborted (or, if even that
    /// fails, the producer is given up and the next write starts a new one).
    async fn transact(&self, slot: &mut Slot, change: &RecordedChange) -> KafkaResult<Written> {
        let producer = self.ready(slot).await?;
        if let Err(e) = blocking(&producer, |p| p.begin_transaction()).await {
            *slot = Slot::Gone;
            return Err(e);
        }
        let sent = match self.send(&producer, change) {
            Ok(deliveries) => delivered(deliveries).await,
            Err(e) => Err(e),
        };
        let outcome = match sent {
            Ok(written) => blocking(&producer, |p| p.commit_transaction(WRITE_TIMEOUT))
                .await
                .map(|()| written),
            Err(e) => Err(e),
        };
        let error = match outcome {
            Ok(written) => return Ok(written),
            Err(error) => error,
        };
        let aborted = !is_fatal(&error)
            && blocking(&producer, |p| p.abort_transaction(WRITE_TIMEOUT))
                .await
                .is_ok();
        if !aborted {
            *slot = Slot::Gone;
        }
        Err(error)
    }

    /// Queues the version and the audit entry in the open transaction.
    fn send(
        &self,
        producer: &Transactional,
        change: &RecordedChange,
    ) -> KafkaResult<[DeliveryFuture; 2]> {
        let headers = || {
            OwnedHeaders::new().insert(Header {
                key: codec::CONTENT_TYPE_HEADER,
                value: Some(self.format.content_type()),
            })
        };
        let key = change.version.key();
        let value = change.version.encode(self.format);
        let entry = codec::encode(&change.audit, self.format);
        let version = producer
            .send_result(
                FutureRecord::to(&self.policies_topic)
                    .key(key.as_str())
                    .payload(value.as_slice())
                    .headers(headers()),
            )
            .map_err(|(e, _)| e)?;
        let audit = producer
            .send_result(
                FutureRecord::to(&self.audit_topic)
                    .key(change.audit.tenant_id.as_str())
                    .payload(entry.as_slice())
                    .headers(headers()),
            )
            .map_err(|(e, _)| e)?;
        Ok([version, audit])
    }
}

impl PolicyWriter for KafkaPolicyWriter {
    fn write(&self, change: RecordedChange) -> WriteFuture<'_> {
        Box::pin(async move {
            let mut slot = self.slot.lock().await;
            self.transact(&mut slot, &change)
                .await
                .map_err(|e| WriteError::NotAcknowledged(e.to_string()))
        })
    }
}

/// Waits for both records' acknowledgements (the version's, then the audit entry's), so that a
/// failed delivery is reported as itself rather than as the commit's refusal; the audit entry's
/// offset is where it stands in the log.
async fn delivered(deliveries: [DeliveryFuture; 2]) -> KafkaResult<Written> {
    let mut audit_offset = 0;
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(d)) => audit_offset = d.offset,
            Ok(Err((e, _))) => return Err(e),
            Err(_) => return Err(KafkaError::Canceled),
        }
    }
    Ok(Written { audit_offset })
}

fn is_fatal(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(e) if e.is_fatal())
}

/// Runs a blocking librdkafka call on the blocking pool.
async fn blocking<T: Send + 'static>(
    producer: &Transactional,
    call: impl FnOnce(&Transactional) -> KafkaResult<T> + Send + 'static,
) -> KafkaResult<T> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || call(&producer))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}

#[cfg(test)]
mod tests {
    use super::admin_transactional_id;

    #[test]
    fn the_admin_writer_has_an_id_of_its_own_derived_from_the_services() {
        assert_eq!(
            admin_transactional_id("autoclaim-host-1"),
            "autoclaim-host-1-admin"
        );
        assert_ne!(
            admin_transactional_id("a"),
            admin_transactional_id("b"),
            "instances with distinct ids never fence each other's admin writers"
        );
    }
}
