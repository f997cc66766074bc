// The control page's behaviour (issue 16, docs/control.md): renders each `snapshot` of
// /api/v1/stream, and sends the page's actions as POSTs carrying X-Florasync-Token.
//
// Owns the token's life in the browser (asked for on first use, kept in localStorage, asked
// again on a 401; never in a URL or a cookie) and every DOM update. Data only ever reaches the
// DOM as textContent or attribute values, never as markup.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "florasync.control-token";
const STALE_MS = 15000; // the stream sends at least every 5 s (docs/control.md)
const RECONNECT_MAX_MS = 10000;
const FAILURE_PAGE = 200;
const FAILURE_CAP = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";

const page = {
  snapshot: null,
  source: null,
  lastMessageAt: 0,
  reconnectMs: 500,
  reconnectTimer: null,
  memoryToken: null,
  tokenPrompt: null,
  retrying: new Map(), // path -> time the retry was accepted: its button stays "Queued"
  allFailures: null, // every failure, fetched page by page once the user asks for them
  allFailuresFor: null,
  fetchingFailures: false,
  chartKey: "",
};

const byId = (id) => document.getElementById(id);

document.addEventListener("DOMContentLoaded", () => {
  bindActions();
  connect();
  setInterval(checkStale, 2000);
  window.addEventListener("resize", () => drawChart(true));
});

// ---- the stream ------------------------------------------------------------------------

function connect() {
  clearTimeout(page.reconnectTimer);
  const source = new EventSource(API + "/stream");
  page.source = source;
  source.addEventListener("snapshot", (event) => onSnapshot(source, event.data));
  source.addEventListener("error", () => onStreamError(source));
}

function onSnapshot(source, data) {
  if (source !== page.source) return;
  let snapshot;
  try {
    snapshot = JSON.parse(data);
  } catch {
    return; // a garbled event: the next one replaces it
  }
  page.lastMessageAt = Date.now();
  page.reconnectMs = 500;
  setConnection("live");
  page.snapshot = snapshot;
  render(snapshot);
}

function onStreamError(source) {
  if (source !== page.source) return;
  setConnection("disconnected");
  // EventSource retries by itself unless the answer was not a stream (readyState CLOSED).
  if (source.readyState === EventSource.CLOSED) reconnectLater();
}

function reconnectLater() {
  if (page.source) page.source.close();
  page.source = null;
  clearTimeout(page.reconnectTimer);
  page.reconnectTimer = setTimeout(connect, page.reconnectMs);
  page.reconnectMs = Math.min(page.reconnectMs * 2, RECONNECT_MAX_MS);
}

function checkStale() {
  const quiet = Date.now() - page.lastMessageAt > STALE_MS;
  if (page.source && page.lastMessageAt && quiet) {
    setConnection("disconnected"); // a half-open connection: nothing arrives, no error either
    page.lastMessageAt = 0;
    reconnectLater();
  }
}

function setConnection(state) {
  const badge = byId("connection");
  if (badge.dataset.state === state) return;
  badge.dataset.state = state;
  badge.textContent = state === "live" ? "live" : state === "connecting" ? "connecting…" : "disconnected";
  document.body.classList.toggle("stale", state === "disconnected");
  updateButtons();
}

// ---- rendering a snapshot ----------------------------------------------------------------

function render(snapshot) {
  const status = snapshot.status || {};
  renderIdentity(status);
  renderBanner(status);
  renderControls(status);
  renderFolders(status.folders || []);
  renderTransfers(snapshot.transfers || []);
  renderFailures(snapshot.failures || [], count(status.totals, "failed"));
  renderSynced(snapshot.recent || []);
  renderEvents(snapshot.events || []);
  drawChart(false);
  document.title = titleFor(status);
}

function renderIdentity(status) {
  const parts = [];
  if (status.host_id) parts.push("host " + status.host_id);
  if (status.workspace_id) parts.push("workspace " + status.workspace_id);
  if (status.version) parts.push("v" + status.version);
  byId("identity").textContent = parts.join(" · ");
}

