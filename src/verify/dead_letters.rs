//! The dead letters of activity records, read back and matched with the records they name: every
//! processed record that cannot be read has exactly one, with a code and a reason; no readable
//! record has one; every one names a record.
use std::collections::HashMap;

use rdkafka::message::Message;
use serde_json::json;

use super::problems::{ProblemKind, Problems};
use super::{read_topic, Findings, VerifyArgs};
use crate::pipeline::clients::Watermarks;
use crate::pipeline::records;

pub(super) struct DeadLetter {
    partition: i32,
    offset: i64,
    code: String,
}

/// Dead letters of the activity topic, by the activity partition and offset they name; the matched
/// ones are taken out as the activity is checked.
pub(super) struct DeadLetters {
    by_source: HashMap<(i32, i64), Vec<DeadLetter>>,
}

impl DeadLetters {
    /// Reads the dead-letter topic; those of other source topics are only counted.
    pub fn read(args: &VerifyArgs, findings: &mut Findings) -> anyhow::Result<Self> {
        let activity = &args.topics.activity;
        let mut by_source: HashMap<(i32, i64), Vec<DeadLetter>> = HashMap::new();
        read_topic(&args.kafka, &args.topics.dead_letters, args.timeout, |m| {
            let headers: HashMap<String, String> = records::header_pairs(m).into_iter().collect();
            if headers.get("autoclaim.source.topic") != Some(activity) {
                findings.counts.dead_letters_of_other_topics += 1;
                return;
            }
            findings.counts.dead_letters += 1;
            let letter = DeadLetter {
                partition: m.partition(),
                offset: m.offset(),
                code: headers
                    .get("autoclaim.error.code")
                    .cloned()
                    .unwrap_or_default(),
            };
            check_reason(&letter, &headers, &mut findings.problems);
            match source(&headers) {
                Some(source) => by_source.entry(source).or_default().push(letter),
                None => findings.problems.add(
                    ProblemKind::UnmatchedDeadLetter,
                    json!({"partition": letter.partition, "offset": letter.offset, "code": letter.code}),
                ),
            }
        })?;
        Ok(DeadLetters { by_source })
    }

    /// Takes out the dead letters naming `source`.
    pub fn take(&mut self, source: (i32, i64)) -> Vec<DeadLetter> {
        self.by_source.remove(&source).unwrap_or_default()
    }

    /// The dead letters no activity record took: they name records that do not exist (or that
    /// retention deleted, which a note counts).
    pub fn check_left(self, activity: &Watermarks, findings: &mut Findings) {
        let mut out_of_retention = 0;
        for ((p, o), letters) in self.by_source {
            let low = activity.get(&p).map_or(0, |m| m.0);
            if o < low {
                out_of_retention += letters.len();
                continue;
            }
            for d in letters {
                findings.problems.add(
                    ProblemKind::UnmatchedDeadLetter,
                    json!({"partition": d.partition, "offset": d.offset, "sourcePartition": p, "sourceOffset": o, "code": d.code}),
                );
            }
        }
        if out_of_retention > 0 {
            findings.notes.push(format!(
                "{out_of_retention} dead letters name activity records already deleted by retention (not checked)"
            ));
        }
    }
}

/// A readable activity record at `source` must have no dead letter.
pub(super) fn check_readable(
    source: (i32, i64),
    letters: Vec<DeadLetter>,
    problems: &mut Problems,
) {
    for d in letters {
        problems.add(
            ProblemKind::ValidRecordDeadLettered,
            json!({"sourcePartition": source.0, "sourceOffset": source.1, "deadLetterPartition": d.partition, "deadLetterOffset": d.offset, "code": d.code}),
        );
    }
}

/// An unreadable activity record at `source` (refused with `code`) must have one dead letter once
/// processed, and never more than one.
pub(super) fn check_unreadable(
    source: (i32, i64),
    code: &str,
    processed: bool,
    letters: &[DeadLetter],
    problems: &mut Problems,
) {
    if letters.is_empty() && processed {
        problems.add(
            ProblemKind::MissingDeadLetter,
            json!({"sourcePartition": source.0, "sourceOffset": source.1, "code": code}),
        );
    }
    if letters.len() > 1 {
        let at: Vec<String> = letters
            .iter()
            .map(|d| format!("{}/{}", d.partition, d.offset))
            .collect();
        problems.add(
            ProblemKind::DuplicateDeadLetter,
            json!({"sourcePartition": source.0, "sourceOffset": source.1, "deadLetters": at}),
        );
    }
}

fn check_reason(letter: &DeadLetter, headers: &HashMap<String, String>, problems: &mut Problems) {
    let reason = headers
        .get("autoclaim.error.reason")
        .map_or("", String::as_str);
    if letter.code.trim().is_empty() || reason.trim().is_empty() {
        problems.add(
            ProblemKind::DeadLetterWithoutReason,
            json!({"partition": letter.partition, "offset": letter.offset}),
        );
    }
}

/// The activity record a dead letter names, from its `autoclaim.source.*` headers.
fn source(headers: &HashMap<String, String>) -> Option<(i32, i64)> {
    let partition = headers.get("autoclaim.source.partition")?.parse().ok()?;
    let offset = headers.get("autoclaim.source.offset")?.parse().ok()?;
    Some((partition, offset))
}
