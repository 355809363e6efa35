//! `GET /api/history?since=&limit=` (SPEC §4.6): the flat rows the queue
//! keeps for `queue.history` (§5.2), oldest first, as one JSON array. The
//! SQLite read runs on the blocking pool, never on the server's one thread,
//! through a connection opened for the request and closed after it, so an
//! idle page holds no page cache.

use super::http::{Request, Response};
use super::{access, page};
use crate::config::Config;
use crate::throttle::Throttled;
use flate2::Compression;
use std::path::Path;
use std::sync::{LazyLock, Mutex};
use std::time::UNIX_EPOCH;

/// Rows served when `limit` is not given: 24 h at the default 60 s interval.
pub const DEFAULT_LIMIT: usize = 1440;
/// The most rows one request may ask for: a week at 60 s.
pub const MAX_LIMIT: usize = 10_080;
/// Bodies below this go out as they are: the deflate state (a few hundred
/// KiB, left behind in the heap afterwards) costs more than the bytes saved
/// on a loopback or SSH link. An hour at 60 s (what the page asks for) is
/// about 40 KiB; a day is about 850 KiB (about 100 KiB gzipped).
const GZIP_FROM: usize = 64 * 1024;
/// The queue file in the state directory (SPEC §5.1).
const QUEUE_FILE: &str = "queue.db";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Rows with a timestamp at or after this (unix milliseconds).
    pub since_unix_ms: i64,
    pub limit: usize,
}

/// Reads `since` (RFC 3339 or unix seconds; absent: everything kept) and
/// `limit` (1..=10080; absent: 1440); the error says which is wrong and why.
pub fn parse_query(request: &Request) -> Result<Query, String> {
    let since_unix_ms = match request.query_param("since") {
        None => 0,
        Some(text) => parse_since(&text).ok_or_else(|| {
            format!("since={text:?} is neither an RFC 3339 time nor unix seconds")
        })?,
    };
    let limit = match request.query_param("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                format!("limit={text:?} must be a whole number from 1 to {MAX_LIMIT}")
            })?,
    };
    Ok(Query {
        since_unix_ms,
        limit,
    })
}

/// Unix seconds (a fraction allowed) or RFC 3339 (`Z` or a `±hh:mm` offset).
fn parse_since(text: &str) -> Option<i64> {
    let text = text.trim();
    // Both forms are ASCII; anything else is refused before any slicing
    // by byte position (which would split a multi-byte character).
    if !text.is_ascii() {
        return None;
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then_some((seconds * 1000.0) as i64);
    }
    let (utc, offset_s) = split_offset(text)?;
    // RFC 3339 allows a lower-case `t` between date and time.
    let utc = utc.replacen('t', "T", 1);
    let at = humantime::parse_rfc3339_weak(&utc).ok()?;
    let ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as i64;
    Some(ms - offset_s * 1000)
}

/// Splits an RFC 3339 time into its local part and its offset in seconds.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(utc) = text.strip_suffix(['Z', 'z']) {
        return Some((utc, 0));
    }
    let (local, sign, offset) = match text.len().checked_sub(6).map(|i| text.split_at(i)) {
        Some((local, off)) if off.starts_with('+') => (local, 1, &off[1..]),
        Some((local, off)) if off.starts_with('-') => (local, -1, &off[1..]),
        _ => return None,
    };
    let (h, m) = offset.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some((local, sign * (h * 3600 + m * 60)))
}

/// Failed reads of the queue not yet logged.
static READ_FAILURES: LazyLock<Mutex<Throttled>> = LazyLock::new(Default::default);

/// Answers `GET /api/history`: the rows as a JSON array, gzipped when the
/// client accepts it. Host and Origin were checked by the server; the token
/// is needed as for /metrics (§4.3). `config` is the one the server read for
/// this request: passed in, so this module does not depend on the server.
pub async fn respond(config: &Config, request: &Request) -> Response {
    if request.method != "GET" {
        return Response::text(405, "method not allowed").with_header("Allow", "GET");
    }
    if let Some(refusal) = access::token_refusal(request, &config.stream) {
        return refusal;
    }
    let db_path = config.state_dir.join(QUEUE_FILE);
    let query = match parse_query(request) {
        Ok(q) => q,
        Err(why) => return Response::text(400, &format!("bad request: {why}")),
    };
    let gzip = page::accepts_gzip(request);
    let answer = tokio::task::spawn_blocking(move || {
        let rows = kept_rows(&db_path, query)?;
        Ok::<_, String>(encode(json_array(&rows), gzip))
    })
    .await;
    match answer {
        Ok(Ok((body, zipped))) => {
            let response = Response::new(200, "application/json", body);
            let response = if zipped {
                response.with_header("Content-Encoding", "gzip")
            } else {
                response
            };
            response.with_header("Vary", "Accept-Encoding")
        }
        Ok(Err(e)) => {
            // Clients decide how often this runs: at most one line a minute.
            if let Some(n) = READ_FAILURES.lock().unwrap().add(1) {
                log::warn!("history: reading the queue failed ({n} time(s)): {e}");
            }
            Response::text(503, &format!("history unavailable: {e}"))
        }
        Err(e) => Response::text(500, &format!("history reader failed: {e}")),
    }
}