function renderBanner(status) {
  const conditions = bannerConditions(status);
  const [state, title, detail] = conditions[0];
  const more = conditions.slice(1).map((c) => c[1]);
  const banner = byId("banner");
  banner.dataset.state = state;
  byId("banner-title").textContent = title;
  byId("banner-detail").textContent = [detail, ...more].filter(Boolean).join(" · ");
}

/** Every condition worth a banner, most urgent first: [state, title, detail]. */
function bannerConditions(status) {
  const out = [];
  if (status.key === "refused") {
    out.push(["key-refused", "FLORA refused the API key",
      "uploads are parked until the key works again: fix it, then reload the daemon"]);
  }
  const journal = status.journal || {};
  if (journal.down) out.push(["journal-down", "Journal down", describeDown(journal)]);
  const paused = status.paused || {};
  if (paused.paused) out.push(["paused", pausedTitle(paused), pausedDetail(paused)]);
  if (status.healthy === false) {
    out.push(["unhealthy", "Unhealthy", status.trouble ? String(status.trouble) : ""]);
  }
  if (isFuture(status.rate_limited_until)) {
    out.push(["rate-limited", "Rate limited by FLORA",
      "until " + fmtClock(status.rate_limited_until)]);
  }
  if (!out.length) out.push(["syncing", syncingTitle(status), syncingDetail(status)]);
  return out;
}

function describeDown(journal) {
  const backend = journal.backend ? journal.backend + ": " : "";
  return backend + (typeof journal.down === "string" ? journal.down : "cannot be reached");
}

function pausedTitle(paused) {
  return paused.until ? "Paused until " + fmtClock(paused.until) : "Paused until resumed";
}

function pausedDetail(paused) {
  const parts = [];
  if (paused.by) parts.push("by " + paused.by);
  if (paused.until) parts.push("resumes " + fmtIn(paused.until));
  if (paused.reason) parts.push(String(paused.reason));
  parts.push("no request reaches FLORA");
  return parts.join(" · ");
}

function syncingTitle(status) {
  const queue = status.queue || {};
  return count(queue, "outstanding") > 0 ? "Syncing" : "Syncing · up to date";
}

function syncingDetail(status) {
  const queue = status.queue || {};
  const parts = [];
  const outstanding = count(queue, "outstanding");
  if (outstanding > 0) parts.push(plural(outstanding, "file") + " to go");
  const failed = count(status.totals, "failed");
  if (failed > 0) parts.push(plural(failed, "failure"));
  parts.push("watching " + plural((status.folders || []).length, "folder"));
  return parts.join(" · ");
}

function titleFor(status) {
  const paused = status.paused || {};
  if (status.key === "refused") return "florasync · key refused";
  if (paused.paused) return "florasync · paused";
  const failed = count(status.totals, "failed");
  return failed > 0 ? `florasync · ${failed} failed` : "florasync";
}

function renderControls(status) {
  const paused = Boolean(status.paused && status.paused.paused);
  byId("pause").hidden = paused;
  byId("pause-for").hidden = paused;
  byId("resume").hidden = !paused;
  renderBandwidth(status.bandwidth || {});
  const queue = status.queue || {};
  byId("queue").textContent = [
    count(queue, "outstanding") + " waiting",
    count(queue, "settling") + " settling",
    count(queue, "in_flight") + " in flight",
  ].join(" · ");
  updateButtons();
}

function renderBandwidth(bandwidth) {
  let text = bandwidth.limit_bytes_per_second == null
    ? "no limit"
    : bandwidth.limit || fmtBytes(bandwidth.limit_bytes_per_second) + "/s";
  if (bandwidth.source) text += " (" + bandwidth.source + ")";
  byId("bandwidth").textContent = text;
  const next = bandwidth.next_change;
  byId("bandwidth-next").textContent = next && next.at
    ? "then " + (next.limit == null ? "no limit" : next.limit) + " from " + fmtClock(next.at, false)
    : "";
}

function updateButtons() {
  const live = byId("connection").dataset.state === "live";
  byId("pause").disabled = !live;
  byId("resume").disabled = !live;
  const failed = page.snapshot ? count((page.snapshot.status || {}).totals, "failed") : 0;
  byId("retry-all").disabled = !live || failed === 0;
}

// ---- folders, transfers, failures, synced files, events ----------------------------------

