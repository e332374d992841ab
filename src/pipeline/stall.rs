//! Notices an owned partition whose input waits while nothing of it is consumed: a batch librdkafka
//! cannot decompress or parse, or a fetch that keeps failing, leaves the consumer's position where
//! it is with records behind it, and librdkafka only retries. Without this, such a partition would
//! stand still unseen while the service looked healthy.
//!
//! Pure bookkeeping over readings taken from librdkafka's statistics (position and records waiting
//! per partition), with the time passed in, so that the rules are tested without Kafka.
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Longest stretch between two readings that counts as stalled time: while the loop is busy
/// elsewhere (a restore, waiting for offsets at an assignment) no statistics arrive, and that gap
/// says nothing about the partition.
pub const MAX_GAP: Duration = Duration::from_secs(10);

/// One partition as the latest statistics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub partition: i32,
    /// The next offset the consumer hands to the loop.
    pub position: i64,
    /// Committed records after `position` (up to the last stable offset).
    pub waiting: i64,
}

/// A partition that has not moved with input waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub partition: i32,
    pub offset: i64,
    pub waiting: i64,
    pub stalled_for: Duration,
}

/// What a new set of readings changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Stalled for the alarm time: say so, and turn readiness red.
    Alarm(Stall),
    /// Moving again (or no longer owned).
    Cleared(i32),
}

#[derive(Debug)]
struct Track {
    position: i64,
    waiting: i64,
    stalled_for: Duration,
    last_seen: Instant,
    alarmed: bool,
}

#[derive(Debug)]
pub struct StallWatch {
    alarm: Duration,
    timeout: Duration,
    partitions: HashMap<i32, Track>,
}

impl StallWatch {
    /// Alarms after `alarm` without progress; `expired` after `timeout` (the alarm is never later
    /// than the timeout).
    pub fn new(alarm: Duration, timeout: Duration) -> StallWatch {
        StallWatch {
            alarm: alarm.min(timeout),
            timeout,
            partitions: HashMap::new(),
        }
    }

    /// The service's watch: a stall is said (and readiness turned red) a quarter of the way to
    /// the timeout, within bounds that keep it clear of normal fetch gaps and early enough to
    /// matter.
    pub fn for_timeout(timeout: Duration) -> StallWatch {
        let alarm = (timeout / 4).clamp(Duration::from_secs(10), Duration::from_secs(60));
        StallWatch::new(alarm, timeout)
    }

    /// Takes the readings of every partition the consumer owns now; a partition missing from them
    /// is no longer owned and is forgotten.
    pub fn observe(&mut self, now: Instant, readings: &[Reading]) -> Vec<Change> {
        let mut changes = Vec::new();
        self.partitions.retain(|partition, track| {
            let owned = readings.iter().any(|r| r.partition == *partition);
            if !owned && track.alarmed {
                changes.push(Change::Cleared(*partition));
            }
            owned
        });
        for reading in readings {
            if let Some(change) = self.observe_one(now, reading) {
                changes.push(change);
            }
        }
        changes
    }

    fn observe_one(&mut self, now: Instant, reading: &Reading) -> Option<Change> {
        let Some(track) = self.partitions.get_mut(&reading.partition) else {
            self.partitions.insert(
                reading.partition,
                Track {
                    position: reading.position,
                    waiting: reading.waiting,
                    stalled_for: Duration::ZERO,
                    last_seen: now,
                    alarmed: false,
                },
            );
            return None;
        };
        let stood_still = reading.waiting > 0 && reading.position == track.position;
        track.stalled_for = if stood_still {
            track.stalled_for + now.saturating_duration_since(track.last_seen).min(MAX_GAP)
        } else {
            Duration::ZERO
        };
        track.position = reading.position;
        track.waiting = reading.waiting;
        track.last_seen = now;
        if track.stalled_for >= self.alarm && !track.alarmed {
            track.alarmed = true;
            return Some(Change::Alarm(Stall {
                partition: reading.partition,
                offset: reading.position,
                waiting: reading.waiting,
                stalled_for: track.stalled_for,
            }));
        }
        if track.stalled_for.is_zero() && track.alarmed {
            track.alarmed = false;
            return Some(Change::Cleared(reading.partition));
        }
        None
    }

    /// Whether any partition is stalled past the alarm time.
    pub fn any_alarmed(&self) -> bool {
        self.partitions.values().any(|t| t.alarmed)
    }

    /// The partition stalled longest, once that is past the timeout: the service stops on it.
    pub fn expired(&self) -> Option<Stall> {
        self.partitions
            .iter()
            .filter(|(_, t)| t.stalled_for >= self.timeout)
            .max_by_key(|(_, t)| t.stalled_for)
            .map(|(partition, t)| Stall {
                partition: *partition,
                offset: t.position,
                waiting: t.waiting,
                stalled_for: t.stalled_for,
            })
    }
}

