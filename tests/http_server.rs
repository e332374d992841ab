//! The HTTP server with real sockets: slow and greedy clients (silent, half a request, a body that
//! never comes, idle keep-alive, more connections than allowed) are closed or answered within the
//! configured timeouts, and every error, including those hyper answers by itself, is problem
//! details. The server runs with 1 s timeouts; the asserts only say "within a generous bound".
mod writer_support;

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoclaim::admin::api::{self, AdminState};
use autoclaim::admin::auth::{self, AuthSettings, Authenticator, GLOBAL_ADMINISTRATOR};
use autoclaim::admin::view::{AdminView, SharedView};
use autoclaim::admin::writer::PolicyWriter;
use autoclaim::http::HttpLimits;
use autoclaim::pipeline::processor::Health;
use autoclaim::pipeline::security::Secret;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::{json, Value};
use writer_support::MemoryWriter;

const SECRET: &str = "http-secret-0123456789-abcdefghijklmnop";
const ISSUER: &str = "https://dev.autoclaim.test";
const AUDIENCE: &str = "autoclaim-admin";
const TENANT: &str = "tenant-a";
/// Far more than the 1 s timeouts the server runs with: "eventually", not a measurement.
const BOUND: Duration = Duration::from_secs(20);

fn limits(max_connections: usize) -> HttpLimits {
    HttpLimits {
        header_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        max_connections: NonZeroUsize::new(max_connections).unwrap(),
    }
}

/// The service's router (health, metrics, the admin API with an in-memory writer) served by
/// `serve_on` on a port of its own, on a thread of its own.
fn serve(limits: HttpLimits) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let metrics = PrometheusBuilder::new().build_recorder().handle();
            let mut view = AdminView::new(Duration::from_secs(60));
            view.mark_loaded();
            let auth = Authenticator::new(AuthSettings {
                jwks: None,
                hs256_secret: Some(Secret::new(SECRET)),
                issuer: ISSUER.into(),
                audiences: vec![AUDIENCE.into()],
            })
            .unwrap();
            let state = AdminState::new(
                SharedView::new(view),
                Arc::new(MemoryWriter::new()) as Arc<dyn PolicyWriter>,
                auth,
                50,
            );
            let router = autoclaim::http::router(Arc::new(Health::default()), metrics)
                .merge(api::router(state));
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            autoclaim::http::serve_on(listener, router, limits, std::future::pending())
                .await
                .unwrap();
        });
    });
    addr
}

fn token() -> String {
    let now = jsonwebtoken::get_current_timestamp();
    auth::mint_hs256(
        SECRET.as_bytes(),
        &json!({"iss": ISSUER, "aud": AUDIENCE, "tid": TENANT, "oid": "oid-1",
                "wids": [GLOBAL_ADMINISTRATOR], "exp": now + 3600}),
    )
    .unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    stream
}

/// Everything the server sends until it closes the connection; fails if it is still open after
/// [`BOUND`].
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            // A reset is the server closing too (with data of ours still unread).
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return received,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the server kept the connection open for {:?}",
                    started.elapsed()
                )
            }
            Err(e) => panic!("read: {e}"),
        }
        assert!(started.elapsed() < BOUND, "the server keeps sending");
    }
}

/// One response read off a connection that stays open: its head and a body of content-length.
fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed mid-response");
        received.push(byte[0]);
    }
    let head = String::from_utf8(received).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head, body)
}

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn parse(raw: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Answer {
            status,
            head: head.to_ascii_lowercase(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// Problem details with this status and a detail that says something.
    fn assert_problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.head);
        assert!(
            self.head.contains("content-type: application/problem+json"),
            "{}",
            self.head
        );
        let problem: Value = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(problem["status"], status);
        assert!(problem["detail"].as_str().unwrap().len() > 10, "{problem}");
        problem
    }
}

/// Sends `request` whole and reads the answer up to the server's close.
fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = connect(addr);
    // A server that answers before reading everything may reset the rest: keep what came.
    let _ = stream.write_all(request);
    Answer::parse(&read_until_closed(&mut stream))
}

