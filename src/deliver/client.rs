//! One HTTP exchange with a sink's receiver: the request (body, headers,
//! credentials, TLS roots) and the classification of its answer (SPEC §5.3).
//! What the body is comes from the sink (`super::sink`).

use super::resolver::CachingResolver;
use super::sink::Request;
use crate::config::SinkConfig;
use base64::Engine as _;
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::transport::DefaultConnector;
use ureq::Agent;

/// At most this much of a response body is read (and then dropped), so the
/// keep-alive connection can be reused without trusting the server's size.
const MAX_RESPONSE_BODY: u64 = 64 * 1024;
/// How much of a rejection's body goes into the logged reason.
const REASON_SNIPPET: usize = 200;
/// Per-connection I/O buffers, filled with zeros when first used and
/// resident for as long as the keep-alive connection is pooled, in every
/// sink (ureq's default is 128 KiB each way). Bodies stream through the
/// output buffer a few KiB per write. The input buffer holds the response
/// head (so it bounds its size) and doubles as ureq's copy buffer while a
/// body is sent, which ureq grows to 10 KiB anyway.
const INPUT_BUFFER: usize = 10 * 1024;
const OUTPUT_BUFFER: usize = 4 * 1024;

/// Where distributions keep the system's PEM bundle; the first that exists
/// is used (after `$SSL_CERT_FILE`) when `ca_file` adds roots of its own.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

/// What the answer means for the rows that were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Accepted (2xx) or already there (409): delete the rows.
    Delivered,
    /// The backend or the way to it is at fault; the rows stay and wait.
    Retry,
    /// The rows themselves are bad.
    Rejected,
}

/// SPEC §5.3's table. 3xx counts as a wrong URL (redirects are not followed:
/// a POST must not silently become a GET elsewhere).
pub fn classify(status: u16) -> Class {
    match status {
        200..=299 | 409 => Class::Delivered,
        401 | 403 | 404 | 405 | 408 | 425 | 429 => Class::Retry,
        400..=499 => Class::Rejected,
        _ => Class::Retry,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        status: u16,
        /// The (bounded) response body, for a sink that reads it (OTLP partial success).
        body: Vec<u8>,
    },
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Rejected {
        status: u16,
        reason: String,
    },
}

/// A keep-alive agent built for one sink configuration.
pub struct Client {
    agent: Agent,
    resolver: CachingResolver,
    backend: SinkConfig,
    host: String,
}

