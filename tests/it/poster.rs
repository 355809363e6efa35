//! The poster against a real HTTP backend on 127.0.0.1 (SPEC §5.3): the
//! real queue file, the real poster thread, the real test server.

use crate::common::backend::{Backend, Behaviour, Request};
use crate::common::rows::{config, row};
use metricsd::config::{Config, SharedConfig};
use metricsd::deliver::{PosterContext, Posters};
use metricsd::queue::{Queue, Row};
use metricsd::shutdown::{Shutdown, Wake};
use metricsd::status::{BackendState, Status};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A queue with the poster running on it, as the daemon wires them.
struct Harness {
    _dir: tempfile::TempDir,
    db: PathBuf,
    queue: Queue,
    config: SharedConfig,
    status: Arc<Status>,
    shutdown: Shutdown,
    wake: Arc<Wake>,
    posters: Option<Posters>,
}

impl Harness {
    fn new(url: &str, tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("queue.db");
        let mut c = config(dir.path(), url);
        tweak(&mut c);
        Harness {
            queue: Queue::open(&db).unwrap(),
            db,
            _dir: dir,
            config: SharedConfig::new(c),
            status: Arc::new(Status::default()),
            shutdown: Shutdown::new(),
            wake: Wake::new(),
            posters: None,
        }
    }

    /// A harness with `rows` rows queued before its poster starts.
    fn posting(
        backend: &Backend,
        rows: u64,
        tweak: impl FnOnce(&mut Config),
    ) -> (Harness, Vec<String>) {
        let mut h = Harness::new(&backend.url(), tweak);
        let ids = h.insert(rows);
        h.start();
        (h, ids)
    }

    fn start(&mut self) {
        let ctx = PosterContext {
            db_path: self.db.clone(),
            config: self.config.clone(),
            status: self.status.clone(),
            shutdown: self.shutdown.clone(),
            machine_id: "test-machine".to_string(),
        };
        self.posters = Some(Posters::start(ctx, self.wake.clone()).unwrap());
    }

    /// Stops the poster and starts it again, as a restart of the daemon
    /// does (same file, fresh threads).
    fn restart(&mut self) {
        self.stop();
        self.shutdown = Shutdown::new();
        self.start();
    }

    /// Applies a new configuration as a reload does.
    fn reload(&mut self, config: Config) {
        self.config.set(config);
        if let Some(posters) = self.posters.as_mut() {
            posters.reconcile().unwrap();
        }
        self.wake.notify();
    }

    /// Queues `n` rows as the sampler does (insert, then wake the poster).
    fn insert(&mut self, n: u64) -> Vec<String> {
        let max_pending = self.config.get().queue.max_pending;
        (0..n)
            .map(|i| {
                let (id, at, payload) = row(i);
                self.queue
                    .insert(&id, &at, &payload, &[], &["backend"], max_pending)
                    .unwrap();
                self.wake.notify();
                id
            })
            .collect()
    }

    fn pending_ids(&self) -> Vec<String> {
        event_ids(self.queue.oldest("backend", usize::MAX).unwrap())
    }

    fn dead_ids(&self) -> Vec<String> {
        event_ids(self.queue.oldest_dead("backend", usize::MAX).unwrap())
    }

    /// Whether no pending row has a try counted against it.
    fn no_attempts_counted(&self) -> bool {
        self.queue
            .oldest("backend", 10)
            .unwrap()
            .iter()
            .all(|r| r.attempts == 0)
    }

    fn wait_state(&self, state: BackendState) {
        wait_for(&format!("{state:?} state"), || {
            self.status.backend_state() == state
        });
    }

    fn stats(&self) -> metricsd::queue::Stats {
        self.queue.stats(&["backend"]).unwrap()
    }

    /// Stops the poster as the daemon does; returns how long the join took.
    fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.trigger();
        if let Some(posters) = self.posters.take() {
            let late = posters.join_by(Instant::now() + WAIT);
            assert!(late.is_empty(), "{late:?}");
        }
        started.elapsed()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(posters) = self.posters.take() {
            posters.join_by(Instant::now() + WAIT);
        }
    }
}

