//! The local stack (`docker-compose.yml`, `Dockerfile`, `.dockerignore`, `deploy/`) agrees with the
//! binary and with itself: services, mounts, ports, subcommands, flags, environment variables, topic
//! names, the broker address, the metrics endpoint Prometheus scrapes and Grafana's provisioning.
//!
//! No Docker engine is needed: the files are parsed, and the binary is asked for its own `--help`
//! (subcommands, flags, `[env: ...]` names and `[default: ...]` values), so the compose file cannot
//! drift from the command line.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::Value;

/// Services the stack must have.
const SERVICES: &[&str] = &[
    "kafka",
    "topics",
    "autoclaim",
    "loadgen",
    "prometheus",
    "grafana",
];
/// Services that run the autoclaim image, and the subcommand each runs.
const AUTOCLAIM_SERVICES: &[(&str, &str)] = &[
    ("topics", "create-topics"),
    ("autoclaim", "run"),
    ("loadgen", "loadgen"),
];
/// The stack, and the file added to it for development only (the one place a secret may be
/// committed, since it is named for what it is).
const COMPOSE_FILE: &str = "docker-compose.yml";
const DEV_COMPOSE_FILE: &str = "docker-compose.dev.yml";
/// Parts of an environment variable's name that say its value is a secret.
const SECRET_NAME_PARTS: &[&str] = &["SECRET", "PASSWORD", "TOKEN", "PRIVATE_KEY", "CREDENTIAL"];
/// Packages and programs that build software: none belongs in the runtime image.
const BUILD_TOOLS: &[&str] = &[
    "build-essential",
    "gcc",
    "g++",
    "cc",
    "clang",
    "make",
    "cmake",
    "pkg-config",
    "cargo",
    "rustc",
    "rustup",
];
/// `AUTOCLAIM_*` variables read outside clap (so absent from `--help`), and the file that reads them.
const NON_CLAP_ENV: &[(&str, &str)] = &[("AUTOCLAIM_LOG", "src/logging.rs")];
/// Options that must have the same effective value in every autoclaim container that takes them.
const SHARED_OPTIONS: &[&str] = &["brokers", "propagation-delay", "group-id"];
/// Options that must agree among the containers that create topics.
const TOPIC_CREATION_OPTIONS: &[&str] = &[
    "partitions",
    "replication-factor",
    "propagation-delay",
    "audit-retention",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    let full = repo().join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
}

// ------------------------------------------------------------------------------------------------
// docker-compose.yml

/// A scalar as compose reads it (numbers and booleans become strings).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[derive(Debug)]
struct Service {
    name: String,
    raw: Value,
}

impl Service {
    fn get(&self, key: &str) -> Option<&Value> {
        self.raw.get(key)
    }

    fn image(&self) -> Option<String> {
        self.get("image").and_then(scalar)
    }

    fn command(&self) -> Vec<String> {
        match self.get("command") {
            Some(Value::Sequence(items)) => items.iter().filter_map(scalar).collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }

    fn env(&self) -> BTreeMap<String, String> {
        match self.get("environment") {
            Some(Value::Mapping(map)) => map
                .iter()
                .filter_map(|(k, v)| Some((scalar(k)?, scalar(v).unwrap_or_default())))
                .collect(),
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(scalar)
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (kv, String::new()),
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// (host port, container port) of every published port.
    fn ports(&self) -> Vec<(Option<u16>, u16)> {
        let mut out = Vec::new();
        for p in self
            .get("ports")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let Some(map) = p.as_mapping() {
                let target = map
                    .get("target")
                    .and_then(scalar)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("{}: port {p:?} has no target", self.name));
                let published = map
                    .get("published")
                    .and_then(scalar)
                    .map(|h| h.parse().expect("published port"));
                out.push((published, target));
                continue;
            }
            let spec = scalar(p).unwrap_or_else(|| panic!("{}: port {p:?}", self.name));
            let spec = spec.split('/').next().unwrap();
            let parts: Vec<&str> = spec.split(':').collect();
            let parse = |s: &str| -> u16 {
                s.parse().unwrap_or_else(|_| {
                    panic!(
                        "{}: port {spec:?} is not a number (ranges are not used here)",
                        self.name
                    )
                })
            };
            match parts.as_slice() {
                [c] => out.push((None, parse(c))),
                [h, c] | [_, h, c] => out.push((Some(parse(h)), parse(c))),
                _ => panic!("{}: cannot read port {spec:?}", self.name),
            }
        }
        out
    }

    /// (host path relative to the compose file, container path) of every bind mount.
    fn binds(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for v in self
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let Some(map) = v.as_mapping() {
                if map.get("type").and_then(scalar).as_deref() == Some("bind") {
                    out.push((
                        map.get("source").and_then(scalar).expect("bind source"),
                        map.get("target").and_then(scalar).expect("bind target"),
                    ));
                }
                continue;
            }
            let spec = scalar(v).unwrap();
            let mut parts = spec.splitn(3, ':');
            let (src, dst) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            // Named volumes have no '/' or '.' in front.
            if src.starts_with('.') || src.starts_with('/') || src.starts_with('~') {
                out.push((src.to_owned(), dst.to_owned()));
            }
        }
        out
    }

    /// The host file or directory mounted at `container_path` (or at a directory above it).
    fn host_path_of(&self, container_path: &str) -> Option<PathBuf> {
        self.binds().into_iter().find_map(|(src, dst)| {
            let rest = Path::new(container_path).strip_prefix(&dst).ok()?;
            let host = repo().join(src.trim_start_matches("./"));
            Some(if rest.as_os_str().is_empty() {
                host
            } else {
                host.join(rest)
            })
        })
    }

