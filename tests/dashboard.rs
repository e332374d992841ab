//! The Grafana dashboard (`deploy/grafana/dashboards/autoclaim.json`) queries only metrics that the
//! service exports (`autoclaim::telemetry::ALL`), with known PromQL functions and label names, through
//! the Prometheus datasource that Grafana provisions (`deploy/grafana/provisioning/datasources`).
//! The alert rules (`deploy/alerts.yml`) are held to the same, pass `promtool check rules` and their
//! unit tests (`promtool test rules deploy/alerts.test.yml`), each has a panel of its expression
//! in the dashboard's "Alerts" row and a section in docs/operations.md.
//!
//! No Grafana or Prometheus is needed: the queries are read with a small PromQL scanner that knows
//! enough of the language to tell metric names from functions, keywords, label names, strings,
//! durations and Grafana variables. Its own tests are at the end.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use autoclaim::telemetry;
use serde_json::Value;

const DASHBOARD: &str = "deploy/grafana/dashboards/autoclaim.json";
const DATASOURCES: &str = "deploy/grafana/provisioning/datasources";
const ALERTS: &str = "deploy/alerts.yml";
const ALERT_TESTS: &str = "deploy/alerts.test.yml";
/// The title of the dashboard row that shows each alert's expression.
const ALERTS_ROW: &str = "Alerts";

/// The histograms among `telemetry::ALL`: only these have `_bucket`, `_sum` and `_count` series.
const HISTOGRAMS: &[&str] = &[
    telemetry::DECISION_SECONDS,
    telemetry::EVENT_TO_COMMIT_SECONDS,
    telemetry::RESTORE_SECONDS,
];

/// Labels every series has without the service setting them: Prometheus' target labels, and `le`
/// of histogram buckets (checked separately).
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// PromQL functions and aggregation operators.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg",
    "avg_over_time",
    "bottomk",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count",
    "count_over_time",
    "count_values",
    "delta",
    "deriv",
    "exp",
    "floor",
    "group",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max",
    "max_over_time",
    "min",
    "min_over_time",
    "predict_linear",
    "quantile",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev",
    "stdvar",
    "sum",
    "sum_over_time",
    "time",
    "timestamp",
    "topk",
    "vector",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let full = repo().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// The labels the service puts on each metric, read from its source: every
/// `counter!/gauge!/histogram!(telemetry::NAME, "label" => value, ...)` under `src/`.
struct Schema {
    labels: BTreeMap<&'static str, BTreeSet<String>>,
}

impl Schema {
    fn load() -> Schema {
        // Constant names to metric names, from src/telemetry.rs.
        let mut names = BTreeMap::new();
        for line in read("src/telemetry.rs").lines() {
            let Some(rest) = line.trim().strip_prefix("pub const ") else {
                continue;
            };
            let Some((ident, value)) = rest.split_once(": &str = \"") else {
                continue;
            };
            let value = value.trim_end_matches("\";");
            // A constant named *_LABEL names a label, not a metric.
            if ident.ends_with("_LABEL") {
                continue;
            }
            let metric = telemetry::ALL
                .iter()
                .find(|m| **m == value)
                .unwrap_or_else(|| panic!("telemetry::{ident} = {value:?} is not in ALL"));
            names.insert(ident.to_owned(), *metric);
        }
        assert_eq!(
            names.len(),
            telemetry::ALL.len(),
            "every metric of ALL has a constant"
        );
        let mut labels: BTreeMap<&'static str, BTreeSet<String>> = telemetry::ALL
            .iter()
            .map(|m| (*m, BTreeSet::new()))
            .collect();
        let mut files = vec![repo().join("src")];
        let mut uses = 0;
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("telemetry::") {
                let rest = &text[at + "telemetry::".len()..];
                let ident: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let Some(metric) = names.get(&ident) else {
                    continue;
                };
                uses += 1;
                // The rest of the macro call: up to the ')' that closes it.
                let mut depth = 0;
                let call: String = rest[ident.len()..]
                    .chars()
                    .take_while(|c| {
                        match c {
                            '(' => depth += 1,
                            ')' if depth == 0 => return false,
                            ')' => depth -= 1,
                            _ => {}
                        }
                        true
                    })
                    .collect();
                let set = labels.get_mut(metric).unwrap();
                for (i, _) in call.match_indices("=>") {
                    let before = call[..i].trim_end();
                    if let Some(label) = before
                        .strip_suffix('"')
                        .and_then(|b| b.rsplit_once('"'))
                        .map(|(_, l)| l)
                    {
                        set.insert(label.to_owned());
                    }
                }
            }
        }
        assert!(uses > 0, "no telemetry:: metric is recorded under src/");
        // Gauges kept per partition are rendered by telemetry itself, not recorded by a macro.
        for (metric, _) in telemetry::PARTITION_GAUGES {
            let set = labels.get_mut(metric).expect("a partition gauge is in ALL");
            set.insert(telemetry::PARTITION_LABEL.to_owned());
        }
        Schema { labels }
    }

    /// Whether `label` can be on a series of `metric`.
    fn has_label(&self, metric: &str, label: &str) -> bool {
        TARGET_LABELS.contains(&label)
            || (label == "le" && HISTOGRAMS.contains(&metric))
            || self.labels.get(metric).is_some_and(|l| l.contains(label))
    }
}