/// The readings of one topic's owned partitions in librdkafka's statistics. Before the loop has
/// taken anything from a partition its position is the committed offset (or the log start).
pub fn readings(stats: &rdkafka::Statistics, topic: &str) -> Vec<Reading> {
    let Some(t) = stats.topics.get(topic) else {
        return Vec::new();
    };
    t.partitions
        .values()
        .filter(|p| p.partition >= 0 && p.desired && p.ls_offset >= 0)
        .map(|p| {
            let position = [p.app_offset, p.committed_offset, p.lo_offset]
                .into_iter()
                .find(|o| *o >= 0)
                .unwrap_or(0);
            Reading {
                partition: p.partition,
                position,
                waiting: (p.ls_offset - position).max(0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALARM: Duration = Duration::from_secs(15);
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn reading(partition: i32, position: i64, waiting: i64) -> Reading {
        Reading {
            partition,
            position,
            waiting,
        }
    }

    /// Feeds the same readings every 5 s for `steps` steps; returns every change and the time after.
    fn feed(
        watch: &mut StallWatch,
        start: Instant,
        steps: u32,
        readings: &[Reading],
    ) -> (Vec<Change>, Instant) {
        let mut changes = Vec::new();
        let mut now = start;
        for _ in 0..steps {
            changes.extend(watch.observe(now, readings));
            now += Duration::from_secs(5);
        }
        (changes, now)
    }

    #[test]
    fn a_partition_that_stands_still_with_input_waiting_alarms_then_expires() {
        let mut watch = StallWatch::new(ALARM, TIMEOUT);
        let (changes, now) = feed(&mut watch, Instant::now(), 4, &[reading(3, 120, 40)]);
        assert_eq!(changes.len(), 1, "one alarm after 15 s: {changes:?}");
        let Change::Alarm(stall) = changes[0] else {
            panic!("an alarm: {changes:?}")
        };
        assert_eq!((stall.partition, stall.offset, stall.waiting), (3, 120, 40));
        assert!(watch.any_alarmed());
        assert_eq!(watch.expired(), None, "not yet at the timeout");
        let (more, _) = feed(&mut watch, now, 9, &[reading(3, 120, 40)]);
        assert!(more.is_empty(), "no second alarm: {more:?}");
        let expired = watch.expired().expect("expired after 60 s");
        assert_eq!(
            (expired.partition, expired.offset, expired.waiting),
            (3, 120, 40)
        );
        assert!(expired.stalled_for >= TIMEOUT);
    }

    #[test]
    fn progress_or_an_empty_partition_is_never_a_stall() {
        let mut watch = StallWatch::new(ALARM, TIMEOUT);
        let mut now = Instant::now();
        for step in 0..30 {
            let moving = reading(0, 100 + step, 500);
            let idle = reading(1, 7, 0);
            assert!(watch.observe(now, &[moving, idle]).is_empty());
            now += Duration::from_secs(5);
        }
        assert!(!watch.any_alarmed());
        assert_eq!(watch.expired(), None);
    }

    #[test]
    fn moving_again_clears_the_alarm_and_restarts_the_count() {
        let mut watch = StallWatch::new(ALARM, TIMEOUT);
        let (_, now) = feed(&mut watch, Instant::now(), 5, &[reading(2, 50, 10)]);
        assert!(watch.any_alarmed());
        assert_eq!(
            watch.observe(now, &[reading(2, 60, 0)]),
            vec![Change::Cleared(2)]
        );
        assert!(!watch.any_alarmed());
        let (changes, _) = feed(&mut watch, now, 3, &[reading(2, 60, 5)]);
        assert!(changes.is_empty(), "the count started over: {changes:?}");
    }

    #[test]
    fn a_long_gap_between_readings_counts_as_at_most_max_gap() {
        let mut watch = StallWatch::new(ALARM, TIMEOUT);
        let start = Instant::now();
        watch.observe(start, &[reading(0, 10, 10)]);
        // The loop was busy restoring for two minutes: no statistics came meanwhile.
        let changes = watch.observe(start + Duration::from_secs(120), &[reading(0, 10, 10)]);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(watch.expired(), None);
    }

    #[test]
    fn a_partition_no_longer_owned_is_forgotten_and_its_alarm_cleared() {
        let mut watch = StallWatch::new(ALARM, TIMEOUT);
        let (_, now) = feed(&mut watch, Instant::now(), 5, &[reading(4, 1, 9)]);
        assert!(watch.any_alarmed());
        assert_eq!(watch.observe(now, &[]), vec![Change::Cleared(4)]);
        assert!(!watch.any_alarmed());
        assert_eq!(watch.expired(), None);
    }

    #[test]
    fn the_service_s_alarm_is_a_quarter_of_the_timeout_within_bounds() {
        assert_eq!(
            StallWatch::for_timeout(Duration::from_secs(120)).alarm,
            Duration::from_secs(30)
        );
        assert_eq!(
            StallWatch::for_timeout(Duration::from_secs(20)).alarm,
            Duration::from_secs(10)
        );
        assert_eq!(
            StallWatch::for_timeout(Duration::from_secs(5)).alarm,
            Duration::from_secs(5)
        );
        assert_eq!(
            StallWatch::for_timeout(Duration::from_secs(3600)).alarm,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn the_alarm_is_never_later_than_the_timeout() {
        let mut watch = StallWatch::new(Duration::from_secs(600), Duration::from_secs(10));
        let (changes, _) = feed(&mut watch, Instant::now(), 4, &[reading(0, 1, 1)]);
        assert!(
            matches!(changes.as_slice(), [Change::Alarm(_)]),
            "{changes:?}"
        );
        assert!(watch.expired().is_some());
    }
}
