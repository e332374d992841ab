//! The ceilings: a bare consumer copying records to an output topic, with or without transactions.
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use autoclaim::pipeline::clients::{self, QuietContext};
use autoclaim::pipeline::config::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::args::{BatchBounds, BenchArgs};
use crate::child::PROCESS_TIMEOUT;
use crate::figures::{CommitTimes, Throughput};
use crate::procfs::{cpu_secs, reset_peak_rss, status_kib, Window};
use crate::share::copies;

/// Bounds every transactional call of the transactional pass-through.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn send_copy(
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

pub(crate) fn drain(producer: &BaseProducer, sleep_us: u64) {
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

/// Most records taken in one burst between two looks at the batch bounds (autoclaim's bound).
const MAX_BURST: usize = 1000;

/// The line a pass-through child prints once it owns partitions of its input, so that a parent
/// can start producing (the latency phase).
pub(crate) const READY_LINE: &str = "ready";

/// One pass-through: copies `events` records of `input` to `output` (same partition numbers), in
/// transactions cut like autoclaim's when `transactional_id` is given.
pub(crate) struct PassThrough<'a> {
    pub(crate) kafka: &'a KafkaArgs,
    pub(crate) input: &'a str,
    pub(crate) output: &'a str,
    pub(crate) group: String,
    pub(crate) events: usize,
    pub(crate) transactional_id: Option<String>,
    pub(crate) batch: BatchBounds,
    pub(crate) broker: Option<u32>,
    pub(crate) drain_sleep_us: u64,
    pub(crate) linger_ms: Option<u64>,
    pub(crate) output_share: f64,
}

/// What a pass-through has done so far.
#[derive(Default)]
struct Progress {
    count: usize,
    copied: u64,
    /// When the first record came, with this process's CPU and the broker's window then.
    started: Option<(Instant, f64, Window)>,
    announced_ready: bool,
}

impl Progress {
    /// Prints `READY_LINE` once the consumer owns partitions.
    fn announce_ready(&mut self, consumer: &BaseConsumer<QuietContext>) -> anyhow::Result<()> {
        if !self.announced_ready && consumer.assignment()?.count() > 0 {
            println!("{READY_LINE}");
            std::io::stdout().flush()?;
            self.announced_ready = true;
        }
        Ok(())
    }
}

impl<'a> PassThrough<'a> {
    /// The pass-through a parent run asked this process for (`--internal-pass-through plain|txn`).
    pub(crate) fn from_internal_args(args: &'a BenchArgs, kind: &str) -> anyhow::Result<Self> {
        let prefix = args.prefix.as_deref().unwrap_or_default();
        let name = format!("{prefix}.ceiling-{kind}");
        Ok(PassThrough {
            kafka: &args.kafka,
            input: args.internal_input.as_deref().context("--internal-input")?,
            output: args
                .internal_output
                .as_deref()
                .context("--internal-output")?,
            transactional_id: (kind == "txn").then(|| name.clone()),
            group: name,
            events: args.events,
            batch: args.batch(),
            broker: crate::harness::broker_pid(args),
            drain_sleep_us: args.drain_sleep_us,
            linger_ms: args.ceiling_linger_ms,
            output_share: args
                .ceiling_output_share
                .resolve(None)
                .context("a pass-through child needs a number for --ceiling-output-share")?,
        })
    }

    pub(crate) fn run(&self) -> anyhow::Result<Throughput> {
        reset_peak_rss();
        let consumer: BaseConsumer<QuietContext> =
            clients::activity_consumer(self.kafka, &self.group)
                .create_with_context(QuietContext)?;
        let producer = self.producer()?;
        consumer.subscribe(&[self.input])?;
        let mut transactions = self
            .transactional_id
            .as_ref()
            .map(|_| Transactions::new(&producer, &consumer, self.input, self.drain_sleep_us));
        let mut progress = Progress::default();
        let guard = Instant::now();
        while progress.count < self.events {
            if guard.elapsed() > PROCESS_TIMEOUT {
                bail!(
                    "pass-through to {}: only {} of {} records in {PROCESS_TIMEOUT:?}",
                    self.output,
                    progress.count,
                    self.events
                );
            }
            let drained = self.burst(&consumer, &producer, transactions.as_mut(), &mut progress)?;
            progress.announce_ready(&consumer)?;
            if let Some(t) = &mut transactions {
                t.commit_if_due(self.batch, drained, progress.count >= self.events)?;
            }
        }
        if transactions.is_none() {
            producer.flush(Duration::from_secs(120))?;
        }
        let (t0, cpu0, window) = progress.started.context("no record consumed")?;
        let figures = Throughput {
            events: self.events,
            secs: t0.elapsed().as_secs_f64(),
            cpu_secs: cpu_secs("self") - cpu0,
            peak_rss_kib: status_kib("self", "VmHWM"),
            outputs: progress.copied,
            window: window.finish(),
            commits: transactions.map(|t| t.times),
        };
        consumer.unsubscribe();
        Ok(figures)
    }