// ------------------------------------------------------------------------------------------------
// A PromQL scanner

/// What a PromQL expression refers to.
#[derive(Debug, Default, PartialEq)]
struct Refs {
    /// Series names, as written (with `_bucket`, `_sum`, `_count`).
    metrics: Vec<String>,
    /// Functions and aggregation operators called.
    functions: Vec<String>,
    /// Label names in matchers and in `by`, `without`, `on`, `ignoring`, `group_left/right`.
    labels: Vec<String>,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal that starts at `i`.
fn skip_string(s: &[char], i: usize) -> Result<usize, String> {
    let quote = s[i];
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            '\\' if quote != '`' => j += 2,
            c if c == quote => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(format!("unterminated string starting at {i}"))
}

/// Index of the first `close` at or after `i`, outside string literals.
fn find_close(s: &[char], mut i: usize, close: char) -> Result<usize, String> {
    let open = i;
    while i < s.len() {
        match s[i] {
            '"' | '\'' | '`' => i = skip_string(s, i)?,
            c if c == close => return Ok(i),
            _ => i += 1,
        }
    }
    Err(format!("no {close:?} closes the bracket at {open}"))
}

/// Index just past a Grafana variable (`$name`, `${name}`, `${name:format}`, `[[name]]` is not used).
fn skip_variable(s: &[char], i: usize) -> Result<usize, String> {
    let mut j = i + 1;
    if s.get(j) == Some(&'{') {
        return Ok(find_close(s, j, '}')? + 1);
    }
    while j < s.len() && is_ident(s[j]) {
        j += 1;
    }
    if j == i + 1 {
        return Err(format!("a lone '$' at {i}"));
    }
    Ok(j)
}

fn skip_spaces(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Reads the label matchers `{label op "value", ...}` that start at `i`; returns the index past the
/// closing brace. A `__name__="x"` matcher names a metric.
fn matchers(s: &[char], i: usize, refs: &mut Refs) -> Result<usize, String> {
    let mut j = i + 1;
    loop {
        j = skip_spaces(s, j);
        match s.get(j) {
            None => return Err(format!("no '}}' closes the matchers at {i}")),
            Some('}') => return Ok(j + 1),
            Some(',') => {
                j += 1;
                continue;
            }
            Some(&c) if is_ident_start(c) => {}
            Some(c) => return Err(format!("expected a label name at {j}, found {c:?}")),
        }
        let start = j;
        while j < s.len() && is_ident(s[j]) {
            j += 1;
        }
        let label: String = s[start..j].iter().collect();
        j = skip_spaces(s, j);
        let op_start = j;
        while j < s.len() && matches!(s[j], '=' | '!' | '~') {
            j += 1;
        }
        let op: String = s[op_start..j].iter().collect();
        if !matches!(op.as_str(), "=" | "!=" | "=~" | "!~") {
            return Err(format!("bad matcher operator {op:?} after label {label:?}"));
        }
        j = skip_spaces(s, j);
        if !matches!(s.get(j), Some('"' | '\'' | '`')) {
            return Err(format!("label {label:?} is not matched against a string"));
        }
        let end = skip_string(s, j)?;
        if label == "__name__" && op == "=" {
            refs.metrics.push(s[j + 1..end - 1].iter().collect());
        } else {
            refs.labels.push(label);
        }
        j = end;
    }
}

/// The metric names, functions and label names an expression refers to.
fn scan(expr: &str) -> Result<Refs, String> {
    let s: Vec<char> = expr.chars().collect();
    let mut refs = Refs::default();
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&s, i)?,
            '{' => i = matchers(&s, i, &mut refs)?,
            // Range, subquery and offset durations: [5m], [$__rate_interval], [1h:1m].
            '[' => i = find_close(&s, i, ']')? + 1,
            '$' => i = skip_variable(&s, i)?,
            '(' => {
                depth += 1;
                i += 1;
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' at {i}"))?;
                i += 1;
            }
            // Numbers and durations (0.99, 1e3, 5m, 0x1f).
            c if c.is_ascii_digit()
                || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                let next = skip_spaces(&s, i);
                // A call, or an aggregation with its grouping first: `sum by (le) (...)`.
                let next_word: String = s[next..].iter().take_while(|c| is_ident(**c)).collect();
                let call = s.get(next) == Some(&'(')
                    || (matches!(next_word.as_str(), "by" | "without")
                        && !matches!(word.as_str(), "by" | "without"));
                match word.as_str() {
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right" => {
                        if call {
                            let close = find_close(&s, next, ')')?;
                            let list: String = s[next + 1..close].iter().collect();
                            for label in list.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                                if !label.chars().all(is_ident) {
                                    return Err(format!("bad label name {label:?} after {word}"));
                                }
                                refs.labels.push(label.to_owned());
                            }
                            i = close + 1;
                        } else if matches!(word.as_str(), "by" | "without" | "on" | "ignoring") {
                            return Err(format!("{word} needs a label list"));
                        }
                    }
                    "and" | "or" | "unless" | "bool" | "offset" | "inf" | "nan" | "Inf" | "NaN"
                    | "atan2" => {}
                    _ if call => refs.functions.push(word),
                    _ => refs.metrics.push(word),
                }
            }
            _ => i += 1,
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    Ok(refs)
}

