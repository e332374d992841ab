//! Reading a topic to its end: the one way every reader of whole topics (verify, report, restore,
//! the demo, the tests) learns a topic's partitions, assigns them and polls until each has reached
//! its end, through librdkafka's transient errors.
//!
//! The end of a partition is fixed before reading starts: its high watermark when the reader opened
//! the topic (for a read_committed consumer, the last stable offset), or an offset the caller
//! gives. Records written after that belong to a later read, so a busy topic is still read to an
//! end. A partition is done when a record at or past its end arrives, when its last record before
//! the end has been handed out, or when librdkafka reports that the consumer reached the
//! partition's end (transaction markers take offsets, so the last offset before a read_committed
//! end may be no record at all).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;

use super::clients::{self, QuietContext, Watermarks};

/// How long one poll waits for a record before the deadline is checked again.
const POLL_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("cannot create a Kafka consumer")]
    Consumer(#[source] KafkaError),
    #[error("cannot read the partitions and offsets of {topic}")]
    Partitions {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {0} does not exist")]
    Missing(String),
    #[error("reading {topic}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("could not read {topic} to its end within {timeout:?} (partitions {pending:?} left)")]
    Timeout {
        topic: String,
        timeout: Duration,
        pending: Vec<i32>,
    },
}

/// A topic whose partitions and watermarks are known, not assigned yet: the caller may look up
/// where to start (offsets by time) with its consumer.
pub struct OpenTopic {
    consumer: BaseConsumer<QuietContext>,
    topic: String,
    watermarks: Watermarks,
}

impl OpenTopic {
    /// A consumer made from `config`, and the partitions and watermarks of `topic` (transient
    /// errors retried for up to `timeout`). A topic that does not exist is `ReadError::Missing`.
    pub fn new(config: &ClientConfig, topic: &str, timeout: Duration) -> Result<Self, ReadError> {
        let consumer = consumer(config)?;
        let watermarks = clients::watermarks(&consumer, topic, timeout).map_err(|source| {
            ReadError::Partitions {
                topic: topic.to_owned(),
                source,
            }
        })?;
        if watermarks.is_empty() {
            return Err(ReadError::Missing(topic.to_owned()));
        }
        Ok(OpenTopic {
            consumer,
            topic: topic.to_owned(),
            watermarks,
        })
    }

    pub fn watermarks(&self) -> &Watermarks {
        &self.watermarks
    }

    pub fn consumer(&self) -> &BaseConsumer<QuietContext> {
        &self.consumer
    }

    /// Reads every partition from its beginning to its high watermark, within `timeout`.
    pub fn read_all(self, timeout: Duration) -> Result<TopicReader, ReadError> {
        self.read_from(timeout, |_, _| Some(Offset::Beginning))
    }

    /// Reads each partition from the offset `start` gives for it (its number and watermarks; None
    /// leaves it out) to its high watermark, within `timeout`. Empty partitions are left out.
    pub fn read_from(
        self,
        timeout: Duration,
        mut start: impl FnMut(i32, (i64, i64)) -> Option<Offset>,
    ) -> Result<TopicReader, ReadError> {
        let spans: Vec<(i32, Offset, Option<i64>)> = self
            .watermarks
            .iter()
            .filter(|(_, (low, high))| high > low)
            .filter_map(|(p, marks)| start(*p, *marks).map(|offset| (*p, offset, Some(marks.1))))
            .collect();
        TopicReader::assign(self.consumer, self.topic, &spans, timeout)
    }
}

/// The partitions and watermarks of `topic`, read with `config` (e.g. `clients::table_reader`).
pub fn watermarks(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Watermarks, ReadError> {
    Ok(OpenTopic::new(config, topic, timeout)?.watermarks)
}

/// Hands out the records of a topic's assigned partitions, each up to its end (see the module).
pub struct TopicReader {
    consumer: BaseConsumer<QuietContext>,
    topic: String,
    /// Partitions not done yet, with the offset each ends before (None: where librdkafka reports
    /// the partition's end).
    pending: HashMap<i32, Option<i64>>,
    deadline: Instant,
    timeout: Duration,
}

impl TopicReader {
    /// Reads the given partitions of `topic` from their beginning, each to the offset given
    /// (exclusive) or else to the end librdkafka reports, within `timeout`. No watermarks are read:
    /// for a reader that knows its partitions (a restore), which must not wait for that round trip.
    pub fn partitions(
        config: &ClientConfig,
        topic: &str,
        partitions: &[(i32, Option<i64>)],
        timeout: Duration,
    ) -> Result<Self, ReadError> {
        let spans: Vec<(i32, Offset, Option<i64>)> = partitions
            .iter()
            .map(|(p, end)| (*p, Offset::Beginning, *end))
            .collect();
        TopicReader::assign(consumer(config)?, topic.to_owned(), &spans, timeout)
    }

    /// Reads the given partitions of `topic`, each from the offset given to the end given
    /// (exclusive; None: to the end librdkafka reports), within `timeout`.
    pub fn spans(
        config: &ClientConfig,
        topic: &str,
        spans: &[(i32, Offset, Option<i64>)],
        timeout: Duration,
    ) -> Result<Self, ReadError> {
        TopicReader::assign(consumer(config)?, topic.to_owned(), spans, timeout)
    }

    fn assign(
        consumer: BaseConsumer<QuietContext>,
        topic: String,
        spans: &[(i32, Offset, Option<i64>)],
        timeout: Duration,
    ) -> Result<Self, ReadError> {
        let kafka_error = |source| ReadError::Kafka {
            topic: topic.clone(),
            source,
        };
        if !spans.is_empty() {
            let mut assignment = TopicPartitionList::new();
            for (p, start, _) in spans {
                assignment
                    .add_partition_offset(&topic, *p, *start)
                    .map_err(kafka_error)?;
            }
            consumer.assign(&assignment).map_err(kafka_error)?;
        }
        Ok(TopicReader {
            consumer,
            pending: spans.iter().map(|(p, _, end)| (*p, *end)).collect(),
            topic,
            deadline: Instant::now() + timeout,
            timeout,
        })
    }

    /// The next record before its partition's end; None once every partition is done. Transient
    /// errors (a broker away, a leader moving) are logged and read through: librdkafka fetches
    /// again by itself.
    pub fn next_record(&mut self) -> Result<Option<BorrowedMessage<'_>>, ReadError> {
        while !self.pending.is_empty() {
            if Instant::now() > self.deadline {
                let mut pending: Vec<i32> = self.pending.keys().copied().collect();
                pending.sort_unstable();
                return Err(ReadError::Timeout {
                    topic: self.topic.clone(),
                    timeout: self.timeout,
                    pending,
                });
            }
            match self.consumer.poll(POLL_WAIT) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.pending.remove(&p);
                }
                Some(Err(e)) if clients::is_transient(&e) => {
                    tracing::warn!(topic = self.topic, error = %e, "transient error while reading; going on");
                }
                Some(Err(source)) => {
                    return Err(ReadError::Kafka {
                        topic: self.topic.clone(),
                        source,
                    })
                }
                Some(Ok(message)) => {
                    let p = message.partition();
                    let Some(end) = self.pending.get(&p).copied() else {
                        continue;
                    };
                    let offset = message.offset();
                    if end.is_some_and(|end| offset + 1 >= end) {
                        self.pending.remove(&p);
                    }
                    if end.is_none_or(|end| offset < end) {
                        return Ok(Some(message));
                    }
                }
            }
        }
        Ok(None)
    }
}

