//! Who may talk to the listener (SPEC §4.3): the Origin allow-list and the
//! optional bearer token. Both are read from the live configuration for each
//! request, so a SIGHUP reload applies to the next connection.

use super::http::Request;
use crate::config::StreamConfig;

/// Whether the request's Origin (if any) is allowed. Clients that send no
/// Origin (wscat, scripts) pass; browsers always send one.
/// The listener's own origin is always allowed: the page it serves (§4.6).
pub fn origin_allowed(request: &Request, stream: &StreamConfig) -> bool {
    match request.header("origin") {
        None => true,
        Some(origin) => {
            own_origin(request, stream).is_some_and(|own| own == origin)
                || stream
                    .allowed_origins
                    .iter()
                    .any(|allowed| allowed == "*" || allowed == origin)
        }
    }
}

/// The page's own origin (SPEC §4.6): `http://` + the request's Host, when
/// that Host passes the check of §4.3.
pub fn own_origin(request: &Request, stream: &StreamConfig) -> Option<String> {
    let host = request.header("host")?;
    host_allowed(host, stream).then(|| format!("http://{host}"))
}

/// Whether a Host header names an IP literal or `localhost` (with or without
/// a port), the names a DNS-rebinding page cannot use (SPEC §4.3).
pub fn host_allowed(host: &str, _stream: &StreamConfig) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port))
                if port.is_empty() || port.strip_prefix(':').is_some_and(valid_port) =>
            {
                return v6.parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

fn valid_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

/// Whether the request carries the configured token (always true when none
/// is configured): `Authorization: Bearer <token>` or `?token=<token>`.
pub fn token_accepted(request: &Request, stream: &StreamConfig) -> bool {
    if stream.token.is_empty() {
        return true;
    }
    let expected = stream.token.as_bytes();
    let from_header = request
        .header("authorization")
        .and_then(bearer)
        .is_some_and(|t| constant_time_eq(t.as_bytes(), expected));
    let from_query = request
        .query_param("token")
        .is_some_and(|t| constant_time_eq(t.as_bytes(), expected));
    from_header | from_query
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
        StreamConfig {
            enabled: true,
            listen: "127.0.0.1:0".parse().unwrap(),
            max_clients: 4,
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            token: token.to_string(),
            ..StreamConfig::default()
        }
    }

    fn request(extra: &str, target: &str) -> Request {
        parse_head(format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes()).unwrap()
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
    fn own_origin_is_accepted_only_for_a_host_that_passes() {
        let closed = stream_config(&[], "");
        let with = |host: &str, origin: &str| {
            parse_head(
                format!("GET / HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\r\n").as_bytes(),
            )
            .unwrap()
        };
        assert!(origin_allowed(
            &with("127.0.0.1:8756", "http://127.0.0.1:8756"),
            &closed
        ));
        assert!(origin_allowed(
            &with("localhost:8756", "http://localhost:8756"),
            &closed
        ));
        assert!(origin_allowed(
            &with("[::1]:8756", "http://[::1]:8756"),
            &closed
        ));
        assert!(!origin_allowed(
            &with("127.0.0.1:8756", "http://127.0.0.1:9999"),
            &closed
        ));
        assert!(!origin_allowed(
            &with("evil.example:8756", "http://evil.example:8756"),
            &closed
        ));
        assert!(!origin_allowed(
            &with("127.0.0.1:8756", "https://127.0.0.1:8756"),
            &closed
        ));
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