/// The exported metric a series name belongs to: itself, or the histogram of a `_bucket`, `_sum`
/// or `_count` series.
fn exported_metric(series: &str) -> Result<&'static str, String> {
    if let Some(m) = telemetry::ALL.iter().find(|m| **m == series) {
        return Ok(m);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix) {
            if let Some(h) = HISTOGRAMS.iter().find(|h| **h == base) {
                return Ok(h);
            }
            if telemetry::ALL.contains(&base) {
                return Err(format!(
                    "{series}: {base} is not a histogram, it has no {suffix} series"
                ));
            }
        }
    }
    Err(format!(
        "{series} is not exported by the service (autoclaim::telemetry::ALL)"
    ))
}

/// Checks one query; returns the exported metrics it reads.
fn check_expr(expr: &str, schema: &Schema) -> Result<BTreeSet<&'static str>, String> {
    let refs = scan(expr)?;
    if refs.metrics.is_empty() {
        return Err("reads no metric".into());
    }
    let mut metrics = BTreeSet::new();
    for series in &refs.metrics {
        metrics.insert(exported_metric(series)?);
    }
    for f in &refs.functions {
        if !FUNCTIONS.contains(&f.as_str()) {
            return Err(format!("{f}() is not a PromQL function"));
        }
    }
    for l in &refs.labels {
        if !metrics.iter().any(|m| schema.has_label(m, l)) {
            let have: Vec<_> = metrics.iter().map(|m| (m, &schema.labels[m])).collect();
            return Err(format!(
                "label {l:?} is on none of the metrics read (their labels: {have:?})"
            ));
        }
    }
    if refs.functions.iter().any(|f| f == "histogram_quantile") {
        if !refs.metrics.iter().all(|m| m.ends_with("_bucket")) {
            return Err("histogram_quantile() needs _bucket series".into());
        }
        if !refs.labels.iter().any(|l| l == "le") {
            return Err("histogram_quantile() needs the sum to keep the le label".into());
        }
    }
    Ok(metrics)
}

