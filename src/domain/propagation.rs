//! Versions of a setting or policy, each in force from `changed_at + delay`. Until a new version is in
//! force the previous one stays, so a change made now reaches decisions only after the delay.
use std::time::Duration;

use super::time::Timestamp;

/// How many versions of one entity are kept once older ones are superseded. Older ones only matter to
/// events older than several superseding changes, which a live stream does not carry.
pub const MAX_VERSIONS: usize = 16;
/// A hard bound for an entity changed so often that more than `MAX_VERSIONS` changes are pending at
/// once (the oldest pending ones are then dropped: memory stays bounded under any input).
pub const HARD_MAX_VERSIONS: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// Sorted by `changed_at`; at most one version per instant.
    versions: Vec<(Timestamp, T)>,
}

impl<T> Default for Versioned<T> {
    fn default() -> Self {
        Versioned {
            versions: Vec::new(),
        }
    }
}

impl<T> Versioned<T> {
    /// Records a version. A version with the same `changed_at` replaces the one there, so re-reading a
    /// table topic is idempotent. Beyond `MAX_VERSIONS`, the oldest version is dropped only when the
    /// one after it is in force by the time of the newest change: a version still in force is never
    /// pushed out by changes that are only pending.
    pub fn record(&mut self, changed_at: Timestamp, value: T, delay: Duration) {
        match self.versions.binary_search_by_key(&changed_at, |(t, _)| *t) {
            Ok(i) => self.versions[i].1 = value,
            Err(i) => self.versions.insert(i, (changed_at, value)),
        }
        let newest = self.versions[self.versions.len() - 1].0;
        while self.versions.len() > MAX_VERSIONS
            && (self.versions[1].0.saturating_add(delay) <= newest
                || self.versions.len() > HARD_MAX_VERSIONS)
        {
            self.versions.remove(0);
        }
    }

    /// The version in force at `at`: the latest one whose change is at least `delay` old.
    pub fn in_force(&self, at: Timestamp, delay: Duration) -> Option<&T> {
        let cutoff = at.saturating_sub(delay);
        let n = self.versions.partition_point(|(t, _)| *t <= cutoff);
        n.checked_sub(1).map(|i| &self.versions[i].1)
    }

    /// The newest version, in force or not (what an admin last wrote).
    pub fn latest(&self) -> Option<(Timestamp, &T)> {
        self.versions.last().map(|(t, v)| (*t, v))
    }

    /// When the version in force at `at` came into force.
    pub fn in_force_since(&self, at: Timestamp, delay: Duration) -> Option<Timestamp> {
        let cutoff = at.saturating_sub(delay);
        let n = self.versions.partition_point(|(t, _)| *t <= cutoff);
        n.checked_sub(1)
            .map(|i| self.versions[i].0.saturating_add(delay))
    }

    /// Whether any version is still waiting for the delay at `at`.
    pub fn pending_until(&self, at: Timestamp, delay: Duration) -> Option<Timestamp> {
        self.versions
            .last()
            .map(|(t, _)| t.saturating_add(delay))
            .filter(|from| *from > at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn t(hours: i64) -> Timestamp {
        Timestamp::from_millis(hours * 3_600_000)
    }

    #[test]
    fn a_version_is_in_force_only_after_the_delay() {
        let mut v = Versioned::default();
        v.record(t(10), "first", 2 * HOUR);
        assert_eq!(v.in_force(t(11), 2 * HOUR), None);
        assert_eq!(v.in_force(t(12), 2 * HOUR), Some(&"first"));
        v.record(t(20), "second", 2 * HOUR);
        assert_eq!(v.in_force(t(21), 2 * HOUR), Some(&"first"));
        assert_eq!(v.in_force(t(22), 2 * HOUR), Some(&"second"));
        // Judged by the event's time: an old event still sees the old version.
        assert_eq!(v.in_force(t(13), 2 * HOUR), Some(&"first"));
        assert_eq!(v.pending_until(t(21), 2 * HOUR), Some(t(22)));
        assert_eq!(v.pending_until(t(22), 2 * HOUR), None);
    }

    #[test]
    fn out_of_order_and_repeated_versions() {
        let mut v = Versioned::default();
        v.record(t(20), "second", HOUR);
        v.record(t(10), "first", HOUR);
        v.record(t(20), "second again", HOUR);
        assert_eq!(v.in_force(t(15), HOUR), Some(&"first"));
        assert_eq!(v.in_force(t(25), HOUR), Some(&"second again"));
    }

    #[test]
    fn history_is_bounded() {
        let mut v = Versioned::default();
        for i in 0..100 {
            v.record(t(i), i, HOUR);
        }
        assert_eq!(v.versions.len(), MAX_VERSIONS);
        assert_eq!(v.in_force(t(1000), HOUR), Some(&99));
    }

    #[test]
    fn pending_changes_do_not_push_out_the_version_in_force() {
        let mut v = Versioned::default();
        v.record(t(0), 0, HOUR);
        // Many changes within one delay: all pending at the time of the last one.
        for i in 1..=40 {
            v.record(Timestamp::from_millis(10 * 3_600_000 + i), i, HOUR);
        }
        assert_eq!(v.in_force(t(10), HOUR), Some(&0));
        assert!(v.versions.len() <= HARD_MAX_VERSIONS);
    }
}