    fn depends_on(&self) -> BTreeMap<String, String> {
        match self.get("depends_on") {
            Some(Value::Sequence(items)) => items
                .iter()
                .filter_map(scalar)
                .map(|s| (s, "service_started".to_owned()))
                .collect(),
            Some(Value::Mapping(map)) => map
                .iter()
                .map(|(k, v)| {
                    (
                        scalar(k).unwrap(),
                        v.get("condition")
                            .and_then(scalar)
                            .unwrap_or_else(|| "service_started".into()),
                    )
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

struct Compose {
    services: BTreeMap<String, Service>,
}

impl Compose {
    fn load() -> Compose {
        Compose::load_file(COMPOSE_FILE)
    }

    fn load_file(file: &str) -> Compose {
        let mut doc: Value =
            serde_yaml_ng::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        // Compose applies YAML merge keys (`<<: *anchor`).
        doc.apply_merge()
            .unwrap_or_else(|e| panic!("merge keys of {file}: {e}"));
        let services = doc
            .get("services")
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{file} has services"))
            .iter()
            .map(|(k, v)| {
                let name = scalar(k).unwrap();
                (
                    name.clone(),
                    Service {
                        name,
                        raw: v.clone(),
                    },
                )
            })
            .collect();
        Compose { services }
    }

    fn service(&self, name: &str) -> &Service {
        self.services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name:?}"))
    }
}

// ------------------------------------------------------------------------------------------------
// The binary's help

#[derive(Debug, Clone)]
struct Opt {
    takes_value: bool,
    env: Option<String>,
    default: Option<String>,
}

/// Runs the binary with a clean environment; `None` if it fails (e.g. an unknown subcommand).
fn run_binary(args: &[&str]) -> Option<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_autoclaim"))
        .args(args)
        .env_clear()
        .output()
        .expect("run the autoclaim binary");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).expect("utf-8 help"))
}

fn subcommands() -> BTreeSet<String> {
    let help = run_binary(&["--help"]).expect("autoclaim --help");
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// The bracketed `[key: value]` annotation in a clap help text.
fn annotation(text: &str, key: &str) -> Option<String> {
    let start = text.find(&format!("[{key}: "))? + key.len() + 3;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

/// Options of a subcommand by long name, from its `--help`.
fn parse_help(help: &str) -> BTreeMap<String, Opt> {
    let mut opts = BTreeMap::new();
    let mut current: Option<(String, bool, String)> = None;
    let mut finish = |cur: Option<(String, bool, String)>| {
        if let Some((long, takes_value, text)) = cur {
            let env = annotation(&text, "env").map(|e| e.trim_end_matches('=').to_owned());
            let env = env.map(|e| e.split('=').next().unwrap().to_owned());
            opts.insert(
                long,
                Opt {
                    takes_value,
                    env,
                    default: annotation(&text, "default"),
                },
            );
        }
    };
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if (2..=6).contains(&indent) && trimmed.starts_with('-') {
            finish(current.take());
            let head = trimmed.split("  ").next().unwrap();
            let long = head
                .split([' ', ','])
                .find_map(|w| w.strip_prefix("--"))
                .map(|w| w.split('=').next().unwrap().to_owned());
            if let Some(long) = long {
                let takes_value = head.contains('<');
                let rest = trimmed[head.len()..].to_owned();
                current = Some((long, takes_value, rest));
            }
        } else if let Some((_, _, text)) = current.as_mut() {
            if !trimmed.is_empty() && indent > 0 {
                text.push(' ');
                text.push_str(trimmed);
            } else if indent == 0 && !trimmed.is_empty() {
                finish(current.take());
            }
        }
    }
    finish(current.take());
    opts
}

fn options_of(subcommand: &str) -> Option<BTreeMap<String, Opt>> {
    run_binary(&[subcommand, "--help"]).map(|h| parse_help(&h))
}

/// An autoclaim container with the options its subcommand takes.
struct Container<'a> {
    service: &'a Service,
    subcommand: String,
    options: BTreeMap<String, Opt>,
}

impl Container<'_> {
    /// The value an option has in this container: from the command line, else the environment
    /// (the service's, then the image's), else the binary's default. `None` if the subcommand has
    /// no such option (or it has no value at all).
    fn effective(&self, long: &str, image_env: &BTreeMap<String, String>) -> Option<String> {
        let opt = self.options.get(long)?;
        let args = self.service.command();
        let flag = format!("--{long}");
        for (i, a) in args.iter().enumerate().skip(1) {
            if *a == flag {
                return if opt.takes_value {
                    args.get(i + 1).cloned()
                } else {
                    Some("true".into())
                };
            }
            if let Some(v) = a.strip_prefix(&format!("{flag}=")) {
                return Some(v.to_owned());
            }
        }
        if let Some(env) = &opt.env {
            if let Some(v) = self.service.env().get(env) {
                return Some(v.clone());
            }
            if let Some(v) = image_env.get(env) {
                return Some(v.clone());
            }
        }
        opt.default.clone()
    }

    fn creates_topics(&self, image_env: &BTreeMap<String, String>) -> bool {
        self.subcommand == "create-topics"
            || self.effective("create-topics", image_env).as_deref() == Some("true")
    }
}

/// The autoclaim containers, with the options of the subcommand each runs.
fn containers(compose: &Compose) -> Vec<Container<'_>> {
    let known = subcommands();
    let mut out = Vec::new();
    for (name, expected) in AUTOCLAIM_SERVICES {
        let service = compose.service(name);
        let command = service.command();
        let subcommand = command
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("service {name} needs an explicit command"));
        assert_eq!(
            &subcommand, expected,
            "service {name} should run `autoclaim {expected}`"
        );
        assert!(
            known.contains(&subcommand),
            "service {name} runs `autoclaim {subcommand}`, which the binary does not have (it has {known:?})"
        );
        let options = options_of(&subcommand).expect("subcommand --help");
        out.push(Container {
            service,
            subcommand,
            options,
        });
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Dockerfile and Cargo.toml

struct Stage {
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// The stages of the Dockerfile, each a list of (INSTRUCTION, arguments), continuation lines joined.
fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut buf = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && buf.is_empty()) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            buf.push_str(cont);
            buf.push(' ');
        } else {
            buf.push_str(t);
            logical.push(std::mem::take(&mut buf));
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for l in logical.into_iter().filter(|l| !l.is_empty()) {
        let (ins, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let ins = ins.to_uppercase();
        let args = args.trim().to_owned();
        if ins == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push(Stage {
                name,
                instructions: vec![(ins, args)],
            });
        } else {
            stages
                .last_mut()
                .expect("FROM first")
                .instructions
                .push((ins, args));
        }
    }
    stages
}

