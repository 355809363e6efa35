//! A name resolver that remembers the backend's addresses for a while.
//!
//! ureq resolves the host on every request, even when it then reuses a
//! pooled keep-alive connection, and with a timeout set it does so on a new
//! thread each time: one thread and one DNS lookup per POST. The poster talks
//! to one host, so it keeps the answer for `TTL` and forgets it as soon as a
//! request fails (the host may have moved).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a lookup is trusted while requests succeed.
const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub struct CachingResolver {
    inner: Arc<DefaultResolver>,
    cached: Arc<Mutex<Option<Cached>>>,
}

#[derive(Debug)]
struct Cached {
    /// `scheme://authority` the addresses belong to.
    key: String,
    at: Instant,
    addrs: ResolvedSocketAddrs,
}

impl CachingResolver {
    /// Drops the remembered addresses; the next request looks up again.
    pub fn forget(&self) {
        *self.cached.lock().unwrap() = None;
    }
}

fn key(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or(""),
        uri.authority().map(|a| a.as_str()).unwrap_or("")
    )
}

impl Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = key(uri);
        if let Some(c) = self.cached.lock().unwrap().as_ref() {
            if c.key == key && c.at.elapsed() < TTL {
                return Ok(c.addrs.clone());
            }
        }
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *self.cached.lock().unwrap() = Some(Cached {
            key,
            at: Instant::now(),
            addrs: addrs.clone(),
        });
        Ok(addrs)
    }
}
