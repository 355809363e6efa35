//! `GET /` (SPEC §4.6): the live page. Its three files live under `web/` and
//! are embedded at build time; the document is assembled and gzipped once,
//! on first request, and kept (a few KiB) for every later one.

use super::http::{Request, Response};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::sync::OnceLock;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/style.css");

/// Everything the page needs comes from this listener; nothing may frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page as one document: style and script inline.
pub fn document() -> String {
    INDEX
        .replacen("/*STYLE*/", STYLE, 1)
        .replacen("/*SCRIPT*/", SCRIPT, 1)
}

fn gzipped_document() -> &'static [u8] {
    static GZIPPED: OnceLock<Vec<u8>> = OnceLock::new();
    GZIPPED.get_or_init(|| gzip(document().as_bytes(), Compression::best()))
}

/// Answers `GET /` (other methods: 405). The document holds no host data, so
/// it needs no token: the page asks for one itself when the stream does.
pub fn respond(request: &Request) -> Response {
    if request.method != "GET" {
        return Response::text(405, "method not allowed").with_header("Allow", "GET");
    }
    let response = if accepts_gzip(request) {
        Response::new(200, "text/html; charset=utf-8", gzipped_document())
            .with_header("Content-Encoding", "gzip")
    } else {
        Response::new(200, "text/html; charset=utf-8", document())
    };
    with_security_headers(response).with_header("Vary", "Accept-Encoding")
}

/// The headers §4.6 asks of the page, plus the usual hardening.
pub fn with_security_headers(response: Response) -> Response {
    response
        .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .with_header("X-Frame-Options", "DENY")
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Referrer-Policy", "no-referrer")
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*`, with a q above 0).
/// Whether `Accept-Encoding` takes gzip (RFC 9110 §12.5.3): `gzip` named
/// decides by its own weight, else `*` by its; `q=0` refuses.
pub fn accepts_gzip(request: &Request) -> bool {
    let mut gzip = None;
    let mut any = None;
    let items = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("accept-encoding"))
        .flat_map(|(_, v)| v.split(','));
    for item in items {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| {
                let (key, value) = p.split_once('=')?;
                key.trim().eq_ignore_ascii_case("q").then_some(value)
            })
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if coding.eq_ignore_ascii_case("gzip") {
            gzip = Some(q);
        } else if coding == "*" {
            any = Some(q);
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

pub fn gzip(bytes: &[u8], level: Compression) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), level);
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::http::parse_head;
    use std::io::Read;

    fn get(extra: &str) -> Request {
        parse_head(format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").as_bytes()).unwrap()
    }

    #[test]
    fn document_inlines_style_and_script_and_names_no_other_host() {
        // The SVG namespace is a name, not a request.
        let doc = document().replace("http://www.w3.org/2000/svg", "");
        assert!(!doc.contains("/*STYLE*/") && !doc.contains("/*SCRIPT*/"));
        assert!(document().contains(STYLE) && document().contains(SCRIPT));
        for remote in ["http://", "https://", "//cdn", "@import", "url("] {
            assert!(!doc.contains(remote), "document mentions {remote}");
        }
    }

    #[test]
    fn gzip_only_when_accepted() {
        assert!(accepts_gzip(&get("Accept-Encoding: gzip, deflate, br\r\n")));
        assert!(accepts_gzip(&get("Accept-Encoding: br;q=1, *;q=0.5\r\n")));
        assert!(!accepts_gzip(&get("Accept-Encoding: gzip;q=0\r\n")));
        assert!(!accepts_gzip(&get("Accept-Encoding: identity\r\n")));
        assert!(!accepts_gzip(&get("")));
        // Named gzip refused outweighs the wildcard; the weight's name is
        // case-insensitive.
        assert!(!accepts_gzip(&get("Accept-Encoding: gzip;q=0, *\r\n")));
        assert!(!accepts_gzip(&get("Accept-Encoding: gzip;Q=0\r\n")));
        assert!(accepts_gzip(&get("Accept-Encoding: br;q=0, *\r\n")));

        let zipped = respond(&get("Accept-Encoding: gzip\r\n"));
        assert!(zipped
            .headers
            .contains(&("Content-Encoding", "gzip".into())));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&zipped.body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, document());
        let plain = respond(&get(""));
        assert_eq!(plain.body, document().into_bytes());
        assert!(plain.headers.iter().all(|(n, _)| *n != "Content-Encoding"));
        assert!(plain
            .headers
            .iter()
            .any(|(n, v)| *n == "X-Frame-Options" && v == "DENY"));
    }
}