fn event_ids(rows: Vec<Row>) -> Vec<String> {
    rows.into_iter().map(|r| r.event_id).collect()
}

fn wait_for(what: &str, condition: impl Fn() -> bool) {
    crate::common::wait_for(what, WAIT, condition)
}

fn delivered_in_order(backend: &Backend, expected: &[String]) {
    assert_eq!(backend.delivered_ids(), expected, "delivered ids/order");
}

/// Waits until as many rows as `expected` are delivered, then checks they
/// are those, in order.
fn wait_delivered(backend: &Backend, expected: &[String]) {
    wait_for(&format!("{} deliveries", expected.len()), || {
        backend.delivered_ids().len() == expected.len()
    });
    delivered_in_order(backend, expected);
}

/// Waits for `n` more requests than `backend` has seen so far.
fn more_tries(backend: &Backend, what: &str, n: usize) {
    let seen = backend.request_count();
    wait_for(what, || backend.request_count() >= seen + n);
}

fn stops_at_once(h: &mut Harness) {
    let took = h.stop();
    // Far below any wait it was in (a generous bound for a busy machine).
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// A test backend that answers every request as `behaviour`.
fn answering(behaviour: Behaviour) -> Backend {
    let backend = Backend::start();
    backend.set(behaviour);
    backend
}

fn requests_for(backend: &Backend, event_id: &str) -> Vec<Request> {
    backend
        .requests()
        .into_iter()
        .filter(|r| r.event_ids().iter().any(|e| e == event_id))
        .collect()
}

#[test]
fn rows_arrive_in_flat_form_with_the_required_headers_oldest_first() {
    let backend = Backend::start();
    let (mut h, ids) = Harness::posting(&backend, 20, |c| {
        c.backend.token = "s3cret-token".to_string();
    });
    wait_delivered(&backend, &ids);
    for (request, id) in backend.requests().iter().zip(&ids) {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/telemetry/snapshot");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("user-agent"), Some(metricsd::USER_AGENT));
        assert_eq!(request.header("idempotency-key"), Some(id.as_str()));
        assert_eq!(request.header("authorization"), Some("Bearer s3cret-token"));
        assert_eq!(request.header("content-encoding"), None);
        // The body is the flat object itself, not wrapped.
        let body = request.json();
        assert!(body.is_object(), "{body}");
        assert_eq!(body["event_id"], id.as_str());
        assert!(body["cpu_percent"].is_number());
        assert_eq!(body.as_object().unwrap().len(), 21);
    }
    wait_for("counters", || {
        h.status.delivered_total.load(Ordering::Relaxed) == 20
            && h.status.queue_pending.load(Ordering::Relaxed) == 0
    });
    assert_eq!(h.status.backend_state(), BackendState::Ok);
    let stats = h.stats();
    assert_eq!((stats.pending, stats.delivered_total), (0, 20));

    // Rows queued later wake the poster and follow.
    let more = h.insert(3);
    wait_for("3 more", || backend.delivered_ids().len() == 23);
    assert_eq!(backend.delivered_ids()[20..], more);
}

#[test]
fn no_authorization_header_without_a_token() {
    let backend = Backend::start();
    let (_h, _) = Harness::posting(&backend, 1, |_| {});
    wait_for("delivery", || backend.delivered_ids().len() == 1);
    assert_eq!(backend.requests()[0].header("authorization"), None);
}

#[test]
fn batches_are_json_arrays_with_range_keys_and_can_be_gzipped() {
    let backend = Backend::start();
    let (_h, ids) = Harness::posting(&backend, 17, |c| {
        c.backend.batch_size = 8;
        c.backend.gzip = true;
    });
    wait_delivered(&backend, &ids);
    let requests = backend.requests();
    let sizes: Vec<usize> = requests.iter().map(|r| r.event_ids().len()).collect();
    assert_eq!(sizes, [8, 8, 1]);
    for r in &requests {
        assert!(r.json().is_array(), "batch bodies are arrays, even of one");
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        let in_body = r.event_ids();
        let key = format!("{}..{}", in_body[0], in_body[in_body.len() - 1]);
        assert_eq!(r.header("idempotency-key"), Some(key.as_str()));
    }
}

#[test]
fn a_backend_that_is_down_then_up_gets_everything_in_order() {
    let backend = Backend::start();
    backend.down();
    let (mut h, mut ids) = Harness::posting(&backend, 5, |_| {});
    wait_for("failing state", || {
        h.status.backend_state() == BackendState::Failing
            && h.status.post_failures_total.load(Ordering::Relaxed) >= 3
    });
    ids.extend(h.insert(5));
    assert_eq!(h.pending_ids(), ids, "nothing is lost while down");
    assert!(h
        .status
        .last_error()
        .unwrap()
        .contains(&backend.addr().to_string()));
    backend.up();
    wait_delivered(&backend, &ids);
    h.wait_state(BackendState::Ok);
    wait_for("empty queue", || h.stats().pending == 0);

    // Down again mid-stream (open keep-alive connection closed): still none lost.
    backend.down();
    let later = h.insert(3);
    h.wait_state(BackendState::Failing);
    backend.up();
    wait_for("13 deliveries", || backend.delivered_ids().len() == 13);
    ids.extend(later);
    delivered_in_order(&backend, &ids);
}

#[test]
fn server_errors_500_and_503_are_retried_until_accepted() {
    let backend = answering(Behaviour::Status(500));
    let (h, ids) = Harness::posting(&backend, 3, |_| {});
    wait_for("3 failed tries", || backend.request_count() >= 3);
    backend.set(Behaviour::Status(503));
    more_tries(&backend, "2 more failed tries", 2);
    assert_eq!(h.pending_ids(), ids);
    assert!(h.no_attempts_counted());
    assert_eq!(h.status.backend_state(), BackendState::Failing);
    backend.set(Behaviour::Ok);
    wait_delivered(&backend, &ids);
    // Every failed try was for the oldest row.
    for r in backend.requests().iter().filter(|r| !r.delivered()) {
        assert_eq!(r.event_ids(), vec![ids[0].clone()]);
    }
    assert_eq!(h.stats().dead, 0);
    h.wait_state(BackendState::Ok);
}

#[test]
fn retry_after_seconds_is_honoured() {
    let backend = answering(Behaviour::RetryAfter(429, "2".to_string()));
    let (_h, ids) = Harness::posting(&backend, 1, |_| {});
    wait_for("first try", || backend.request_count() >= 1);
    backend.set(Behaviour::Ok);
    wait_for("delivery", || backend.delivered_ids().len() == 1);
    let requests = backend.requests();
    assert_eq!(requests.len(), 2, "exactly one retry");
    let gap = requests[1].at - requests[0].at;
    // retry_backoff is 100 ms: only Retry-After explains a 2 s wait.
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(4), "retried after {gap:?}");
    delivered_in_order(&backend, &ids);
}

