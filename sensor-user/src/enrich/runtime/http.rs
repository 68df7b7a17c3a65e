//! A minimal HTTP/1.1 client over a Unix socket: what the Docker Engine API needs and nothing
//! more. `GET` with the whole answer (bodies framed by Content-Length, chunked encoding or the
//! connection's close, capped in size), and a streamed `GET` read line by line (`/events`).
//!
//! Hand-written on tokio's `UnixStream` rather than pulling an HTTP client stack into the agent
//! for two request shapes. Every request opens its own connection (`Connection: close`).

use std::path::Path;

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};

/// Largest body [`get`] accepts (an inspect answer is a few KiB).
const MAX_BODY: usize = 4 << 20;
/// Largest status or header line.
const MAX_LINE: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP answer: {0}")]
    Malformed(String),
    #[error("HTTP body larger than {MAX_BODY} bytes")]
    TooLarge,
}

/// A complete answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// How the body's end is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    Close,
}

/// The body of an answer, read piece by piece.
pub struct Body {
    reader: BufReader<OwnedReadHalf>,
    /// Kept open: dropping it half-closes the connection, which a server may take for the
    /// client leaving (Docker ends its event stream).
    _write: OwnedWriteHalf,
    framing: Framing,
    /// Bytes left in the current chunk (chunked) or in the body (length).
    left: u64,
    done: bool,
}

/// Sends `GET path` to the server on `socket`; returns the status and the unread body.
pub async fn request(socket: &Path, path: &str) -> Result<(u16, Body), HttpError> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: container-sensor\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await?;
    let mut reader = BufReader::new(read);
    let status_line = read_line(&mut reader).await?;
    let status = parse_status(&status_line)?;
    let mut framing = Framing::Close;
    loop {
        let line = read_line(&mut reader).await?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed(format!("header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = value
                .parse()
                .map_err(|_| HttpError::Malformed(format!("Content-Length {value:?}")))?;
            framing = Framing::Length(n);
        }
    }
    let left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let body = Body {
        reader,
        _write: write,
        framing,
        left,
        done: framing == Framing::Length(0),
    };
    Ok((status, body))
}

/// `GET path`, the whole body.
pub async fn get(socket: &Path, path: &str) -> Result<Response, HttpError> {
    let (status, mut body) = request(socket, path).await?;
    let mut all = Vec::new();
    while let Some(piece) = body.next_piece().await? {
        if all.len() + piece.len() > MAX_BODY {
            return Err(HttpError::TooLarge);
        }
        all.extend_from_slice(&piece);
    }
    Ok(Response { status, body: all })
}

/// One line (CRLF or LF stripped); an error at EOF.
async fn read_line(reader: &mut BufReader<OwnedReadHalf>) -> Result<String, HttpError> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(HttpError::Malformed(
            "connection closed in the header".into(),
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(HttpError::Malformed("header line too long".into()));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HttpError::Malformed("header is not UTF-8".into()))
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status(line: &str) -> Result<u16, HttpError> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|c| c.parse().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(HttpError::Malformed(format!("status line {line:?}"))),
    }
}

impl Body {
    /// The next bytes of the body; `None` at its end.
    pub async fn next_piece(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        if self.done {
            return Ok(None);
        }
        if self.framing == Framing::Chunked && self.left == 0 {
            let line = read_line(&mut self.reader).await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(&mut self.reader).await?.is_empty() {}
                self.done = true;
                return Ok(None);
            }
            self.left = size;
        }
        let want = match self.framing {
            Framing::Close => 8192,
            _ => self.left.min(8192) as usize,
        };
        let mut buf = vec![0; want];
        let n = self.reader.read(&mut buf).await?;
        buf.truncate(n);
        match self.framing {
            Framing::Close if n == 0 => {
                self.done = true;
                return Ok(None);
            }
            Framing::Close => {}
            _ if n == 0 => {
                return Err(HttpError::Malformed("connection closed in the body".into()));
            }
            Framing::Length(_) => {
                self.left -= n as u64;
                self.done = self.left == 0;
            }
            Framing::Chunked => {
                self.left -= n as u64;
                if self.left == 0 {
                    // The CRLF after the chunk's data.
                    read_line(&mut self.reader).await?;
                }
            }
        }
        Ok(Some(buf))
    }
}

/// A streamed body split into lines (`/events` writes one JSON object per line).
pub struct Lines {
    body: Body,
    buf: Vec<u8>,
}

impl Lines {
    pub fn new(body: Body) -> Self {
        Self {
            body,
            buf: Vec::new(),
        }
    }

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
            match self.body.next_piece().await? {
                Some(piece) => {
                    if self.buf.len() + piece.len() > MAX_BODY {
                        return Err(HttpError::TooLarge);
                    }
                    self.buf.extend_from_slice(&piece);
                }
                None => {
                    let rest = String::from_utf8_lossy(&self.buf).trim().to_string();
                    self.buf.clear();
                    return Ok((!rest.is_empty()).then_some(rest));
                }
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
    use tokio::net::UnixListener;

    /// Serves `answer` (raw bytes) to one connection on a fresh socket; returns its path and the
    /// request the client sent.
    pub(crate) async fn serve_once(
        answer: Vec<u8>,
    ) -> (std::path::PathBuf, tokio::task::JoinHandle<String>) {
        let dir = std::env::temp_dir().join(format!(
            "sensor-http-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(&answer).await.unwrap();
            s.shutdown().await.unwrap();
            String::from_utf8(req).unwrap()
        });
        (path, handle)
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
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
        let (status, body) = request(&path, "/events").await.unwrap();
        assert_eq!(status, 200);
        let mut lines = Lines::new(body);
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "{\"a\":1}");
        assert_eq!(lines.next_line().await.unwrap().unwrap(), "{\"b\":2}");
        assert!(lines.next_line().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn errors_say_what_is_wrong() {
        let (path, _server) = serve_once(b"SSH-2.0-nope\r\n\r\n".to_vec()).await;
        let e = get(&path, "/").await.unwrap_err();
        assert!(e.to_string().contains("status line"), "{e}");
        let e = get(Path::new("/nonexistent/docker.sock"), "/")
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Io(_)), "{e}");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode_query(r#"{"type":["container"]}"#),
            "%7B%22type%22%3A%5B%22container%22%5D%7D"
        );
    }
}
