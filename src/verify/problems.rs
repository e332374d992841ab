//! The kinds of problem `verify` finds, and the collector that counts them and keeps the first
//! examples of each.
use serde::{Serialize, Serializer};
use serde_json::Value;

/// A kind of problem. Its name is what the report, the JSON and the docs call it; its description
/// is the line the report gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    DuplicateAssignment,
    OverAssignment,
    MisplacedAssignment,
    UnprocessedRecords,
    MissingRoute,
    DuplicateRoute,
    UnmatchedRoute,
    MissingDeadLetter,
    DuplicateDeadLetter,
    ValidRecordDeadLettered,
    UnmatchedDeadLetter,
    DeadLetterWithoutReason,
    MissingOutput,
    UnexpectedOutput,
    UnreadableOutput,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 15] = [
        ProblemKind::DuplicateAssignment,
        ProblemKind::OverAssignment,
        ProblemKind::MisplacedAssignment,
        ProblemKind::UnprocessedRecords,
        ProblemKind::MissingRoute,
        ProblemKind::DuplicateRoute,
        ProblemKind::UnmatchedRoute,
        ProblemKind::MissingDeadLetter,
        ProblemKind::DuplicateDeadLetter,
        ProblemKind::ValidRecordDeadLettered,
        ProblemKind::UnmatchedDeadLetter,
        ProblemKind::DeadLetterWithoutReason,
        ProblemKind::MissingOutput,
        ProblemKind::UnexpectedOutput,
        ProblemKind::UnreadableOutput,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::DuplicateAssignment => "duplicate_assignment",
            ProblemKind::OverAssignment => "over_assignment",
            ProblemKind::MisplacedAssignment => "misplaced_assignment",
            ProblemKind::UnprocessedRecords => "unprocessed_records",
            ProblemKind::MissingRoute => "missing_route",
            ProblemKind::DuplicateRoute => "duplicate_route",
            ProblemKind::UnmatchedRoute => "unmatched_route",
            ProblemKind::MissingDeadLetter => "missing_dead_letter",
            ProblemKind::DuplicateDeadLetter => "duplicate_dead_letter",
            ProblemKind::ValidRecordDeadLettered => "valid_record_dead_lettered",
            ProblemKind::UnmatchedDeadLetter => "unmatched_dead_letter",
            ProblemKind::DeadLetterWithoutReason => "dead_letter_without_reason",
            ProblemKind::MissingOutput => "missing_output",
            ProblemKind::UnexpectedOutput => "unexpected_output",
            ProblemKind::UnreadableOutput => "unreadable_output",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            ProblemKind::DuplicateAssignment => "the same assignment (tenant, user, product and assignment id) was written more than once",
            ProblemKind::OverAssignment => "more assignments after the newest inventory snapshot than it left seats (or assignments without inventory)",
            ProblemKind::MisplacedAssignment => "an assignment is not on the partition number of its tenant's activity (restores would not see it)",
            ProblemKind::UnprocessedRecords => "activity records neither processed nor dead-lettered (at or after the group's committed offset)",
            ProblemKind::MissingRoute => "a processed activity record on a partition that does not own its tenant was not routed to the one that does",
            ProblemKind::DuplicateRoute => "an activity record was routed more than once",
            ProblemKind::UnmatchedRoute => "a routed record names no activity record that needed routing (missing or invalid autoclaim.route.partition/offset headers, or a record on its tenant's own partition)",
            ProblemKind::MissingDeadLetter => "a processed activity record that cannot be read has no dead letter",
            ProblemKind::DuplicateDeadLetter => "an activity record was dead-lettered more than once",
            ProblemKind::ValidRecordDeadLettered => "a readable activity record was dead-lettered",
            ProblemKind::UnmatchedDeadLetter => "a dead letter names no activity record (missing or invalid autoclaim.source.partition/offset), or one that does not exist",
            ProblemKind::DeadLetterWithoutReason => "a dead letter has no autoclaim.error.code or autoclaim.error.reason",
            ProblemKind::MissingOutput => "replay gives an output for a processed activity record that is not in the outputs",
            ProblemKind::UnexpectedOutput => "an output replay does not give (or gives fewer times)",
            ProblemKind::UnreadableOutput => "an output record cannot be decoded",
        }
    }
}

impl Serialize for ProblemKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// One kind of problem: how many, and the first examples.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The kind's description, in the JSON report for whoever reads it without these docs.
    pub description: &'static str,
    pub count: u64,
    pub examples: Vec<Value>,
}

/// Collects problems in the order they are first found, keeping the first examples of each kind.
pub(super) struct Problems {
    max_examples: usize,
    list: Vec<Problem>,
}

impl Problems {
    pub fn new(max_examples: usize) -> Self {
        Problems {
            max_examples,
            list: Vec::new(),
        }
    }

    pub fn add(&mut self, kind: ProblemKind, example: Value) {
        self.add_n(kind, 1, example);
    }

    /// Counts `n` problems of `kind` with one example for them all.
    pub fn add_n(&mut self, kind: ProblemKind, n: u64, example: Value) {
        let index = match self.list.iter().position(|p| p.kind == kind) {
            Some(i) => i,
            None => {
                self.list.push(Problem {
                    kind,
                    description: kind.description(),
                    count: 0,
                    examples: Vec::new(),
                });
                self.list.len() - 1
            }
        };
        let problem = &mut self.list[index];
        problem.count += n;
        if problem.examples.len() < self.max_examples {
            problem.examples.push(example);
        }
    }

    pub fn into_list(self) -> Vec<Problem> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_name_and_is_documented_for_operators() {
        // Read when the test runs, not compiled in: the image's build has no docs.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reliability.md");
        let reliability = std::fs::read_to_string(path).expect("docs/reliability.md");
        let mut names: Vec<&str> = ProblemKind::ALL.iter().map(|k| k.name()).collect();
        for name in &names {
            assert!(
                reliability.contains(&format!("`{name}`")),
                "docs/reliability.md does not list {name}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ProblemKind::ALL.len(), "names repeat");
    }

    #[test]
    fn a_kind_is_counted_once_with_the_first_examples() {
        let mut problems = Problems::new(1);
        problems.add(ProblemKind::MissingRoute, Value::from(1));
        problems.add_n(ProblemKind::UnprocessedRecords, 5, Value::from(2));
        problems.add(ProblemKind::MissingRoute, Value::from(3));
        let list = problems.into_list();
        let seen: Vec<(&str, u64, usize)> = list
            .iter()
            .map(|p| (p.kind.name(), p.count, p.examples.len()))
            .collect();
        assert_eq!(
            seen,
            [("missing_route", 2, 1), ("unprocessed_records", 5, 1)]
        );
        let json = serde_json::to_value(&list[0]).unwrap();
        assert_eq!(json["kind"], "missing_route");
        assert_eq!(json["description"], ProblemKind::MissingRoute.description());
    }
}