#[test]
fn retry_after_as_http_date_and_capped_by_max_retry_after() {
    let backend = Backend::start();
    let in_an_hour =
        httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    backend.set(Behaviour::RetryAfter(503, in_an_hour));
    let (_h, _) = Harness::posting(&backend, 1, |c| {
        c.backend.max_retry_after = Duration::from_secs(1);
    });
    wait_for("first try", || backend.request_count() >= 1);
    backend.set(Behaviour::Ok);
    wait_for("delivery", || backend.delivered_ids().len() == 1);
    let requests = backend.requests();
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_secs(3),
        "retried after {gap:?}"
    );
}

#[test]
fn unauthorized_and_not_found_keep_rows_pending_and_recover() {
    let backend = answering(Behaviour::Status(401));
    let (h, ids) = Harness::posting(&backend, 4, |c| c.backend.max_attempts = 1);
    wait_for("401 tries", || backend.request_count() >= 4);
    backend.set(Behaviour::Status(404));
    more_tries(&backend, "404 tries", 4);
    backend.set(Behaviour::Status(403));
    more_tries(&backend, "403 tries", 2);
    // Even with max_attempts = 1, nothing went dead: these say nothing about the rows.
    assert_eq!(h.pending_ids(), ids);
    assert!(h.dead_ids().is_empty());
    assert!(h.no_attempts_counted());
    assert!(h.status.last_error().unwrap().contains("403"));
    backend.set(Behaviour::Ok);
    wait_delivered(&backend, &ids);
}