fn json_array(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("exec form expected: {args}: {e}"))
}

fn image_env(stage: &Stage) -> BTreeMap<String, String> {
    stage
        .instructions
        .iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, a)| {
            a.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `key = "value"` pairs of each `[[bin]]` / `[lib]` / `[[bench]]` ... table of Cargo.toml.
fn cargo_targets() -> Vec<(String, BTreeMap<String, String>)> {
    manifest_tables("Cargo.toml")
}

/// `key = "value"` pairs of each table of a manifest (other values, such as arrays, are left out).
fn manifest_tables(manifest: &str) -> Vec<(String, BTreeMap<String, String>)> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for line in read(manifest).lines() {
        let t = line.trim();
        if t.starts_with('[') {
            out.push((t.trim_matches(['[', ']']).to_owned(), BTreeMap::new()));
        } else if let (Some((k, v)), Some(last)) = (t.split_once('='), out.last_mut()) {
            let v = v.trim();
            if v.starts_with('"') {
                last.1
                    .insert(k.trim().to_owned(), v.trim_matches('"').to_owned());
            }
        }
    }
    out
}

/// The directories of `members = [...]` in the `[workspace]` table of Cargo.toml (one line).
fn workspace_members() -> Vec<String> {
    let text = read("Cargo.toml");
    let members = text
        .lines()
        .skip_while(|l| l.trim() != "[workspace]")
        .skip(1)
        .take_while(|l| !l.trim().starts_with('['))
        .find_map(|l| l.trim().strip_prefix("members"))
        .map(|rest| rest.trim_start_matches([' ', '=']).trim().to_owned());
    let Some(list) = members else {
        return Vec::new();
    };
    assert!(
        list.starts_with('[') && list.ends_with(']'),
        "members should be a one-line array: {list}"
    );
    list.trim_matches(['[', ']'])
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

/// The raw `key = value` settings of `[profile.<name>]` in Cargo.toml (None if there is no such
/// table).
fn cargo_profile(name: &str) -> Option<BTreeMap<String, String>> {
    let header = format!("[profile.{name}]");
    let text = read("Cargo.toml");
    let mut lines = text.lines().skip_while(|l| l.trim() != header);
    lines.next()?;
    Some(
        lines
            .take_while(|l| !l.trim().starts_with('['))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect(),
    )
}

/// The profile a `cargo build` command line builds with (its target directory's name).
fn build_profile(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    if let Some(at) = words.iter().position(|w| *w == "--profile") {
        return words[at + 1].to_owned();
    }
    if let Some(p) = words.iter().find_map(|w| w.strip_prefix("--profile=")) {
        return p.to_owned();
    }
    if words.contains(&"--release") || words.contains(&"-r") {
        "release".into()
    } else {
        "debug".into()
    }
}

/// A setting of a Cargo profile, following `inherits` (and the built-in release and dev profiles'
/// defaults for `debug` and `strip`).
fn profile_setting(profile: &str, key: &str) -> Option<String> {
    let builtin = |profile: &str| match (profile, key) {
        ("release", "debug") => Some("false".to_owned()),
        ("dev" | "debug", "debug") => Some("true".to_owned()),
        (_, "strip") => Some("none".to_owned()),
        _ => None,
    };
    let Some(table) = cargo_profile(profile) else {
        return builtin(profile);
    };
    if let Some(v) = table.get(key) {
        return Some(v.clone());
    }
    match table.get("inherits") {
        Some(parent) => profile_setting(parent, key),
        None => builtin(profile),
    }
}

fn bin_names() -> Vec<String> {
    let targets = cargo_targets();
    let bins: Vec<String> = targets
        .iter()
        .filter(|(t, _)| t == "bin")
        .filter_map(|(_, kv)| kv.get("name").cloned())
        .collect();
    if bins.is_empty() {
        let package = targets.iter().find(|(t, _)| t == "package").unwrap();
        vec![package.1["name"].clone()]
    } else {
        bins
    }
}

/// Whether a path of the build context is excluded by `.dockerignore` (literal paths and their
/// contents, `*` within a path segment, a leading `**/`, and `!` exceptions).
fn docker_ignored(path: &str) -> bool {
    fn glob(pattern: &str, text: &str) -> bool {
        match pattern.split_once('*') {
            None => pattern == text,
            Some((head, tail)) => {
                text.starts_with(head)
                    && (0..=text.len() - head.len()).any(|skip| {
                        let rest = &text[head.len() + skip..];
                        !text[head.len()..head.len() + skip].contains('/') && glob(tail, rest)
                    })
            }
        }
    }
    fn matches(pattern: &str, path: &str) -> bool {
        let pattern = pattern.trim_start_matches("./").trim_end_matches('/');
        let prefixes: Vec<&str> = std::iter::once(path)
            .chain(path.match_indices('/').map(|(i, _)| &path[..i]))
            .collect();
        if let Some(any_dir) = pattern.strip_prefix("**/") {
            return prefixes.iter().any(|p| {
                p.rsplit('/').next().is_some_and(|last| glob(any_dir, last)) || glob(any_dir, p)
            });
        }
        prefixes.iter().any(|p| glob(pattern, p))
    }
    let mut ignored = false;
    for line in read(".dockerignore").lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(exception) = l.strip_prefix('!') {
            if matches(exception, path) {
                ignored = false;
            }
        } else if matches(l, path) {
            ignored = true;
        }
    }
    ignored
}

// ------------------------------------------------------------------------------------------------
// Tests

#[test]
fn expected_services_exist() {
    let compose = Compose::load();
    for s in SERVICES {
        compose.service(s);
    }
}

#[test]
fn host_mounts_and_build_context_exist() {
    let compose = Compose::load();
    for service in compose.services.values() {
        for (src, dst) in service.binds() {
            let host = repo().join(&src);
            assert!(
                host.exists(),
                "service {}: {src} (mounted at {dst}) does not exist",
                service.name
            );
            assert!(
                !Path::new(&src)
                    .components()
                    .any(|c| c == Component::ParentDir),
                "service {}: {src} leaves the repository",
                service.name
            );
        }
        if let Some(build) = service.get("build") {
            let context = build
                .get("context")
                .and_then(scalar)
                .or_else(|| scalar(build))
                .unwrap();
            let dockerfile = build
                .get("dockerfile")
                .and_then(scalar)
                .unwrap_or_else(|| "Dockerfile".into());
            assert!(repo().join(&context).join(&dockerfile).is_file());
        }
    }
}