impl Client {
    pub fn new(backend: &SinkConfig) -> Result<Client, String> {
        let roots = match &backend.ca_file {
            None => RootCerts::PlatformVerifier,
            Some(path) => RootCerts::from(roots_with(path)?),
        };
        let config = Agent::config_builder()
            .timeout_global(Some(backend.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(crate::USER_AGENT)
            .input_buffer_size(INPUT_BUFFER)
            .output_buffer_size(OUTPUT_BUFFER)
            .max_response_header_size(INPUT_BUFFER)
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .build();
        let resolver = CachingResolver::default();
        let agent = Agent::with_parts(config, DefaultConnector::new(), resolver.clone());
        Ok(Client {
            agent,
            resolver,
            backend: backend.clone(),
            host: url_host(&backend.url),
        })
    }

    /// The configuration this client was built for.
    pub fn backend(&self) -> &SinkConfig {
        &self.backend
    }

    /// `host[:port]` of the URL, for logs (never credentials).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// POSTs one encoded batch and says what became of its rows. The
    /// credentials and extra headers of the configuration are added here,
    /// the same for every sink.
    pub fn post(&self, encoded: &Request) -> Outcome {
        let mut request = self.agent.post(&self.backend.url);
        for (name, value) in &encoded.headers {
            request = request.header(*name, value);
        }
        if let Some(token) = self.backend.bearer_token() {
            request = request.header("Authorization", format!("Bearer {token}"));
        } else if let Some((user, password)) = self.backend.basic_auth() {
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request = request.header("Authorization", format!("Basic {pair}"));
        }
        for (name, value) in &self.backend.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let body = &encoded.body;
        let mut response = match request.send(&body[..]) {
            Ok(response) => response,
            Err(e) => {
                self.resolver.forget();
                return Outcome::Retry {
                    reason: describe_error(&e, self.backend.timeout),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::backoff::parse_retry_after(v, SystemTime::now()));
        // Read (a bounded amount of) the body so the connection can be reused.
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BODY)
            .read_to_vec()
            .unwrap_or_default();
        let class = classify(status);
        if class == Class::Delivered {
            return Outcome::Delivered {
                status,
                body: bytes,
            };
        }
        let text = snippet(&bytes);
        let reason = if text.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {text}")
        };
        match class {
            Class::Retry => Outcome::Retry {
                reason,
                retry_after,
            },
            _ => Outcome::Rejected { status, reason },
        }
    }
}

/// Gzip of a request body (`Content-Encoding: gzip`).
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(
        Vec::with_capacity(body.len() / 3 + 64),
        flate2::Compression::fast(),
    );
    // Writing to a Vec cannot fail.
    encoder.write_all(body).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// A reason without the response body's text (`HTTP 503: <body>` becomes
/// `HTTP 503`): what `/health` shows, which needs no token, so a backend's
/// answer (possibly echoing request data or secrets) never reaches it.
pub fn without_body(reason: &str) -> &str {
    let Some(rest) = reason.strip_prefix("HTTP ") else {
        return reason;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits > 0 && rest[digits..].starts_with(": ") {
        &reason[.."HTTP ".len() + digits]
    } else {
        reason
    }
}

/// One line of at most `REASON_SNIPPET` characters of a response body.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(REASON_SNIPPET)
        .collect();
    out.truncate(out.trim_end().len());
    out.trim_start().to_string()
}

fn describe_error(e: &ureq::Error, timeout: Duration) -> String {
    match e {
        ureq::Error::Timeout(_) => format!(
            "no answer within {}",
            crate::config::format_duration(timeout)
        ),
        ureq::Error::ConnectionFailed => "connection failed".to_string(),
        ureq::Error::HostNotFound => "host not found".to_string(),
        ureq::Error::Io(io) => format!("connection error: {io}"),
        other => other.to_string(),
    }
}

/// `host[:port]` of a URL, without any user info.
pub fn url_host(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(uri) => match (uri.host(), uri.port_u16()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            _ => "(no host)".to_string(),
        },
        Err(_) => "(invalid url)".to_string(),
    }
}

/// The system's roots plus those in `ca_file`. ureq takes either the
/// platform verifier or a fixed list, so "both" means reading the system
/// bundle ourselves.
fn roots_with(ca_file: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let extra =
        read_pem_certs(ca_file).map_err(|e| format!("ca_file {}: {e}", ca_file.display()))?;
    if extra.is_empty() {
        return Err(format!(
            "ca_file {}: no PEM certificates found",
            ca_file.display()
        ));
    }
    let mut roots = match system_bundle() {
        Some(bundle) => read_pem_certs(&bundle).unwrap_or_else(|e| {
            log::warn!("cannot read system roots {}: {e}", bundle.display());
            Vec::new()
        }),
        None => {
            log::warn!("no system CA bundle found; trusting only ca_file's roots");
            Vec::new()
        }
    };
    roots.extend(extra);
    Ok(roots)
}

fn system_bundle() -> Option<std::path::PathBuf> {
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        return Some(file.into());
    }
    SYSTEM_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
}