/// The body as sent, and whether it is gzipped: only when the client
/// accepts it and the body is large enough to be worth it.
fn encode(body: String, accepts_gzip: bool) -> (Vec<u8>, bool) {
    if accepts_gzip && body.len() >= GZIP_FROM {
        (page::gzip(body.as_bytes(), Compression::fast()), true)
    } else {
        (body.into_bytes(), false)
    }
}

/// Joins flat rows (each already JSON) into one array.
fn json_array(rows: &[String]) -> String {
    let mut body = String::with_capacity(rows.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    body.push('[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row);
    }
    body.push(']');
    body
}

/// The rows kept in the queue file, oldest first.
fn kept_rows(db_path: &Path, query: Query) -> Result<Vec<String>, String> {
    crate::queue::Queue::read_history(db_path, query.since_unix_ms, query.limit)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::http::parse_head;

    fn query(q: &str) -> Result<Query, String> {
        parse_query(
            &parse_head(format!("GET /api/history{q} HTTP/1.1\r\n\r\n").as_bytes()).unwrap(),
        )
    }

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            query(""),
            Ok(Query {
                since_unix_ms: 0,
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(query("?limit=10080").unwrap().limit, 10_080);
        assert_eq!(query("?limit=1").unwrap().limit, 1);
        for bad in ["0", "10081", "-1", "ten", ""] {
            let err = query(&format!("?limit={bad}")).unwrap_err();
            assert!(err.contains("limit"), "{err}");
        }
    }

    #[test]
    fn since_in_both_forms() {
        let ms = |q: &str| query(q).map(|q| q.since_unix_ms);
        assert_eq!(ms("?since=1764547200"), Ok(1_764_547_200_000));
        assert_eq!(ms("?since=1764547200.5"), Ok(1_764_547_200_500));
        assert_eq!(ms("?since=2025-12-01T00:00:00Z"), Ok(1_764_547_200_000));
        assert_eq!(ms("?since=2025-12-01T00:00:00.250Z"), Ok(1_764_547_200_250));
        assert_eq!(
            ms("?since=2025-12-01T01:00:00%2B01:00"),
            Ok(1_764_547_200_000)
        );
        assert_eq!(
            ms("?since=2025-11-30T23:00:00-01:00"),
            Ok(1_764_547_200_000)
        );
        assert_eq!(ms("?since=2025-12-01t00:00:00z"), Ok(1_764_547_200_000));
        for bad in [
            "yesterday",
            // Multi-byte characters where the offset would be cut.
            "%E2%82%ACabcd",
            "%FFabcd",
            "2025-12-01T00:00:00%E2%82%AC",
            "2025-13-01T00:00:00Z",
            "-5",
            "2025-12-01T00:00:00+25:00",
        ] {
            let err = query(&format!("?since={bad}")).unwrap_err();
            assert!(err.contains("since"), "{err}");
        }
    }

    #[test]
    fn large_bodies_are_gzipped_when_accepted() {
        use std::io::Read;
        let rows: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    "{{\"cpu_percent\":{i},\"node_id\":\"{}\"}}",
                    "n".repeat(400)
                )
            })
            .collect();
        let body = json_array(&rows);
        assert!(body.len() >= GZIP_FROM);
        let (zipped, gzipped) = encode(body.clone(), true);
        assert!(gzipped && zipped.len() < body.len() / 4);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, body);
        assert_eq!(
            encode(body.clone(), false),
            (body.clone().into_bytes(), false)
        );
        let small = json_array(&rows[..3]);
        assert_eq!(encode(small.clone(), true), (small.into_bytes(), false));
    }

    #[test]
    fn rows_join_into_one_array() {
        assert_eq!(json_array(&[]), "[]");
        assert_eq!(
            json_array(&["{\"a\":1}".into(), "{\"a\":2}".into()]),
            "[{\"a\":1},{\"a\":2}]"
        );
    }
}
