//! Who may talk to the listener (SPEC §4.3): the Host check against DNS
//! rebinding, the Origin allow-list and the optional bearer token. All are
//! read from the live configuration for each request, so a SIGHUP reload
//! applies to the next connection (and a changed token to connected clients).

use super::http::{Request, Response};
use crate::config::StreamConfig;
use std::net::IpAddr;

/// Refuses a request whose `Host` or `Origin` is not allowed: 400 for an
/// HTTP/1.1 request without Host, 403 for a Host that is not an IP literal,
/// `localhost` or listed in `allowed_hosts`, 403 for an unlisted Origin.
pub fn refusal(request: &Request, stream: &StreamConfig) -> Option<Response> {
    // One Host (RFC 9112 §3.2) and at most one Origin: with two, which one
    // is checked would depend on their order.
    for name in ["Host", "Origin"] {
        if request.header_count(name) > 1 {
            return Some(Response::text(400, &format!("more than one {name} header")));
        }
    }
    match request.header("host") {
        None if request.version >= 1 => {
            return Some(Response::text(400, "the Host header is missing"))
        }
        None => {}
        Some(host) if !host_allowed(host, &stream.allowed_hosts) => {
            return Some(Response::text(
                403,
                "host not allowed (add it to stream.allowed_hosts)",
            ))
        }
        Some(_) => {}
    }
    if !origin_allowed(request, stream) {
        return Some(Response::text(403, "origin not allowed"));
    }
    None
}

/// Whether a `Host` value names this machine in a way no DNS name can be
/// rebound to: an IP literal (IPv6 in brackets), `localhost`, or a listed
/// name; each with or without a port.
pub fn host_allowed(host: &str, allowed_hosts: &[String]) -> bool {
    let Some(name) = host_name(host) else {
        return false;
    };
    if name.parse::<IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    allowed_hosts
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(name) || allowed.eq_ignore_ascii_case(host))
}

/// The host part of a `Host` value without its port (and without the
/// brackets of an IPv6 literal); `None` when the value is malformed.
fn host_name(host: &str) -> Option<&str> {
    let host = host.trim();
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (inside, port)
    } else if host.matches(':').count() > 1 {
        // A bare IPv6 address: several colons and no port.
        (host, None)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    if let Some(port) = port {
        port.parse::<u16>().ok()?;
    }
    (!name.is_empty()).then_some(name)
}

/// Whether the request's Origin (if any) is allowed. Clients that send no
/// Origin (wscat, scripts) pass; browsers always send one. The listener's own
/// origin is always allowed: the page it serves (§4.6).
pub fn origin_allowed(request: &Request, stream: &StreamConfig) -> bool {
    let Some(origin) = request.header("origin") else {
        return true;
    };
    own_origin(request, stream).is_some_and(|own| own.eq_ignore_ascii_case(origin))
        || stream
            .allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed == origin)
}

/// The page's own origin (SPEC §4.6): `http://` + the request's Host, when
/// that Host passes the check of §4.3.
pub fn own_origin(request: &Request, stream: &StreamConfig) -> Option<String> {
    let host = request.header("host")?;
    host_allowed(host, &stream.allowed_hosts).then(|| format!("http://{host}"))
}

/// What a client presented as a token: `Authorization: Bearer <token>` and
/// `?token=<token>`. Kept by a WebSocket session so a reload that changes the
/// token can close the sessions that no longer hold it.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    bearer: Option<String>,
    query: Option<String>,
}

impl Credentials {
    pub fn of(request: &Request) -> Credentials {
        Credentials {
            bearer: request
                .header("authorization")
                .and_then(bearer)
                .map(str::to_string),
            query: request.query_param("token"),
        }
    }

    /// Whether these credentials satisfy `token` (always, when it is empty).
    pub fn accepts(&self, token: &str) -> bool {
        if token.is_empty() {
            return true;
        }
        let expected = token.as_bytes();
        let matches = |t: &Option<String>| {
            t.as_deref()
                .is_some_and(|t| constant_time_eq(t.as_bytes(), expected))
        };
        matches(&self.bearer) | matches(&self.query)
    }
}

/// Whether the request carries the configured token (always true when none
/// is configured): `Authorization: Bearer <token>` or `?token=<token>`.
pub fn token_accepted(request: &Request, stream: &StreamConfig) -> bool {
    Credentials::of(request).accepts(&stream.token)
}

/// 401 unless the request carries the configured token.
pub fn token_refusal(request: &Request, stream: &StreamConfig) -> Option<Response> {
    (!token_accepted(request, stream)).then(unauthorized)
}

/// The answer to a request without the configured token.
pub fn unauthorized() -> Response {
    Response::text(
        401,
        "a valid token is required (Authorization: Bearer <token> or ?token=)",
    )
    .with_header("WWW-Authenticate", "Bearer")
}

