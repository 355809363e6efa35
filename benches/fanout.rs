//! Fan-out of snapshots to many WebSocket clients.
//!
//! The stream server runs in a child process (this same binary, started with
//! `FANOUT_ROLE=server`) so its resident memory can be read apart from the
//! clients'. The parent connects the clients (one thread, a current-thread
//! runtime), then asks the child to publish snapshots of realistic size and
//! measures, for every client, the time from the publish call to the arrival
//! of that snapshot (both processes read the same wall clock).
//!
//! Prints: handshake rate up to max_clients, server RSS per connected client,
//! and publish-to-receive latency p50/p99/max. Then, with the clients gone,
//! the listener under pressure: `/health` latency p50/p99 on its own, and
//! while 1,000 idle connections and 1,000 request heads sent one byte a
//! second are held (each reopened as soon as the server closes it); and the
//! kernel send queue that 64 clients that never read pin.
//!
//! Run: `cargo bench --bench fanout` (FANOUT_CLIENTS, FANOUT_ROUNDS,
//! FANOUT_INTERVAL_MS override the defaults 1000, 20, 200; FANOUT_IDLE and
//! FANOUT_SLOW the 1,000 and 1,000 of the pressure phase).

#[path = "../tests/it/common/stream_client.rs"]
mod stream_client;

use futures_util::{StreamExt, TryStreamExt};
use metricsd::config::{Config, SharedConfig};
use metricsd::hub::Hub;
use metricsd::shutdown::Shutdown;
use metricsd::status::Status;
use metricsd::stream;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::Message;

/// Interfaces per snapshot: with 8 cores, 3 mounts and 5 top processes this
/// gives a stream-form JSON of about 2.5 KB, like a typical server.
const INTERFACES: usize = 4;
/// Upgrades in flight at once while connecting the clients.
const CONNECT_CONCURRENCY: usize = 64;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Raises the open-files limit to the hard limit (each client is a socket).
fn raise_nofile(wanted: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let target = (wanted as libc::rlim_t).min(limit.rlim_max);
        if limit.rlim_cur < target {
            limit.rlim_cur = target;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// The child: a stream server driven by commands on stdin.
fn server_main() {
    let max_clients: usize = env_or("FANOUT_MAX_CLIENTS", 1000);
    raise_nofile(max_clients as u64 + 256);
    let mut config = Config::default();
    config.node_id = "bench-node".into();
    // Long enough that /health never turns stale (nothing samples here).
    config.interval = Duration::from_secs(3600);
    config.stream.listen = "127.0.0.1:0".parse().unwrap();
    config.stream.max_clients = max_clients;
    let listener = stream::bind(config.stream.listen).expect("bind");
    let addr = listener.local_addr().unwrap();
    let hub = Hub::new();
    let shutdown = Shutdown::new();
    let handle = stream::spawn(
        listener,
        hub.clone(),
        SharedConfig::new(config),
        Arc::new(Status::default()),
        shutdown.clone(),
    )
    .expect("spawn");
    let mut out = std::io::stdout().lock();
    writeln!(out, "addr {addr}").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("publish") => {
                let seq: u64 = words.next().unwrap().parse().unwrap();
                // Serialised before the clock starts, as the sampler does.
                let snapshot = Arc::new(stream_client::snapshot(seq, INTERFACES));
                let json = snapshot.stream_json_text();
                let len = json.len();
                let at = unix_nanos();
                hub.publish(snapshot, json);
                writeln!(out, "published {seq} {at} {len}").unwrap();
            }
            Some("publish-big") => {
                let seq: u64 = words.next().unwrap().parse().unwrap();
                let snapshot = Arc::new(stream_client::snapshot(seq, 1500));
                let json = snapshot.stream_json_text();
                let len = json.len();
                hub.publish(snapshot, json);
                writeln!(out, "published {seq} {} {len}", unix_nanos()).unwrap();
            }
            Some("rss") => writeln!(out, "rss {}", rss_kib(std::process::id())).unwrap(),
            _ => break,
        }
        out.flush().unwrap();
    }
    shutdown.trigger();
    handle.join().unwrap();
}