function renderFolders(folders) {
  syncList(byId("folders"), folders, (f) => f.path, buildFolder, updateFolder);
  byId("folders-empty").hidden = folders.length > 0;
}

function buildFolder() {
  const row = make("li", "row folder");
  row.dataset.testid = "folder-row";
  const main = make("div", "row-main");
  main.append(make("span", "path"), make("span", "project muted"), make("span", "counts"));
  const side = make("div", "row-side");
  const rescan = make("button", "small", "Rescan");
  rescan.type = "button";
  rescan.dataset.testid = "rescan";
  rescan.addEventListener("click", () => onRescan(row.dataset.path, rescan));
  side.append(make("span", "badge watch"), rescan);
  row.append(main, side);
  return row;
}

function updateFolder(row, folder) {
  row.dataset.path = folder.path;
  setText(row.querySelector(".path"), folder.path);
  setText(row.querySelector(".project"), describeProject(folder));
  const watch = row.querySelector(".watch");
  watch.dataset.watch = folder.watch || "unknown";
  setText(watch, folder.watch || "unknown");
  setText(row.querySelector(".counts"), ["synced", "pending", "failed", "skipped", "removed"]
    .filter((name) => name === "synced" || count(folder, name) > 0)
    .map((name) => count(folder, name) + " " + name)
    .join(" · "));
}

function describeProject(folder) {
  if (folder.project && folder.project_id) return folder.project + " (" + folder.project_id + ")";
  if (folder.project || folder.project_id) return folder.project || folder.project_id;
  return "a project per subfolder";
}

function renderTransfers(transfers) {
  syncList(byId("transfers"), transfers, (t) => t.path, buildTransfer, updateTransfer);
  byId("transfers-empty").hidden = transfers.length > 0;
}

function buildTransfer() {
  const row = make("li", "row transfer");
  row.dataset.testid = "transfer-row";
  const main = make("div", "row-main");
  const bar = document.createElement("progress");
  bar.dataset.testid = "progress";
  main.append(pathLabel(), bar, make("span", "meta muted"));
  row.append(main);
  return row;
}

function updateTransfer(row, transfer) {
  row.dataset.path = transfer.path;
  setPath(row, transfer.path);
  const size = Math.max(0, Number(transfer.size_bytes) || 0);
  const sent = Math.min(size, Math.max(0, Number(transfer.sent_bytes) || 0));
  const bar = row.querySelector("progress");
  bar.max = size || 1;
  bar.value = sent;
  const percent = size ? Math.floor((100 * sent) / size) : 0;
  setText(row.querySelector(".meta"), `${fmtBytes(sent)} of ${fmtBytes(size)} · ${percent} %`
    + (transfer.started_at ? " · since " + fmtClock(transfer.started_at) : ""));
}

function renderFailures(failures, total) {
  const shown = page.allFailures && page.allFailuresFor === total ? page.allFailures : failures;
  if (page.allFailures && page.allFailuresFor !== total) refreshAllFailures(total);
  forgetSettledRetries(shown);
  syncList(byId("failures"), shown, (f) => f.path, buildFailure, updateFailure);
  byId("failures-empty").hidden = shown.length > 0 || total > 0;
  byId("failures-count").textContent = total > 0 ? "(" + total + ")" : "";
  renderFailuresMore(shown.length, total);
}

function renderFailuresMore(shown, total) {
  const more = byId("failures-more");
  more.hidden = shown >= total;
  if (more.hidden) return;
  more.replaceChildren(document.createTextNode(`Showing ${shown} of ${total}. `));
  const all = make("button", "small link", "Show all");
  all.type = "button";
  all.id = "failures-all";
  all.addEventListener("click", () => refreshAllFailures(total));
  more.append(all);
}

function buildFailure() {
  const row = make("li", "row failure");
  row.dataset.testid = "failure-row";
  const main = make("div", "row-main");
  const reason = make("span", "reason");
  reason.append(make("code", "code"), document.createTextNode(" "), make("span", "message"));
  main.append(pathLabel(), reason, make("span", "meta muted"));
  const retry = make("button", "small", "Retry");
  retry.type = "button";
  retry.dataset.testid = "retry";
  retry.addEventListener("click", () => onRetry(row.dataset.path, retry));
  const side = make("div", "row-side");
  side.append(retry);
  row.append(main, side);
  return row;
}