fn consumer(config: &ClientConfig) -> Result<BaseConsumer<QuietContext>, ReadError> {
    config
        .create_with_context(QuietContext)
        .map_err(ReadError::Consumer)
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use super::*;
    use crate::pipeline::config::KafkaArgs;

    /// The embedded broker with topic `t` of three partitions: `counts[p]` records on partition p,
    /// each record's value its partition and offset.
    fn cluster_with(
        counts: [i64; 3],
    ) -> (
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        KafkaArgs,
    ) {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 3, 1).expect("topic");
        let kafka = KafkaArgs::plaintext(cluster.bootstrap_servers());
        for (p, n) in counts.iter().enumerate() {
            produce(&kafka, p as i32, 0..*n);
        }
        (cluster, kafka)
    }

    fn produce(kafka: &KafkaArgs, partition: i32, offsets: std::ops::Range<i64>) {
        let producer: BaseProducer = clients::idempotent_producer(kafka).create().unwrap();
        for o in offsets {
            let value = format!("{partition}/{o}");
            producer
                .send(
                    BaseRecord::<(), str>::to("t")
                        .partition(partition)
                        .payload(&value),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    fn read(mut reader: TopicReader) -> Vec<String> {
        let mut values = Vec::new();
        while let Some(m) = reader.next_record().unwrap() {
            values.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
        values.sort();
        values
    }

    const WITHIN: Duration = Duration::from_secs(20);

    #[test]
    fn a_topic_is_read_to_the_end_it_had_when_it_was_opened() {
        let (_cluster, kafka) = cluster_with([3, 1, 0]);
        let open = OpenTopic::new(&clients::table_reader(&kafka), "t", WITHIN).unwrap();
        assert_eq!(
            open.watermarks().values().map(|m| m.1).collect::<Vec<_>>(),
            [3, 1, 0]
        );
        // Written after the ends were fixed: left for a later read.
        produce(&kafka, 1, 1..3);
        let values = read(open.read_all(WITHIN).unwrap());
        assert_eq!(values, ["0/0", "0/1", "0/2", "1/0"]);
    }

    #[test]
    fn a_read_starts_where_the_caller_says_and_leaves_out_what_it_skips() {
        let (_cluster, kafka) = cluster_with([3, 2, 2]);
        let open = OpenTopic::new(&clients::table_reader(&kafka), "t", WITHIN).unwrap();
        let reader = open
            .read_from(WITHIN, |p, _| match p {
                0 => Some(Offset::Offset(1)),
                1 => None,
                _ => Some(Offset::Beginning),
            })
            .unwrap();
        assert_eq!(read(reader), ["0/1", "0/2", "2/0", "2/1"]);
    }

    #[test]
    fn named_partitions_are_read_to_the_offset_given_or_to_their_end() {
        let (_cluster, kafka) = cluster_with([3, 2, 0]);
        let spans = [(0, Some(2)), (1, None), (2, None)];
        let reader =
            TopicReader::partitions(&clients::restore_reader(&kafka), "t", &spans, WITHIN).unwrap();
        assert_eq!(read(reader), ["0/0", "0/1", "1/0", "1/1"]);
    }

    #[test]
    fn a_missing_topic_and_a_read_past_its_deadline_are_errors_of_their_own() {
        let (_cluster, kafka) = cluster_with([2, 0, 0]);
        let missing = OpenTopic::new(&clients::table_reader(&kafka), "nope", WITHIN);
        assert!(matches!(missing, Err(ReadError::Missing(t)) if t == "nope"));
        let open = OpenTopic::new(&clients::table_reader(&kafka), "t", WITHIN).unwrap();
        let mut reader = open.read_all(Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(1));
        match reader.next_record() {
            Err(ReadError::Timeout { topic, pending, .. }) => {
                assert_eq!((topic.as_str(), pending), ("t", vec![0]));
            }
            other => panic!("expected a timeout, got {:?}", other.map(|m| m.is_some())),
        }
    }
}