#[test]
fn conflict_409_counts_as_delivered() {
    let backend = answering(Behaviour::Status(409));
    let (h, ids) = Harness::posting(&backend, 2, |_| {});
    wait_delivered(&backend, &ids);
    wait_for("empty queue", || h.stats().pending == 0);
    assert_eq!(backend.request_count(), 2);
}

#[test]
fn a_bad_row_goes_dead_after_max_attempts_and_later_rows_are_delivered() {
    let backend = Backend::start();
    let mut h = Harness::new(&backend.url(), |c| c.backend.max_attempts = 3);
    let ids = h.insert(6);
    let bad = ids[2].clone();
    backend.set(Behaviour::RejectEvent {
        event_id: bad.clone(),
        status: 400,
    });
    h.start();
    wait_for("five good rows", || backend.delivered_ids().len() == 5);
    wait_for("dead row", || h.stats().dead == 1);
    let good: Vec<String> = ids.iter().filter(|i| **i != bad).cloned().collect();
    delivered_in_order(&backend, &good);
    assert_eq!(
        requests_for(&backend, &bad).len(),
        3,
        "exactly max_attempts tries"
    );
    assert_eq!(h.dead_ids(), vec![bad.clone()]);
    let dead = &h.queue.oldest_dead("backend", 1).unwrap()[0];
    assert_eq!(dead.attempts, 3);
    assert!(
        dead.last_error.as_deref().unwrap().contains("400"),
        "{dead:?}"
    );
    wait_for("status dead count", || {
        h.status.queue_dead.load(Ordering::Relaxed) == 1
    });
    // A rejection is no outage.
    assert_eq!(h.status.backend_state(), BackendState::Ok);

    // Once the backend is fixed, retry-dead sends it.
    backend.set(Behaviour::Ok);
    assert_eq!(h.queue.retry_dead("backend").unwrap(), 1);
    h.wake.notify();
    wait_for("the retried row", || backend.delivered_ids().len() == 6);
    assert_eq!(backend.delivered_ids()[5], bad);
    assert_eq!(h.stats().dead, 0);
}

#[test]
fn a_rejected_batch_is_split_to_isolate_the_bad_row() {
    let backend = Backend::start();
    let mut h = Harness::new(&backend.url(), |c| {
        c.backend.batch_size = 8;
        c.backend.max_attempts = 2;
    });
    let ids = h.insert(8);
    let bad = ids[5].clone();
    backend.set(Behaviour::RejectEvent {
        event_id: bad.clone(),
        status: 422,
    });
    h.start();
    wait_for("seven good rows", || backend.delivered_ids().len() == 7);
    wait_for("dead row", || h.stats().dead == 1);
    let good: Vec<String> = ids.iter().filter(|i| **i != bad).cloned().collect();
    assert_eq!(
        backend.delivered_ids(),
        good,
        "each good row delivered once, in order"
    );
    assert_eq!(h.dead_ids(), vec![bad.clone()]);
    wait_for("empty queue", || h.stats().pending == 0);
    // The first try was the whole batch; the bad row was finally tried alone.
    let requests = backend.requests();
    assert_eq!(requests[0].event_ids(), ids);
    let alone: Vec<_> = requests
        .iter()
        .filter(|r| r.event_ids() == vec![bad.clone()])
        .collect();
    assert_eq!(alone.len(), 2, "max_attempts tries of the bad row alone");
    assert!(alone.iter().all(|r| r.json().is_array()));

    // `metricsd queue retry-dead` (the library entry point) puts it back.
    backend.set(Behaviour::Ok);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = metricsd::queue_cmd::run_to(
        &metricsd::cli::QueueCommand::RetryDead {
            sink: "backend".into(),
        },
        h.db.parent().unwrap(),
        &["backend"],
        &mut out,
        &mut err,
    );
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(String::from_utf8(out).unwrap(), "{\"moved\":1}\n");
    h.wake.notify();
    wait_for("the retried row", || backend.delivered_ids().contains(&bad));
    wait_for("empty", || h.stats().pending == 0 && h.stats().dead == 0);
}

