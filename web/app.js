// The metricsd live page: current figures from the WebSocket stream, sinks
// from /health, and one-hour charts started from /api/history. Everything
// comes from this listener; host data is only ever set as text, never as HTML.
"use strict";

const HOUR_MS = 3600 * 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const MIB_PER_S_TO_MBIT = (1024 * 1024 * 8) / 1e6;
const HEALTH_EVERY_MS = 5000;
// Width of one character of a chart's tick labels (10 px digits), generously.
const TICK_CHAR_PX = 7;
// The narrowest time axis, in samples: a few points already span the width.
const MIN_SPAN_SAMPLES = 10;
const TIME_STEPS_MS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800].map((s) => s * 1000);

// The token as written after "#token=", percent-decoded. Not URLSearchParams:
// it reads "+" as a space, and base64 tokens hold "+".
function tokenFromFragment(hash) {
  for (const part of hash.replace(/^#/, "").split("&")) {
    if (!part.startsWith("token=")) continue;
    const raw = part.slice("token=".length);
    try {
      return decodeURIComponent(raw);
    } catch (_) {
      return raw;
    }
  }
  return "";
}

const token = tokenFromFragment(location.hash);
let intervalS = 60;
let socket = null;
let retryMs = 1000;
let lastHealthAt = 0;
let stopped = false;

// ---- small helpers ----------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const get = (obj, ...path) => path.reduce((o, k) => (o === null || o === undefined ? undefined : o[k]), obj);

// A value with its unit, or "–" when the daemon has not given it.
function fmt(v, digits = 2, unit = "") {
  if (!isNum(v)) return "–";
  const text = v.toFixed(digits);
  return unit ? `${text} ${unit}` : text;
}

// Names with numbers in them in number order (enp2 before enp10).
function naturally(a, b) {
  return a.localeCompare(b, "en", { numeric: true });
}

function fmtRate(v) {
  return isNum(v) ? `${fmtBytes(v)}/s` : "–";
}

function fmtInt(v, unit = "") {
  if (!isNum(v)) return "–";
  const text = Math.round(v).toLocaleString("en-US");
  return unit ? `${text} ${unit}` : text;
}

function fmtDuration(s) {
  if (!isNum(s)) return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d} d ${h} h ${m} min`;
  if (h > 0) return `${h} h ${m} min`;
  return `${m} min ${Math.floor(s % 60)} s`;
}

function fmtBytes(v) {
  if (!isNum(v)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i === 0 ? 0 : 2)} ${units[i]}`;
}

const fmtBool = (v) => (v === true ? "yes" : v === false ? "no" : "–");
const text = (v) => (v === null || v === undefined || v === "" ? "–" : String(v));

// A definition list of [label, value] pairs; `id` marks values tests and people can find.
function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.map(([label, value, id]) => [
    el("dt", {}, label),
    el("dd", id ? { id } : {}, value),
  ]));
}

function table(headers, rows, numericFrom = 1) {
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", i >= numericFrom ? { class: "num" } : {}, h)))),
    el("tbody", {}, rows.length
      ? rows.map((r) => el("tr", {}, r.map((c, i) => el("td", i >= numericFrom ? { class: "num" } : {}, c))))
      : el("tr", {}, el("td", { colspan: String(headers.length), class: "empty" }, "none"))));
}

function fill(panelId, ...content) {
  $(panelId).querySelector(".body").replaceChildren(...content.flat());
}

function bar(percent) {
  const p = isNum(percent) ? Math.max(0, Math.min(100, percent)) : 0;
  const level = p >= 90 ? "high" : p >= 70 ? "mid" : "low";
  return el("span", { class: `bar ${level}`, style: `--p:${p}%` });
}

// ---- charts -------------------------------------------------------------

const PALETTE = ["#4e9af1", "#f28e2b", "#59c36a", "#e15759", "#b07aa1", "#edc948", "#76b7b2"];

