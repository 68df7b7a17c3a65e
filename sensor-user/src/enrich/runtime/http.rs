//! HTTP/1.1 over a Unix socket, what the Docker Engine API needs: a `GET` with the whole answer,
//! and a streamed `GET` read line by line (`/events`). Built on hyper's client connection (the
//! HTTP stack tonic serves gRPC with), one connection per request.
//!
//! Nothing here waits on the daemon without a bound, so a daemon that hangs, drips its answer
//! or answers with megabytes costs a counted failure, never a stuck task or unbounded memory:
//! - the connection and the answer's head arrive within [`HEAD_TIMEOUT`], a whole body within
//!   [`BODY_TIMEOUT`] and [`MAX_BODY`] bytes;
//! - a streamed body has no deadline (the event stream is quiet for hours when nothing
//!   happens), but each line is capped at [`MAX_LINE`] bytes.
//!
//! The connection task is aborted when its answer is dropped, so a server that keeps a
//! connection open after a timeout holds no task of ours.

use std::{path::Path, time::Duration};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper::{
    Request,
    body::Incoming,
    header::{ACCEPT, HOST, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use tokio::{net::UnixStream, task::AbortHandle};

/// Connect, send, and receive the status line and headers.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Receive a whole (non-streamed) body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest body [`get`] accepts (an inspect answer is a few KiB).
pub const MAX_BODY: usize = 4 << 20;
/// Largest line of a streamed body (an event is under a KiB, plus its labels).
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The socket is not there or refuses: the daemon is away.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP answer: {0}")]
    Protocol(#[from] hyper::Error),
    #[error("no {what} within {} s", after.as_secs())]
    Timeout { what: &'static str, after: Duration },
    #[error("HTTP {what} larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
}

/// A complete answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Aborts the connection's task when dropped.
struct Connection(AbortHandle);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `GET path` on `socket`; returns the answer's head with its unread body.
async fn request(
    socket: &Path,
    path: &str,
) -> Result<(hyper::Response<Incoming>, Connection), HttpError> {
    let head = async {
        let stream = UnixStream::connect(socket).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = Connection(tokio::spawn(conn).abort_handle());
        let request = Request::get(path)
            .header(HOST, "localhost")
            .header(USER_AGENT, "container-sensor")
            .header(ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .expect("a GET of a valid path");
        let response = sender.send_request(request).await?;
        Ok((response, conn))
    };
    tokio::time::timeout(HEAD_TIMEOUT, head)
        .await
        .map_err(|_| HttpError::Timeout {
            what: "answer",
            after: HEAD_TIMEOUT,
        })?
}

/// `GET path`, the whole body.
pub async fn get(socket: &Path, path: &str) -> Result<Response, HttpError> {
    let (response, _conn) = request(socket, path).await?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY).collect();
    let body = tokio::time::timeout(BODY_TIMEOUT, body)
        .await
        .map_err(|_| HttpError::Timeout {
            what: "whole body",
            after: BODY_TIMEOUT,
        })?
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => HttpError::Protocol(*e),
            Err(e) if e.is::<LengthLimitError>() => HttpError::TooLarge {
                what: "body",
                limit: MAX_BODY,
            },
            Err(e) => HttpError::Io(std::io::Error::other(e)),
        })?;
    Ok(Response {
        status,
        body: body.to_bytes().to_vec(),
    })
}

/// `GET path` with a streamed body: the status, and the body's lines if it is 200.
pub async fn stream_lines(socket: &Path, path: &str) -> Result<(u16, Lines), HttpError> {
    let (response, conn) = request(socket, path).await?;
    let status = response.status().as_u16();
    let lines = Lines {
        body: response.into_body(),
        _conn: conn,
        buf: Vec::new(),
        done: false,
    };
    Ok((status, lines))
}

/// A streamed body split into lines (`/events` writes one JSON object per line).
pub struct Lines {
    body: Incoming,
    _conn: Connection,
    buf: Vec<u8>,
    done: bool,
}

impl Lines {
    /// The next non-empty line; `None` when the stream ends.
    pub async fn next_line(&mut self) -> Result<Option<String>, HttpError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim().to_string();
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.done {
                let rest = String::from_utf8_lossy(&self.buf).trim().to_string();
                self.buf.clear();
                return Ok((!rest.is_empty()).then_some(rest));
            }
            match self.body.frame().await.transpose()? {
                Some(frame) => {
                    if let Ok(mut data) = frame.into_data() {
                        if self.buf.len() + data.remaining() > MAX_LINE {
                            return Err(HttpError::TooLarge {
                                what: "line",
                                limit: MAX_LINE,
                            });
                        }
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                None => self.done = true,
            }
        }
    }
}

/// Percent-encodes a query parameter value.
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::UnixListener,
    };

    /// Serves `answer` (raw bytes) to one connection on a fresh socket; returns its path and the
    /// request the client sent.
    pub(crate) async fn serve_once(
        answer: Vec<u8>,
    ) -> (std::path::PathBuf, tokio::task::JoinHandle<String>) {
        let (path, listener) = socket();
        let handle = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let req = read_request(&mut s).await;
            s.write_all(&answer).await.unwrap();
            s.shutdown().await.unwrap();
            req
        });
        (path, handle)
    }

    fn socket() -> (std::path::PathBuf, UnixListener) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sensor-http-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        (path, listener)
    }

    async fn read_request(s: &mut UnixStream) -> String {
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(req).unwrap()
    }

    #[tokio::test]
    async fn bodies_by_length_chunks_and_close() {
        let cases: [(&[u8], &str); 3] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
                "{\"a\":1}",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n",
                "{\"a\":1}",
            ),
            (b"HTTP/1.0 404 Not Found\r\n\r\nno such container", "no such container"),
        ];
        for (answer, body) in cases {
            let (path, server) = serve_once(answer.to_vec()).await;
            let r = get(&path, "/containers/x/json").await.unwrap();
            assert_eq!(String::from_utf8(r.body).unwrap(), body);
            let req = server.await.unwrap();
            assert!(
                req.starts_with("GET /containers/x/json HTTP/1.1\r\n"),
                "{req}"
            );
            assert_eq!(r.status, if body.starts_with('{') { 200 } else { 404 });
        }
    }

    #[tokio::test]
    async fn streamed_lines_across_chunks() {
        let answer =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"a\":1\r\n8\r\n}\n{\"b\":2\r\n2\r\n}\n\r\n0\r\n\r\n";
        let (path, _server) = serve_once(answer.to_vec()).await;
        let (status, mut lines) = stream_lines(&path, "/events").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "{\"a\":1}");
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "{\"b\":2}");
        assert!(lines.next_line().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn errors_say_what_is_wrong() {
        let (path, _server) = serve_once(b"SSH-2.0-nope\r\n\r\n".to_vec()).await;
        let e = get(&path, "/").await.unwrap_err();
        assert!(e.to_string().starts_with("malformed HTTP answer"), "{e}");
        let e = get(Path::new("/nonexistent/docker.sock"), "/")
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Io(_)), "{e}");
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
            MAX_BODY + 1,
            "x".repeat(MAX_BODY + 1)
        );
        let (path, _server) = serve_once(huge.into_bytes()).await;
        let e = get(&path, "/").await.unwrap_err();
        assert!(matches!(e, HttpError::TooLarge { .. }), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_or_drips_times_out() {
        // Never answers: the head's deadline.
        let (path, listener) = socket();
        let silent = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            std::future::pending::<()>().await;
        });
        let e = get(&path, "/version").await.unwrap_err();
        assert!(
            matches!(e, HttpError::Timeout { what: "answer", .. }),
            "{e}"
        );
        silent.abort();
        // Answers the head, then drips the body: the body's deadline.
        let (path, listener) = socket();
        let drip = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            read_request(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                .await
                .unwrap();
            loop {
                if s.write_all(b" ").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let e = get(&path, "/version").await.unwrap_err();
        assert!(
            matches!(
                e,
                HttpError::Timeout {
                    what: "whole body",
                    ..
                }
            ),
            "{e}"
        );
        // The connection was dropped: the server's writes fail and it ends.
        tokio::time::timeout(Duration::from_secs(30), drip)
            .await
            .expect("the dripping connection closed")
            .unwrap();
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode_query(r#"{"type":["container"]}"#),
            "%7B%22type%22%3A%5B%22container%22%5D%7D"
        );
    }
}
