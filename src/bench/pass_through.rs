//! The ceilings: a bare consumer copying records to an output topic, with or without transactions.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::pipeline::clients::{self, QuietContext};
use crate::pipeline::config::KafkaArgs;

use super::*;

pub(super) fn send_copy(
    producer: &BaseProducer,
    topic: &str,
    message: &BorrowedMessage<'_>,
) -> Result<(), KafkaError> {
    producer.poll(Duration::ZERO);
    let headers = message.headers().map(|h| h.detach());
    let mut record: BaseRecord<'_, [u8], [u8]> =
        BaseRecord::to(topic).partition(message.partition());
    if let Some(k) = message.key() {
        record = record.key(k);
    }
    if let Some(v) = message.payload() {
        record = record.payload(v);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

pub(super) fn drain(producer: &BaseProducer, sleep_us: u64) {
    let deadline = Instant::now() + TXN_TIMEOUT;
    while producer.in_flight_count() > 0 && Instant::now() < deadline {
        if sleep_us == 0 {
            producer.poll(Duration::from_millis(1));
        } else {
            producer.poll(Duration::ZERO);
            std::thread::sleep(Duration::from_micros(sleep_us));
        }
    }
}

/// Copies `events` records of `input` to `output` (same partition numbers), in transactions cut like
/// autoclaim's when `transactional_id` is given.
#[allow(clippy::too_many_arguments)]
pub(super) fn pass_through(
    kafka: &KafkaArgs,
    input: &str,
    output: &str,
    group: &str,
    events: usize,
    transactional_id: Option<&str>,
    batch: (usize, Duration),
    broker: Option<u32>,
    drain_sleep_us: u64,
    linger_ms: Option<u64>,
    output_share: f64,
) -> anyhow::Result<Throughput> {
    let mut copied = 0u64;
    reset_peak_rss();
    let consumer: BaseConsumer<QuietContext> =
        clients::activity_consumer(kafka, group).create_with_context(QuietContext)?;
    let mut config = match transactional_id {
        Some(id) => {
            clients::transactional_producer(kafka, id, clients::ProducerSettings::default())
        }
        None => clients::idempotent_producer(kafka),
    };
    if let Some(linger) = linger_ms {
        config.set("linger.ms", linger.to_string());
    }
    let producer: BaseProducer = config.create()?;
    if transactional_id.is_some() {
        producer.init_transactions(TXN_TIMEOUT)?;
    }
    consumer.subscribe(&[input])?;
    let mut count = 0usize;
    let mut started: Option<(Instant, f64, Window)> = None;
    let mut open: Option<Instant> = None;
    let mut in_batch = 0usize;
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let guard = Instant::now();
    let mut times = CommitTimes::default();
    let mut commit = |next_offsets: &mut BTreeMap<i32, i64>| -> anyhow::Result<()> {
        let mut offsets = TopicPartitionList::new();
        for (p, o) in next_offsets.iter() {
            offsets.add_partition_offset(input, *p, Offset::Offset(*o))?;
        }
        let group = consumer
            .group_metadata()
            .context("no consumer group metadata")?;
        let t = Instant::now();
        producer.send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)?;
        times.offsets_us.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        drain(&producer, drain_sleep_us);
        times.drain_us.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        producer.commit_transaction(TXN_TIMEOUT)?;
        times.commit_us.push(t.elapsed().as_micros() as u64);
        next_offsets.clear();
        Ok(())
    };
    while count < events {
        if guard.elapsed() > PROCESS_TIMEOUT {
            bail!(
                "pass-through to {output}: only {count} of {events} records in {PROCESS_TIMEOUT:?}"
            );
        }
        match consumer.poll(Duration::from_millis(20)) {
            None => {}
            Some(Err(e)) => eprintln!("bench: consumer error: {e}"),
            Some(Ok(m)) => {
                if started.is_none() {
                    started = Some((Instant::now(), cpu_secs("self"), Window::start(broker)));
                }
                if transactional_id.is_some() && open.is_none() {
                    producer.begin_transaction()?;
                    open = Some(Instant::now());
                }
                // A deterministic share of the records (by offset), spread over all partitions.
                if output_share >= 1.0
                    || (m.offset() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10_000
                        < (output_share * 10_000.0) as u64
                {
                    send_copy(&producer, output, &m)?;
                    copied += 1;
                }
                next_offsets.insert(m.partition(), m.offset() + 1);
                in_batch += 1;
                count += 1;
            }
        }
        if let Some(began) = open {
            if in_batch >= batch.0 || began.elapsed() >= batch.1 || count >= events {
                commit(&mut next_offsets)?;
                open = None;
                in_batch = 0;
            }
        }
    }
    if transactional_id.is_none() {
        producer.flush(Duration::from_secs(120))?;
    }
    let (t0, cpu0, window) = started.context("no record consumed")?;
    let secs = t0.elapsed().as_secs_f64();
    let figures = Throughput {
        events,
        secs,
        cpu_secs: cpu_secs("self") - cpu0,
        peak_rss_kib: status_kib("self", "VmHWM"),
        outputs: copied,
        window: window.finish(),
        commits: transactional_id.map(|_| times),
    };
    consumer.unsubscribe();
    Ok(figures)
}
