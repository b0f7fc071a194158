// The status page: polls /v1/ui/state every second and redraws. Everything shown comes from
// etcd keys that anyone with write access can put, so text goes in with textContent only.
"use strict";

const REFRESH_MS = 1000;
const TAIL_POLL_MS = 2000;
const TAIL_CHARS = 20000;
let picked = null;        // job id chosen by a click; null: follow the newest running job
let tailJob = null;       // job whose output is shown
let tailState = null;     // its state when it was picked
let tailStop = null;      // stops the current tail (stream or poll)
let lastOk = 0;
let updates = 0;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return node;
}

function badge(text, kind) { return el("span", { class: "badge " + (kind || text) }, text); }

function span(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return s + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return Math.round(s / 3600) + " h";
}

function ago(t, now) { return t == null ? "" : span(now - t); }

function clock(t) { return t == null ? "?" : new Date(t * 1000).toLocaleTimeString(); }

function fill(tableId, rows) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren(...rows);
}

function jobIdCell(job) {
  const cell = el("td", { class: "id", title: "show its output" }, job.id);
  cell.addEventListener("click", () => { picked = job.id; showTail(job.id, job.state); });
  return cell;
}

function jobRow(job, cells) {
  const row = el("tr", { "data-job-id": job.id, "data-state": job.state }, jobIdCell(job),
    el("td", {}, badge(job.state)), ...cells);
  if (job.id === tailJob) row.classList.add("selected");
  return row;
}

function drawNodes(state) {
  fill("nodes", state.nodes.map((n) => {
    const share = n.slots ? Math.min(1, n.used / n.slots) : 0;
    const meter = el("span", { class: "meter" }, el("span", {}));
    meter.firstChild.style.width = Math.round(share * 100) + "%";
    const lease = n.lease.left == null ? badge(n.lease.state)
      : el("span", {}, badge(n.lease.state), " " + n.lease.left + "/" + n.lease.ttl + " s");
    const role = el("td", {}, badge(n.role, n.role === "master" ? "master" : "worker"));
    if (n.drained) role.append(" ", badge("drained"));
    if (!n.eligible) role.append(" ", el("span", { class: "muted" }, "never master"));
    const labels = Object.entries(n.labels).map(([k, v]) => k + "=" + v).join(" ");
    return el("tr", { "data-node": n.name, "data-role": n.role, "data-lease": n.lease.state },
      el("td", {}, n.name), role, el("td", {}, meter, n.used + " / " + n.slots),
      el("td", {}, lease), el("td", { class: "muted" }, labels), el("td", { class: "muted" }, n.version));
  }));
}

function drawMasters(state) {
  const now = state.generated_at;
  const items = [];
  const m = state.master;
  if (m) {
    items.push(el("li", { "data-master": m.name }, badge("now", "master"), " ", el("strong", {}, m.name),
      el("span", { class: "muted" }, m.since ? " since " + clock(m.since) + " (" + ago(m.since, now) + ")" : "")));
  } else {
    items.push(el("li", {}, badge("none", "failed"), " no master elected"));
  }
  state.masters_before.forEach((p, i) => {
    // The gap between its last heartbeat and its successor's start: how long the failover took.
    const next = i === 0 ? m : state.masters_before[i - 1];
    const gap = next && next.since != null && p.last_seen != null
      ? "; next master " + span(next.since - p.last_seen) + " after its last beat" : "";
    items.push(el("li", { "data-earlier-master": p.name }, el("strong", {}, p.name),
      el("span", { class: "muted" }, " from " + clock(p.since) + " until about " + clock(p.last_seen) + gap)));
  });
  document.getElementById("masters").replaceChildren(...items);
  document.getElementById("master-name").textContent = m ? m.name : "none";
  document.getElementById("master-since").textContent = m && m.since ? "for " + ago(m.since, now) : "";
}

function drawChart(chart, now) {
  const svg = document.getElementById("chart");
  const ns = "http://www.w3.org/2000/svg";
  const W = 480, H = 150, left = 28, bottom = 18, top = 6;
  const max = Math.max(1, ...chart.bars.map((b) => b.succeeded + b.failed));
  const step = (W - left) / chart.bars.length;
  const scale = (H - top - bottom) / max;
  const shapes = [];
  const add = (tag, attrs, text) => {
    const s = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) s.setAttribute(k, v);
    if (text != null) s.textContent = text;
    shapes.push(s);
  };
  add("line", { x1: left, x2: W, y1: H - bottom, y2: H - bottom });
  add("text", { x: 2, y: top + 8 }, String(max));
  add("text", { x: 2, y: H - bottom }, "0");
  chart.bars.forEach((b, i) => {
    const x = left + i * step + 2, w = step - 4;
    const hOk = b.succeeded * scale, hBad = b.failed * scale;
    add("rect", { class: "ok", x, width: w, y: H - bottom - hOk, height: hOk, "data-minute": b.t });
    add("rect", { class: "bad", x, width: w, y: H - bottom - hOk - hBad, height: hBad });
    if (i % 5 === 0 || i === chart.bars.length - 1) {
      add("text", { x, y: H - 4 }, i === chart.bars.length - 1 ? "now" : "-" + Math.round((now - b.t) / 60) + "m");
    }
  });
  svg.replaceChildren(...shapes);
  const total = chart.bars.reduce((a, b) => a + b.succeeded + b.failed, 0);
  document.getElementById("chart-note").textContent = total + " in the last " + chart.bars.length +
    " minutes (green: succeeded, red: not)" + (chart.complete ? "" : "; at least: only the most recent records are read");
}