function updateFailure(row, failure) {
  row.dataset.path = failure.path;
  setPath(row, failure.path);
  setText(row.querySelector(".code"), failure.code || "error");
  setText(row.querySelector(".message"), failure.message || "");
  const meta = [];
  if (failure.at) meta.push(fmtClock(failure.at));
  if (failure.project_id) meta.push(failure.project_id);
  meta.push(failure.permanent ? "permanent: retried only when you ask" : "will be retried");
  setText(row.querySelector(".meta"), meta.join(" · "));
  const retry = row.querySelector("[data-testid=retry]");
  const queued = page.retrying.has(failure.path);
  retry.disabled = queued;
  setText(retry, queued ? "Queued" : "Retry");
}

function forgetSettledRetries(failures) {
  const now = Date.now();
  const failing = new Set(failures.map((f) => f.path));
  for (const [path, at] of page.retrying) {
    if (!failing.has(path) || now - at > 10000) page.retrying.delete(path);
  }
}

function renderSynced(recent) {
  syncList(byId("synced"), recent, (f) => f.path + "\n" + (f.asset_id || ""),
    buildSynced, updateSynced);
  byId("synced-empty").hidden = recent.length > 0;
}

function buildSynced() {
  const row = make("li", "row synced");
  row.dataset.testid = "synced-row";
  const main = make("div", "row-main");
  main.append(pathLabel(), make("span", "meta muted"));
  const link = make("a", "asset-link", "Open in FLORA");
  link.dataset.testid = "asset-link";
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  const side = make("div", "row-side");
  side.append(link);
  row.append(main, side);
  return row;
}

function updateSynced(row, file) {
  row.dataset.path = file.path;
  setPath(row, file.path);
  const meta = [];
  if (file.outcome) meta.push(String(file.outcome));
  const bytes = file.bytes != null ? file.bytes : file.size_bytes; // docs: bytes
  if (bytes != null) meta.push(fmtBytes(bytes));
  if (file.at) meta.push(fmtClock(file.at));
  if (file.project_id) meta.push(file.project_id);
  setText(row.querySelector(".meta"), meta.join(" · "));
  const link = row.querySelector("a");
  const url = safeUrl(file.asset_url);
  link.hidden = !url;
  if (url && link.getAttribute("href") !== url) link.href = url;
  link.title = file.asset_id || "";
}

function renderEvents(events) {
  const keyed = events.map((e, i) => ({ ...e, _key: [e.at, e.kind, e.message, i].join("\n") }));
  syncList(byId("events"), keyed, (e) => e._key, buildEvent, updateEvent);
  byId("events-empty").hidden = events.length > 0;
}

function buildEvent() {
  const row = make("li", "row event");
  row.dataset.testid = "event-row";
  const main = make("div", "row-main");
  const head = make("span", "event-head");
  head.append(make("span", "badge kind"), make("span", "muted when"));
  main.append(head, make("span", "message"), make("span", "meta muted"));
  row.append(main);
  return row;
}

function updateEvent(row, event) {
  setText(row.querySelector(".kind"), event.kind || "event");
  setText(row.querySelector(".when"), event.at ? fmtClock(event.at) : "");
  setText(row.querySelector(".message"), event.message || "");
  setText(row.querySelector(".meta"), event.folder || "");
}

// ---- the throughput chart (an SVG drawn by hand: 60 bars and a line) ----------------------

function drawChart(force) {
  const svg = byId("chart");
  const minutes = (page.snapshot && page.snapshot.throughput) || [];
  const width = Math.max(200, Math.round(svg.getBoundingClientRect().width || 300));
  const key = width + "|" + JSON.stringify(minutes);
  if (!force && key === page.chartKey) return;
  page.chartKey = key;
  const height = 150;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren(...chartShapes(minutes, width, height));
  summarizeChart(minutes);
}