#[test]
fn max_pending_keeps_the_newest_rows_while_the_backend_is_down() {
    let backend = Backend::start();
    backend.down();
    let mut h = Harness::new(&backend.url(), |c| c.queue.max_pending = 5);
    h.start();
    let ids = h.insert(12);
    let stats = h.stats();
    assert_eq!((stats.pending, stats.dropped_total), (5, 7));
    assert_eq!(h.pending_ids(), ids[7..]);
    wait_for("status counters", || {
        h.status.queue_dropped_total.load(Ordering::Relaxed) == 7
            && h.status.queue_pending.load(Ordering::Relaxed) == 5
    });
    backend.up();
    wait_delivered(&backend, &ids[7..]);
}

#[test]
fn a_hanging_backend_is_given_up_after_the_timeout_and_retried() {
    let backend = answering(Behaviour::Hang);
    let (h, ids) = Harness::posting(&backend, 2, |c| {
        c.backend.timeout = Duration::from_millis(500);
    });
    wait_for("two tries", || backend.request_count() >= 2);
    let requests = backend.requests();
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(500), "gave up after {gap:?}");
    assert!(gap < Duration::from_secs(3), "gave up after {gap:?}");
    assert!(requests.iter().all(|r| r.answered.is_none()));
    assert_eq!(h.status.backend_state(), BackendState::Failing);
    assert!(
        h.status
            .last_error()
            .unwrap()
            .contains("no answer within 500ms"),
        "{:?}",
        h.status.last_error()
    );
    assert_eq!(h.pending_ids(), ids);
    backend.set(Behaviour::Ok);
    wait_delivered(&backend, &ids);
}

#[test]
fn shutdown_during_a_hanging_post_keeps_the_rows() {
    let backend = answering(Behaviour::Hang);
    let (mut h, ids) = Harness::posting(&backend, 3, |c| {
        c.backend.timeout = Duration::from_secs(2);
    });
    wait_for("a post in flight", || backend.request_count() >= 1);
    let took = h.stop();
    // The in-flight POST may finish (here: time out); the daemon waits at most 5 s.
    assert!(
        took < Duration::from_secs(4),
        "poster took {took:?} to stop"
    );
    assert_eq!(h.pending_ids(), ids, "unanswered rows stay queued");
    assert_eq!(h.stats().delivered_total, 0);
}

#[test]
fn an_idle_poster_stops_at_once_on_shutdown() {
    let backend = Backend::start();
    let mut h = Harness::new(&backend.url(), |_| {});
    h.start();
    h.wait_state(BackendState::Ok);
    stops_at_once(&mut h);

    // And while waiting out a long backoff.
    let backend = answering(Behaviour::Status(503));
    let (mut h, _) = Harness::posting(&backend, 1, |c| {
        c.backend.retry_backoff = vec![Duration::from_secs(3600)];
    });
    h.wait_state(BackendState::Failing);
    stops_at_once(&mut h);
    assert_eq!(h.stats().pending, 1);
}

