//! Fault injection for the life-cycle tests, compiled into debug builds only
//! (`cfg(debug_assertions)`): release builds, and so the packages, carry none
//! of it. `FAULT_INJECT=<site>:<panic|hang>[:<n>]` makes the n-th pass
//! (default the first) through `point(site)` panic, hang outside any wait
//! (a stuck thread that the watchdog must notice), or be slow (2 s of work
//! outside any wait, shorter than a watchdog period: a stop arriving then
//! finds the thread busy). Sites: `sampler` (each
//! sample), `poster` (each delivery round, outside the network wait),
//! `stream` (the stream runtime's liveness tick), `start` (`run` before the
//! allocator's re-exec, where no signal handler exists yet; passed once in
//! each program image, so twice in all, and with no logger yet, so nothing
//! is logged there).

#[cfg(debug_assertions)]
mod enabled {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::Duration;

    pub const VAR: &str = "FAULT_INJECT";

    #[derive(Debug, PartialEq, Eq)]
    enum Kind {
        Panic,
        Hang,
        Slow,
    }

    struct Fault {
        site: String,
        kind: Kind,
        at: u64,
        passes: AtomicU64,
    }

    fn parse(spec: &str) -> Option<Fault> {
        let mut parts = spec.split(':');
        let site = parts.next()?.to_string();
        let kind = match parts.next()? {
            "panic" => Kind::Panic,
            "hang" => Kind::Hang,
            "slow" => Kind::Slow,
            _ => return None,
        };
        let at = parts.next().map_or(Some(1), |n| n.parse().ok())?;
        Some(Fault {
            site,
            kind,
            at,
            passes: AtomicU64::new(0),
        })
    }

    pub fn point(site: &str) {
        static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
        let fault = FAULT.get_or_init(|| std::env::var(VAR).ok().and_then(|s| parse(&s)));
        let Some(fault) = fault else { return };
        if fault.site != site || fault.passes.fetch_add(1, Ordering::Relaxed) + 1 != fault.at {
            return;
        }
        match fault.kind {
            Kind::Hang => {
                log::warn!("fault injection: {site} hangs");
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Kind::Slow => {
                log::warn!("fault injection: {site} is slow");
                std::thread::sleep(Duration::from_secs(2));
                return;
            }
            Kind::Panic => {}
        }
        panic!("fault injection: {site} panics");
    }

    #[cfg(test)]
    #[test]
    fn specs_parse() {
        let f = parse("poster:hang:3").unwrap();
        assert_eq!((f.site.as_str(), f.kind, f.at), ("poster", Kind::Hang, 3));
        let f = parse("sampler:panic").unwrap();
        assert_eq!((f.site.as_str(), f.kind, f.at), ("sampler", Kind::Panic, 1));
        let f = parse("sampler:slow:2").unwrap();
        assert_eq!((f.site.as_str(), f.kind, f.at), ("sampler", Kind::Slow, 2));
        assert!(parse("sampler").is_none());
        assert!(parse("sampler:explode").is_none());
    }
}

/// A place where a test may inject a fault (see the module doc).
#[inline]
pub fn point(site: &str) {
    #[cfg(debug_assertions)]
    enabled::point(site);
    #[cfg(not(debug_assertions))]
    let _ = site;
}