/// Every certificate in a PEM file (other sections are skipped).
pub fn read_pem_certs(path: &Path) -> Result<Vec<Certificate<'static>>, String> {
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut pem))
        .map_err(|e| e.to_string())?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        // Private keys and other sections are not roots.
        if let PemItem::Certificate(cert) = item.map_err(|e| e.to_string())? {
            certs.push(cert);
        }
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_without_the_body_keeps_the_status() {
        assert_eq!(without_body("HTTP 503: SECRET body text"), "HTTP 503");
        assert_eq!(without_body("HTTP 400"), "HTTP 400");
        assert_eq!(without_body("no answer within 10s"), "no answer within 10s");
        assert_eq!(
            without_body("connection error: refused"),
            "connection error: refused"
        );
    }

    #[test]
    fn classes_follow_the_spec() {
        for s in [200, 201, 202, 204, 299, 409] {
            assert_eq!(classify(s), Class::Delivered, "{s}");
        }
        for s in [
            401, 403, 404, 405, 408, 425, 429, 500, 502, 503, 504, 599, 301, 302, 307, 100,
        ] {
            assert_eq!(classify(s), Class::Retry, "{s}");
        }
        for s in [400, 402, 410, 411, 413, 415, 422, 451, 499] {
            assert_eq!(classify(s), Class::Rejected, "{s}");
        }
    }

    #[test]
    fn hosts_for_logs_never_show_credentials() {
        assert_eq!(url_host("https://user:secret@example.com/x"), "example.com");
        assert_eq!(url_host("http://127.0.0.1:8080/x"), "127.0.0.1:8080");
    }

    #[test]
    fn gzip_round_trips() {
        let body = br#"{"event_id":"a"}"#;
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gzip(body)[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.as_bytes(), body);
    }

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(snippet(b"  bad\nrow\t "), "bad row");
        assert_eq!(snippet(&[b'x'; 1000]).len(), REASON_SNIPPET);
    }

    #[test]
    fn ca_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = roots_with(&path).unwrap_err();
        assert!(err.contains("no PEM certificates"), "{err}");
        let missing = dir.path().join("missing.pem");
        assert!(roots_with(&missing).is_err());
    }

    /// A self-signed root made for this test (openssl req -x509, P-256).
    const TEST_ROOT: &str = "-----BEGIN CERTIFICATE-----
MIIBkjCCATegAwIBAgIUTXaax5fxH1UQo5NEfDf6E5Me4+cwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSbWV0cmljc2QgdGVzdCByb290MCAXDTI2MTEyMzEwNDAxMVoY
DzIxMjYxMDMwMTA0MDExWjAdMRswGQYDVQQDDBJtZXRyaWNzZCB0ZXN0IHJvb3Qw
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARV6xgJMEjTNUXGdAYKBnwxim8dxhOx
ChGf8W3+e4kE1o2mDD7e4/46cRlL3BAJ2CCnIEyamSKiQ3r/LQJ7lblao1MwUTAd
BgNVHQ4EFgQU4gk04Bwd2uTJCqy1draapSn4X7AwHwYDVR0jBBgwFoAU4gk04Bwd
2uTJCqy1draapSn4X7AwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBG
AiEAzP+6LEBTGHSwWwAd9iE1MXO4XVdKcd6DAC/PGVNvBCUCIQDE/dL2GJucmelI
LXhWNuwcJzm2LpCN4qqi/mJa2qsoWA==
-----END CERTIFICATE-----
";

    #[test]
    fn ca_file_roots_are_added_to_the_system_roots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, TEST_ROOT).unwrap();
        let extra = read_pem_certs(&path).unwrap();
        assert_eq!(extra.len(), 1);
        let all = roots_with(&path).unwrap();
        assert!(all.iter().any(|c| c.der() == extra[0].der()));
        let system = system_bundle()
            .map(|b| read_pem_certs(&b).unwrap().len())
            .unwrap_or(0);
        assert_eq!(all.len(), system + 1);
        let mut backend = crate::config::Config::default().backend;
        backend.url = "https://127.0.0.1:1/x".to_string();
        backend.ca_file = Some(path);
        assert!(Client::new(&backend).is_ok());
    }
}