#[test]
fn host_ports_do_not_collide() {
    let compose = Compose::load();
    let mut seen: BTreeMap<u16, String> = BTreeMap::new();
    for service in compose.services.values() {
        for (host, _) in service.ports() {
            if let Some(host) = host {
                if let Some(other) = seen.insert(host, service.name.clone()) {
                    panic!(
                        "host port {host} is published by both {other} and {}",
                        service.name
                    );
                }
            }
        }
    }
    for (port, service) in [
        (9092, "kafka"),
        (8080, "autoclaim"),
        (9090, "prometheus"),
        (3000, "grafana"),
    ] {
        assert_eq!(
            seen.get(&port).map(String::as_str),
            Some(service),
            "host port {port} should reach {service} (docs/operations.md says so)"
        );
    }
}

#[test]
fn depends_on_conditions_can_be_met() {
    let compose = Compose::load();
    for service in compose.services.values() {
        for (dep, condition) in service.depends_on() {
            let target = compose
                .services
                .get(&dep)
                .unwrap_or_else(|| panic!("service {} depends on unknown {dep}", service.name));
            match condition.as_str() {
                "service_healthy" => assert!(
                    target.get("healthcheck").is_some(),
                    "{} waits for {dep} to be healthy, but {dep} has no healthcheck",
                    service.name
                ),
                "service_completed_successfully" => assert!(
                    target
                        .get("restart")
                        .and_then(scalar)
                        .is_none_or(|r| r == "no"),
                    "{} waits for {dep} to complete, but {dep} restarts",
                    service.name
                ),
                "service_started" => {}
                other => panic!("service {}: unknown condition {other}", service.name),
            }
        }
    }
    let waits = |s: &str, dep: &str, condition: &str| {
        assert_eq!(
            compose.service(s).depends_on().get(dep).map(String::as_str),
            Some(condition),
            "{s} should wait for {dep} ({condition})"
        );
    };
    waits("topics", "kafka", "service_healthy");
    waits("autoclaim", "topics", "service_completed_successfully");
    waits("loadgen", "topics", "service_completed_successfully");
}

#[test]
fn autoclaim_services_share_one_image() {
    let compose = Compose::load();
    let mut images = BTreeSet::new();
    for (name, _) in AUTOCLAIM_SERVICES {
        let s = compose.service(name);
        images.insert(s.image());
        let build = s
            .get("build")
            .unwrap_or_else(|| panic!("service {name} builds the image"));
        let context = build
            .get("context")
            .and_then(scalar)
            .or_else(|| scalar(build));
        assert_eq!(
            context.as_deref(),
            Some("."),
            "service {name}: build context"
        );
    }
    assert_eq!(
        images.len(),
        1,
        "the autoclaim services should name one image: {images:?}"
    );
}

#[test]
fn commands_use_existing_subcommands_and_flags() {
    let compose = Compose::load();
    for c in containers(&compose) {
        let args = c.service.command();
        let mut i = 1;
        while i < args.len() {
            let a = &args[i];
            let long = a
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("service {}: unexpected argument {a:?}", c.service.name));
            let (long, inline) = match long.split_once('=') {
                Some((l, _)) => (l, true),
                None => (long, false),
            };
            let opt = c.options.get(long).unwrap_or_else(|| {
                panic!(
                    "service {}: `autoclaim {}` has no --{long}",
                    c.service.name, c.subcommand
                )
            });
            i += 1;
            if opt.takes_value && !inline {
                assert!(
                    args.get(i).is_some_and(|v| !v.starts_with("--")),
                    "service {}: --{long} needs a value",
                    c.service.name
                );
                i += 1;
            }
        }
    }
}

#[test]
fn environment_variables_are_read_by_the_subcommand() {
    let compose = Compose::load();
    for (var, file) in NON_CLAP_ENV {
        assert!(
            read(file).contains(&format!("\"{var}\"")),
            "{file} no longer reads {var}"
        );
    }
    for c in containers(&compose) {
        let read_by_clap: BTreeSet<&str> = c
            .options
            .values()
            .filter_map(|o| o.env.as_deref())
            .collect();
        for var in c.service.env().keys() {
            if !var.starts_with("AUTOCLAIM_") {
                continue;
            }
            assert!(
                read_by_clap.contains(var.as_str()) || NON_CLAP_ENV.iter().any(|(v, _)| v == var),
                "service {}: `autoclaim {}` does not read {var} (it reads {read_by_clap:?})",
                c.service.name,
                c.subcommand
            );
        }
    }
}

#[test]
fn topic_names_are_the_binary_defaults() {
    let compose = Compose::load();
    let run = options_of("run").expect("autoclaim run --help");
    let defaults: BTreeMap<&String, &String> = run
        .iter()
        .filter(|(long, _)| long.ends_with("-topic"))
        .map(|(long, o)| (long, o.default.as_ref().expect("topic default")))
        .collect();
    assert_eq!(
        defaults.len(),
        12,
        "run --help should list the twelve topics: {defaults:?}"
    );
    let dockerfile = dockerfile();
    let image_env = image_env(dockerfile.last().unwrap());
    for c in containers(&compose) {
        let mut topics = 0;
        for (long, default) in &defaults {
            if let Some(value) = c.effective(long, &image_env) {
                topics += 1;
                assert_eq!(
                    &&value, default,
                    "service {}: --{long} is {value}, the binary's default is {default}",
                    c.service.name
                );
            }
        }
        assert!(
            topics > 0,
            "service {}: `autoclaim {}` takes no topic names",
            c.service.name,
            c.subcommand
        );
    }
}

