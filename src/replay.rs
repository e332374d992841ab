//! `autoclaim replay`: applies input records in order to the same state and engine the pipeline uses,
//! and gives one decision per activity, and a line for each waiting claim decided again (before the
//! event that moved its tenant's time past what may have freed a seat, or after the table record
//! that did). Deterministic: it has no clock, so decidedAt is the event's time.
use std::io::{BufRead, Write};
use std::time::Duration;

use crate::domain::activity::{Activity, DEFAULT_MAX_EVENT_TIME_SKEW};
use crate::domain::claims::ClaimRules;
use crate::domain::directory::DirectoryUser;
use crate::state::{decide_and_record, redecide_waiting, PartitionState, Tables};
use crate::wire::convert::{self, InventoryRecord, PolicyRecord, SettingsRecord};
use crate::wire::pb::replay_record::Record;
use crate::wire::{codec, output, pb, Format, WireError};

pub struct Replayer {
    tables: Tables,
    partition: PartitionState,
    /// How far an activity may be ahead of its record's `writtenAt` (as `run`'s bound).
    max_event_time_skew: Duration,
}

/// What a replay run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines: u64,
    pub decisions: u64,
    pub rejected: u64,
}

impl Replayer {
    pub fn new(propagation_delay: Duration) -> Self {
        Replayer {
            tables: Tables::new(propagation_delay),
            partition: PartitionState::default(),
            max_event_time_skew: DEFAULT_MAX_EVENT_TIME_SKEW,
        }
    }

    /// How long claims wait and how often notices repeat, as `run --pending-claim-ttl` and
    /// `--notice-digest-window`.
    pub fn with_claim_rules(mut self, rules: ClaimRules) -> Self {
        self.tables = std::mem::replace(&mut self.tables, Tables::new(Duration::ZERO))
            .with_claim_rules(rules);
        self
    }

    /// How much later than its record's `writtenAt` an activity may say it occurred (default 5
    /// minutes), as `run --max-event-time-skew`.
    pub fn with_max_event_time_skew(mut self, max_skew: Duration) -> Self {
        self.max_event_time_skew = max_skew;
        self
    }

    /// Applies one record; returns the decision when the record is an activity, after the lines of
    /// any waiting claims decided again first (as `run` does when it sees a table change).
    pub fn apply(&mut self, record: pb::ReplayRecord) -> Result<Vec<pb::Decision>, WireError> {
        let written_at = record
            .written_at
            .map(|t| convert::timestamp("writtenAt", Some(t)))
            .transpose()?;
        let record = record
            .record
            .ok_or_else(|| WireError::field("record", "is required (one of activity, directoryUser, inventory, settings, policy, directoryUserDeleted)"))?;
        if let Record::Activity(e) = record {
            let event = Activity::try_from(e)?;
            event.check_event_time(written_at, self.max_event_time_skew)?;
            let decided = decide_and_record(&self.tables, &mut self.partition, &event);
            let mut lines = output::redecided(&decided.redecided);
            lines.push(output::decided(&decided, decided.decision.occurred_at));
            return Ok(lines);
        }
        self.apply_table(record)?;
        Ok(output::redecided(&redecide_waiting(
            &self.tables,
            &mut self.partition,
        )))
    }

    /// Applies a table record.
    fn apply_table(&mut self, record: Record) -> Result<(), WireError> {
        match record {
            Record::Activity(_) => unreachable!("activity is applied by the caller"),
            Record::DirectoryUser(u) => {
                let user = DirectoryUser::try_from(u)?;
                self.partition
                    .upsert_directory_user(&user.tenant_id, &user.user_id, user.row());
            }
            Record::DirectoryUserDeleted(d) => {
                if d.tenant_id.is_empty() || d.user_id.is_empty() {
                    return Err(WireError::field(
                        "directoryUserDeleted",
                        "tenantId and userId are required",
                    ));
                }
                self.partition
                    .delete_directory_user(&d.tenant_id, &d.user_id);
            }
            Record::Inventory(i) => {
                let r = InventoryRecord::try_from(i)?;
                self.tables
                    .record_inventory(&r.tenant_id, r.product, r.inventory);
            }
            Record::Settings(s) => {
                let r = SettingsRecord::try_from(s)?;
                self.tables
                    .record_settings(&r.tenant_id, r.changed_at, r.settings);
            }
            Record::Policy(p) => {
                let r = PolicyRecord::try_from(p)?;
                self.tables.record_policy(&r.tenant_id, r.policy);
            }
        }
        Ok(())
    }

    /// Applies one JSON line.
    pub fn apply_line(&mut self, line: &str) -> Result<Vec<pb::Decision>, WireError> {
        let record: pb::ReplayRecord = codec::decode(line.as_bytes(), Format::Json)?;
        self.apply(record)
    }

    /// Reads JSON lines from `input`, writes one JSON decision a line to `out`, reports rejected lines
    /// with their line number on `errors`, and goes on after them. Blank lines are skipped.
    pub fn run(
        &mut self,
        input: impl BufRead,
        mut out: impl Write,
        mut errors: impl Write,
    ) -> std::io::Result<ReplaySummary> {
        let mut summary = ReplaySummary::default();
        let mut input = input;
        let mut buffer = Vec::new();
        for index in 0.. {
            buffer.clear();
            if input.read_until(b'\n', &mut buffer)? == 0 {
                break;
            }
            summary.lines += 1;
            // A line that is not UTF-8 is one bad line, not the end of the run.
            let result = match std::str::from_utf8(&buffer) {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => self.apply_line(line.trim_end_matches(['\n', '\r'])),
                Err(e) => Err(WireError::field("line", format!("is not UTF-8: {e}"))),
            };
            match result {
                Ok(lines) => {
                    for decision in lines {
                        summary.decisions += 1;
                        serde_json::to_writer(&mut out, &decision)?;
                        out.write_all(b"\n")?;
                    }
                }
                Err(e) => {
                    summary.rejected += 1;
                    writeln!(errors, "line {}: {} ({})", index + 1, e, e.code())?;
                }
            }
        }
        out.flush()?;
        Ok(summary)
    }
}