#[test]
fn a_silent_connection_is_closed_after_the_header_timeout() {
    let addr = serve(limits(16));
    let mut stream = connect(addr);
    assert!(read_until_closed(&mut stream).is_empty());
}

#[test]
fn half_a_request_line_or_half_the_headers_are_closed_after_the_header_timeout() {
    let addr = serve(limits(16));
    for partial in [
        &b"GET /heal"[..],
        b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ",
    ] {
        let mut stream = connect(addr);
        stream.write_all(partial).unwrap();
        read_until_closed(&mut stream);
    }
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let addr = serve(limits(16));
    let mut stream = connect(addr);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut stream);
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    assert!(!body.is_empty());
    assert!(read_until_closed(&mut stream).is_empty());
}

#[test]
fn a_body_announced_and_not_sent_is_answered_and_closed() {
    let addr = serve(limits(16));
    let put = |length: usize| {
        format!(
            "PUT /v1/tenants/{TENANT}/settings HTTP/1.1\r\nhost: 127.0.0.1\r\n\
             authorization: Bearer {}\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n{{\"autoc",
            token()
        )
    };
    // 10 MB announced: over the body limit, refused without waiting for it.
    let problem = exchange(addr, put(10_000_000).as_bytes()).assert_problem(413);
    assert_eq!(problem["type"], "urn:autoclaim:problem:too-large");
    // Within the limit but never finished: 408 once the body timeout has passed.
    let problem = exchange(addr, put(1000).as_bytes()).assert_problem(408);
    assert_eq!(problem["type"], "urn:autoclaim:problem:request-timeout");
}

#[test]
fn connections_over_the_limit_wait_without_breaking_those_served() {
    let addr = serve(limits(2));
    // A keep-alive connection being served, and a silent one: the limit is reached.
    let mut served = connect(addr);
    served
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .unwrap();
    read_response(&mut served);
    let mut silent = connect(addr);
    // One more is queued; it is answered once a slot frees (the silent one times out).
    let mut queued = connect(addr);
    queued
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        .unwrap();
    // The one served keeps being served meanwhile.
    served
        .write_all(b"GET /readyz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut served);
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    let answer = Answer::parse(&read_until_closed(&mut queued));
    assert!(
        answer.status == 200 || answer.status == 503,
        "{}",
        answer.head
    );
    read_until_closed(&mut silent);
}

#[test]
fn what_hyper_refuses_by_itself_is_problem_details_too() {
    let addr = serve(limits(16));
    // A 1 MiB token: over hyper's buffer for the request head.
    let request = format!(
        "GET /v1/tenants/{TENANT}/settings HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    exchange(addr, request.as_bytes()).assert_problem(431);
    // A 100 KB URL: over the buffer as well.
    let request = format!(
        "GET /v1/tenants/{TENANT}/report?{} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
        "a".repeat(100_000)
    );
    let answer = exchange(addr, request.as_bytes());
    assert!(
        answer.status == 414 || answer.status == 431,
        "{}",
        answer.head
    );
    answer.assert_problem(answer.status);
    // A 20 KB URL fits the buffer and is refused by the server's own limit.
    let request = format!(
        "GET /v1/tenants/{TENANT}/report?{} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
        "a".repeat(20_000)
    );
    let problem = exchange(addr, request.as_bytes()).assert_problem(414);
    assert_eq!(problem["type"], "urn:autoclaim:problem:uri-too-long");
    // Not HTTP.
    exchange(addr, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").assert_problem(400);
    exchange(
        addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    )
    .assert_problem(400);
}

#[test]
fn unknown_paths_and_methods_anywhere_are_problem_details() {
    let addr = serve(limits(16));
    for (request, status) in [
        (
            &b"GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"[..],
            404,
        ),
        (
            b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            404,
        ),
        (
            b"POST /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            405,
        ),
        (
            b"DELETE /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            405,
        ),
        (
            b"GET /v1/nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            404,
        ),
    ] {
        exchange(addr, request).assert_problem(status);
    }
}
