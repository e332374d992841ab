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
                return Err(ReadError::Timeout {
                    topic: self.topic.clone(),
                    timeout: self.timeout,
                    pending: self.pending.keys().copied().collect(),
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
