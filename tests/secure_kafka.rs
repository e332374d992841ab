//! The binary against the test broker's secured listeners (scripts/kafka): SASL_SSL with SCRAM,
//! PLAIN and OAUTHBEARER (librdkafka's OIDC client-credentials flow against a token endpoint served
//! here), and mutual TLS, all with the broker's certificate and host name verified. Settings that
//! cannot work stop a command with their cause rather than a retry loop. Needs the variables
//! scripts/test exports (AUTOCLAIM_TEST_SASL_SSL_BROKERS, AUTOCLAIM_TEST_CA_PEM, ...).
mod kafka_support;

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;

use autoclaim::scenario::{Scenario, ScenarioConfig};
use autoclaim::wire::pb;
use kafka_support::*;

const DELAY: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(120);

/// A fact of the secured test broker, from scripts/test's environment.
fn secured(name: &str) -> String {
    let var = format!("AUTOCLAIM_TEST_{name}");
    std::env::var(&var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: these tests need the secured listeners of the broker that \
             scripts/test starts (scripts/kafka secure-env). Run them through scripts/test."
        )
    })
}

/// Variables of a command's environment.
type Env = Vec<(&'static str, String)>;

/// Flags of a SASL_SSL connection with `mechanism`; the password goes in the environment.
fn sasl_ssl(mechanism: &str) -> Vec<String> {
    [
        "--brokers",
        &secured("SASL_SSL_BROKERS"),
        "--kafka-sasl-mechanism",
        mechanism,
        "--kafka-sasl-username",
        &secured("SASL_USERNAME"),
        "--kafka-tls-ca",
        &secured("CA_PEM"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn password_env() -> Env {
    vec![("AUTOCLAIM_KAFKA_SASL_PASSWORD", secured("SASL_PASSWORD"))]
}

/// Runs the binary with `args` and `env`, and no AUTOCLAIM_* variable from outside.
fn autoclaim(args: &[String], env: &[(&str, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_autoclaim"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("AUTOCLAIM_KAFKA")) {
        command.env_remove(key);
    }
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run autoclaim")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn args(words: &[&str], connection: &[String]) -> Vec<String> {
    words
        .iter()
        .map(|w| (*w).to_owned())
        .chain(connection.iter().cloned())
        .collect()
}

fn create_topics_over(topics: &Topics, connection: &[String], env: &[(&str, String)]) -> Output {
    let mut command = args(&["create-topics", "--partitions", "2"], connection);
    command.extend(topics.command_line_args());
    autoclaim(&command, env)
}

fn replay_file(records: &[pb::ReplayRecord]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "autoclaim-secure-{}-{}.jsonl",
        std::process::id(),
        records.len()
    ));
    let mut file = std::fs::File::create(&path).unwrap();
    for record in records {
        writeln!(file, "{}", serde_json::to_string(record).unwrap()).unwrap();
    }
    path
}

#[test]
fn the_pipeline_runs_end_to_end_over_sasl_ssl_with_scram_sha_512() {
    let topics = unique_topics("sasl-ssl");
    let connection = sasl_ssl("scram-sha-512");
    let env = password_env();
    let created = create_topics_over(&topics, &connection, &env);
    assert!(
        created.status.success(),
        "create-topics: {}",
        stderr(&created)
    );

    let scenario = Scenario::new(ScenarioConfig {
        tenants: 8,
        users_per_tenant: 25,
        seed: 31,
        ..ScenarioConfig::default()
    });
    let records: Vec<_> = scenario
        .tables()
        .into_iter()
        .chain(activity_records(scenario.activity(1500)))
        .collect();
    let expected = expected(&records, DELAY);
    assert!(!expected.assignments.is_empty(), "the scenario assigns");
    let input = replay_file(&records);
    let mut publish = args(
        &["publish", "--input", input.to_str().unwrap()],
        &connection,
    );
    publish.extend(topics.command_line_args());
    let published = autoclaim(&publish, &env);
    assert!(
        published.status.success(),
        "publish: {}",
        stderr(&published)
    );

    let group = format!("g-{}", topics.activity);
    let password = secured("SASL_PASSWORD");
    let mut service = Service::start_connected(
        &ServiceOptions {
            topics: &topics,
            group: &group,
            transactional_id: "sasl-ssl-1",
            delay: "1h",
            extra: vec![],
        },
        &connection,
        &[
            ("AUTOCLAIM_KAFKA_SASL_PASSWORD", password.as_str()),
            // Everything librdkafka and the service say, to look for the password in.
            ("AUTOCLAIM_LOG", "debug"),
        ],
    );
    wait_processed_by(&mut service, &topics, &group, WAIT);
    assert!(service.stop().success(), "log: {}", service.log_text());
    assert_equal_to_replay(&topics, &expected);
    assert!(
        !service.log_text().contains(&password),
        "the SASL password is never logged"
    );

    let mut verify = args(
        &[
            "verify",
            "--group-id",
            &group,
            "--propagation-delay",
            "1h",
            "--compare-replay",
        ],
        &connection,
    );
    verify.extend(topics.command_line_args());
    let verified = autoclaim(&verify, &env);
    assert!(
        verified.status.success(),
        "verify over SASL_SSL: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        stderr(&verified)
    );
}

#[test]
fn every_sasl_mechanism_and_mutual_tls_connect_with_verification_on() {
    let mut connections: Vec<(&str, Vec<String>, Env)> = ["scram-sha-256", "plain"]
        .into_iter()
        .map(|m| (m, sasl_ssl(m), password_env()))
        .collect();
    connections.push((
        "mutual TLS",
        [
            "--brokers",
            &secured("SSL_BROKERS"),
            "--kafka-tls-ca",
            &secured("CA_PEM"),
            "--kafka-tls-cert",
            &secured("CLIENT_CERT_PEM"),
            "--kafka-tls-key",
            &secured("CLIENT_KEY_PEM"),
        ]
        .map(str::to_owned)
        .to_vec(),
        vec![],
    ));
    for (name, connection, env) in connections {
        let topics = unique_topics(&name.replace(' ', "-"));
        let out = create_topics_over(&topics, &connection, &env);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("created 12 topics"),
            "{name}: {}",
            stderr(&out)
        );
    }
}

/// Each case must stop with its cause, not by running out the 30 s of retries ("answered within").
#[test]
fn settings_that_cannot_work_stop_at_once_naming_the_cause() {
    let sasl = secured("SASL_SSL_BROKERS");
    let untrusted = {
        let mut connection = sasl_ssl("scram-sha-512");
        let ca = connection
            .iter()
            .position(|a| a == "--kafka-tls-ca")
            .unwrap();
        connection[ca + 1] = secured("UNTRUSTED_CA_PEM");
        connection
    };
    let no_client_certificate = [
        "--brokers",
        &secured("SSL_BROKERS"),
        "--kafka-tls-ca",
        &secured("CA_PEM"),
    ]
    .map(str::to_owned)
    .to_vec();
    let wrong_password = vec![(
        "AUTOCLAIM_KAFKA_SASL_PASSWORD",
        "not-the-password".to_owned(),
    )];
    let cases: Vec<(&str, Vec<String>, Env, &[&str])> = vec![
        (
            "a wrong password",
            sasl_ssl("scram-sha-512"),
            wrong_password,
            &["refused to authenticate", "SCRAM-SHA-512"],
        ),
        (
            "an untrusted broker certificate",
            untrusted,
            password_env(),
            &["TLS with Kafka", "certificate verify failed"],
        ),
        (
            "a plaintext client on the TLS port",
            vec!["--brokers".into(), sasl],
            vec![],
            &["does not speak the configured security protocol"],
        ),
        (
            "no client certificate where the broker requires one",
            no_client_certificate,
            vec![],
            &["TLS with Kafka", "bad certificate"],
        ),
    ];
    for (case, connection, env, causes) in cases {
        // `run` is what an operator starts; the check is the same for every command.
        let out = autoclaim(
            &args(&["run", "--http-addr", "127.0.0.1:0"], &connection),
            &env,
        );
        let text = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{case}: {text}");
        for cause in causes {
            assert!(text.contains(cause), "{case}: expected {cause:?} in {text}");
        }
        assert!(
            !text.contains("answered within"),
            "{case} is named, not timed out: {text}"
        );
    }
}

/// An unsigned JWT (alg none), as Kafka's default OAUTHBEARER validator accepts.
fn unsigned_jwt(subject: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = format!(r#"{{"sub":"{subject}","iat":{now},"exp":{}}}"#, now + 3600);
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

/// A token endpoint of the client-credentials grant: answers each request with a token for the
/// client it authenticated, and hands the requests' text to the test.
fn token_endpoint() -> (String, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/oauth2/token", listener.local_addr().unwrap());
    let (requests, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            head.push_str(&String::from_utf8_lossy(&body));
            let token = format!(
                r#"{{"access_token":"{}","token_type":"bearer","expires_in":3600}}"#,
                unsigned_jwt("autoclaim-oidc")
            );
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{token}",
                token.len()
            );
            let _ = requests.send(head);
        }
    });
    (url, received)
}

#[test]
fn oauthbearer_gets_a_token_by_client_credentials_and_connects() {
    let (endpoint, requests) = token_endpoint();
    let connection: Vec<String> = [
        "--brokers",
        &secured("SASL_SSL_BROKERS"),
        "--kafka-tls-ca",
        &secured("CA_PEM"),
        "--kafka-sasl-mechanism",
        "oauthbearer",
        "--kafka-oauth-token-endpoint",
        &endpoint,
        "--kafka-oauth-client-id",
        "autoclaim-client",
        "--kafka-oauth-scope",
        "kafka",
    ]
    .map(str::to_owned)
    .to_vec();
    let env = vec![(
        "AUTOCLAIM_KAFKA_OAUTH_CLIENT_SECRET",
        "client-s3cret".to_owned(),
    )];
    let topics = unique_topics("oidc");
    let out = create_topics_over(&topics, &connection, &env);
    assert!(out.status.success(), "over OAUTHBEARER: {}", stderr(&out));
    let request = requests
        .recv_timeout(Duration::from_secs(10))
        .expect("the token endpoint was asked");
    assert!(request.starts_with("POST /oauth2/token"), "{request}");
    assert!(
        request.contains("grant_type=client_credentials"),
        "{request}"
    );
    assert!(request.contains("scope=kafka"), "{request}");
    let basic = STANDARD.encode("autoclaim-client:client-s3cret");
    assert!(
        request.contains(&format!("Basic {basic}")),
        "the client authenticates with its id and secret: {request}"
    );
}

#[test]
fn help_never_shows_a_secret_from_the_environment() {
    let env = vec![
        (
            "AUTOCLAIM_KAFKA_SASL_PASSWORD",
            "sentinel-password".to_owned(),
        ),
        (
            "AUTOCLAIM_KAFKA_OAUTH_CLIENT_SECRET",
            "sentinel-secret".to_owned(),
        ),
    ];
    let out = autoclaim(&["run".to_owned(), "--help".to_owned()], &env);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("AUTOCLAIM_KAFKA_SASL_PASSWORD"), "{help}");
    assert!(!help.contains("sentinel"), "{help}");
}