/// Checks a templating query (`label_values(metric, label)`, or a PromQL expression).
fn check_variable_query(query: &str, schema: &Schema) -> Result<BTreeSet<&'static str>, String> {
    let q = query.trim();
    if let Some(args) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        let (selector, label) = match args.rsplit_once(',') {
            Some((sel, label)) => (sel.trim(), label.trim()),
            None => ("", args.trim()),
        };
        if selector.is_empty() {
            return if TARGET_LABELS.contains(&label) {
                Ok(BTreeSet::new())
            } else {
                Err(format!("label_values of {label:?} needs a metric"))
            };
        }
        let metrics = check_expr(selector, schema)?;
        if !metrics.iter().any(|m| schema.has_label(m, label)) {
            return Err(format!(
                "label_values of {label:?}, which {metrics:?} do not have"
            ));
        }
        return Ok(metrics);
    }
    check_expr(q, schema)
}

// ------------------------------------------------------------------------------------------------
// The dashboard

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn title(panel: &Value) -> String {
    panel["title"].as_str().unwrap_or("<untitled>").to_owned()
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

/// The uid of the provisioned Prometheus datasource.
fn provisioned_prometheus_uid() -> String {
    let dir = repo().join(DATASOURCES);
    let mut uids = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for ds in doc["datasources"].as_sequence().into_iter().flatten() {
            if ds["type"].as_str() == Some("prometheus") {
                let uid = ds["uid"].as_str().unwrap_or_else(|| {
                    panic!(
                        "{}: the Prometheus datasource needs a uid for the dashboard to refer to",
                        path.display()
                    )
                });
                uids.push(uid.to_owned());
            }
        }
    }
    assert_eq!(
        uids.len(),
        1,
        "expected one provisioned Prometheus datasource in {DATASOURCES}, found {uids:?}"
    );
    uids.pop().unwrap()
}

fn datasource_uid(v: &Value) -> Option<&str> {
    v.get("datasource")
        .and_then(|d| d.get("uid"))
        .and_then(Value::as_str)
}

#[test]
fn every_query_reads_exported_metrics_only() {
    let schema = Schema::load();
    let dash = dashboard();
    let mut problems = Vec::new();
    let mut queries = 0;
    for panel in panels(&dash) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or("");
            queries += 1;
            if let Err(e) = check_expr(expr, &schema) {
                problems.push(format!(
                    "panel {:?}, query {}: {e}\n    {expr}",
                    title(panel),
                    target["refId"]
                ));
            }
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]
            .get("query")
            .unwrap_or(&var["query"])
            .as_str()
            .unwrap_or("");
        queries += 1;
        if let Err(e) = check_variable_query(query, &schema) {
            problems.push(format!("variable {}: {e}\n    {query}", var["name"]));
        }
    }
    assert!(queries > 0, "{DASHBOARD} has no queries");
    assert!(
        problems.is_empty(),
        "{DASHBOARD}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_exported_metric_has_a_panel() {
    let schema = Schema::load();
    let dash = dashboard();
    let mut used = BTreeSet::new();
    for panel in panels(&dash) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            used.extend(
                check_expr(target["expr"].as_str().unwrap_or(""), &schema).unwrap_or_default(),
            );
        }
    }
    let missing: Vec<_> = telemetry::ALL
        .iter()
        .filter(|m| !used.contains(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics no panel of {DASHBOARD} shows: {missing:?}"
    );
}

#[test]
fn histograms_are_exported_metrics() {
    for h in HISTOGRAMS {
        assert!(telemetry::ALL.contains(h), "{h} is not in telemetry::ALL");
    }
}

