//! The share of outputs: how many records autoclaim wrote per input event, and which records the
//! like-for-like pass-through copies so that it writes as many.
use std::fmt;
use std::str::FromStr;

use autoclaim::telemetry;

use crate::metrics_text::metric_sum;

/// `--ceiling-output-share`: measured from autoclaim's counters, or given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OutputShare {
    Auto,
    Fixed(f64),
}

impl FromStr for OutputShare {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(OutputShare::Auto);
        }
        match s.parse::<f64>() {
            Ok(share) if share > 0.0 && share <= 1.0 => Ok(OutputShare::Fixed(share)),
            _ => Err(format!("`{s}`: expected `auto` or a number in (0, 1]")),
        }
    }
}

impl fmt::Display for OutputShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputShare::Auto => f.write_str("auto"),
            OutputShare::Fixed(share) => write!(f, "{share}"),
        }
    }
}

impl OutputShare {
    /// The share to copy: the given one, or (`auto`) the one autoclaim was measured to write, if
    /// it was measured.
    pub(crate) fn resolve(self, measured: Option<f64>) -> Option<f64> {
        match self {
            OutputShare::Fixed(share) => Some(share),
            OutputShare::Auto => measured,
        }
    }
}

/// Every record autoclaim's transactions published, from its /metrics: assignments, failures,
/// claim changes, notices, dead letters, and activity records routed to another partition.
pub(crate) fn published_records(metrics: &str) -> f64 {
    [
        telemetry::ASSIGNMENTS,
        telemetry::FAILURES,
        telemetry::CLAIM_CHANGES,
        telemetry::NOTICES,
        telemetry::DEAD_LETTERS,
        telemetry::ROUTED,
    ]
    .iter()
    .map(|name| metric_sum(metrics, name))
    .sum()
}

/// Outputs per input event, at most 1 (the pass-through copies each record at most once).
pub(crate) fn written_share(outputs: f64, events: f64) -> Option<f64> {
    (events > 0.0).then(|| (outputs / events).clamp(0.0, 1.0))
}

/// Whether the record at `offset` is copied: a deterministic share of the records (by a hash of
/// the offset, so that it is spread over the partitions and over time); every record at share 1.
pub(crate) fn copies(share: f64, offset: i64) -> bool {
    share >= 1.0
        || (offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10_000 < (share * 10_000.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_argument_is_auto_or_a_share() {
        assert_eq!("auto".parse::<OutputShare>(), Ok(OutputShare::Auto));
        assert_eq!("0.25".parse::<OutputShare>(), Ok(OutputShare::Fixed(0.25)));
        assert_eq!("1".parse::<OutputShare>(), Ok(OutputShare::Fixed(1.0)));
        for bad in ["0", "1.5", "-0.1", "most"] {
            assert!(bad.parse::<OutputShare>().is_err(), "{bad}");
        }
        assert_eq!(OutputShare::Fixed(0.25).to_string(), "0.25");
        assert_eq!(OutputShare::Auto.to_string(), "auto");
    }

    #[test]
    fn auto_takes_the_measured_share_and_a_number_wins() {
        assert_eq!(OutputShare::Auto.resolve(Some(0.23)), Some(0.23));
        assert_eq!(OutputShare::Auto.resolve(None), None);
        assert_eq!(OutputShare::Fixed(0.5).resolve(Some(0.23)), Some(0.5));
    }

    #[test]
    fn published_records_add_up_every_output_counter() {
        let text = "\
autoclaim_assignments_total{product=\"a\"} 100
autoclaim_failures_total{reason=\"b\"} 20
autoclaim_claim_changes_total{status=\"pending\"} 3
autoclaim_notices_total{kind=\"c\"} 2
autoclaim_dead_letters_total{reason=\"d\"} 4
autoclaim_records_routed_total 1
autoclaim_events_total{kind=\"e\",outcome=\"f\"} 1000
";
        assert_eq!(published_records(text), 130.0);
        assert_eq!(written_share(130.0, 1000.0), Some(0.13));
        assert_eq!(written_share(5.0, 0.0), None);
        assert_eq!(written_share(3000.0, 1000.0), Some(1.0));
    }

    #[test]
    fn the_copied_share_is_the_share_asked_for() {
        let copied = |share: f64| (0..100_000).filter(|o| copies(share, *o)).count();
        assert_eq!(copied(1.0), 100_000);
        let quarter = copied(0.25);
        assert!((24_000..26_000).contains(&quarter), "{quarter}");
        let half = copied(0.5);
        assert!((49_000..51_000).contains(&half), "{half}");
    }
}
