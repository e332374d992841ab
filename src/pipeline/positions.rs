//! Where newly assigned (or rewound) input partitions start: the group's committed offsets, fetched
//! by us and handed to the consumer as explicit positions.
//!
//! librdkafka can fetch them itself, but not safely here: while a transaction that carries the
//! group's offsets is open (a crashed instance's, until the broker times it out) the coordinator
//! answers UNSTABLE_OFFSET_COMMIT, librdkafka retries, and if the group rebalances meanwhile it
//! applies the answer of the fetch that was in flight to the new assignment. For a partition that
//! was still held, that answer carries no offset, so the partition started over from
//! `auto.offset.reset` and its records were decided a second time. With explicit positions
//! librdkafka never fetches offsets for the assignment, and a late answer finds nothing to apply to.
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tracing::warn;

/// One fetch's own time limit; the loop retries until its timeout.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_PAUSE: Duration = Duration::from_millis(200);
const LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum PositionsError {
    #[error(
        "the committed offsets of {held} were not stable within {waited:?} (last answer: \
         {last_error}); a transaction holding them has not ended (see --stable-offsets-timeout)"
    )]
    NotStable {
        /// The partitions waited for, by topic ("<topic> partitions [..] and ...").
        held: String,
        waited: Duration,
        last_error: String,
    },
    #[error("Kafka error while fetching committed offsets: {0}")]
    Kafka(#[from] KafkaError),
}

/// Sets each partition in `partitions` (one topic) to start at its committed offset, or at the
/// beginning when the group has never committed one. Waits while a transaction holds them (or the
/// coordinator is briefly unavailable), up to `timeout` (an open transaction holds them until the
/// broker aborts it: `transaction.timeout.ms`, 10 s for autoclaim's producers, checked every 10 s);
/// never turns an error into a position, and changes nothing unless every partition has one.
pub fn start_at_committed_offsets<C, X>(
    consumer: &C,
    partitions: &mut TopicPartitionList,
    timeout: Duration,
) -> Result<(), PositionsError>
where
    C: Consumer<X>,
    X: ConsumerContext,
{
    let started = Instant::now();
    let mut last_log = None::<Instant>;
    loop {
        let unsettled = match consumer.committed_offsets(partitions.clone(), FETCH_TIMEOUT) {
            Ok(answer) => match positions_of(&answer) {
                Ok(positions) => {
                    for (topic, partition, offset) in positions {
                        partitions.set_partition_offset(&topic, partition, offset)?;
                    }
                    return Ok(());
                }
                Err(reason) => reason,
            },
            // librdkafka retries unstable offsets itself until the fetch's time runs out.
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut) => {
                format!("no stable answer within {FETCH_TIMEOUT:?}")
            }
            Err(e) if super::clients::is_transient(&e) => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        if started.elapsed() >= timeout {
            return Err(PositionsError::NotStable {
                held: by_topic(partitions),
                waited: Duration::from_millis(started.elapsed().as_millis() as u64),
                last_error: unsettled,
            });
        }
        if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            warn!(
                reason = %unsettled,
                waited_ms = started.elapsed().as_millis() as u64,
                "waiting for stable committed offsets (an open transaction holds them until the broker ends it)"
            );
            last_log = Some(Instant::now());
        }
        std::thread::sleep(RETRY_PAUSE);
    }
}

/// The partitions of `list` by topic, for people: "t1 partitions [0, 1] and t2 partitions [0, 1]".
fn by_topic(list: &TopicPartitionList) -> String {
    let elements = list.elements();
    let mut topics: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for e in &elements {
        topics.entry(e.topic()).or_default().push(e.partition());
    }
    topics
        .iter()
        .map(|(topic, partitions)| format!("{topic} partitions {partitions:?}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The start position of every partition of a committed-offsets answer, or why the answer is not
/// usable yet.
fn positions_of(answer: &TopicPartitionList) -> Result<Vec<(String, i32, Offset)>, String> {
    answer
        .elements()
        .iter()
        .map(|e| {
            position(e.offset(), e.error())
                .map(|offset| (e.topic().to_owned(), e.partition(), offset))
                .map_err(|why| format!("{} [{}]: {why}", e.topic(), e.partition()))
        })
        .collect()
}

/// One partition's start position from its committed-offset answer.
fn position(committed: Offset, error: Result<(), KafkaError>) -> Result<Offset, String> {
    error.map_err(|e| e.to_string())?;
    match committed {
        Offset::Offset(o) => Ok(Offset::Offset(o)),
        // No offset committed by the group yet: the partition's first record.
        Offset::Invalid => Ok(Offset::Beginning),
        other => Err(format!("unexpected committed offset {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_waited_for_are_named_by_topic() {
        let mut list = TopicPartitionList::new();
        for (topic, p) in [("act", 0), ("act", 1), ("rep", 0), ("rep", 1)] {
            list.add_partition(topic, p);
        }
        assert_eq!(
            by_topic(&list),
            "act partitions [0, 1] and rep partitions [0, 1]"
        );
    }

    #[test]
    fn a_committed_offset_is_the_position_and_none_is_the_beginning() {
        assert_eq!(position(Offset::Offset(42), Ok(())), Ok(Offset::Offset(42)));
        assert_eq!(position(Offset::Invalid, Ok(())), Ok(Offset::Beginning));
        let mut answer = TopicPartitionList::new();
        answer
            .add_partition_offset("t", 0, Offset::Offset(42))
            .unwrap();
        answer
            .add_partition_offset("t", 1, Offset::Invalid)
            .unwrap();
        assert_eq!(
            positions_of(&answer).unwrap(),
            vec![
                ("t".to_owned(), 0, Offset::Offset(42)),
                ("t".to_owned(), 1, Offset::Beginning)
            ]
        );
    }

    #[test]
    fn an_offset_answered_with_an_error_is_no_position() {
        // UNSTABLE_OFFSET_COMMIT comes with no offset: it must not read as "never committed".
        let unstable = Err(KafkaError::OffsetFetch(
            RDKafkaErrorCode::UnstableOffsetCommit,
        ));
        let error = position(Offset::Invalid, unstable).unwrap_err();
        assert!(error.contains("nstable"), "{error}");
        assert!(position(Offset::End, Ok(())).is_err());
    }

    #[test]
    fn only_passing_conditions_are_waited_out() {
        let transient = KafkaError::OffsetFetch(RDKafkaErrorCode::UnstableOffsetCommit);
        assert!(crate::pipeline::clients::is_transient(&transient));
        let permanent = KafkaError::OffsetFetch(RDKafkaErrorCode::GroupAuthorizationFailed);
        assert!(!crate::pipeline::clients::is_transient(&permanent));
    }
}