function drawJobs(state) {
  const now = state.generated_at;
  fill("running", state.running.map((j) => jobRow(j, [el("td", {}, j.node), el("td", {}, String(j.attempt)),
    el("td", {}, ago(j.started_at, now)), el("td", { class: "cmd" }, j.command)])));
  fill("queue", state.queue.map((j) => jobRow(j, [el("td", {}, String(j.priority)),
    el("td", { class: "muted why" }, j.not_before && j.not_before > now ? "its start time, in " + span(j.not_before - now) : (j.reason || "a free slot")),
    el("td", { class: "cmd" }, j.command)])));
  fill("failed", state.failed.map((j) => jobRow(j, [el("td", {}, j.node || ""),
    el("td", {}, j.exit_code == null ? "" : String(j.exit_code)), el("td", { class: "muted why" }, j.reason || ""),
    el("td", { class: "cmd" }, j.command)])));
  fill("finished", state.finished.map((j) => jobRow(j, [el("td", {}, j.node || ""),
    el("td", {}, ago(j.finished_at, now) + " ago"), el("td", { class: "cmd" }, j.command)])));
  document.getElementById("running-count").textContent = "(" + state.running.length + ")";
  document.getElementById("queue-count").textContent = "(" + state.queue_total + ")";
}

function draw(state) {
  drawMasters(state);
  drawNodes(state);
  drawJobs(state);
  drawChart(state.chart, state.generated_at);
  document.getElementById("served-by").textContent = state.served_by;
  const problems = state.errors.length ? " (" + state.errors.join("; ") + ")" : "";
  document.getElementById("status").textContent = "updated " + clock(state.generated_at) + problems;
  const newest = state.running.length ? state.running[state.running.length - 1] : null;
  const wanted = picked || (newest && newest.id) || tailJob;
  const all = [...state.running, ...state.queue, ...state.failed, ...state.finished];
  const job = all.find((j) => j.id === wanted);
  // A new job to show, or the one shown has started running: follow it live.
  if (wanted && (wanted !== tailJob || (job && job.state === "running" && tailState !== "running"))) {
    showTail(wanted, job ? job.state : "");
  }
  document.body.dataset.updates = String(++updates);
  document.body.dataset.master = state.master ? state.master.name : "";
}

async function refresh() {
  try {
    const res = await fetch("/v1/ui/state", { cache: "no-store" });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.statusText);
    draw(body);
    lastOk = Date.now();
    document.body.classList.remove("stale");
  } catch (e) {
    document.getElementById("status").textContent = "not updated: " + e.message;
    if (Date.now() - lastOk > 5000) document.body.classList.add("stale");
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

// ---------------------------------------------------------------- the output tail

function showTail(id, state) {
  if (tailStop) tailStop();
  tailJob = id;
  tailState = state;
  document.getElementById("tail-job").textContent = id;
  document.getElementById("tail").textContent = "";
  document.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
  document.querySelectorAll('tr[data-job-id="' + CSS.escape(id) + '"]').forEach((r) => r.classList.add("selected"));
  tailStop = state === "running" ? followLive(id) : pollRecorded(id);
}

function setTail(text, source) {
  const pre = document.getElementById("tail");
  const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = text.length > TAIL_CHARS ? text.slice(-TAIL_CHARS) : text;
  if (atEnd) pre.scrollTop = pre.scrollHeight;
  document.getElementById("tail-source").textContent = source;
}

// A running job's output as it is written (this agent follows it on the job's node); the
// tail recorded in etcd once it ends, or when the agent cannot follow it.
function followLive(id) {
  const abort = new AbortController();
  let poller = null;
  (async () => {
    try {
      const res = await fetch("/v1/ui/jobs/" + encodeURIComponent(id) + "/live", { signal: abort.signal });
      if (!res.ok || !res.body) throw new Error(res.statusText);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let text = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text = (text + decoder.decode(value, { stream: true })).slice(-TAIL_CHARS);
        setTail(text, "(live)");
      }
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    if (!abort.signal.aborted) poller = pollRecorded(id);
  })();
  return () => { abort.abort(); if (poller) poller(); };
}

function pollRecorded(id) {
  let stopped = false;
  let timer = null;
  const once = async () => {
    try {
      const res = await fetch("/v1/ui/jobs/" + encodeURIComponent(id) + "/tail", { cache: "no-store" });
      const body = await res.json();
      if (stopped) return;
      if (!res.ok) setTail(body.error || res.statusText, "");
      else setTail(body.stdout + (body.stderr ? "\n--- stderr ---\n" + body.stderr : ""),
        body.attempt ? "(attempt " + body.attempt + ", recorded in etcd)" : "(nothing recorded yet)");
    } catch (e) {
      if (!stopped) setTail("output not available: " + e.message, "");
    }
    if (!stopped) timer = setTimeout(once, TAIL_POLL_MS);
  };
  once();
  return () => { stopped = true; clearTimeout(timer); };
}

refresh();