#[test]
fn shared_options_agree_between_containers() {
    let compose = Compose::load();
    let dockerfile = dockerfile();
    let image_env = image_env(dockerfile.last().unwrap());
    let containers = containers(&compose);
    let check = |long: &str, only_topic_creators: bool| {
        let values: BTreeMap<String, Option<String>> = containers
            .iter()
            .filter(|c| c.options.contains_key(long))
            .filter(|c| !only_topic_creators || c.creates_topics(&image_env))
            .map(|c| (c.service.name.clone(), c.effective(long, &image_env)))
            .collect();
        let distinct: BTreeSet<_> = values.values().collect();
        assert!(
            distinct.len() <= 1,
            "--{long} differs between services: {values:?}"
        );
    };
    for long in SHARED_OPTIONS {
        check(long, false);
    }
    for long in TOPIC_CREATION_OPTIONS {
        check(long, true);
    }
    // The processor must not create topics behind the topics service's back.
    for c in &containers {
        if c.subcommand == "run" {
            assert!(
                !c.creates_topics(&image_env),
                "service {}: topics are created by the topics service",
                c.service.name
            );
        }
    }
}

#[test]
fn brokers_point_at_the_kafka_service() {
    let compose = Compose::load();
    let kafka = compose.service("kafka");
    let image = kafka.image().unwrap();
    assert!(
        image.starts_with("apache/kafka:4."),
        "kafka should be Apache Kafka 4.x: {image}"
    );
    let env = kafka.env();
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("kafka: {k} is not set"))
    };
    // KRaft, one node.
    let roles: BTreeSet<_> = get("KAFKA_PROCESS_ROLES")
        .split(',')
        .map(|r| r.trim().to_owned())
        .collect();
    assert_eq!(
        roles,
        BTreeSet::from(["broker".into(), "controller".into()])
    );
    assert!(!env.keys().any(|k| k.contains("ZOOKEEPER")));
    for (k, v) in [
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1"),
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"),
        ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
    ] {
        assert_eq!(get(k), v, "kafka: {k}");
    }

    let listeners = |k: &str| -> BTreeMap<String, (String, u16)> {
        get(k)
            .split(',')
            .map(|l| {
                let (name, addr) = l.trim().split_once("://").expect("NAME://host:port");
                let (host, port) = addr.rsplit_once(':').expect("host:port");
                (name.to_owned(), (host.to_owned(), port.parse().unwrap()))
            })
            .collect()
    };
    let bound = listeners("KAFKA_LISTENERS");
    let advertised = listeners("KAFKA_ADVERTISED_LISTENERS");
    for (name, (_, port)) in &advertised {
        assert_eq!(
            bound.get(name).map(|(_, p)| p),
            Some(port),
            "kafka: advertised listener {name} is not bound on port {port}"
        );
    }
    let kafka_names: BTreeSet<String> = [
        Some("kafka".to_owned()),
        kafka.get("hostname").and_then(scalar),
    ]
    .into_iter()
    .flatten()
    .collect();
    let internal: BTreeSet<String> = advertised
        .values()
        .filter(|(host, _)| kafka_names.contains(host))
        .map(|(host, port)| format!("{host}:{port}"))
        .collect();
    assert!(
        !internal.is_empty(),
        "kafka advertises no address that containers can reach"
    );
    // The host listener: published, and advertised as localhost.
    let published: BTreeMap<u16, u16> = kafka
        .ports()
        .into_iter()
        .filter_map(|(h, c)| Some((c, h?)))
        .collect();
    assert!(
        advertised
            .values()
            .any(|(host, port)| host == "localhost" && published.get(port) == Some(port)),
        "kafka should advertise localhost:P and publish P:P for clients on the host"
    );

    let dockerfile = dockerfile();
    let image_env = image_env(dockerfile.last().unwrap());
    for c in containers(&compose) {
        let brokers = c
            .effective("brokers", &image_env)
            .unwrap_or_else(|| panic!("service {}: no --brokers", c.service.name));
        for b in brokers.split(',') {
            assert!(
                internal.contains(b.trim()),
                "service {}: broker {b} is not one kafka advertises to containers ({internal:?})",
                c.service.name
            );
        }
    }
}

#[test]
fn prometheus_scrapes_the_processor() {
    let compose = Compose::load();
    let dockerfile = dockerfile();
    let image_env = image_env(dockerfile.last().unwrap());
    let run = options_of("run").expect("autoclaim run --help");
    let autoclaim = compose.service("autoclaim");
    let container = Container {
        service: autoclaim,
        subcommand: "run".into(),
        options: run,
    };
    let addr = container.effective("http-addr", &image_env).unwrap();
    let (host, port) = addr.rsplit_once(':').unwrap();
    assert!(
        matches!(host, "0.0.0.0" | "[::]"),
        "autoclaim must listen on every interface in a container, not {addr}"
    );
    let port: u16 = port.parse().unwrap();
    assert!(
        autoclaim.ports().iter().any(|(_, c)| *c == port),
        "autoclaim does not publish its HTTP port {port}"
    );
    let health = format!(
        "{:?}",
        autoclaim.get("healthcheck").expect("autoclaim healthcheck")
    );
    assert!(
        health.contains(&format!(":{port}/readyz")) || health.contains(&format!(":{port}/healthz")),
        "the autoclaim healthcheck should ask :{port}/readyz: {health}"
    );
    let exposed: Vec<String> = dockerfile
        .last()
        .unwrap()
        .instructions
        .iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, a)| {
            a.split_whitespace()
                .map(|p| p.split('/').next().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        exposed.contains(&port.to_string()),
        "Dockerfile should EXPOSE {port}: {exposed:?}"
    );

    // Prometheus reads the mounted config and scrapes autoclaim:<port>/metrics.
    let prometheus = compose.service("prometheus");
    let config_path = prometheus
        .command()
        .iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_owned))
        .unwrap_or_else(|| "/etc/prometheus/prometheus.yml".into());
    let host_config = prometheus
        .host_path_of(&config_path)
        .unwrap_or_else(|| panic!("prometheus: nothing is mounted at {config_path}"));
    assert_eq!(host_config, repo().join("deploy/prometheus.yml"));
    let config: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&host_config).unwrap()).unwrap();
    let mut targets = Vec::new();
    for job in config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
    {
        let path = job
            .get("metrics_path")
            .and_then(scalar)
            .unwrap_or_else(|| "/metrics".into());
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            for t in sc["targets"].as_sequence().into_iter().flatten() {
                targets.push((scalar(t).unwrap(), path.clone()));
            }
        }
    }
    let expected = (format!("autoclaim:{port}"), "/metrics".to_owned());
    assert!(
        targets.contains(&expected),
        "deploy/prometheus.yml should scrape {expected:?}: {targets:?}"
    );
    for (t, _) in &targets {
        let host = t.rsplit_once(':').unwrap().0;
        assert!(
            compose.services.contains_key(host),
            "scrape target {t} is no service"
        );
    }
    let interval = config["global"]["scrape_interval"].as_str();
    assert_eq!(interval, Some("5s"), "scrape interval");
}

