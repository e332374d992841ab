//! Figures read from the Prometheus text of a child's /metrics.

/// Sum of every series of a metric in Prometheus text.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Quantile of a Prometheus histogram, interpolated linearly inside its bucket (as
/// `histogram_quantile` does).
pub(crate) fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count: f64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(previous.0);
            }
            let share = if count > previous.1 {
                (rank - previous.1) / (count - previous.1)
            } else {
                0.0
            };
            return Some(previous.0 + (le - previous.0) * share);
        }
        previous = (le, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_quantiles_of_prometheus_text() {
        let text = "\
autoclaim_events_total{kind=\"a\",outcome=\"b\"} 10
autoclaim_events_total{kind=\"c\",outcome=\"d\"} 5
autoclaim_events_total_other 100
x_bucket{le=\"0.01\"} 50
x_bucket{le=\"0.1\"} 100
x_bucket{le=\"+Inf\"} 100
x_sum 3
x_count 100
";
        assert_eq!(metric_sum(text, "autoclaim_events_total"), 15.0);
        assert_eq!(metric_sum(text, "x_count"), 100.0);
        let p50 = histogram_quantile(text, "x", 0.5).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9);
        let p75 = histogram_quantile(text, "x", 0.75).unwrap();
        assert!((p75 - 0.055).abs() < 1e-9);
    }
}
