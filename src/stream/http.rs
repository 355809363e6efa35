//! The little HTTP/1.1 the listener needs: read one bounded request head
//! (parsed by `httparse`), answer with a complete response and close.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Largest request head accepted; a WebSocket upgrade or a scrape is far smaller.
pub const HEAD_LIMIT: usize = 8 * 1024;
/// Most header lines accepted in one head.
const MAX_HEADERS: usize = 64;
/// How long a response write may take before the connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After answering, how long to read and discard what the client still sends,
/// so closing with unread input does not reset the connection (and lose the answer).
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path part of the request target, without the query.
    pub path: String,
    pub query: Option<String>,
    /// The minor version of HTTP/1.x (0 or 1).
    pub version: u8,
    /// Header names as sent; look them up with [`Request::header`].
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of a header (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any value of a comma-separated header holds `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The percent-decoded value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }

    /// Whether the client asks for a WebSocket upgrade.
    pub fn is_upgrade(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
    }
}

/// Why no request head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The client closed before sending a complete head (nothing to answer).
    Closed,
    TooLarge,
    Malformed(String),
    Io(std::io::Error),
}

/// Reads one request head (bounded by [`HEAD_LIMIT`]); returns it with any
/// bytes read past it (the start of the client's first WebSocket frame).
/// The caller bounds the time it may take.
pub async fn read_head(stream: &mut TcpStream) -> Result<(Request, Vec<u8>), HeadError> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Read straight into the heap buffer: a stack array here would make
        // every connection's task larger for its whole life.
        buf.reserve(1024);
        let n = stream.read_buf(&mut buf).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        let limit = buf.len().min(HEAD_LIMIT);
        match parse_partial(&buf[..limit])? {
            Some((request, end)) => {
                let rest = buf.split_off(end);
                return Ok((request, rest));
            }
            None if buf.len() >= HEAD_LIMIT => return Err(HeadError::TooLarge),
            None => {}
        }
    }
}

/// Parses a complete request head.
#[cfg(test)]
pub fn parse_head(head: &[u8]) -> Result<Request, String> {
    match parse_partial(head) {
        Ok(Some((request, _))) => Ok(request),
        Ok(None) => Err("incomplete request head".to_string()),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Parses a request head from the start of `bytes`: `None` while it is
/// incomplete, else the request and the length of the head.
pub fn parse_partial(bytes: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let end = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(end)) => end,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HeadError::Malformed("incomplete request line".into()));
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let mut fields = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HeadError::Malformed(format!("header {} is not UTF-8", header.name)))?;
        fields.push((header.name.to_string(), value.trim().to_string()));
    }
    let request = Request {
        method: method.to_string(),
        path: path.to_string(),
        query,
        version,
        headers: fields,
    };
    Ok(Some((request, end)))
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A complete response, sent with `Connection: close`.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A short plain-text answer such as an error.
    pub fn text(status: u16, body: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes the response, then closes gracefully: half-close, and read and
/// discard (bounded) until the client closes too.
pub async fn respond(stream: &mut TcpStream, response: &Response) {
    let bytes = response.to_bytes();
    match timeout(WRITE_TIMEOUT, stream.write_all(&bytes)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let _ = stream.shutdown().await;
    let mut sink = vec![0u8; 4096];
    let mut discarded = 0;
    let _ = timeout(LINGER, async {
        while discarded < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &[u8]) -> Result<Request, String> {
        match parse_partial(head) {
            Ok(Some((request, end))) => {
                assert_eq!(end, head.len());
                Ok(request)
            }
            Ok(None) => Err("incomplete".into()),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[test]
    fn parses_a_websocket_upgrade() {
        let head = b"GET /stream?token=a%20b&x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: abc\r\n\r\n";
        let r = parse(head).unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/stream");
        assert_eq!(r.version, 1);
        assert_eq!(r.query_param("token").as_deref(), Some("a b"));
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        assert_eq!(r.query_param("y"), None);
        assert!(r.is_upgrade());
        assert!(r.header_has_token("connection", "upgrade"));
        assert_eq!(r.header("sec-websocket-key"), Some("abc"));
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(matches!(
            parse_partial(b"GET / HTTP/1.1\r\nHost: h\r\n"),
            Ok(None)
        ));
        assert!(matches!(parse_partial(b"GE"), Ok(None)));
        assert!(parse_head(b"GET / HTTP/1.1\r\n").is_err());
    }

    #[test]
    fn rejects_malformed_heads() {
        assert!(parse(b"GET /\r\n\r\n").is_err());
        assert!(parse(b"GET / HTTP/2\r\n\r\n").is_err());
        assert!(parse(b"GET / HTTP/1.1\r\nNoColon\r\n\r\n").is_err());
        assert!(parse(b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n").is_err());
        assert!(parse(b"G(T / HTTP/1.1\r\n\r\n").is_err());
        assert!(parse(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']).is_err());
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse_partial(head.as_bytes()),
            Err(HeadError::TooLarge)
        ));
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Bb%zz%"), "a+b%zz%");
        assert_eq!(percent_decode("%41%4"), "A%4");
        assert_eq!(percent_decode("plain+text"), "plain+text");
    }

    #[test]
    fn response_has_length_and_close() {
        let bytes = Response::text(404, "not found")
            .with_header("Allow", "GET")
            .to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 10\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.contains("Allow: GET\r\n"));
        assert!(text.ends_with("\r\n\r\nnot found\n"));
    }
}