    /// As autoclaim's loop: waits for a record, then takes what is already fetched without
    /// waiting, up to the room left in the batch. Returns whether it emptied what was fetched.
    fn burst(
        &self,
        consumer: &BaseConsumer<QuietContext>,
        producer: &BaseProducer,
        mut transactions: Option<&mut Transactions<'_>>,
        progress: &mut Progress,
    ) -> anyhow::Result<bool> {
        let in_batch = transactions.as_ref().map_or(0, |t| t.in_batch);
        let room = self
            .batch
            .max_records
            .saturating_sub(in_batch)
            .clamp(1, MAX_BURST);
        let mut polled = consumer.poll(Duration::from_millis(20));
        // Nothing polled is dropped: each record taken is copied before the next poll.
        for taken in 1.. {
            let message = match polled {
                None => return Ok(true),
                Some(Err(e)) => {
                    eprintln!("bench: consumer error: {e}");
                    return Ok(false);
                }
                Some(Ok(m)) => m,
            };
            progress.started.get_or_insert_with(|| {
                (Instant::now(), cpu_secs("self"), Window::start(self.broker))
            });
            if let Some(t) = transactions.as_deref_mut() {
                t.begin_if_closed()?;
                t.consumed(message.partition(), message.offset());
            }
            if copies(self.output_share, message.offset()) {
                send_copy(producer, self.output, &message)?;
                progress.copied += 1;
            }
            progress.count += 1;
            if progress.count >= self.events || taken >= room {
                return Ok(false);
            }
            polled = consumer.poll(Duration::ZERO);
        }
        Ok(false)
    }

    /// The idempotent producer, transactional (and initialised) when transactions are asked for.
    fn producer(&self) -> anyhow::Result<BaseProducer> {
        let mut config = match &self.transactional_id {
            Some(id) => clients::transactional_producer(
                self.kafka,
                id,
                clients::ProducerSettings::default(),
            ),
            None => clients::idempotent_producer(self.kafka),
        };
        if let Some(linger) = self.linger_ms {
            config.set("linger.ms", linger.to_string());
        }
        let producer: BaseProducer = config.create()?;
        if self.transactional_id.is_some() {
            producer.init_transactions(TXN_TIMEOUT)?;
        }
        Ok(producer)
    }
}

/// The transactions of the transactional pass-through, cut like autoclaim's: begun at the first
/// record of a batch, committed with the consumed offsets when the batch is full or old enough.
struct Transactions<'a> {
    producer: &'a BaseProducer,
    consumer: &'a BaseConsumer<QuietContext>,
    input: &'a str,
    drain_sleep_us: u64,
    /// When the open transaction began.
    open: Option<Instant>,
    in_batch: usize,
    /// Next offset to consume of each input partition, for the open transaction.
    next_offsets: BTreeMap<i32, i64>,
    times: CommitTimes,
}

impl<'a> Transactions<'a> {
    fn new(
        producer: &'a BaseProducer,
        consumer: &'a BaseConsumer<QuietContext>,
        input: &'a str,
        drain_sleep_us: u64,
    ) -> Self {
        Transactions {
            producer,
            consumer,
            input,
            drain_sleep_us,
            open: None,
            in_batch: 0,
            next_offsets: BTreeMap::new(),
            times: CommitTimes::default(),
        }
    }

    fn begin_if_closed(&mut self) -> anyhow::Result<()> {
        if self.open.is_none() {
            self.producer.begin_transaction()?;
            self.open = Some(Instant::now());
        }
        Ok(())
    }

    fn consumed(&mut self, partition: i32, offset: i64) {
        self.next_offsets.insert(partition, offset + 1);
        self.in_batch += 1;
    }

    /// Commits as autoclaim does: when the batch reached its bounds (records, age), or nothing
    /// more is waiting (`drained`) and it is at least `min_time` old; and after the last record.
    fn commit_if_due(
        &mut self,
        batch: BatchBounds,
        drained: bool,
        last: bool,
    ) -> anyhow::Result<()> {
        let Some(began) = self.open else {
            return Ok(());
        };
        let age = began.elapsed();
        let full = self.in_batch >= batch.max_records || age >= batch.max_time;
        if full || (drained && age >= batch.min_time) || last {
            self.commit()?;
            self.open = None;
            self.in_batch = 0;
        }
        Ok(())
    }

    /// Offsets into the transaction, outputs drained, commit: each step timed.
    fn commit(&mut self) -> anyhow::Result<()> {
        let mut offsets = TopicPartitionList::new();
        for (p, o) in &self.next_offsets {
            offsets.add_partition_offset(self.input, *p, Offset::Offset(*o))?;
        }
        let group = self
            .consumer
            .group_metadata()
            .context("no consumer group metadata")?;
        let t = Instant::now();
        self.producer
            .send_offsets_to_transaction(&offsets, &group, TXN_TIMEOUT)?;
        self.times.offsets_us.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        drain(self.producer, self.drain_sleep_us);
        self.times.drain_us.push(t.elapsed().as_micros() as u64);
        let t = Instant::now();
        self.producer.commit_transaction(TXN_TIMEOUT)?;
        self.times.commit_us.push(t.elapsed().as_micros() as u64);
        self.next_offsets.clear();
        Ok(())
    }
}