/// The credentials of a `Bearer` authorization value (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Compares without an early exit, so the time taken does not reveal how
/// many leading bytes of a guess were right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::http::parse_head;

    fn stream_config(origins: &[&str], token: &str) -> StreamConfig {
        let mut config = crate::config::Config::default().stream;
        config.allowed_origins = origins.iter().map(|s| s.to_string()).collect();
        config.token = token.to_string();
        config
    }

    fn request(extra: &str, target: &str) -> Request {
        let head = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8756\r\n{extra}\r\n");
        parse_head(head.as_bytes()).unwrap()
    }

    #[test]
    fn host_rules() {
        let none: Vec<String> = Vec::new();
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8756",
            "[::1]",
            "[::1]:8756",
            "::1",
            "10.1.2.3:80",
            "localhost",
            "LocalHost:8756",
        ] {
            assert!(host_allowed(ok, &none), "{ok} refused");
        }
        for bad in [
            "evil.example",
            "evil.example:8756",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[evil.example]",
            "127.0.0.1:port",
            "127.0.0.1:99999",
            "[::1]x",
            "",
            ":8756",
        ] {
            assert!(!host_allowed(bad, &none), "{bad} accepted");
        }
        let listed = vec!["metrics.lan".to_string()];
        assert!(host_allowed("metrics.lan", &listed));
        assert!(host_allowed("Metrics.LAN:8756", &listed));
        assert!(!host_allowed("other.lan", &listed));
    }

    #[test]
    fn own_origin_is_accepted_only_for_a_host_that_passes() {
        let closed = stream_config(&[], "");
        let with = |host: &str, origin: &str| {
            let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\r\n");
            parse_head(head.as_bytes()).unwrap()
        };
        let allowed = |host: &str, origin: &str| origin_allowed(&with(host, origin), &closed);
        assert!(allowed("127.0.0.1:8756", "http://127.0.0.1:8756"));
        assert!(allowed("localhost:8756", "http://localhost:8756"));
        assert!(allowed("[::1]:8756", "http://[::1]:8756"));
        assert!(!allowed("127.0.0.1:8756", "http://127.0.0.1:9999"));
        assert!(!allowed("evil.example:8756", "http://evil.example:8756"));
        assert!(!allowed("127.0.0.1:8756", "https://127.0.0.1:8756"));
        let mut listed = stream_config(&[], "");
        listed.allowed_hosts = vec!["metrics.lan".into()];
        assert!(origin_allowed(
            &with("metrics.lan:8756", "http://metrics.lan:8756"),
            &listed
        ));
    }

    #[test]
    fn own_origin_passes_whatever_allowed_origins_says() {
        let page = request("Origin: http://127.0.0.1:8756\r\n", "/");
        assert!(origin_allowed(&page, &stream_config(&[], "")));
        let other_port = request("Origin: http://127.0.0.1:9999\r\n", "/");
        assert!(!origin_allowed(&other_port, &stream_config(&[], "")));
    }

    #[test]
    fn credentials_follow_a_token_change() {
        let presented = Credentials::of(&request("Authorization: Bearer old\r\n", "/"));
        assert!(presented.accepts(""));
        assert!(presented.accepts("old"));
        assert!(!presented.accepts("new"));
        assert!(Credentials::of(&request("", "/?token=new")).accepts("new"));
    }

    #[test]
    fn origin_rules() {
        let none = request("", "/");
        let page = request("Origin: http://evil.example\r\n", "/");
        let listed = request("Origin: http://dash.local\r\n", "/");
        let closed = stream_config(&[], "");
        let one = stream_config(&["http://dash.local"], "");
        let any = stream_config(&["*"], "");
        assert!(origin_allowed(&none, &closed));
        assert!(!origin_allowed(&page, &closed));
        assert!(!origin_allowed(&page, &one));
        assert!(origin_allowed(&listed, &one));
        assert!(origin_allowed(&page, &any));
    }

    #[test]
    fn token_rules() {
        let cfg = stream_config(&[], "s3cret+x");
        assert!(token_accepted(&request("", "/"), &stream_config(&[], "")));
        assert!(!token_accepted(&request("", "/"), &cfg));
        assert!(token_accepted(
            &request("Authorization: Bearer s3cret+x\r\n", "/"),
            &cfg
        ));
        assert!(token_accepted(
            &request("authorization: bearer  s3cret+x \r\n", "/"),
            &cfg
        ));
        assert!(!token_accepted(
            &request("Authorization: Basic s3cret+x\r\n", "/"),
            &cfg
        ));
        assert!(!token_accepted(
            &request("Authorization: Bearer s3cret\r\n", "/"),
            &cfg
        ));
        assert!(token_accepted(&request("", "/?token=s3cret%2Bx"), &cfg));
        assert!(token_accepted(&request("", "/?a=1&token=s3cret+x"), &cfg));
        assert!(!token_accepted(&request("", "/?token=s3cret"), &cfg));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
