//! The report of `verify`: what was read and checked, where the group stands on each activity
//! partition, the problems and the notes; for people and as JSON.
use serde::Serialize;

use super::problems::Problem;

/// What was read and checked.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Counts {
    pub activity_records: u64,
    pub readable_records: u64,
    pub unreadable_records: u64,
    pub processed_records: u64,
    pub unprocessed_records: u64,
    pub assignments: u64,
    pub distinct_assignments: u64,
    pub failures: u64,
    pub dead_letters: u64,
    /// Records of the repartition topic (activity routed to the partition owning its tenant).
    pub routed_records: u64,
    /// Of those, the ones not decided yet (at or after the group's committed offset).
    pub unprocessed_routed_records: u64,
    /// Dead letters of other source topics (not checked).
    pub dead_letters_of_other_topics: u64,
    pub table_records: u64,
    pub unreadable_table_records: u64,
    /// With --compare-replay: what replay gives for the processed records.
    pub expected_assignments: Option<u64>,
    pub expected_failures: Option<u64>,
}

/// One activity partition: where the group stands and what is left.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionStatus {
    pub partition: i32,
    /// First offset still in the topic (retention may have deleted earlier records).
    pub low_watermark: i64,
    pub high_watermark: i64,
    /// The group's committed offset (next record to process), if any.
    pub committed: Option<i64>,
    pub records: u64,
    pub unprocessed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub clean: bool,
    pub group_id: String,
    pub activity_topic: String,
    pub compared_with_replay: bool,
    pub counts: Counts,
    pub partitions: Vec<PartitionStatus>,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
    pub elapsed_ms: u64,
}

impl Report {
    /// Count of one kind of problem (0 when absent).
    pub fn count(&self, kind: &str) -> u64 {
        self.problems
            .iter()
            .find(|p| p.kind.name() == kind)
            .map_or(0, |p| p.count)
    }

    /// The report for people: a summary, each problem with its examples, and notes.
    pub fn human(&self) -> String {
        let c = &self.counts;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "autoclaim verify: group {}, topic {} ({} partitions)",
            self.group_id,
            self.activity_topic,
            self.partitions.len()
        ));
        line(format!(
            "  activity:     {} records ({} readable, {} to dead-letter); {} processed, {} not yet",
            c.activity_records,
            c.readable_records,
            c.unreadable_records,
            c.processed_records,
            c.unprocessed_records
        ));
        if c.routed_records > 0 {
            line(format!(
                "  routed:       {} records to the partition owning their tenant, {} not decided yet",
                c.routed_records, c.unprocessed_routed_records
            ));
        }
        line(format!(
            "  outputs:      {} assignments ({} distinct tenant/user/product), {} failures, {} dead letters",
            c.assignments, c.distinct_assignments, c.failures, c.dead_letters
        ));
        if let (Some(a), Some(f)) = (c.expected_assignments, c.expected_failures) {
            line(format!(
                "  replay:       {a} assignments and {f} failures expected for the processed records ({} table records read, {} unreadable)",
                c.table_records, c.unreadable_table_records
            ));
        }
        for p in &self.partitions {
            line(format!(
                "  partition {:>3}: offsets {}..{}, committed {}, {} records, {} not yet processed",
                p.partition,
                p.low_watermark,
                p.high_watermark,
                p.committed
                    .map_or_else(|| "none".to_owned(), |o| o.to_string()),
                p.records,
                p.unprocessed
            ));
        }
        if self.problems.is_empty() {
            line("OK: no problem found".to_owned());
        } else {
            let total: u64 = self.problems.iter().map(|p| p.count).sum();
            line(format!("PROBLEMS: {total}"));
            for p in &self.problems {
                line(format!(
                    "  {} ({}): {}",
                    p.kind.name(),
                    p.count,
                    p.description
                ));
                for e in &p.examples {
                    line(format!("    {e}"));
                }
                if (p.examples.len() as u64) < p.count {
                    line(format!(
                        "    ... and {} more",
                        p.count - p.examples.len() as u64
                    ));
                }
            }
        }
        for n in &self.notes {
            line(format!("note: {n}"));
        }
        out
    }
}
