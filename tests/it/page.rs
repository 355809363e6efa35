//! The live page (SPEC §4.6) in a real browser: Debian's headless Chromium,
//! driven by chromedriver, loads `/` from the real daemon sampling every
//! second. What it shows is checked against the snapshots this test reads
//! from the stream itself; its network and console logs are checked too.
//! Screenshots go to `$CARGO_TARGET_TMPDIR/page/`; with
//! `METRICSD_UPDATE_SCREENSHOT=1` the 1280 px one also replaces
//! `docs/page-1280.png`.

use crate::common::browser::Browser;
use crate::common::daemon::{Daemon, Setup};
use crate::common::{wait_for, wait_until};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

const START: Duration = Duration::from_secs(20);
const LONG: Duration = Duration::from_secs(30);
/// Base64-like, as `openssl rand -base64` makes them: "+", "/" and "=" must
/// reach the daemon as typed after `#token=`.
const TOKEN: &str = "page+s3cret/x==";

/// Snapshots read from the stream by a thread of the test, newest last.
struct StreamWatch {
    seen: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StreamWatch {
    fn start(setup: &Setup, token: Option<&str>) -> StreamWatch {
        let tcp = TcpStream::connect(setup.stream_addr()).expect("connect to the stream");
        tcp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
        let url = format!("ws://{}/{query}", setup.stream_addr());
        let (mut ws, _) = tungstenite::client::client(url, tcp).expect("WebSocket handshake");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen_t, stop_t) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop_t.load(Ordering::SeqCst) {
                match ws.read() {
                    Ok(Message::Text(text)) => {
                        let v: Value = serde_json::from_str(text.as_str()).unwrap();
                        if v["type"] == "snapshot" {
                            seen_t.lock().unwrap().push(v);
                        }
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        });
        StreamWatch {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn latest(&self) -> Option<Value> {
        self.seen.lock().unwrap().last().cloned()
    }

    fn with_timestamp(&self, ts: &str) -> Option<Value> {
        let seen = self.seen.lock().unwrap();
        seen.iter().find(|s| s["timestamp"] == ts).cloned()
    }

    /// How many snapshots taken after `after` up to and including `upto`.
    fn count_between(&self, after: &str, upto: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter_map(|s| s["timestamp"].as_str())
            .filter(|t| *t > after && *t <= upto)
            .count()
    }
}

impl Drop for StreamWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the page shows, read in one go (one rendering).
const PAGE_STATE: &str = r##"
const q = (s) => document.querySelector(s);
const points = {};
for (const p of document.querySelectorAll(".chart path[data-series]")) {
  const drawn = (p.getAttribute("d").match(/[ML]/g) || []).length;
  points[p.closest(".chart").id + "/" + p.dataset.series] = [Number(p.dataset.points), drawn];
}
const mount = arguments[0] ? document.querySelector('[data-mount="' + CSS.escape(arguments[0]) + '"]') : null;
const sample = q("#last-sample");
return {
  state: q("#state").textContent,
  notice: q("#notice").hidden ? null : q("#notice").textContent,
  node: q("#node-id").textContent,
  ts: sample ? sample.dataset.timestamp : null,
  cpu: q("#cpu-usage") ? q("#cpu-usage").textContent : null,
  mem: q("#memory-used") ? q("#memory-used").textContent : null,
  mount: mount ? mount.textContent : null,
  points,
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
};
"##;

/// Renders a host with 64 cores, 40 mounts and 100 interfaces (built from
/// the latest real snapshot) and measures the layout before anything repaints.
const BIG_HOST: &str = r##"
const s = JSON.parse(arguments[0]);
const m = s.metrics;
m.cpu.cpu_per_core_percent = Array.from({ length: 64 }, (_, i) => (i * 7) % 100);
const fs = Object.values(m.disk.disk_usage)[0] || { total_gb: 1, used_gb: 0.5, free_gb: 0.5, usage_percent: 50 };
m.disk.disk_usage = {};
for (let i = 0; i < 40; i++) m.disk.disk_usage["/srv/volumes/a-rather-long-mount-point-name-" + i] = fs;
const nic = Object.values(m.network.interfaces)[0] || {};
m.network.interfaces = {};
for (let i = 0; i < 100; i++) m.network.interfaces["veth" + (1000 + i) + "abcdef"] = nic;
render(s);
const cards = [...document.querySelectorAll(".card")];
const tallest = Math.max(...cards.map((c) => c.getBoundingClientRect().height));
return {
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  columns: new Set(cards.map((c) => Math.round(c.getBoundingClientRect().left))).size,
  tallest,
  cores: document.querySelectorAll("#panel-cpu .core").length,
  mounts: document.querySelectorAll("#panel-filesystems tbody tr").length,
  interfaces: document.querySelectorAll("#panel-network tbody tr").length,
};
"##;

/// Adds the latest snapshot again, dated on the next full hour (a time every
/// chart has a label for, now at its right edge), and counts the time
/// labels drawn past their chart's edges.
const EDGE_LABELS: &str = r##"
const s = JSON.parse(arguments[0]);
const hour = 3600 * 1000;
s.timestamp = new Date(Math.ceil((Date.parse(s.timestamp) + 1) / hour) * hour).toISOString();
addSnapshot(s);
drawCharts();
let cut = 0, labels = 0;
for (const svg of document.querySelectorAll(".chart svg")) {
  const width = Number(svg.getAttribute("width"));
  for (const tick of svg.querySelectorAll("text.tick")) {
    labels++;
    const b = tick.getBBox();
    if (b.x < -0.5 || b.x + b.width > width + 0.5) cut++;
  }
}
return { cut, labels };
"##;

fn page_state(browser: &Browser, mount: &str) -> Value {
    browser.eval(PAGE_STATE, json!([mount]))
}

fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("page");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn save_screenshot(browser: &Browser, name: &str) -> PathBuf {
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
    let path = output_dir().join(name);
    std::fs::write(&path, png).unwrap();
    path
}

fn start_daemon(setup: &Setup) -> Daemon {
    let mut daemon = setup.start(&[]);
    daemon.wait_listening(setup.stream_addr(), START);
    daemon
}

fn history_len(setup: &Setup, token: Option<&str>) -> usize {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(format!("http://{}/api/history", setup.stream_addr()));
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let mut response = request.call().expect("GET /api/history");
    assert_eq!(response.status(), 200);
    let rows: Vec<Value> =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    rows.len()
}

/// The figures the page should show for `snapshot`, formatted as it does.
fn expected_figures(snapshot: &Value, mount: &str) -> (String, String, String, String) {
    let m = &snapshot["metrics"];
    let fixed = |v: &Value, unit: &str| format!("{:.2} {unit}", v.as_f64().expect("a number"));
    let usage = &m["disk"]["disk_usage"][mount]["usage_percent"];
    (
        snapshot["node_id"].as_str().unwrap().to_string(),
        fixed(&m["cpu"]["cpu_usage_percent"], "%"),
        fixed(&m["memory"]["memory_used_gb"], "GiB"),
        fixed(usage, "%"),
    )
}

fn shown_figures(state: &Value) -> (String, String, String, String) {
    let s = |k: &str| state[k].as_str().unwrap_or("").to_string();
    (s("node"), s("cpu"), s("mem"), s("mount"))
}

#[test]
fn page_shows_the_host_live_from_its_own_origin_only() {
    let setup = Setup::new("1s", "", "");
    let _daemon = start_daemon(&setup);
    let watch = StreamWatch::start(&setup, None);
    wait_for("a snapshot on the stream", START, || {
        watch.latest().is_some()
    });
    let mount = watch.latest().unwrap()["metrics"]["disk"]["disk_usage"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .expect("the host has a mounted filesystem");
    // Some history first, so the charts must start from it.
    wait_for("5 rows of history", LONG, || history_len(&setup, None) >= 5);
    let kept = history_len(&setup, None);

    let browser = Browser::start();
    browser.set_viewport(1280, 800);
    let origin = format!("http://{}", setup.stream_addr());
    // What the browser loaded before (its own start page) is not the page's.
    browser.requested_urls();
    browser.goto(&format!("{origin}/"));

    let mut first = Value::Null;
    wait_for("the page's first snapshot", LONG, || {
        first = page_state(&browser, &mount);
        first["ts"].as_str().is_some_and(|t| !t.is_empty())
    });
    let load_points = first["points"]["chart-load/1 min"][0].as_u64().unwrap();
    assert!(
        load_points as usize >= kept,
        "the load chart starts from history ({kept} rows) but has {load_points} points: {first}"
    );
    assert_eq!(first["state"], "live", "{first}");

    // The figures shown are those of the latest snapshot.
    let mut last = (Value::Null, None);
    let matched = wait_until(LONG, || {
        let state = page_state(&browser, &mount);
        let latest = watch.latest().unwrap();
        let ok = state["ts"] == latest["timestamp"]
            && shown_figures(&state) == expected_figures(&latest, &mount);
        last = (state, Some(latest));
        ok
    });
    assert!(
        matched,
        "page never showed the latest snapshot's figures; page {} vs snapshot {}",
        last.0,
        last.1.unwrap_or_default()
    );

    // Every chart gains one point per snapshot, drawn as it is counted.
    let series = [
        "chart-cpu/total",
        "chart-memory/memory",
        "chart-load/1 min",
        "chart-network/received",
        "chart-disk/read",
    ];
    let mut previous = page_state(&browser, &mount);
    let mut changes = 0;
    let deadline = Instant::now() + LONG;
    while changes < 3 {
        assert!(
            Instant::now() < deadline,
            "the page stopped updating: {previous}"
        );
        let state = page_state(&browser, &mount);
        if state["ts"] != previous["ts"] {
            let (before, now) = (
                previous["ts"].as_str().unwrap(),
                state["ts"].as_str().unwrap(),
            );
            let taken = watch.count_between(before, now) as u64;
            assert!(taken >= 1, "page shows {now}, which the stream never sent");
            for name in series {
                let (old, new) = (&previous["points"][name], &state["points"][name]);
                assert_eq!(
                    new[0].as_u64().unwrap(),
                    old[0].as_u64().unwrap() + taken,
                    "{name} after {taken} snapshot(s): {old} -> {new}"
                );
                assert_eq!(new[0], new[1], "{name}: counted and drawn points differ");
            }
            let snapshot = watch.with_timestamp(now).expect("the page's snapshot");
            assert_eq!(
                shown_figures(&state),
                expected_figures(&snapshot, &mount),
                "figures of {now}"
            );
            changes += 1;
        }
        previous = state;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(previous["scrollWidth"].as_u64() <= previous["innerWidth"].as_u64());
    let wide = save_screenshot(&browser, "page-1280.png");
    if std::env::var_os("METRICSD_UPDATE_SCREENSHOT").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&wide, docs.join("page-1280.png")).unwrap();
    }

    // A big host scrolls within its panels and never widens the page.
    let latest = watch.latest().unwrap().to_string();
    let big = browser.eval(BIG_HOST, json!([latest]));
    assert_eq!(
        (&big["cores"], &big["mounts"], &big["interfaces"]),
        (&json!(64), &json!(40), &json!(100)),
        "{big}"
    );
    assert!(
        big["scrollWidth"].as_u64() <= big["innerWidth"].as_u64(),
        "{big}"
    );
    assert!(
        big["columns"].as_u64().unwrap() >= 2,
        "1280 px has columns: {big}"
    );
    assert!(
        big["tallest"].as_f64().unwrap() < 800.0,
        "a panel grew: {big}"
    );

    // Phone width: one column, nothing wider than the screen.
    browser.set_viewport(360, 800);
    let mut narrow = Value::Null;
    wait_for("the page at 360 px to fit", LONG, || {
        narrow = page_state(&browser, &mount);
        narrow["innerWidth"] == 360 && narrow["scrollWidth"].as_u64() <= Some(360)
    });
    let shown = narrow["ts"].clone();
    wait_for("a fresh snapshot at 360 px", LONG, || {
        page_state(&browser, &mount)["ts"] != shown
    });
    let state = page_state(&browser, &mount);
    assert!(state["scrollWidth"].as_u64() <= Some(360), "{state}");
    save_screenshot(&browser, "page-360.png");
    let big = browser.eval(BIG_HOST, json!([latest]));
    assert!(big["scrollWidth"].as_u64() <= Some(360), "{big}");
    assert_eq!(big["columns"], 1, "{big}");
    assert!(
        big["tallest"].as_f64().unwrap() < 800.0,
        "a panel grew: {big}"
    );

    // A time label at the newest point is not cut off at the chart's edge
    // (last, since it charts a point up to an hour ahead).
    let edge = browser.eval(EDGE_LABELS, json!([latest]));
    assert!(edge["labels"].as_u64() > Some(0), "{edge}");
    assert_eq!(edge["cut"], 0, "time labels cut off: {edge}");

    // Nothing but the listener's origin was asked for; nothing went wrong.
    let urls = browser.requested_urls();
    let ws_origin = format!("ws://{}", setup.stream_addr());
    assert!(
        urls.iter()
            .any(|u| u.starts_with(&format!("{origin}/api/history"))),
        "{urls:?}"
    );
    assert!(urls.iter().any(|u| u.starts_with(&ws_origin)), "{urls:?}");
    let foreign: Vec<&String> = urls
        .iter()
        .filter(|u| {
            !u.starts_with(&format!("{origin}/")) && !u.starts_with(&format!("{ws_origin}/"))
        })
        .collect();
    assert!(foreign.is_empty(), "requests to other origins: {foreign:?}");
    let errors: Vec<Value> = browser
        .logs("browser")
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

#[test]
fn page_with_a_token_works_from_the_fragment_and_says_when_it_is_missing() {
    let setup = Setup::new("1s", "", &format!("token = \"{TOKEN}\"\n"));
    let _daemon = start_daemon(&setup);
    let browser = Browser::start();
    let origin = format!("http://{}", setup.stream_addr());

    browser.goto(&format!("{origin}/"));
    let mut state = Value::Null;
    wait_for("the page to ask for a token", LONG, || {
        state = page_state(&browser, "");
        state["state"] == "token needed"
    });
    let notice = state["notice"].as_str().unwrap_or_default();
    assert!(
        notice.contains("needs a token") && notice.contains("#token="),
        "{state}"
    );
    assert!(
        state["ts"].is_null(),
        "no host data without the token: {state}"
    );

    browser.goto(&format!("{origin}/#token=wrong"));
    wait_for("the page to say the token was refused", LONG, || {
        state = page_state(&browser, "");
        state["state"] == "token needed"
            && state["notice"]
                .as_str()
                .is_some_and(|n| n.contains("refused"))
    });

    browser.goto(&format!("{origin}/#token={TOKEN}"));
    wait_for("the page to go live with the token", LONG, || {
        state = page_state(&browser, "");
        state["state"] == "live" && state["ts"].as_str().is_some_and(|t| !t.is_empty())
    });
    assert!(state["notice"].is_null(), "{state}");
    let shown = state["ts"].clone();
    wait_for("the next snapshot with the token", LONG, || {
        page_state(&browser, "")["ts"] != shown
    });
    assert!(history_len(&setup, Some(TOKEN)) >= 1);
}

#[test]
fn page_shows_reconnecting_and_resumes_when_the_daemon_is_back() {
    let setup = Setup::new("1s", "", "");
    let mut daemon = start_daemon(&setup);
    let browser = Browser::start();
    browser.goto(&format!("http://{}/", setup.stream_addr()));
    let mut state = Value::Null;
    wait_for("the page to go live", LONG, || {
        state = page_state(&browser, "");
        state["state"] == "live" && state["ts"].as_str().is_some_and(|t| !t.is_empty())
    });
    let before = state["ts"].as_str().unwrap().to_string();

    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.exit_code(LONG), 0, "{}", daemon.log());
    wait_for("the page to say reconnecting", LONG, || {
        page_state(&browser, "")["state"] == "reconnecting"
    });

    let _again = start_daemon(&setup);
    wait_for("the page to resume by itself", LONG, || {
        state = page_state(&browser, "");
        state["state"] == "live" && state["ts"].as_str().is_some_and(|t| *t > *before.as_str())
    });
    // The samples from before the restart are still charted.
    assert!(
        state["points"]["chart-load/1 min"][0].as_u64().unwrap() >= 2,
        "{state}"
    );
}

#[test]
fn page_says_stale_when_the_daemon_serves_but_no_longer_samples() {
    // The fourth sample hangs (debug builds' fault injection): the listener
    // goes on serving, /health turns 503 stale after three intervals, and no
    // snapshot comes to tell the page anything.
    let setup = Setup::new("1s", "", "");
    let mut daemon = setup.start(&[("FAULT_INJECT", "sampler:hang:4")]);
    daemon.wait_listening(setup.stream_addr(), START);
    let browser = Browser::start();
    browser.goto(&format!("http://{}/", setup.stream_addr()));
    wait_for("the page to go live", LONG, || {
        page_state(&browser, "")["state"] == "live"
    });
    let mut state = Value::Null;
    wait_for("the page to say stale", LONG, || {
        state = page_state(&browser, "");
        state["state"] == "stale"
    });
    assert!(
        state["notice"]
            .as_str()
            .is_some_and(|n| n.contains("no sample")),
        "{state}"
    );
    daemon.signal(libc::SIGKILL);
}