#[test]
fn grafana_provisioning_is_mounted() {
    let compose = Compose::load();
    let grafana = compose.service("grafana");
    let env = grafana.env();
    assert_eq!(
        env.get("GF_AUTH_ANONYMOUS_ENABLED").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        env.get("GF_AUTH_ANONYMOUS_ORG_ROLE").map(String::as_str),
        Some("Viewer")
    );

    // Datasources: the Prometheus service, on the port it listens on.
    let ds_dir = grafana
        .host_path_of("/etc/grafana/provisioning/datasources")
        .expect("grafana: datasources provisioning is not mounted");
    let mut prometheus_urls = Vec::new();
    for entry in std::fs::read_dir(&ds_dir).unwrap() {
        let doc: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap())
                .unwrap();
        for ds in doc["datasources"].as_sequence().into_iter().flatten() {
            if ds["type"].as_str() == Some("prometheus") {
                prometheus_urls.push(scalar(&ds["url"]).unwrap());
            }
        }
    }
    let prometheus_port = compose
        .service("prometheus")
        .ports()
        .first()
        .map(|(_, c)| *c)
        .expect("prometheus publishes its port");
    assert_eq!(
        prometheus_urls,
        [format!("http://prometheus:{prometheus_port}")],
        "the Grafana datasource should be the prometheus service"
    );

    // Dashboards: the provider's path is mounted from deploy/grafana/dashboards.
    let providers_dir = grafana
        .host_path_of("/etc/grafana/provisioning/dashboards")
        .expect("grafana: dashboards provisioning is not mounted");
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(&providers_dir).unwrap() {
        let doc: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap())
                .unwrap();
        for p in doc["providers"].as_sequence().into_iter().flatten() {
            paths.push(scalar(&p["options"]["path"]).expect("provider options.path"));
        }
    }
    assert!(!paths.is_empty(), "no dashboard provider");
    for path in &paths {
        let host = grafana
            .host_path_of(path)
            .unwrap_or_else(|| panic!("grafana: nothing is mounted at {path}"));
        assert!(
            host.join("autoclaim.json").is_file(),
            "{} has no autoclaim.json",
            host.display()
        );
    }
    if let Some(home) = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        let host = grafana
            .host_path_of(home)
            .unwrap_or_else(|| panic!("grafana: the home dashboard {home} is not mounted"));
        assert!(host.is_file(), "{} does not exist", host.display());
    }
}

#[test]
fn dockerfile_builds_and_runs_the_binary() {
    let bins = bin_names();
    let stages = dockerfile();
    assert!(stages.len() >= 2, "the Dockerfile should be multi-stage");
    let builder = &stages[0];
    let from = &builder.instructions[0].1;
    assert!(from.starts_with("rust:"), "builder: {from}");
    let build = builder
        .instructions
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("cargo build"))
        .map(|(_, a)| a.clone())
        .expect("builder runs cargo build");
    assert!(build.contains("--locked"), "{build}");
    // The image ships the product alone: not the other packages of the workspace (the benchmark).
    assert!(
        !build
            .split_whitespace()
            .any(|w| w == "--workspace" || w == "--all"),
        "the builder should build the product binary only: {build}"
    );
    let profile = build_profile(&build);

    let runtime = stages.last().unwrap();
    let entrypoint = runtime
        .instructions
        .iter()
        .rfind(|(i, _)| i == "ENTRYPOINT")
        .map(|(_, a)| json_array(a))
        .expect("ENTRYPOINT");
    let program = Path::new(&entrypoint[0])
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        bins.contains(&program),
        "ENTRYPOINT runs {program}, Cargo.toml builds {bins:?}"
    );
    assert!(
        build.contains(&format!("target/{profile}/{program}")),
        "the builder should take target/{profile}/{program}: {build}"
    );
    assert!(
        build.contains(&format!("--bin {program}")),
        "the builder should build only the binary it ships, {program}: {build}"
    );
    let copied = runtime
        .instructions
        .iter()
        .find(|(i, a)| i == "COPY" && a.contains("--from="))
        .map(|(_, a)| a.clone())
        .expect("the runtime copies the binary from the builder");
    let from_stage = copied
        .split_whitespace()
        .find_map(|w| w.strip_prefix("--from="))
        .unwrap();
    assert_eq!(builder.name.as_deref(), Some(from_stage));
    let dest = copied.split_whitespace().last().unwrap();
    assert!(
        dest.ends_with(&format!("/{program}")) || dest.ends_with("/bin/") || dest.ends_with("/bin"),
        "the binary lands at {dest}"
    );
    let cmd = runtime
        .instructions
        .iter()
        .rfind(|(i, _)| i == "CMD")
        .map(|(_, a)| json_array(a))
        .expect("CMD");
    assert_eq!(cmd, ["run"]);
    let user = runtime
        .instructions
        .iter()
        .rfind(|(i, _)| i == "USER")
        .map(|(_, a)| a.clone())
        .expect("USER");
    assert!(
        !matches!(user.split(':').next(), Some("0" | "root")),
        "the runtime should not run as root"
    );
}

