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
    /// How many times a header is present (names are case-insensitive).
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

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
    /// The request line alone is over the limit (414, not 431).
    TargetTooLong,
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
            None if buf.len() >= HEAD_LIMIT => {
                // Empty lines before the request line do not end it.
                let head = &buf[..HEAD_LIMIT];
                let start = head
                    .iter()
                    .position(|b| *b != b'\r' && *b != b'\n')
                    .unwrap_or(head.len());
                // (Nothing but empty lines: a head too large, not a long target.)
                let line_ended = start == head.len() || head[start..].contains(&b'\n');
                return Err(if line_ended {
                    HeadError::TooLarge
                } else {
                    HeadError::TargetTooLong
                });
            }
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
    // Absolute form (`GET http://host/path`, RFC 9112 §3.2.2): the target's
    // authority stands in for any Host header.
    let (authority, target) = match split_absolute_form(target) {
        Some((authority, rest)) => (Some(authority), rest),
        None => (None, target),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let path = match path {
        "" => "/".to_string(),
        p => decode_unreserved(p),
    };
    if authority.is_some() {
        // RFC 9112 §3.2 holds for absolute-form too: one Host, and on
        // HTTP/1.1 always one, although the target's authority wins.
        let hosts = parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("host"))
            .count();
        if hosts > 1 {
            return Err(HeadError::Malformed("more than one Host header".into()));
        }
        if hosts == 0 && version >= 1 {
            return Err(HeadError::Malformed("the Host header is missing".into()));
        }
    }
    let mut fields = Vec::with_capacity(parsed.headers.len() + 1);
    for header in parsed.headers.iter() {
        if authority.is_some() && header.name.eq_ignore_ascii_case("host") {
            continue;
        }
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HeadError::Malformed(format!("header {} is not UTF-8", header.name)))?;
        fields.push((header.name.to_string(), value.trim().to_string()));
    }
    if let Some(authority) = authority {
        fields.push(("Host".to_string(), authority.to_string()));
    }
    let request = Request {
        method: method.to_string(),
        path,
        query,
        version,
        headers: fields,
    };
    Ok(Some((request, end)))
}

/// Splits an absolute-form target (`http://host:port/path?q`) into its
/// authority and the rest (which may be empty or start with `?`).
fn split_absolute_form(target: &str) -> Option<(&str, &str)> {
    let scheme_end = target.find("://")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// Decodes the escapes of unreserved characters in a path (`/%68ealth` is
/// `/health`, RFC 3986 §6.2.2.2); every other escape stays as it is, so a
/// decoded `/` or `?` can never change how the path is routed.
fn decode_unreserved(path: &str) -> String {
    decode_escapes(path, |b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Decodes `%XX` escapes; invalid escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    decode_escapes(s, |_| true)
}

/// Decodes the `%XX` escapes of the bytes `wanted` accepts; other escapes,
/// and invalid ones, are kept as they are.
fn decode_escapes(s: &str, wanted: impl Fn(u8) -> bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = &bytes[i + 1..i + 3];
            let decoded = std::str::from_utf8(hex)
                .ok()
                .filter(|_| hex.iter().all(u8::is_ascii_hexdigit))
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .filter(|b| wanted(*b));
            if let Some(b) = decoded {
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
    /// An answer to HEAD: the head says the body's length, the body is not sent.
    pub head_only: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
            head_only: false,
        }
    }

    /// The same answer to a HEAD request (RFC 9110 §9.3.2: no body).
    pub fn for_head(mut self) -> Response {
        self.head_only = true;
        self
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
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
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
        414 => "URI Too Long",
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
        // `from_str_radix` alone would take "+4" for a number.
        assert_eq!(percent_decode("%+41"), "%+41");
    }

    #[test]
    fn an_absolute_form_target_routes_on_its_path_and_its_authority_is_the_host() {
        let r =
            parse(b"GET http://127.0.0.1:8756/health?x=1 HTTP/1.1\r\nHost: evil.example\r\n\r\n")
                .unwrap();
        assert_eq!(
            (r.path.as_str(), r.query.as_deref()),
            ("/health", Some("x=1"))
        );
        assert_eq!(r.header_count("host"), 1);
        assert_eq!(r.header("host"), Some("127.0.0.1:8756"));
        let bare = parse(b"GET HTTP://localhost HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            (bare.path.as_str(), bare.header("host")),
            ("/", Some("localhost"))
        );
        // RFC 9112 §3.2 still: one Host line, and one at all on HTTP/1.1.
        assert!(parse(b"GET http://h/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").is_err());
        assert!(parse(b"GET http://h/ HTTP/1.1\r\n\r\n").is_err());
        assert!(parse(b"GET http://h/ HTTP/1.0\r\n\r\n").is_ok());
        // Not a scheme this server speaks: left as the path (and a 404).
        assert_eq!(
            parse(b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n")
                .unwrap()
                .path,
            "ftp://h/x"
        );
    }

    #[test]
    fn escaped_unreserved_characters_are_decoded_in_the_path_and_nothing_else() {
        assert_eq!(decode_unreserved("/%68ealth"), "/health");
        assert_eq!(decode_unreserved("/%6D%65trics"), "/metrics");
        // A slash, a query mark or a bad escape keep their escape.
        assert_eq!(decode_unreserved("/a%2Fb%3F%zz%4"), "/a%2Fb%3F%zz%4");
        assert_eq!(decode_unreserved("/é%41ü"), "/éAü");
    }

    #[test]
    fn a_head_response_says_the_length_and_sends_no_body() {
        let text = String::from_utf8(
            Response::text(405, "method not allowed")
                .for_head()
                .to_bytes(),
        )
        .unwrap();
        assert!(text.contains("Content-Length: 19\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
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