/// The parent's handle on the child server.
struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ServerProcess {
    fn start(max_clients: usize) -> (ServerProcess, SocketAddr) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("FANOUT_ROLE", "server")
            .env("FANOUT_MAX_CLIENTS", max_clients.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut server = ServerProcess {
            child,
            stdin,
            stdout,
        };
        let line = server.read_line();
        let addr = line.strip_prefix("addr ").unwrap().parse().unwrap();
        (server, addr)
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the server process ended");
        line.trim_end().to_string()
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.read_line()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The seq of a snapshot message, found without a full JSON parse so the
/// client side adds as little as possible to the measured latency.
fn seq_of(text: &str) -> Option<u64> {
    let start = text.find("\"seq\":")? + 6;
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(nanos: u128) -> f64 {
    nanos as f64 / 1e6
}

fn main() {
    if std::env::var_os("FANOUT_ROLE").is_some() {
        return server_main();
    }
    let clients: usize = env_or("FANOUT_CLIENTS", 1000);
    let rounds: u64 = env_or("FANOUT_ROUNDS", 20);
    let interval = Duration::from_millis(env_or("FANOUT_INTERVAL_MS", 200));
    raise_nofile(clients as u64 + 4096);

    let (server, addr) = ServerProcess::start(clients);
    let server = Arc::new(Mutex::new(server));
    let pid = server.lock().unwrap().child.id();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(server.clone(), pid, addr, clients, rounds, interval));
    runtime.block_on(pressure(addr));
    runtime.block_on(stalled_readers(server, addr));
}

async fn run(
    server: Arc<Mutex<ServerProcess>>,
    pid: u32,
    addr: SocketAddr,
    clients: usize,
    rounds: u64,
    interval: Duration,
) {
    let ask = |command: String| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || server.lock().unwrap().ask(&command))
    };
    let rss_before = rss_kib(pid);

    // Handshakes up to max_clients, each complete once the welcome arrived.
    let started = Instant::now();
    let mut sockets: Vec<stream_client::Ws> = futures_util::stream::iter(0..clients)
        .map(|_| async move {
            let mut ws = stream_client::connect_with(addr, "/", &[]).await?;
            match ws.next().await {
                Some(Ok(Message::Text(_))) => Ok::<_, tokio_tungstenite::tungstenite::Error>(ws),
                other => panic!("no welcome: {other:?}"),
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .try_collect()
        .await
        .expect("connect");
    let connect_time = started.elapsed();
    let refused = stream_client::refused_status(addr, "/", &[]).await;
    assert_eq!(refused, 503, "client {} over max_clients", clients + 1);
    let rss_connected = rss_kib(pid);

    // Every client records when each snapshot arrives, until the last one.
    let mut readers = Vec::with_capacity(clients);
    for mut ws in sockets.drain(..) {
        readers.push(tokio::spawn(async move {
            let mut seen: Vec<(u64, u128)> = Vec::new();
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Text(text) = message {
                    let at = unix_nanos();
                    let seq = seq_of(&text).expect("a snapshot");
                    seen.push((seq, at));
                    if seq == rounds {
                        break;
                    }
                }
            }
            (seen, ws)
        }));
    }

    let cpu_before = cpu_time(pid);
    let mut published: Vec<u128> = vec![0; rounds as usize + 1];
    let mut json_len = 0;
    let mut next_round = tokio::time::Instant::now();
    for seq in 1..=rounds {
        tokio::time::sleep_until(next_round).await;
        next_round += interval;
        let reply = ask(format!("publish {seq}")).await.unwrap();
        let mut words = reply.split_whitespace().skip(1);
        assert_eq!(words.next().unwrap().parse::<u64>().unwrap(), seq);
        published[seq as usize] = words.next().unwrap().parse().unwrap();
        json_len = words.next().unwrap().parse().unwrap();
    }

    let mut latencies: Vec<u128> = Vec::with_capacity(clients * rounds as usize);
    let mut per_round: Vec<Vec<u128>> = vec![Vec::new(); rounds as usize + 1];
    let mut skipped = 0usize;
    let mut open = Vec::with_capacity(clients);
    for reader in readers {
        let (seen, ws) = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("every client got the last snapshot within 30 s")
            .unwrap();
        skipped += rounds as usize - seen.len();
        for (seq, at) in seen {
            latencies.push(at.saturating_sub(published[seq as usize]));
            per_round[seq as usize].push(at.saturating_sub(published[seq as usize]));
        }
        open.push(ws);
    }
    let rss_after = rss_kib(pid);
    let server_cpu = cpu_time(pid).saturating_sub(cpu_before);
    latencies.sort_unstable();

    let per_client = |kib: u64| (kib.saturating_sub(rss_before)) as f64 * 1024.0 / clients as f64;
    println!(
        "fanout: {clients} clients, {rounds} snapshots of {json_len} bytes every {interval:?}"
    );
    println!(
        "  handshakes: {clients} in {:.2} s = {:.0} connections/s (upgrade + welcome, {CONNECT_CONCURRENCY} in flight); client {} got 503",
        connect_time.as_secs_f64(),
        clients as f64 / connect_time.as_secs_f64(),
        clients + 1
    );
    println!(
        "  server RSS: {rss_before} KiB idle, {rss_connected} KiB with {clients} clients ({:.1} KiB/client), {rss_after} KiB after {rounds} snapshots ({:.1} KiB/client)",
        per_client(rss_connected) / 1024.0,
        per_client(rss_after) / 1024.0
    );
    println!(
        "  publish -> receive latency over {} deliveries ({skipped} skipped): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().unwrap())
    );
    println!(
        "  server CPU for the fan-out: {:.0} ms = {:.1} us per delivery; load average at the end: {}",
        server_cpu.as_secs_f64() * 1e3,
        server_cpu.as_secs_f64() * 1e6 / (clients as f64 * rounds as f64),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    if std::env::var_os("FANOUT_VERBOSE").is_some() {
        for (seq, l) in per_round.iter_mut().enumerate().skip(1) {
            l.sort_unstable();
            println!(
                "    round {seq}: p50 {:.2} ms, max {:.2} ms",
                ms(percentile(l, 50.0)),
                ms(*l.last().unwrap())
            );
        }
    }
    drop(open);
}

/// One `/health` request: the time from connect to the whole answer, or
/// `None` when it failed or took over 10 s.
async fn health_latency(addr: SocketAddr) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        raw.starts_with(b"HTTP/1.1 200").then_some(())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
        .map(|()| started.elapsed())
}

/// `/health` latencies of `count` requests, one every 20 ms, measured from a
/// thread of their own (so the attackers' tasks do not delay the measuring
/// client); prints them.
async fn health_figures(label: &'static str, addr: SocketAddr, count: usize) {
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(measure_health(label, addr, count))
    })
    .await
    .unwrap();
}