#[test]
fn every_query_uses_the_provisioned_datasource() {
    let uid = provisioned_prometheus_uid();
    let dash = dashboard();
    let mut problems = Vec::new();
    for panel in panels(&dash).into_iter().filter(|p| !is_row(p)) {
        if datasource_uid(panel) != Some(uid.as_str()) {
            problems.push(format!(
                "panel {:?}: datasource {}",
                title(panel),
                panel["datasource"]
            ));
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if target.get("datasource").is_some() && datasource_uid(target) != Some(uid.as_str()) {
                problems.push(format!(
                    "panel {:?}, query {}: datasource {}",
                    title(panel),
                    target["refId"],
                    target["datasource"]
                ));
            }
        }
    }
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] == "query" && datasource_uid(var) != Some(uid.as_str()) {
            problems.push(format!(
                "variable {}: datasource {}",
                var["name"], var["datasource"]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{DASHBOARD} must use the provisioned datasource uid {uid:?}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn panels_are_well_formed() {
    let dash = dashboard();
    assert!(
        dash["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "the dashboard needs a uid"
    );
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dash["schemaVersion"]
    );
    let all = panels(&dash);
    assert!(all.iter().filter(|p| !is_row(p)).count() >= 10);

    let mut ids = HashSet::new();
    let mut titles = HashSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for panel in &all {
        let id = panel["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            grid[k]
                .as_u64()
                .unwrap_or_else(|| panic!("panel {:?}: gridPos.{k}", title(panel)))
        });
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "panel {:?}: gridPos {grid} is outside the 24-column grid",
            title(panel)
        );
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title(panel)) {
                    panic!("panels {other:?} and {:?} overlap", title(panel));
                }
            }
        }
        if is_row(panel) {
            continue;
        }
        assert!(
            titles.insert(title(panel)),
            "two panels are titled {:?} (docs/operations.md explains them by title)",
            title(panel)
        );
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {:?} has no query", title(panel));
        let mut refs = HashSet::new();
        for t in &targets {
            let r = t["refId"].as_str().unwrap_or_default().to_owned();
            assert!(
                !r.is_empty() && refs.insert(r.clone()),
                "panel {:?}: refId {r:?} missing or repeated",
                title(panel)
            );
        }
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {:?} needs a description (it is shown as the panel's help)",
            title(panel)
        );
    }
}

#[test]
fn documented_panels_exist() {
    // docs/operations.md explains each panel by its title.
    let doc = read("docs/operations.md");
    let dash = dashboard();
    for panel in panels(&dash).into_iter().filter(|p| !is_row(p)) {
        let t = title(panel);
        assert!(
            doc.contains(&format!("**{t}**")),
            "docs/operations.md does not explain panel **{t}**"
        );
    }
}

#[test]
fn dashboard_file_is_where_the_provider_looks() {
    // The provider reads a directory: the dashboard must be a .json file directly in it.
    let path = Path::new(DASHBOARD);
    assert_eq!(path.extension().and_then(|e| e.to_str()), Some("json"));
    assert!(repo().join(path).is_file());
}

// ------------------------------------------------------------------------------------------------
// The alert rules

#[derive(Debug)]
struct Alert {
    name: String,
    expr: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn strings(v: &serde_yaml_ng::Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
        .collect()
}

fn alerts() -> Vec<Alert> {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&read(ALERTS)).unwrap_or_else(|e| panic!("{ALERTS}: {e}"));
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            out.push(Alert {
                name: name.to_owned(),
                expr: rule["expr"].as_str().expect("expr").to_owned(),
                labels: strings(&rule["labels"]),
                annotations: strings(&rule["annotations"]),
            });
        }
    }
    assert!(!out.is_empty(), "{ALERTS} has no alerts");
    out
}