class Chart {
  // series: [{ label }]; opts: { title, unit, max (fixed top, e.g. 100), digits }
  constructor(id, opts, series) {
    this.root = $(id);
    this.opts = opts;
    this.series = series.map((s, i) => ({ ...s, color: PALETTE[i % PALETTE.length] }));
    this.points = []; // { t: unix ms, v: [number|null per series] }
    this.root.replaceChildren(
      el("h2", {}, `${opts.title} `, el("span", { class: "unit" }, `(${opts.unit})`)),
      (this.plot = el("div", { class: "plot" })),
      (this.legend = el("ul", { class: "legend" })),
    );
    this.draw();
  }

  // Adds a point unless it is not newer than the last one (history and the
  // stream overlap by a snapshot or so).
  add(t, values) {
    if (!isNum(t)) return;
    const v = values.map((x) => (isNum(x) ? x : null));
    const last = this.points[this.points.length - 1];
    if (last && t === last.t) {
      // The same sample from the stream: it fills what the flat row lacked.
      last.v = last.v.map((old, i) => (old === null ? v[i] : old));
      return;
    }
    if (last && t < last.t) return;
    this.points.push({ t, v });
    const from = t - HOUR_MS;
    while (this.points.length && this.points[0].t < from) this.points.shift();
  }

