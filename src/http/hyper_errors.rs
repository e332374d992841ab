//! Problem details for the answers hyper gives by itself. A request whose head hyper cannot parse
//! (malformed, a request line and headers over its read buffer, a URL over 64 KiB) never reaches
//! the router: hyper writes a bare `400`, `431` or `414` with an empty body and closes the
//! connection, and has no hook to change that answer. This adapter of the connection's writes
//! recognises exactly those answers and sends a problem details response with the same status in
//! their place.
//!
//! Recognised: a write that is one whole response head, of status 400, 414 or 431, with
//! `content-length: 0` and no `content-type`. The router never answers so (every error of ours is
//! problem details, and axum's own rejections carry a content type), and hyper writes its answer
//! as one buffer of its own, after the previous response has been written.
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::server::{MAX_HEAD_BYTES, MAX_URL_BYTES};
use crate::admin::problem::{Problem, PROBLEM_JSON};

/// A connection whose writes are passed through, except hyper's own error answers.
pub struct ProblemsForHyperErrors<T> {
    inner: T,
    /// The problem response being written in place of hyper's answer, and how much of it is out.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<T> ProblemsForHyperErrors<T> {
    pub fn new(inner: T) -> Self {
        ProblemsForHyperErrors {
            inner,
            replacement: None,
        }
    }
}

/// The problem for hyper's answer in `written`, if it is one.
fn problem_for(written: &[u8]) -> Option<Problem> {
    let head = written.strip_suffix(b"\r\n\r\n")?;
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    if head.windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    let lower = head.to_ascii_lowercase();
    let has_line = |line: &[u8]| lower.split(|&b| b == b'\n').any(|l| l.starts_with(line));
    if !has_line(b"content-length: 0\r") || has_line(b"content-type:") {
        return None;
    }
    match rest.get(..4)? {
        b"400 " => Some(Problem::bad_request(
            "the request is not valid HTTP/1.1 (request line or a header malformed)",
        )),
        b"414 " => Some(Problem::uri_too_long(MAX_URL_BYTES)),
        b"431 " => Some(Problem::head_too_large(MAX_HEAD_BYTES)),
        _ => None,
    }
}

/// A whole HTTP/1.1 response for `problem`, after which the connection closes (as hyper's does).
fn response_bytes(problem: &Problem) -> Vec<u8> {
    let body = serde_json::to_vec(problem.body()).unwrap_or_else(|_| b"{}".to_vec());
    let status: StatusCode = problem.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncache-control: no-store\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl<T: AsyncWrite + Unpin> ProblemsForHyperErrors<T> {
    /// Writes the rest of the replacement, if any.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, sent)) = &mut self.replacement {
            if *sent == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemsForHyperErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemsForHyperErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacement.is_none() {
            match problem_for(buf) {
                Some(problem) => this.replacement = Some((response_bytes(&problem), 0)),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // hyper's answer counts as written once its replacement is.
        ready!(this.poll_replacement(cx))?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs.iter().find(|b| !b.is_empty());
        if this.replacement.is_some() || first.is_some_and(|b| problem_for(b).is_some()) {
            let first = first.map_or(&[][..], |b| &b[..]);
            return Pin::new(this).poll_write(cx, first);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYPER_431: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
        date: Wed, 02 Dec 2026 04:37:50 GMT\r\n\r\n";

    #[test]
    fn hyper_answers_become_problems_and_nothing_else_does() {
        let problem = problem_for(HYPER_431).expect("hyper's 431");
        assert_eq!(
            problem.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        for other in [
            // An answer of the router: it has a content type.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n"[..],
            // Another status.
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            // A head with a body after it.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            // Part of a head.
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        ] {
            assert!(
                problem_for(other).is_none(),
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn the_replacement_is_a_whole_problem_response() {
        let bytes = response_bytes(&problem_for(HYPER_431).unwrap());
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/problem+json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["status"], 431);
    }
}