function chartShapes(minutes, width, height) {
  const box = { left: 52, right: width - 30, top: 10, bottom: height - 20 };
  const maxBytes = niceBytes(Math.max(0, ...minutes.map((m) => Number(m.bytes) || 0)));
  const maxFiles = niceCeiling(Math.max(0, ...minutes.map((m) => Number(m.files) || 0)));
  const slot = (box.right - box.left) / Math.max(60, minutes.length);
  const shapes = [...chartAxes(box, maxBytes, maxFiles, minutes.length)];
  const points = [];
  minutes.forEach((minute, i) => {
    const bytes = Number(minute.bytes) || 0;
    const files = Number(minute.files) || 0;
    const x = box.left + i * slot;
    const barHeight = maxBytes ? ((box.bottom - box.top) * bytes) / maxBytes : 0;
    const bar = svgShape("rect", { x: x + 0.5, y: box.bottom - barHeight,
      width: Math.max(1, slot - 1), height: barHeight, class: "bar-bytes" });
    bar.dataset.testid = "chart-bar";
    bar.dataset.bytes = bytes;
    bar.dataset.files = files;
    bar.append(svgText("title", `${fmtClock(minute.at)}: ${plural(files, "file")}, ${fmtBytes(bytes)}`));
    shapes.push(bar);
    const y = maxFiles ? box.bottom - ((box.bottom - box.top) * files) / maxFiles : box.bottom;
    points.push(`${(x + slot / 2).toFixed(1)},${y.toFixed(1)}`);
  });
  if (points.length) shapes.push(svgShape("polyline", { points: points.join(" "), class: "line-files" }));
  if (!minutes.some((m) => Number(m.files) || Number(m.bytes))) {
    shapes.push(svgText("text", "No uploads in the last hour",
      { x: (box.left + box.right) / 2, y: (box.top + box.bottom) / 2, class: "chart-empty" }));
  }
  return shapes;
}

function chartAxes(box, maxBytes, maxFiles, count) {
  const middle = (box.top + box.bottom) / 2;
  const minutes = Math.max(60, count);
  return [
    svgShape("line", { x1: box.left, x2: box.right, y1: box.bottom, y2: box.bottom, class: "axis" }),
    svgShape("line", { x1: box.left, x2: box.right, y1: box.top, y2: box.top, class: "gridline" }),
    svgShape("line", { x1: box.left, x2: box.right, y1: middle, y2: middle, class: "gridline" }),
    svgText("text", fmtBytes(maxBytes), { x: box.left - 4, y: box.top + 4, class: "tick tick-bytes end" }),
    svgText("text", "0", { x: box.left - 4, y: box.bottom, class: "tick end" }),
    svgText("text", String(maxFiles), { x: box.right + 4, y: box.top + 4, class: "tick tick-files" }),
    svgText("text", `−${minutes} min`, { x: box.left, y: box.bottom + 15, class: "tick" }),
    svgText("text", "now", { x: box.right, y: box.bottom + 15, class: "tick end" }),
  ];
}

function summarizeChart(minutes) {
  const files = minutes.reduce((sum, m) => sum + (Number(m.files) || 0), 0);
  const bytes = minutes.reduce((sum, m) => sum + (Number(m.bytes) || 0), 0);
  const busiest = Math.max(0, ...minutes.map((m) => Number(m.files) || 0));
  const text = `${plural(files, "file")}, ${fmtBytes(bytes)} in the last hour`
    + (busiest ? `; busiest minute ${plural(busiest, "file")}` : "");
  byId("chart-summary").textContent = text;
  byId("chart").dataset.files = files;
  byId("chart").dataset.bytes = bytes;
}

function niceCeiling(value) {
  if (value <= 0) return 0;
  const power = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 2.5, 5, 10].find((s) => s * power >= value);
  return step * power;
}

/** A round top for the bytes axis in binary units (4 MiB, not 4.19 MB shown as 4 MiB). */
function niceBytes(value) {
  let unit = 1;
  while (value / unit >= 1024) unit *= 1024;
  return niceCeiling(value / unit) * unit;
}

function svgShape(tag, attributes) {
  const shape = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    shape.setAttribute(name, String(value));
  }
  return shape;
}

function svgText(tag, text, attributes) {
  const shape = svgShape(tag, attributes);
  shape.textContent = text;
  return shape;
}

// ---- actions ----------------------------------------------------------------------------