fn same_expr(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// The panels of the row titled `row`: those below it and above the next row.
fn panels_of_row<'a>(dashboard: &'a Value, row: &str) -> Vec<&'a Value> {
    let top = dashboard["panels"].as_array().expect("panels");
    let y = |p: &Value| p["gridPos"]["y"].as_u64().unwrap_or(0);
    let start = top
        .iter()
        .find(|p| is_row(p) && p["title"] == row)
        .unwrap_or_else(|| panic!("{DASHBOARD} has no row {row:?}"));
    let end = top
        .iter()
        .filter(|p| is_row(p) && y(p) > y(start))
        .map(y)
        .min()
        .unwrap_or(u64::MAX);
    top.iter()
        .filter(|p| !is_row(p) && y(p) > y(start) && y(p) < end)
        .collect()
}

#[test]
fn every_alert_reads_exported_metrics_only() {
    let schema = Schema::load();
    let mut problems = Vec::new();
    for alert in alerts() {
        if let Err(e) = check_expr(&alert.expr, &schema) {
            problems.push(format!("{}: {e}\n    {}", alert.name, alert.expr));
        }
    }
    assert!(
        problems.is_empty(),
        "{ALERTS}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_alert_has_a_panel_of_its_expression() {
    let dash = dashboard();
    let row = panels_of_row(&dash, ALERTS_ROW);
    for alert in alerts() {
        assert!(
            row.iter().any(|p| p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| same_expr(t["expr"].as_str().unwrap_or(""), &alert.expr))),
            "no panel of the {ALERTS_ROW:?} row queries the expression of {}: {}",
            alert.name,
            alert.expr
        );
    }
}

#[test]
fn every_alert_says_what_it_means_and_what_to_do() {
    let doc = read("docs/operations.md");
    for alert in alerts() {
        let name = &alert.name;
        assert!(
            matches!(
                alert.labels.get("severity").map(String::as_str),
                Some("warning" | "critical")
            ),
            "{name}: severity label warning or critical"
        );
        for key in ["summary", "description", "runbook"] {
            assert!(
                alert.annotations.get(key).is_some_and(|v| v.len() > 20),
                "{name}: annotation {key} missing or too short"
            );
        }
        // The runbook line points at the alert's section of the operator's guide.
        let anchor = format!("docs/operations.md#{}", name.to_lowercase());
        assert!(
            alert.annotations["runbook"].starts_with(&anchor),
            "{name}: the runbook should start with {anchor}"
        );
        assert!(
            doc.lines()
                .any(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == name),
            "docs/operations.md has no section titled {name}"
        );
    }
}

/// Runs promtool from the repository's root (paths in the files are relative to them).
fn promtool(args: &[&str]) -> String {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool: {e}. It is in Debian's prometheus package \
                 (apt-get install -y prometheus; .ci/run installs it)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let checked = promtool(&["check", "rules", ALERTS]);
    assert!(
        checked.contains(&format!("{} rules found", alerts().len())),
        "{checked}"
    );
    promtool(&["test", "rules", ALERT_TESTS]);
    // The config the compose stack's Prometheus loads, with the rule files it names.
    promtool(&["check", "config", "deploy/prometheus.yml"]);
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(ALERT_TESTS)).unwrap();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for test in doc["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                firing.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for alert in alerts() {
        assert!(
            firing.contains(&alert.name),
            "{ALERT_TESTS}: no case where {} fires",
            alert.name
        );
        assert!(
            quiet.contains(&alert.name),
            "{ALERT_TESTS}: no case where {} stays quiet",
            alert.name
        );
    }
}

// ------------------------------------------------------------------------------------------------
// The scanner's own tests