  draw() {
    const width = Math.max(240, Math.floor(this.plot.clientWidth || 400));
    const height = 160;
    const m = { left: 46, right: 8, top: 8, bottom: 20 };
    const w = width - m.left - m.right, h = height - m.top - m.bottom;
    // Up to an hour: a young daemon's few minutes fill the width.
    const newest = this.points.length ? this.points[this.points.length - 1].t : Date.now();
    const oldest = this.points.length ? this.points[0].t : newest;
    const span = Math.min(HOUR_MS, Math.max(MIN_SPAN_SAMPLES * intervalS * 1000, newest - oldest));
    const t0 = newest - span;
    let top = this.opts.max;
    if (!top) {
      let max = 0;
      for (const p of this.points) for (const v of p.v) if (v !== null && v > max) max = v;
      top = niceCeil(max);
    }
    const x = (t) => m.left + ((t - t0) / span) * w;
    const y = (v) => m.top + h - (Math.min(v, top) / top) * h;
    const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
      "aria-label": `${this.opts.title}, last hour` });

    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4, yy = y(v);
      svg.append(svgEl("line", { x1: m.left, x2: m.left + w, y1: yy, y2: yy, class: "grid" }));
      const label = svgEl("text", { x: m.left - 4, y: yy + 3, class: "tick", "text-anchor": "end" });
      label.textContent = tickLabel(v, top / 4);
      svg.append(label);
    }
    // As many time labels as fit (about 64 px each).
    const maxTicks = Math.max(2, Math.floor(w / 64));
    const step = TIME_STEPS_MS.find((s) => span / s <= maxTicks) || HOUR_MS;
    for (let t = Math.ceil(t0 / step) * step; t <= newest; t += step) {
      const xx = x(t);
      svg.append(svgEl("line", { x1: xx, x2: xx, y1: m.top, y2: m.top + h, class: "grid" }));
      const d = new Date(t);
      const two = (n) => String(n).padStart(2, "0");
      const stamp = `${two(d.getHours())}:${two(d.getMinutes())}${step < 60000 ? ":" + two(d.getSeconds()) : ""}`;
      // A centred label that would run past the right edge is left out.
      if (xx + (stamp.length * TICK_CHAR_PX) / 2 > width) continue;
      const label = svgEl("text", { x: xx, y: height - 5, class: "tick", "text-anchor": "middle" });
      label.textContent = stamp;
      svg.append(label);
    }
    svg.append(svgEl("line", { x1: m.left, x2: m.left, y1: m.top, y2: m.top + h, class: "axis" }));
    svg.append(svgEl("line", { x1: m.left, x2: m.left + w, y1: m.top + h, y2: m.top + h, class: "axis" }));

    // A gap of more than three intervals (daemon stopped) breaks the line.
    const gapMs = Math.max(3 * intervalS * 1000, 5000);
    this.series.forEach((s, i) => {
      let d = "", drawn = 0, prevT = null;
      for (const p of this.points) {
        const v = p.v[i];
        if (v === null) { prevT = null; continue; }
        const cmd = prevT === null || p.t - prevT > gapMs ? "M" : "L";
        d += `${cmd}${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
        drawn++;
        prevT = p.t;
      }
      const path = svgEl("path", { d, stroke: s.color, class: "line", "data-series": s.label, "data-points": drawn });
      // A lone point is a zero-length line: the round cap shows it as a dot.
      if (drawn === 1) {
        path.setAttribute("d", d + "l0,0");
        path.setAttribute("class", "line single");
      }
      svg.append(path);
    });
    this.plot.replaceChildren(svg);

    const latest = this.points[this.points.length - 1];
    this.legend.replaceChildren(...this.series.map((s, i) => el("li", {},
      el("span", { class: "swatch", style: `background:${s.color}` }),
      `${s.label} `,
      el("b", {}, latest ? fmt(latest.v[i], this.opts.digits ?? 2) : "–"))));
  }
}

function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function niceCeil(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const f of [1, 2, 2.5, 5, 10]) if (f * p >= v) return f * p;
  return 10 * p;
}

// Enough decimals to show each tick exactly (steps are 1, 2, 2.5 or 5 × 10^n / 4).
function tickLabel(v, step) {
  let decimals = 0;
  while (decimals < 4 && Math.abs(step * 10 ** decimals - Math.round(step * 10 ** decimals)) > 1e-9) decimals++;
  return v.toFixed(decimals);
}

const charts = {
  cpu: new Chart("chart-cpu", { title: "CPU", unit: "%", max: 100, digits: 1 },
    [{ label: "total" }, { label: "user" }, { label: "system" }, { label: "iowait" }, { label: "steal" }]),
  memory: new Chart("chart-memory", { title: "Memory", unit: "% used", max: 100, digits: 1 },
    [{ label: "memory" }, { label: "swap" }]),
  load: new Chart("chart-load", { title: "Load", unit: "runnable tasks", digits: 2 },
    [{ label: "1 min" }, { label: "5 min" }, { label: "15 min" }]),
  network: new Chart("chart-network", { title: "Network", unit: "Mbit/s", digits: 2 },
    [{ label: "received" }, { label: "sent" }]),
  disk: new Chart("chart-disk", { title: "Disk", unit: "MiB/s", digits: 2 },
    [{ label: "read" }, { label: "write" }]),
  pressure: new Chart("chart-pressure", { title: "Pressure", unit: "% stalled, avg10", max: 100, digits: 2 },
    [{ label: "cpu some" }, { label: "memory some" }, { label: "io some" }]),
};

// History rows (the flat form) hold no CPU modes, swap, disk rates or
// pressure: those lines start with the first live snapshot.
function addFlatRow(row) {
  const t = Date.parse(row.timestamp);
  charts.cpu.add(t, [row.cpu_percent, null, null, null, null]);
  charts.memory.add(t, [row.memory_percent, null]);
  charts.load.add(t, [row.load_avg_1m, row.load_avg_5m, row.load_avg_15m]);
  charts.network.add(t, [row.network_rx_rate_mbps, row.network_tx_rate_mbps]);
  charts.disk.add(t, [null, null]);
  charts.pressure.add(t, [null, null, null]);
}

function addSnapshot(s) {
  const t = Date.parse(s.timestamp);
  const m = s.metrics || {};
  const modes = get(m, "cpu", "cpu_modes_percent") || {};
  charts.cpu.add(t, [get(m, "cpu", "cpu_usage_percent"), modes.user, modes.system, modes.iowait, modes.steal]);
  charts.memory.add(t, [get(m, "memory", "memory_usage_percent"), get(m, "memory", "swap_usage_percent")]);
  charts.load.add(t, [get(m, "cpu", "load_avg_1min"), get(m, "cpu", "load_avg_5min"), get(m, "cpu", "load_avg_15min")]);
  const mbit = (v) => (isNum(v) ? v * MIB_PER_S_TO_MBIT : null);
  charts.network.add(t, [mbit(get(m, "network", "bytes_recv_mb_per_sec")), mbit(get(m, "network", "bytes_sent_mb_per_sec"))]);
  charts.disk.add(t, [get(m, "disk", "disk_io", "read_mb_per_sec"), get(m, "disk", "disk_io", "write_mb_per_sec")]);
  const p = m.pressure || {};
  charts.pressure.add(t, [p.cpu_some_avg10, p.memory_some_avg10, p.io_some_avg10]);
}

function drawCharts() {
  for (const c of Object.values(charts)) c.draw();
}

// ---- current figures ------------------------------------------------------

function render(s) {
  const m = s.metrics || {};
  const sys = m.system || {};
  $("node-id").textContent = text(s.node_id);
  document.title = `metricsd · ${text(s.node_id)}`;
  const identity = $("identity");
  identity.replaceChildren(...[
    ["os", text(sys.os)],
    ["kernel", text(sys.kernel)],
    ["uptime", fmtDuration(sys.uptime_seconds)],
    ["interval", isNum(s.interval) ? `${s.interval} s` : "–"],
    ["sample", text(s.timestamp), "last-sample"],
  ].flatMap(([k, v, id]) => [el("dt", {}, k), el("dd", id ? { id } : {}, v)]));
  $("last-sample").dataset.timestamp = s.timestamp || "";

  renderCpu(m.cpu || {});
  renderMemory(m.memory || {});
  renderPressure(m.pressure);
  renderSystem(sys);
  renderFilesystems(get(m, "disk", "disk_usage") || {});
  renderDisks(get(m, "disk", "disk_io") || {});
  renderNetwork(m.network || {});
  renderTcp(get(m, "network", "tcp"));
  renderProcesses(m.processes || {});
  renderUnits(m.units);
}

function renderCpu(cpu) {
  const modes = cpu.cpu_modes_percent || {};
  const names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest"];
  const cores = Array.isArray(cpu.cpu_per_core_percent) ? cpu.cpu_per_core_percent : [];
  fill("panel-cpu",
    el("p", { class: "big" }, el("span", { id: "cpu-usage" }, fmt(cpu.cpu_usage_percent, 2, "%")),
      el("small", {}, ` load ${fmt(cpu.load_avg_1min)} / ${fmt(cpu.load_avg_5min)} / ${fmt(cpu.load_avg_15min)}`)),
    el("div", { class: "modes" }, names.map((n) => el("span", {}, `${n} `, el("b", {}, fmt(modes[n], 1, "%"))))),
    el("h3", {}, `Per core (${cores.length})`),
    el("div", { class: "cores scroll" }, cores.map((v, i) =>
      el("div", { class: "core" }, el("span", {}, `cpu${i}`), bar(v), el("b", {}, fmt(v, 0, "%"))))));
}

function renderMemory(mem) {
  fill("panel-memory",
    el("p", { class: "big" }, el("span", { id: "memory-used" }, fmt(mem.memory_used_gb, 2, "GiB")),
      el("small", {}, ` of ${fmt(mem.memory_total_gb, 2, "GiB")} (${fmt(mem.memory_usage_percent, 1, "%")})`)),
    bar(mem.memory_usage_percent),
    facts([
      ["available", fmt(mem.memory_available_gb, 2, "GiB")],
      ["free", fmt(mem.memory_free_gb, 2, "GiB")],
      ["buffers", fmt(mem.memory_buffers_gb, 2, "GiB")],
      ["cached", fmt(mem.memory_cached_gb, 2, "GiB")],
      ["shared", fmt(mem.memory_shared_gb, 2, "GiB")],
      ["slab", fmt(mem.memory_slab_gb, 2, "GiB")],
      ["swap used", `${fmt(mem.swap_used_gb, 2, "GiB")} of ${fmt(mem.swap_total_gb, 2, "GiB")} (${fmt(mem.swap_usage_percent, 1, "%")})`],
      ["swap in / out", `${fmt(mem.swap_in_pages_per_sec, 1)} / ${fmt(mem.swap_out_pages_per_sec, 1)} pages/s`],
      ["major faults", fmt(mem.major_faults_per_sec, 1, "/s")],
    ]));
}

function renderPressure(p) {
  p = p || {};
  const kinds = [["cpu", "some"], ["memory", "some"], ["memory", "full"], ["io", "some"], ["io", "full"]];
  fill("panel-pressure", table(["resource", "avg10 %", "avg60 %", "avg300 %", "stall ms/s"],
    kinds.map(([r, k]) => [`${r} ${k}`, ...["avg10", "avg60", "avg300", "stall_ms_per_sec"].map((f) =>
      fmt(p[`${r}_${k}_${f}`], f === "stall_ms_per_sec" ? 1 : 2))])));
}

function renderSystem(sys) {
  fill("panel-system", facts([
    ["boot time", text(sys.boot_time)],
    ["boot id", text(sys.boot_id)],
    ["context switches", fmtInt(sys.context_switches_per_sec, "/s")],
    ["interrupts", fmtInt(sys.interrupts_per_sec, "/s")],
    ["forks", fmt(sys.forks_per_sec, 1, "/s")],
    ["file descriptors", `${fmtInt(sys.file_descriptors_allocated)} of ${fmtInt(sys.file_descriptors_max)}`],
    ["clock synced", fmtBool(sys.clock_synced)],
    ["clock max error", fmt(sys.clock_max_error_ms, 1, "ms")],
  ]));
}

function renderFilesystems(usage) {
  const mounts = Object.keys(usage).sort();
  fill("panel-filesystems", table(["mount", "type", "device", "used", "size", "use", "inodes"],
    mounts.map((mount) => {
      const f = usage[mount] || {};
      return [mount, text(f.fs_type), text(f.device), fmt(f.used_gb, 2, "GiB"), fmt(f.total_gb, 2, "GiB"),
        el("span", { class: "use", "data-mount": mount }, bar(f.usage_percent), fmt(f.usage_percent, 2, "%")),
        fmt(f.inodes_usage_percent, 1, "%")];
    }), 3));
}

function renderDisks(io) {
  const devices = io.devices || {};
  fill("panel-disks",
    el("p", {}, `all devices: read ${fmt(io.read_mb_per_sec, 2, "MiB/s")}, write ${fmt(io.write_mb_per_sec, 2, "MiB/s")}`),
    table(["device", "read MiB/s", "write MiB/s", "reads/s", "writes/s", "util %", "read await ms", "write await ms", "in flight"],
      Object.keys(devices).sort().map((d) => {
        const v = devices[d] || {};
        return [d, fmt(v.read_mb_per_sec), fmt(v.write_mb_per_sec), fmt(v.reads_per_sec, 1), fmt(v.writes_per_sec, 1),
          fmt(v.util_percent, 1), fmt(v.read_await_ms, 2), fmt(v.write_await_ms, 2), fmtInt(v.in_flight)];
      })));
}

function renderNetwork(net) {
  const ifs = net.interfaces || {};
  fill("panel-network",
    facts([
      ["received", fmt(net.bytes_recv_mb_per_sec, 2, "MiB/s")],
      ["sent", fmt(net.bytes_sent_mb_per_sec, 2, "MiB/s")],
      ["packets in / out", `${fmtInt(net.packets_recv)} / ${fmtInt(net.packets_sent)}`],
      ["TCP connections", fmtInt(net.active_connections)],
    ]),
    el("div", { class: "scroll" }, table(
      ["interface", "state", "rx/s", "tx/s", "rx total", "tx total", "rx packets", "tx packets", "errors rx/tx", "dropped rx/tx"],
      Object.keys(ifs).sort(naturally).map((n) => {
        const i = ifs[n] || {};
        return [n, text(i.oper_state), fmtRate(i.rx_bytes_per_sec), fmtRate(i.tx_bytes_per_sec),
          fmtBytes(i.rx_bytes), fmtBytes(i.tx_bytes), fmtInt(i.rx_packets), fmtInt(i.tx_packets),
          `${fmtInt(i.rx_errors)} / ${fmtInt(i.tx_errors)}`, `${fmtInt(i.rx_dropped)} / ${fmtInt(i.tx_dropped)}`];
      }), 2)));
}

function renderTcp(tcp) {
  tcp = tcp || {};
  fill("panel-tcp", facts([
    ["in use", fmtInt(tcp.in_use)],
    ["time wait", fmtInt(tcp.time_wait)],
    ["orphans", fmtInt(tcp.orphan)],
    ["retransmits", fmt(tcp.retrans_segs_per_sec, 1, "segments/s")],
    ["listen overflows", fmt(tcp.listen_overflows_per_sec, 1, "/s")],
    ["listen drops", fmt(tcp.listen_drops_per_sec, 1, "/s")],
    ["resets sent", fmt(tcp.resets_sent_per_sec, 1, "/s")],
  ]));
}

function renderProcesses(p) {
  const top = (list) => (Array.isArray(list) ? list : []);
  fill("panel-processes",
    facts([
      ["processes", fmtInt(p.process_count)],
      ["running", fmtInt(p.running)],
      ["blocked", fmtInt(p.blocked)],
      ["threads", fmtInt(p.threads)],
      ["zombies", fmtInt(p.zombies)],
    ]),
    el("div", { class: "tops" },
      el("div", { class: "scroll" }, el("h3", {}, "Most CPU"), table(["name", "pid", "CPU % (100 = 1 core)"],
        top(p.top_cpu_processes).map((x) => [text(x.name), text(x.pid), fmt(x.cpu_percent, 1)]))),
      el("div", { class: "scroll" }, el("h3", {}, "Most memory"), table(["name", "pid", "memory %"],
        top(p.top_memory_processes).map((x) => [text(x.name), text(x.pid), fmt(x.memory_percent, 2)])))));
}

function renderUnits(units) {
  if (units === undefined || units === null) {
    fill("panel-units", el("p", { class: "empty" }, "–"));
    return;
  }
  fill("panel-units", table(["unit", "CPU %", "memory", "tasks", "read MiB/s", "write MiB/s", "cpu psi", "mem psi", "io psi"],
    Object.keys(units).sort().map((u) => {
      const v = units[u] || {};
      return [u, fmt(v.cpu_percent, 1), fmt(v.memory_mb, 1, "MiB"), fmtInt(v.tasks), fmt(v.io_read_mb_per_sec),
        fmt(v.io_write_mb_per_sec), fmt(v.cpu_pressure_some_avg10), fmt(v.memory_pressure_some_avg10), fmt(v.io_pressure_some_avg10)];
    })));
}

function renderHealth(h) {
  // While the stream is up, the pill says what /health says: a daemon that
  // serves but no longer samples sends no snapshots, only "stale" here.
  if (socket && socket.readyState === WebSocket.OPEN) {
    if (h.status === "ok") setState("live", h.reason ? `The daemon reports: ${text(h.reason)}` : "");
    else setState(text(h.status), `The daemon reports ${text(h.status)}: ${text(h.reason)}`);
  }
  const sinks = h.sinks && typeof h.sinks === "object" ? h.sinks : null;
  const rows = sinks
    ? Object.keys(sinks).map((name) => {
      const s = sinks[name] || {};
      return [name, el("span", { class: `state ${s.state === "ok" ? "ok" : "bad"}` }, text(s.state)),
        fmtInt(s.pending), fmtInt(s.dead), text(s.last_error)];
    })
    : [["backend", el("span", { class: `state ${h.backend === "failing" ? "bad" : "ok"}` }, text(h.backend)),
      fmtInt(h.queue_pending), fmtInt(h.queue_dead), text(h.last_error)]];
  fill("panel-sinks",
    facts([
      ["daemon", `${text(h.status)}, up ${fmtDuration(h.uptime_s)}`, "daemon-status"],
      ...(h.reason ? [["why", text(h.reason)]] : []),
      ["last sample", text(h.last_sample_at)],
    ]),
    table(["sink", "state", "pending", "dead", "last error"], rows, 2));
}

// ---- connection -------------------------------------------------------------

function setState(state, notice) {
  const pill = $("state");
  pill.textContent = state;
  pill.className = `pill ${state.replace(/\s+/g, "-")}`;
  const box = $("notice");
  box.hidden = !notice;
  box.textContent = notice || "";
}

function authHeaders() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function needToken() {
  stopped = true;
  setState("token needed", token
    ? "The token in this page's address was refused. Open it as " + location.origin + "/#token=<stream.token>."
    : "This daemon needs a token (stream.token). Open the page as " + location.origin + "/#token=<stream.token>.");
}

async function loadHistory() {
  const newest = charts.load.points.length ? charts.load.points[charts.load.points.length - 1].t : 0;
  const since = Math.floor(Math.max(newest + 1, Date.now() - HOUR_MS) / 1000);
  const response = await fetch(`/api/history?since=${since}&limit=10080`, { headers: authHeaders(), cache: "no-store" });
  if (response.status === 401) return false;
  if (!response.ok) throw new Error(`history: HTTP ${response.status}`);
  const rows = await response.json();
  for (const row of rows) addFlatRow(row);
  drawCharts();
  return true;
}

async function refreshHealth() {
  lastHealthAt = Date.now();
  try {
    const response = await fetch("/health", { cache: "no-store" });
    renderHealth(await response.json());
  } catch (e) {
    // The stream's state says enough; the next snapshot tries again.
  }
}

async function connect() {
  if (stopped) return;
  try {
    if (!(await loadHistory())) return needToken();
  } catch (e) {
    return reconnectLater();
  }
  const url = `ws://${location.host}/${token ? "?token=" + encodeURIComponent(token) : ""}`;
  socket = new WebSocket(url);
  socket.onopen = () => {
    retryMs = 1000;
    setState("live");
    refreshHealth();
  };
  socket.onmessage = (event) => {
    let msg;
    try { msg = JSON.parse(event.data); } catch (e) { return; }
    if (msg.type === "connection") {
      if (isNum(msg.interval)) intervalS = msg.interval;
      $("node-id").textContent = text(msg.node_id);
    } else if (msg.type === "snapshot") {
      if (isNum(msg.interval)) intervalS = msg.interval;
      render(msg);
      addSnapshot(msg);
      drawCharts();
      if (Date.now() - lastHealthAt >= Math.min(HEALTH_EVERY_MS, intervalS * 1000)) refreshHealth();
    }
  };
  socket.onclose = () => {
    socket = null;
    reconnectLater();
  };
}

function reconnectLater() {
  if (stopped) return;
  setState("reconnecting", "Connection to the daemon lost; trying again.");
  setTimeout(connect, retryMs);
  retryMs = Math.min(retryMs * 2, 10000);
}

window.addEventListener("hashchange", () => location.reload());
let resizeTimer = 0;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(drawCharts, 100);
});
drawCharts();
connect();
// /health is also asked when no snapshot comes (a stalled sampler).
setInterval(() => {
  if (!stopped && Date.now() - lastHealthAt >= HEALTH_EVERY_MS) refreshHealth();
}, 1000);