/// The Debian package of a shared library on this machine (Debian bookworm, as the image is).
fn package_of_library(library: &str) -> String {
    let out = Command::new("dpkg")
        .args(["-S", &format!("*/{library}")])
        .output()
        .expect("dpkg (this test runs on Debian, as the image does)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or_default();
    line.split(':').next().unwrap_or_default().trim().to_owned()
}

#[test]
fn the_runtime_image_installs_every_library_the_binary_links() {
    let out = Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_autoclaim")])
        .output()
        .expect("readelf (binutils)");
    let dynamic = String::from_utf8_lossy(&out.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(
        needed.contains(&"libssl.so.3"),
        "librdkafka links OpenSSL: {needed:?}"
    );
    let runtime = dockerfile().pop().expect("a runtime stage");
    let installs: String = runtime
        .instructions
        .iter()
        .filter(|(i, a)| i == "RUN" && a.contains("apt-get install"))
        .map(|(_, a)| a.as_str())
        .collect();
    // libc6 and libgcc-s1 are in every Debian image: dpkg itself needs them.
    let in_base = ["libc6", "libgcc-s1"];
    for library in needed {
        let package = package_of_library(library);
        assert!(!package.is_empty(), "no Debian package owns {library}");
        assert!(
            in_base.contains(&package.as_str())
                || installs.split_whitespace().any(|w| w == package),
            "the binary links {library} (package {package}), which the runtime stage does not install"
        );
    }
}

#[test]
fn dockerignore_keeps_the_build_inputs() {
    let mut inputs: Vec<String> = [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src/main.rs",
        "src/lib.rs",
    ]
    .map(str::to_owned)
    .to_vec();
    for (_, kv) in cargo_targets() {
        if let Some(p) = kv.get("path") {
            inputs.push(p.clone());
        }
    }
    // Cargo loads every member of the workspace, even to build one binary of the root package.
    let members = workspace_members();
    assert!(
        members.iter().any(|m| m == "bench"),
        "the benchmark harness should be a workspace member: {members:?}"
    );
    for member in members {
        let manifest = format!("{member}/Cargo.toml");
        for (_, kv) in manifest_tables(&manifest) {
            if let Some(p) = kv.get("path") {
                inputs.push(format!("{member}/{p}"));
            }
        }
        inputs.push(manifest);
    }
    for entry in std::fs::read_dir(repo().join("proto/autoclaim/v1")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        inputs.push(format!("proto/autoclaim/v1/{name}"));
    }
    // Files compiled in with include_str!/include_bytes!, relative to the file that includes them.
    let mut dirs = vec![repo().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            for mac in ["include_str!(\"", "include_bytes!(\""] {
                for (at, _) in text.match_indices(mac) {
                    let rest = &text[at + mac.len()..];
                    let included = &rest[..rest.find('"').unwrap()];
                    let full = path.parent().unwrap().join(included);
                    let full = std::fs::canonicalize(&full)
                        .unwrap_or_else(|e| panic!("{}: {included}: {e}", path.display()));
                    let relative = full
                        .strip_prefix(std::fs::canonicalize(repo()).unwrap())
                        .unwrap_or_else(|_| panic!("{included} is outside the repository"));
                    inputs.push(relative.to_str().unwrap().to_owned());
                }
            }
        }
    }
    for path in &inputs {
        assert!(repo().join(path).exists(), "{path} does not exist");
        assert!(
            !docker_ignored(path),
            ".dockerignore excludes {path}, which the build needs"
        );
    }
    for path in [
        "target/release/autoclaim",
        ".git/HEAD",
        "deploy/prometheus.yml",
    ] {
        assert!(docker_ignored(path), ".dockerignore should exclude {path}");
    }
}

#[test]
fn dockerignore_matcher() {
    // Relies on the patterns of the real file: `target`, `**/*.profraw`, `perf.data*`.
    assert!(docker_ignored("target"));
    assert!(docker_ignored("target/debug/x"));
    assert!(!docker_ignored("src/target.rs"));
    assert!(docker_ignored("default_1.profraw"));
    assert!(docker_ignored("src/x.profraw"));
    assert!(docker_ignored("perf.data.old"));
    assert!(!docker_ignored("src/main.rs"));
}

#[test]
fn help_parser_reads_env_and_defaults() {
    let help = "Usage: autoclaim run [OPTIONS]\n\nOptions:\n      --brokers <BROKERS>\n          Bootstrap servers [env: AUTOCLAIM_BROKERS=] [default: 127.0.0.1:9092]\n      --create-topics\n          Create missing topics\n          at start [env: AUTOCLAIM_CREATE_TOPICS=]\n  -h, --help\n          Print help\n";
    let opts = parse_help(help);
    assert_eq!(opts.len(), 3);
    let b = &opts["brokers"];
    assert!(b.takes_value);
    assert_eq!(b.env.as_deref(), Some("AUTOCLAIM_BROKERS"));
    assert_eq!(b.default.as_deref(), Some("127.0.0.1:9092"));
    let c = &opts["create-topics"];
    assert!(!c.takes_value);
    assert_eq!(c.env.as_deref(), Some("AUTOCLAIM_CREATE_TOPICS"));
    assert_eq!(c.default, None);
    assert!(opts.contains_key("help"));
}

#[test]
fn every_published_port_is_bound_to_loopback() {
    for file in [COMPOSE_FILE, DEV_COMPOSE_FILE] {
        let compose = Compose::load_file(file);
        for service in compose.services.values() {
            for p in service
                .get("ports")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let host_ip = match p.as_mapping() {
                    Some(map) => map.get("host_ip").and_then(scalar),
                    None => {
                        let spec = scalar(p).unwrap();
                        let parts: Vec<&str> = spec.split('/').next().unwrap().split(':').collect();
                        (parts.len() == 3).then(|| parts[0].to_owned())
                    }
                };
                assert_eq!(
                    host_ip.as_deref(),
                    Some("127.0.0.1"),
                    "{file}: service {} publishes {p:?} on every interface; write \"127.0.0.1:HOST:CONTAINER\"",
                    service.name
                );
            }
        }
    }
}

fn is_secret_name(name: &str) -> bool {
    let upper = name.to_uppercase();
    SECRET_NAME_PARTS.iter().any(|part| upper.contains(part))
}