#[test]
fn scanner_reads_metrics_functions_and_labels() {
    let refs = scan(
        r#"histogram_quantile(0.99, sum by (le) (rate(autoclaim_decision_duration_seconds_bucket{instance=~"$instance", job="a{b}"}[$__rate_interval])))"#,
    )
    .unwrap();
    assert_eq!(
        refs,
        Refs {
            metrics: vec!["autoclaim_decision_duration_seconds_bucket".into()],
            functions: vec!["histogram_quantile".into(), "sum".into(), "rate".into()],
            labels: vec!["le".into(), "instance".into(), "job".into()],
        }
    );
    let refs = scan(
        r#"sum(rate(autoclaim_events_total[5m] offset 1h)) / ignoring(kind) group_left sum without (outcome) (autoclaim_events_total) > bool 0"#,
    )
    .unwrap();
    assert_eq!(
        refs.metrics,
        ["autoclaim_events_total", "autoclaim_events_total"]
    );
    assert_eq!(refs.labels, ["kind", "outcome"]);
    let refs = scan(r#"{__name__="autoclaim_partitions_owned"}"#).unwrap();
    assert_eq!(refs.metrics, ["autoclaim_partitions_owned"]);
}

#[test]
fn schema_reads_labels_from_the_source() {
    let schema = Schema::load();
    let labels = |m: &str| schema.labels[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(labels(telemetry::EVENTS), ["kind", "outcome"]);
    assert_eq!(labels(telemetry::TRANSACTIONS), ["result"]);
    assert!(labels(telemetry::PARTITIONS_OWNED).is_empty());
}

#[test]
fn checker_accepts_good_queries() {
    let schema = Schema::load();
    let ok = [
        r#"sum by (outcome) (rate(autoclaim_events_total{instance=~"$instance"}[$__rate_interval]))"#,
        r#"histogram_quantile(0.5, sum by (le) (rate(autoclaim_event_to_commit_seconds_bucket[5m])))"#,
        r#"sum(increase(autoclaim_state_restore_duration_seconds_sum[$__range])) / sum(increase(autoclaim_state_restore_duration_seconds_count[$__range]))"#,
        r#"max by (partition) (autoclaim_consumer_lag_records)"#,
    ];
    for q in ok {
        check_expr(q, &schema).unwrap_or_else(|e| panic!("{q}: {e}"));
    }
    assert_eq!(
        check_variable_query(
            "label_values(autoclaim_partitions_owned, instance)",
            &schema
        )
        .unwrap(),
        BTreeSet::from([telemetry::PARTITIONS_OWNED])
    );
}

#[test]
fn checker_rejects_bad_queries() {
    let schema = Schema::load();
    let bad = [
        // A typo in a metric name.
        (
            r#"sum(rate(autoclaim_event_total[5m]))"#,
            "autoclaim_event_total",
        ),
        // A metric name inside a matcher.
        (
            r#"sum({__name__="autoclaim_assignment_total"})"#,
            "autoclaim_assignment_total",
        ),
        // Buckets of a gauge.
        (
            r#"histogram_quantile(0.9, sum by (le) (rate(autoclaim_tables_last_update_age_seconds_bucket[5m])))"#,
            "not a histogram",
        ),
        // A typo in a function name.
        (
            r#"histgram_quantile(0.9, sum by (le) (rate(autoclaim_decision_duration_seconds_bucket[5m])))"#,
            "histgram_quantile",
        ),
        // A quantile that lost its le.
        (
            r#"histogram_quantile(0.9, sum(rate(autoclaim_decision_duration_seconds_bucket[5m])))"#,
            "le",
        ),
        // A label the metrics do not have.
        (
            r#"sum by (outcom) (rate(autoclaim_events_total[5m]))"#,
            "outcom",
        ),
        // A label the metric does not have (the age of the tables is one gauge, not one per table).
        (
            r#"max by (table) (autoclaim_tables_last_update_age_seconds)"#,
            "table",
        ),
        // Broken syntax.
        (r#"sum(rate(autoclaim_events_total[5m])"#, "unbalanced"),
        (r#"autoclaim_events_total{kind="save}"#, "unterminated"),
        (r#"autoclaim_events_total{kind=save}"#, "string"),
        // Nothing to read.
        ("vector(1)", "no metric"),
    ];
    for (q, why) in bad {
        let err = check_expr(q, &schema).expect_err(q);
        assert!(
            err.contains(why),
            "{q}: error {err:?} does not mention {why:?}"
        );
    }
    assert!(
        check_variable_query("label_values(autoclaim_partition_owned, instance)", &schema).is_err()
    );
    assert!(
        check_variable_query("label_values(autoclaim_partitions_owned, instanc)", &schema).is_err()
    );
}