async fn measure_health(label: &str, addr: SocketAddr, count: usize) {
    let mut nanos = Vec::with_capacity(count);
    let mut failed = 0;
    for _ in 0..count {
        match health_latency(addr).await {
            Some(took) => nanos.push(took.as_nanos()),
            None => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nanos.sort_unstable();
    if nanos.is_empty() {
        println!("  /health {label}: all {count} requests failed");
        return;
    }
    println!(
        "  /health {label}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} requests, {failed} failed",
        ms(percentile(&nanos, 50.0)),
        ms(percentile(&nanos, 99.0)),
        ms(*nanos.last().unwrap()),
        nanos.len()
    );
}

/// /health alone, then while idle and slow connections are held.
async fn pressure(addr: SocketAddr) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idle: usize = env_or("FANOUT_IDLE", 1000);
    let slow: usize = env_or("FANOUT_SLOW", 1000);
    println!("listener pressure: {idle} idle connections, {slow} heads at one byte a second");
    health_figures("alone", addr, 200).await;

    let stop = Arc::new(AtomicBool::new(false));
    let reopened = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::with_capacity(idle + slow);
    for i in 0..idle + slow {
        let (stop, reopened) = (stop.clone(), reopened.clone());
        let trickle = i >= idle;
        attackers.push(tokio::spawn(async move {
            let mut first = true;
            while !stop.load(Relaxed) {
                let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if !std::mem::take(&mut first) {
                    reopened.fetch_add(1, Relaxed);
                }
                if trickle {
                    // One byte a second until the server closes the connection.
                    for byte in b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
                        .iter()
                        .cycle()
                    {
                        if stop.load(Relaxed) || stream.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                } else {
                    // Nothing sent; wait until the server closes it.
                    let mut sink = [0u8; 512];
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 || stop.load(Relaxed) {
                            break;
                        }
                    }
                }
            }
        }));
    }
    // Let them all connect and the server's shedding reach a steady state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = reopened.load(Relaxed);
    let started = Instant::now();
    health_figures("under pressure", addr, 200).await;
    let rate = (reopened.load(Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    println!(
        "  meanwhile the server closed {rate:.0} held connections a second (shed for newer ones or past the 3 s head limit), each reopened at once"
    );
    stop.store(true, Relaxed);
    for attacker in attackers {
        attacker.abort();
    }
}

/// 64 clients that never read while ~400 KB snapshots are published: the
/// bytes the kernel holds for them (the server side's send queues).
async fn stalled_readers(server: Arc<Mutex<ServerProcess>>, addr: SocketAddr) {
    const STALLED: usize = 64;
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        stalled.push(stream_client::connect(addr).await);
    }
    let ports: Vec<SocketAddr> = stalled
        .iter()
        .map(|ws| ws.get_ref().local_addr().unwrap())
        .collect();
    for seq in 1..=10 {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            server.lock().unwrap().ask(&format!("publish-big {seq}"))
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let queued: u64 = ports
        .iter()
        .filter_map(|client| stream_client::send_queue_bytes(addr, *client))
        .sum();
    println!(
        "stalled readers: {STALLED} clients that never read, 10 snapshots of ~400 KB each: {:.1} MiB waiting in the server's send queues ({:.0} KiB per client)",
        queued as f64 / (1024.0 * 1024.0),
        queued as f64 / 1024.0 / STALLED as f64
    );
    drop(stalled);
}