#[test]
fn no_url_posts_nothing_until_a_reload_sets_one() {
    let backend = Backend::start();
    let mut h = Harness::new("", |_| {});
    let ids = h.insert(3);
    h.start();
    assert_eq!(h.status.backend_state(), BackendState::Disabled);
    assert!(h.status.configured_sinks().is_empty());

    // A reload sets the URL: the backend's poster starts.
    let mut c = (*h.config.get()).clone();
    c.backend.url = backend.url();
    h.reload(c);
    wait_delivered(&backend, &ids);
    assert_eq!(h.status.backend_state(), BackendState::Ok);
    wait_for("status counters", || {
        h.status.delivered_total.load(Ordering::Relaxed) == 3
    });
    assert_eq!(h.status.configured_sinks().len(), 1);

    // And a reload that clears it again stops its poster; rows stay queued.
    let mut c = (*h.config.get()).clone();
    c.backend.url = String::new();
    h.reload(c);
    h.wait_state(BackendState::Disabled);
    wait_for("poster ended", || h.status.configured_sinks().is_empty());
    h.insert(1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(backend.request_count(), 3);
    assert_eq!(h.stats().pending, 1);

    // Configured again, its poster comes back and sends the row.
    let mut c = (*h.config.get()).clone();
    c.backend.url = backend.url();
    h.reload(c);
    wait_for("the queued row", || backend.request_count() == 4);
}

#[test]
fn a_reload_with_a_new_url_and_token_cuts_a_long_backoff_short() {
    let broken = answering(Behaviour::Status(401));
    let fixed = Backend::start();
    let (mut h, ids) = Harness::posting(&broken, 2, |c| {
        c.backend.retry_backoff = vec![Duration::from_secs(3600)];
    });
    h.wait_state(BackendState::Failing);
    let mut c = (*h.config.get()).clone();
    c.backend.url = fixed.url();
    c.backend.token = "new-token".to_string();
    h.reload(c);
    wait_delivered(&fixed, &ids);
    assert_eq!(
        fixed.requests()[0].header("authorization"),
        Some("Bearer new-token")
    );
    assert_eq!(broken.request_count(), 1);
}

use crate::common::logs::{capture as capture_logs, logged, logged_since, mark};

#[test]
fn state_changes_are_logged_once_each_and_the_token_never() {
    capture_logs();
    let from = mark();
    let backend = answering(Behaviour::Status(401));
    let host = backend.addr().to_string();
    let (h, ids) = Harness::posting(&backend, 2, |c| {
        c.backend.token = "tok-Zq8-never-log-me".to_string();
    });
    wait_for("several failed tries", || backend.request_count() >= 5);
    backend.set(Behaviour::Status(503));
    more_tries(&backend, "more failed tries", 3);
    backend.set(Behaviour::Ok);
    wait_delivered(&backend, &ids);
    let ok_again = format!("backend {host} ok again");
    wait_for("ok log", || {
        !logged_since(from, log::Level::Info, &ok_again).is_empty()
    });

    let failing = logged_since(from, log::Level::Warn, &format!("backend {host} failing"));
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert!(failing[0].contains("HTTP 401"), "{failing:?}");
    let ok = logged_since(from, log::Level::Info, &ok_again);
    assert_eq!(ok.len(), 1, "{ok:?}");
    // Nothing else about this backend above debug level.
    let all = logged_since(from, log::Level::Info, &host);
    assert_eq!(all.len(), 2, "{all:?}");
    // Our own lines at any level, and every line down to debug, never show
    // the token. (ureq_proto's trace level hex-dumps the raw request, so the
    // daemon's logger must keep dependencies at debug or above.)
    let leaks: Vec<(log::Level, String, String)> = crate::common::logs::lines()
        .iter()
        .filter(|(l, target, m)| {
            (target.starts_with("metricsd") || *l <= log::Level::Debug) && m.contains("tok-Zq8")
        })
        .cloned()
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
    assert!(h.status.last_error().iter().all(|e| !e.contains("tok-Zq8")));
}

#[test]
fn a_receiver_that_rejects_everything_trips_the_breaker_after_five_rows() {
    capture_logs();
    let backend = answering(Behaviour::Status(400));
    let (h, ids) = Harness::posting(&backend, 20, |c| {
        c.backend.max_attempts = 1;
        c.backend.retry_backoff = vec![Duration::from_millis(50)];
    });
    h.wait_state(BackendState::Failing);
    // Well past the trip: the breaker holds the rest back.
    more_tries(&backend, "more rejected tries", 5);
    let stats = h.stats();
    // max_attempts = 1: each of the five is dead at its first rejection;
    // the sixth and later stay pending.
    assert_eq!(stats.dead, 5, "{stats:?}");
    assert_eq!(stats.pending, 15);
    assert_eq!(h.dead_ids(), ids[..5].to_vec());
    let host = backend.addr().to_string();
    let broken = logged(log::Level::Error, &format!("backend {host} rejected 5"));
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(broken[0].contains("HTTP 400"), "{broken:?}");

    // It accepts again: everything still pending is delivered, in order.
    backend.set(Behaviour::Ok);
    wait_delivered(&backend, &ids[5..]);
    h.wait_state(BackendState::Ok);
    assert_eq!(h.stats().dead, 5);
}

#[test]
fn rows_older_than_max_age_are_removed_unsent_and_counted() {
    capture_logs();
    let from = mark();
    let backend = Backend::start();
    backend.down();
    let mut h = Harness::new(&backend.url(), |c| {
        c.backend.max_age = Duration::from_secs(3600);
    });
    let max_pending = h.config.get().queue.max_pending;
    let old_at =
        crate::common::rows::timestamp(std::time::SystemTime::now() - Duration::from_secs(7200));
    let mut old = Vec::new();
    for i in 0..3 {
        let id = crate::common::rows::event_id();
        let payload = crate::common::rows::flat_payload(&id, &old_at, i);
        h.queue
            .insert(&id, &old_at, &payload, &[], &["backend"], max_pending)
            .unwrap();
        old.push(id);
    }
    let fresh = h.insert(2);
    backend.up();
    h.start();
    wait_delivered(&backend, &fresh);
    for id in &old {
        assert!(requests_for(&backend, id).is_empty(), "{id} was sent");
    }
    let sink = h.status.sink(metricsd::config::SinkKind::Backend);
    wait_for("expired count", || {
        sink.expired_total.load(Ordering::Relaxed) == 3
    });
    // The backend has the last row before the poster removes it.
    wait_for("empty queue", || h.stats().pending == 0);
    let host = backend.addr().to_string();
    let warned: Vec<String> = logged_since(from, log::Level::Warn, "older than max_age")
        .into_iter()
        .filter(|l| l.contains(&host))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
}

#[test]
fn a_fresh_row_waits_the_splay_when_caught_up_and_a_backlog_does_not() {
    let backend = Backend::start();
    let splay = Duration::from_millis(1500);
    let mut h = Harness::new(&backend.url(), |c| {
        c.backend.splay = metricsd::config::Splay::Fixed(splay);
    });
    // A backlog at start drains at once.
    let backlog = h.insert(3);
    let started = Instant::now();
    h.start();
    wait_for("backlog", || backend.delivered_ids().len() == 3);
    assert!(started.elapsed() < splay, "{:?}", started.elapsed());
    delivered_in_order(&backend, &backlog);
    // Caught up: the next row waits the splay, counted from its time.
    let sink = h.status.sink(metricsd::config::SinkKind::Backend);
    wait_for("the poster to find the queue empty", || {
        sink.caught_up.load(Ordering::Acquire)
    });
    let inserted = Instant::now();
    let fresh = h.insert(1);
    wait_for("fresh row", || backend.delivered_ids().len() == 4);
    let waited = inserted.elapsed();
    assert!(waited >= splay - Duration::from_millis(50), "{waited:?}");
    assert_eq!(backend.delivered_ids()[3], fresh[0]);
}

#[test]
fn the_breaker_holds_across_a_restart_so_a_broken_receiver_kills_no_more_rows() {
    let backend = answering(Behaviour::Status(400));
    let (mut h, ids) = Harness::posting(&backend, 20, |c| {
        c.backend.max_attempts = 1;
        c.backend.retry_backoff = vec![Duration::from_millis(50)];
    });
    wait_for("five dead rows and the breaker open", || {
        h.stats().dead == 5 && h.status.backend_state() == BackendState::Failing
    });
    h.restart();
    // The restarted poster keeps sending (and being refused) the sixth
    // row, which the breaker no longer lets go dead.
    more_tries(&backend, "tries after the restart", 5);
    let stats = h.stats();
    assert_eq!((stats.dead, stats.pending), (5, 15), "{stats:?}");
    assert_eq!(h.dead_ids(), ids[..5].to_vec());
    h.wait_state(BackendState::Failing);
    // Accepted again: the run ends, and the rest is delivered.
    backend.set(Behaviour::Ok);
    wait_delivered(&backend, &ids[5..]);
    h.wait_state(BackendState::Ok);
}

#[test]
fn the_state_turns_failing_again_after_an_answer_in_the_middle_of_an_outage() {
    let backend = answering(Behaviour::Status(503));
    let (h, _ids) = Harness::posting(&backend, 1, |c| {
        c.backend.max_attempts = 10;
        c.backend.retry_backoff = vec![Duration::from_millis(50)];
    });
    h.wait_state(BackendState::Failing);
    // The receiver answers for a moment, calling the row bad: it works.
    backend.set(Behaviour::Status(400));
    wait_for("a rejection counted", || {
        h.queue.oldest("backend", 1).unwrap()[0].attempts >= 1
    });
    h.wait_state(BackendState::Ok);
    // Down again: the state says so, not "ok" until the next 2xx.
    backend.set(Behaviour::Status(503));
    more_tries(&backend, "more 503s", 2);
    h.wait_state(BackendState::Failing);
}

#[test]
fn a_sink_removed_and_configured_again_during_a_request_keeps_one_poster() {
    let backend = answering(Behaviour::Hang);
    let (mut h, first) = Harness::posting(&backend, 1, |c| {
        c.backend.timeout = Duration::from_secs(2);
    });
    wait_for("a request in flight", || backend.request_count() >= 1);
    let url = h.config.get().backend.url.clone();
    let mut c = (*h.config.get()).clone();
    c.backend.url = String::new();
    h.reload(c);
    let mut c = (*h.config.get()).clone();
    c.backend.url = url;
    h.reload(c);
    // The hanging request times out and is tried again, now answered.
    backend.set(Behaviour::Ok);
    wait_delivered(&backend, &first);
    // Each new row wakes every poster of the sink: with two, rows would
    // go out twice.
    let mut expected = first;
    for _ in 0..10 {
        expected.extend(h.insert(1));
        wait_for("the row delivered", || h.stats().pending == 0);
    }
    wait_delivered(&backend, &expected);
}

#[test]
fn a_reload_that_leaves_the_sink_as_it_was_keeps_the_servers_retry_after() {
    let backend = answering(Behaviour::RetryAfter(503, "3600".to_string()));
    let (mut h, ids) = Harness::posting(&backend, 1, |c| {
        c.backend.max_retry_after = Duration::from_secs(3600);
    });
    wait_for("the first try", || backend.request_count() == 1);
    h.wait_state(BackendState::Failing);
    // A reload of something else (as a fleet-wide `systemctl reload` does).
    let mut c = (*h.config.get()).clone();
    c.queue.max_dead += 1;
    h.reload(c);
    // A cut-short wait shows at once as a second try: give it a moment.
    let retried =
        crate::common::wait_until(Duration::from_millis(500), || backend.request_count() > 1);
    assert!(!retried, "the reload cut the Retry-After short");
    // A change to the sink itself is tried at once.
    backend.set(Behaviour::Ok);
    let mut c = (*h.config.get()).clone();
    c.backend.token = "new-token".to_string();
    h.reload(c);
    wait_delivered(&backend, &ids);
    assert_eq!(
        backend.requests()[1].header("authorization"),
        Some("Bearer new-token")
    );
}