/// Whether a compose value is a bare `${VAR}` (or `$VAR`) with no default: the secret comes from
/// the operator's environment, not from the file.
fn is_bare_interpolation(value: &str) -> bool {
    let name = value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .or_else(|| value.strip_prefix('$'))
        .unwrap_or("");
    // `${VAR:?message}` and `${VAR?message}` insist on the variable and hold no value.
    let name = name.split(['?']).next().unwrap().trim_end_matches(':');
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[test]
fn no_secret_is_committed_in_the_compose_file() {
    let compose = Compose::load();
    let dev = Compose::load_file(DEV_COMPOSE_FILE);
    let text = read(COMPOSE_FILE);
    for service in compose.services.values() {
        for (name, value) in service.env() {
            assert!(
                !is_secret_name(&name) || value.is_empty() || is_bare_interpolation(&value),
                "{COMPOSE_FILE}: service {}: {name} has a value written in the file; \
                 a secret belongs in {DEV_COMPOSE_FILE} (development) or in the operator's environment",
                service.name
            );
        }
    }
    // Nor does any secret of the development file appear in the main one under another name.
    let mut dev_secrets = 0;
    for service in dev.services.values() {
        for (name, value) in service.env() {
            if is_secret_name(&name) {
                dev_secrets += 1;
                assert!(
                    !text.contains(&value),
                    "{COMPOSE_FILE} contains the development secret of {name}"
                );
            }
        }
    }
    assert!(
        dev_secrets > 0,
        "{DEV_COMPOSE_FILE} should hold the admin API's development secret"
    );
    assert!(is_bare_interpolation("${AUTOCLAIM_ADMIN_HS256_SECRET}"));
    assert!(is_bare_interpolation(
        "${AUTOCLAIM_ADMIN_HS256_SECRET:?set it}"
    ));
    assert!(!is_bare_interpolation(
        "${AUTOCLAIM_ADMIN_HS256_SECRET:-abc}"
    ));
    assert!(!is_bare_interpolation("abc"));
}

#[test]
fn the_development_file_adds_only_what_run_reads_to_existing_services() {
    let compose = Compose::load();
    let dev = Compose::load_file(DEV_COMPOSE_FILE);
    let header: String = read(DEV_COMPOSE_FILE)
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect();
    assert!(
        header.to_lowercase().contains("development only"),
        "{DEV_COMPOSE_FILE} should say at its top that it is for development only"
    );
    let run = options_of("run").expect("autoclaim run --help");
    let read_by_run: BTreeSet<String> = run.values().filter_map(|o| o.env.clone()).collect();
    for service in dev.services.values() {
        let base = compose.service(&service.name);
        assert_eq!(
            base.command().first().map(String::as_str),
            Some("run"),
            "{DEV_COMPOSE_FILE} adds to {}, which does not run the service",
            service.name
        );
        for (name, _) in service.env() {
            assert!(
                read_by_run.contains(&name),
                "{DEV_COMPOSE_FILE}: {name} is not read by `autoclaim run`"
            );
        }
    }
    // The operator's guide says how to add it.
    assert!(read("docs/operations.md").contains(&format!("-f {DEV_COMPOSE_FILE}")));
}

#[test]
fn prometheus_loads_the_alert_rules() {
    let compose = Compose::load();
    let prometheus = compose.service("prometheus");
    let config_path = prometheus
        .command()
        .iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_owned))
        .unwrap_or_else(|| "/etc/prometheus/prometheus.yml".into());
    let config: Value = serde_yaml_ng::from_str(&read("deploy/prometheus.yml")).unwrap();
    let rule_files: Vec<String> = config["rule_files"]
        .as_sequence()
        .expect("deploy/prometheus.yml has rule_files")
        .iter()
        .filter_map(scalar)
        .collect();
    assert!(!rule_files.is_empty());
    let config_dir = Path::new(&config_path).parent().unwrap();
    for file in &rule_files {
        let in_container = config_dir.join(file);
        let host = prometheus
            .host_path_of(in_container.to_str().unwrap())
            .unwrap_or_else(|| {
                panic!(
                    "prometheus: nothing is mounted at {}",
                    in_container.display()
                )
            });
        assert!(host.is_file(), "{} does not exist", host.display());
        // The same relative path from deploy/ (where promtool checks it) names the same file.
        assert_eq!(host, repo().join("deploy").join(file));
    }
    assert!(rule_files.iter().any(|f| f == "alerts.yml"));
}

#[test]
fn the_runtime_stage_carries_no_build_tools() {
    let stages = dockerfile();
    let runtime = stages.last().unwrap();
    let from = &runtime.instructions[0].1;
    assert!(
        !from.starts_with("rust"),
        "the runtime stage starts from a Rust image: {from}"
    );
    for (instruction, args) in &runtime.instructions {
        if instruction == "RUN" {
            let words: Vec<&str> = args.split_whitespace().collect();
            for w in &words {
                assert!(
                    !BUILD_TOOLS.contains(w) && !w.ends_with("-dev"),
                    "the runtime stage installs or runs {w}: {args}"
                );
            }
        }
        if instruction == "COPY" {
            // Only the binary comes from the builder; nothing of the build context is copied.
            assert!(
                args.contains("--from="),
                "the runtime stage copies build context files: {args}"
            );
            let sources: Vec<&str> = args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            assert_eq!(sources.len(), 2, "one file from the builder: {args}");
            assert!(sources[0].starts_with("/out/"), "{args}");
        }
    }
}

#[test]
fn the_image_binary_is_built_without_debug_info() {
    let stages = dockerfile();
    let build = stages[0]
        .instructions
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("cargo build"))
        .map(|(_, a)| a.clone())
        .expect("builder runs cargo build");
    let profile = build_profile(&build);
    assert_ne!(profile, "debug", "the image is built without optimisation");
    let debug = profile_setting(&profile, "debug").unwrap();
    assert!(
        matches!(debug.as_str(), "false" | "0" | "none"),
        "profile {profile} keeps debug info (debug = {debug})"
    );
    let strip = profile_setting(&profile, "strip").unwrap();
    assert!(
        matches!(strip.as_str(), "true" | "symbols"),
        "profile {profile} does not strip symbols (strip = {strip})"
    );
    assert_eq!(build_profile("cargo build --release --locked"), "release");
    assert_eq!(build_profile("cargo build --profile=dist"), "dist");
}
