//! The summary of repeated rounds: median and range of each figure, ratios of the medians.
use serde_json::json;

use crate::figures::Throughput;
use crate::harness::{Bench, Round};

/// Target of autoclaim's rate against the plain pass-through.
const PLAIN_TARGET: f64 = 0.6;
/// Target of autoclaim's rate against the like-for-like transactional pass-through.
const LIKE_FOR_LIKE_TARGET: f64 = 0.8;

/// Median and range of one figure over the rounds.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Stats {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) values: Vec<f64>,
}

impl Stats {
    /// `None` without values.
    pub(crate) fn of(mut values: Vec<f64>) -> Option<Stats> {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 0 => (values[n / 2 - 1] + values[n / 2]) / 2.0,
            _ => values[n / 2],
        };
        Some(Stats {
            median,
            min: values[0],
            max: values[n - 1],
            values,
        })
    }

    /// `median (min..max)` with `decimals` decimals.
    pub(crate) fn describe(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}..{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// `82% (target 60%: met)`.
pub(crate) fn ratio_verdict(ratio: f64, target: f64) -> String {
    let verdict = if ratio >= target { "met" } else { "missed" };
    format!(
        "{:.0}% (target {:.0}%: {verdict})",
        ratio * 100.0,
        target * 100.0
    )
}

/// One kind of figures over the rounds: rate, own CPU and broker CPU per million events.
struct Series {
    name: &'static str,
    key: &'static str,
    rate: Option<Stats>,
    cpu: Option<Stats>,
    broker_cpu: Option<Stats>,
}

impl Series {
    fn of(
        name: &'static str,
        key: &'static str,
        rounds: &[Round],
        pick: fn(&Round) -> Option<&Throughput>,
    ) -> Series {
        let over = |f: fn(&Throughput) -> Option<f64>| {
            Stats::of(rounds.iter().filter_map(pick).filter_map(f).collect())
        };
        Series {
            name,
            key,
            rate: over(|t| Some(t.rate())),
            cpu: over(|t| Some(t.cpu_per_million())),
            broker_cpu: over(Throughput::broker_cpu_per_million),
        }
    }

    fn line(&self) -> Option<String> {
        let rate = self.rate.as_ref()?;
        let describe = |s: &Option<Stats>| s.as_ref().map_or("-".to_owned(), |s| s.describe(1));
        Some(format!(
            "  {:<44} {:>26}  {:>18}  {:>18}",
            self.name,
            rate.describe(0),
            describe(&self.cpu),
            describe(&self.broker_cpu)
        ))
    }

    fn json(&self) -> serde_json::Value {
        let values = |s: &Option<Stats>| s.as_ref().map(|s| s.values.clone());
        json!({
            "events_per_s": values(&self.rate),
            "cpu_s_per_million": values(&self.cpu),
            "broker_cpu_s_per_million": values(&self.broker_cpu),
        })
    }

    fn median_rate(&self) -> Option<f64> {
        self.rate.as_ref().map(|s| s.median)
    }
}

impl Bench<'_> {
    pub(crate) fn summarise_rounds(&mut self, rounds: &[Round]) {
        let series = [
            Series::of("ceiling: pass-through, plain", "plain", rounds, |r| {
                r.plain.as_ref()
            }),
            Series::of(
                "ceiling: transactions, every record copied",
                "transactional",
                rounds,
                |r| r.txn.as_ref(),
            ),
            Series::of(
                "ceiling: transactions, like for like",
                "like_for_like",
                rounds,
                |r| r.like.as_ref().map(|l| &l.figures),
            ),
            Series::of("autoclaim run (exactly once)", "run", rounds, |r| {
                r.run.as_ref()
            }),
        ];
        let shares = Stats::of(
            rounds
                .iter()
                .filter_map(|r| Some(r.like.as_ref()?.share))
                .collect(),
        );
        println!("summary of {} rounds (median, min..max):", rounds.len());
        println!(
            "  {:<44} {:>26}  {:>18}  {:>18}",
            "", "events/s", "CPU s/M events", "broker CPU s/M"
        );
        series
            .iter()
            .filter_map(Series::line)
            .for_each(|l| println!("{l}"));
        if let Some(s) = &shares {
            println!("  like-for-like share of records copied: {}", s.describe(4));
        }
        let mut summary = json!({
            "rounds": rounds.len(),
            "like_for_like_output_share": shares.as_ref().map(|s| s.values.clone()),
        });
        for s in &series {
            summary[s.key] = s.json();
        }
        let [plain, txn, like, run] = series.map(|s| s.median_rate());
        if let Some(run) = run {
            let ratios = [
                (
                    "like_for_like",
                    like,
                    "like-for-like transactional ceiling",
                    Some(LIKE_FOR_LIKE_TARGET),
                ),
                ("plain", plain, "plain pass-through", Some(PLAIN_TARGET)),
                (
                    "transactional",
                    txn,
                    "transactional ceiling, every record copied",
                    None,
                ),
            ];
            for (key, ceiling, name, target) in ratios {
                let Some(ceiling) = ceiling else { continue };
                let ratio = run / ceiling;
                let shown = target.map_or(format!("{:.0}%", ratio * 100.0), |t| {
                    ratio_verdict(ratio, t)
                });
                println!("  autoclaim / {name} (ratio of medians): {shown}");
                summary[format!("ratio_{key}")] = json!(ratio);
            }
        }
        self.results.insert("summary".into(), summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_give_the_median_and_range() {
        let odd = Stats::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        assert_eq!(odd.values, vec![1.0, 2.0, 3.0]);
        let even = Stats::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert_eq!(even.describe(1), "2.5 (1.0..4.0)");
        assert_eq!(Stats::of(Vec::new()), None);
    }

    #[test]
    fn ratios_say_whether_the_target_is_met() {
        assert_eq!(ratio_verdict(0.82, 0.6), "82% (target 60%: met)");
        assert_eq!(ratio_verdict(0.39, 0.8), "39% (target 80%: missed)");
        assert_eq!(ratio_verdict(0.8, 0.8), "80% (target 80%: met)");
    }
}
