//! `autoclaim run` with the admin API on, for the tests that drive it over HTTP (end to end,
//! Schemathesis, the browser console), and development tokens for it from `autoclaim token`.
//! Needs `kafka_support` beside it (the broker).
#![allow(dead_code)] // each test file uses a part

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::kafka_support::{brokers, Topics};

pub const SECRET: &str = "admin-test-secret-0123456789-abcdefghij";
pub const ISSUER: &str = "https://dev.autoclaim.test";
pub const AUDIENCE: &str = "autoclaim-admin";

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoclaim"))
}

/// A port nothing listens on now (the service is given it, as it reports no port of its own).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `autoclaim run` with the admin API, killed when dropped.
pub struct AdminService {
    child: Child,
    pub log: PathBuf,
    pub port: u16,
}

impl AdminService {
    /// Starts the service on `topics` with this propagation delay and extra arguments; `label`
    /// names its log file.
    pub fn start(topics: &Topics, label: &str, delay: &str, extra: &[&str]) -> AdminService {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("autoclaim-{label}-{port}.log"));
        let child = bin()
            .args(["run", "--brokers", &brokers()])
            .args(["--group-id", &format!("g-{}", topics.activity)])
            .args(["--transactional-id", &format!("t-{}", topics.activity)])
            .args(["--propagation-delay", delay])
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .args(topics.command_line_args())
            .env("AUTOCLAIM_ADMIN_HS256_SECRET", SECRET)
            .env("AUTOCLAIM_ADMIN_ISSUER", ISSUER)
            .env("AUTOCLAIM_ADMIN_AUDIENCE", AUDIENCE)
            .env("AUTOCLAIM_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start autoclaim run");
        AdminService { child, log, port }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status (within a minute).
    pub fn stop(&mut self) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "autoclaim did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for AdminService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A development token from `autoclaim token` for the tenant's Global Administrator.
pub fn token(tenant: &str, oid: &str) -> String {
    token_with(tenant, oid, &[])
}

/// As `token`, with the user's display name (`name`) too.
pub fn named_token(tenant: &str, oid: &str, name: &str) -> String {
    token_with(tenant, oid, &["--name", name])
}

fn token_with(tenant: &str, oid: &str, extra: &[&str]) -> String {
    let out = bin()
        .args(["token", "--tenant", tenant, "--oid", oid, "--ttl", "1h"])
        .args(extra)
        .env("AUTOCLAIM_ADMIN_HS256_SECRET", SECRET)
        .env("AUTOCLAIM_ADMIN_ISSUER", ISSUER)
        .env("AUTOCLAIM_ADMIN_AUDIENCE", AUDIENCE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An HTTP answer: status, head and body.
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A minimal HTTP/1.1 client (one request per connection), enough for a test; None when the
/// service does not answer (yet).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> Option<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let body = body.map(serde_json::Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\nauthorization: Bearer {token}\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("content-type: application/json\r\n");
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}