function bindActions() {
  byId("pause").addEventListener("click", onPause);
  byId("resume").addEventListener("click", () => act("/resume", {}, byId("resume"), applyPaused));
  byId("retry-all").addEventListener("click", onRetryAll);
  byId("token-cancel").addEventListener("click", () => byId("token-dialog").close("cancel"));
  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault(); // closed by hand: the page's CSP has form-action 'none'
    byId("token-dialog").close("save");
  });
}

function onPause() {
  const seconds = byId("pause-for").value;
  const body = seconds ? { for_seconds: Number(seconds) } : {};
  act("/pause", body, byId("pause"), applyPaused);
}

function onRetry(path, button) {
  act("/retry", { path }, button, () => {
    page.retrying.set(path, Date.now());
    button.disabled = true;
    button.textContent = "Queued";
  });
}

function onRetryAll() {
  act("/retry", { all_failed: true }, byId("retry-all"), (answer) => {
    const retried = (answer && answer.retried) || [];
    for (const path of retried) page.retrying.set(path, Date.now());
    notice(plural(retried.length, "file") + " put back in the queue", "info");
  });
}

function onRescan(folder, button) {
  act("/rescan", { folder }, button, () => notice("Rescanning " + folder, "info"));
}

/** Show the answer to a pause or resume at once; the next snapshot confirms it. */
function applyPaused(answer) {
  if (!page.snapshot || !answer || typeof answer.paused !== "boolean") return;
  page.snapshot.status = { ...(page.snapshot.status || {}), paused: answer };
  render(page.snapshot);
}

async function act(path, body, button, onDone) {
  button.disabled = true;
  try {
    const answer = await post(path, body);
    if (answer !== null) {
      hideNotice();
      onDone(answer);
    }
  } catch (error) {
    notice(String(error.message || error), "error");
  } finally {
    if (!page.retrying.has(body.path)) button.disabled = false;
    updateButtons();
  }
}

/** POST JSON with the token; null when the user declined to give one. */
async function post(path, body) {
  let why = "This action needs the daemon's control token.";
  for (;;) {
    const token = readToken() || (await askToken(why));
    if (!token) return null;
    const response = await send(path, body, token);
    const answer = await response.json().catch(() => ({}));
    if (response.status !== 401) {
      if (!response.ok) throw new Error(answer.message || `the daemon answered ${response.status}`);
      return answer;
    }
    forgetToken();
    why = "The daemon refused that token (it may have been made anew).";
  }
}

async function send(path, body, token) {
  try {
    return await fetch(API + path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Florasync-Token": token },
      body: JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch {
    throw new Error("The daemon did not answer: is it running?");
  }
}

// ---- the token ---------------------------------------------------------------------------

function readToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || page.memoryToken;
  } catch {
    return page.memoryToken; // storage disabled: keep it for this page only
  }
}

function saveToken(token) {
  page.memoryToken = token;
  try {
    localStorage.setItem(TOKEN_KEY, token);
  } catch {
    // storage disabled: the page remembers it until it is closed
  }
}

function forgetToken() {
  page.memoryToken = null;
  try {
    localStorage.removeItem(TOKEN_KEY);
  } catch {
    // nothing stored
  }
}

/** Ask for the token in the dialog; resolves to it, or to null when cancelled. */
function askToken(why) {
  if (page.tokenPrompt) return page.tokenPrompt;
  const dialog = byId("token-dialog");
  const input = byId("token-input");
  byId("token-why").textContent = why;
  input.value = "";
  dialog.returnValue = "";
  page.tokenPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      page.tokenPrompt = null;
      const token = input.value.trim();
      input.value = "";
      if (dialog.returnValue !== "save" || !token) return resolve(null);
      saveToken(token);
      return resolve(token);
    }, { once: true });
  });
  dialog.showModal();
  input.focus();
  return page.tokenPrompt;
}

// ---- every failure, page by page, when the snapshot's 50 are not all ----------------------

