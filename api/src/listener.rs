//! The listener `orderlog serve` accepts connections with. hyper answers a request it
//! cannot parse (a URI past its 64 KiB limit, headers too large, a malformed request line)
//! itself, before any of the router runs, with a bare status line and no body. This
//! listener's connections recognise such an answer as it is written and send a
//! problem+json document with the same status instead, so every error the server gives is
//! in one format.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::problem::Problem;

/// A TCP listener whose connections answer hyper's own parse errors as problem+json.
pub struct ProblemListener(pub TcpListener);

impl axum::serve::Listener for ProblemListener {
    type Io = ProblemIo<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, address) = axum::serve::Listener::accept(&mut self.0).await;
        (ProblemIo { inner: io, replacing: None }, address)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection that rewrites hyper's bodiless parse-error answers.
pub struct ProblemIo<T> {
    inner: T,
    replacing: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// The length of hyper's answer, reported as written once the replacement is.
    replaces: usize,
}

/// The problem+json answer for hyper's own answer `head`, if it is one: a status hyper
/// sends only for requests it could not parse, and no body.
fn problem_for(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    let detail = match status {
        StatusCode::URI_TOO_LONG => {
            "the request's URI is longer than the server reads (64 KiB); shorten the path or query"
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "the request's headers are larger than the server reads",
        StatusCode::BAD_REQUEST => {
            "the request is not valid HTTP/1.1 (its request line or a header could not be parsed)"
        }
        _ => return None,
    };
    let bodiless = head.ends_with(b"\r\n\r\n")
        && head
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !bodiless {
        return None;
    }
    let body = serde_json::to_vec(&Problem::new(status, detail)).ok()?;
    let mut bytes = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    Some(bytes)
}

impl<T: AsyncRead + Unpin> AsyncRead for ProblemIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ProblemIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match problem_for(buf) {
                Some(bytes) => this.replacing = Some(Replacement { bytes, written: 0, replaces: buf.len() }),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let replacement = this.replacing.as_mut().expect("set above");
        while replacement.written < replacement.bytes.len() {
            match ready!(Pin::new(&mut this.inner).poll_write(cx, &replacement.bytes[replacement.written..]))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => replacement.written += n,
            }
        }
        let replaced = replacement.replaces;
        this.replacing = None;
        Poll::Ready(Ok(replaced))
    }

    /// hyper writes a response's head as one buffer of its own (the first of a vectored
    /// write), so its parse-error answers are recognised there; everything else goes on
    /// vectored, as hyper sends it to a plain socket.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty());
        if self.replacing.is_some() || first.is_some_and(|b| problem_for(b).is_some()) {
            return self.poll_write(cx, first.map_or(&[][..], |b| &b[..]));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bodiless_parse_error_answers_are_replaced() {
        let hyper = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n";
        let replaced = String::from_utf8(problem_for(hyper).unwrap()).unwrap();
        assert!(replaced.starts_with("HTTP/1.1 414 URI Too Long\r\ncontent-type: application/problem+json\r\n"));
        assert!(replaced.ends_with(r#""status":414,"detail":"the request's URI is longer than the server reads (64 KiB); shorten the path or query"}"#), "{replaced}");
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 80\r\n\r\n";
        assert!(problem_for(ours).is_none());
        assert!(problem_for(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