async function refreshAllFailures(total) {
  if (page.fetchingFailures) return;
  page.fetchingFailures = true;
  try {
    const files = [];
    while (files.length < Math.min(total, FAILURE_CAP)) {
      const query = `state=failed&offset=${files.length}&limit=${FAILURE_PAGE}`;
      const response = await fetch(`${API}/files?${query}`, { cache: "no-store" });
      if (!response.ok) throw new Error(`the daemon answered ${response.status}`);
      const answer = await response.json();
      files.push(...(answer.files || []));
      if (!(answer.files || []).length) break;
    }
    page.allFailures = files;
    page.allFailuresFor = total;
    if (page.snapshot) render(page.snapshot);
  } catch (error) {
    notice("Could not list every failure: " + (error.message || error), "error");
  } finally {
    page.fetchingFailures = false;
  }
}

// ---- small DOM helpers -------------------------------------------------------------------

/**
 * Make `list`'s children match `items` in order, reusing the element of each key: rows that
 * stay are updated in place, so a button is never swapped out under the user's pointer.
 */
function syncList(list, items, keyOf, build, update) {
  const existing = new Map();
  for (const child of list.children) existing.set(child.dataset.key, child);
  const seen = new Set();
  let cursor = list.firstElementChild;
  for (const item of items) {
    let key = String(keyOf(item));
    while (seen.has(key)) key += "\u0000"; // the same key twice still gets two rows
    seen.add(key);
    let row = existing.get(key);
    existing.delete(key);
    if (!row) {
      row = build(item);
      row.dataset.key = key;
    }
    update(row, item);
    if (row === cursor) cursor = cursor.nextElementSibling;
    else list.insertBefore(row, cursor);
  }
  for (const row of existing.values()) row.remove();
}

function make(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text != null) element.textContent = text;
  return element;
}

function pathLabel() {
  const label = make("span", "path");
  label.append(make("span", "name"), make("span", "dir muted"));
  return label;
}

/** A file's name, and its directory shown from its watched folder's name down (the whole
 * path is the tooltip). */
function setPath(row, path) {
  const text = String(path || "");
  const cut = text.lastIndexOf("/") + 1;
  setText(row.querySelector(".path .name"), text.slice(cut) || text);
  setText(row.querySelector(".path .dir"), cut ? shortDir(text.slice(0, cut)) : "");
  row.querySelector(".path").title = text;
}

function shortDir(dir) {
  const status = (page.snapshot && page.snapshot.status) || {};
  const folders = (status.folders || []).map((f) => f.path);
  const home = folders
    .filter((f) => typeof f === "string" && dir.startsWith(f.replace(/\/+$/, "") + "/"))
    .sort((a, b) => b.length - a.length)[0];
  if (!home) return dir;
  const parent = home.replace(/\/+$/, "");
  return parent.slice(parent.lastIndexOf("/") + 1) + dir.slice(parent.length);
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

function notice(text, kind) {
  const box = byId("notice");
  box.dataset.kind = kind;
  box.textContent = text;
  box.hidden = false;
}

function hideNotice() {
  byId("notice").hidden = true;
}

/** Only http(s) links reach an href: a `javascript:` URL from anywhere must not. */
function safeUrl(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

// ---- formatting --------------------------------------------------------------------------

function count(object, name) {
  return Number((object || {})[name]) || 0;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function fmtBytes(value) {
  let n = Number(value) || 0;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || n >= 100 ? 0 : n >= 10 ? 1 : 2;
  return `${n.toFixed(digits)} ${units[unit]}`;
}

function fmtClock(iso, seconds = true) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso || "");
  const sameDay = date.toDateString() === new Date().toDateString();
  const clock = { hour: "2-digit", minute: "2-digit", hour12: false };
  if (seconds) clock.second = "2-digit";
  if (sameDay) return date.toLocaleTimeString([], clock);
  return date.toLocaleString([], { month: "short", day: "numeric", ...clock });
}

function fmtIn(iso) {
  const seconds = Math.max(0, Math.round((new Date(iso).getTime() - Date.now()) / 1000));
  if (seconds < 60) return `in ${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `in ${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return minutes % 60 ? `in ${hours} h ${minutes % 60} min` : `in ${hours} h`;
}

function isFuture(iso) {
  if (!iso) return false;
  const at = new Date(iso).getTime();
  return !Number.isNaN(at) && at > Date.now();
}
