// The control page (issue 16, docs/control.md): follows /api/v1/stream and renders each
// `snapshot`; sends Pause, Resume, Retry and Rescan to the API.
//
// Owns the stream's life (EventSource reconnects by itself; a stream that closed for good or
// went quiet is opened anew) and what the connection badge says.

import { renderBanner } from "./banner.js";
import { drawChart } from "./chart.js";
import { byId, hideNotice, notice } from "./dom.js";
import { count, fmtBytes, fmtClock, plural } from "./format.js";
import { renderLists, rowActions } from "./rows.js";
import { API, page } from "./state.js";
import { bindTokenDialog, post } from "./token.js";

const STALE_MS = 15000; // the stream sends at least every 5 s (docs/control.md)
const RECONNECT_MAX_MS = 10000;
const stream = { source: null, lastMessageAt: 0, reconnectMs: 500, timer: null };

document.addEventListener("DOMContentLoaded", () => {
  bindActions();
  connect();
  setInterval(checkStale, 2000);
  window.addEventListener("resize", () => drawChart(throughput(), true));
});

function connect() {
  clearTimeout(stream.timer);
  const source = new EventSource(API + "/stream");
  stream.source = source;
  source.addEventListener("snapshot", (event) => onSnapshot(source, event.data));
  source.addEventListener("error", () => onStreamError(source));
}

function onSnapshot(source, data) {
  if (source !== stream.source) return;
  let snapshot;
  try {
    snapshot = JSON.parse(data);
  } catch {
    return; // a garbled event: the next one replaces it
  }
  stream.lastMessageAt = Date.now();
  stream.reconnectMs = 500;
  setConnection("live");
  page.snapshot = snapshot;
  render(snapshot);
}

function onStreamError(source) {
  if (source !== stream.source) return;
  setConnection("disconnected");
  // EventSource retries by itself unless the answer was not a stream (readyState CLOSED).
  if (source.readyState === EventSource.CLOSED) reconnectLater();
}

function reconnectLater() {
  if (stream.source) stream.source.close();
  stream.source = null;
  clearTimeout(stream.timer);
  stream.timer = setTimeout(connect, stream.reconnectMs);
  stream.reconnectMs = Math.min(stream.reconnectMs * 2, RECONNECT_MAX_MS);
}

function checkStale() {
  const quiet = Date.now() - stream.lastMessageAt > STALE_MS;
  if (stream.source && stream.lastMessageAt && quiet) {
    setConnection("disconnected"); // a half-open connection: nothing arrives, no error either
    stream.lastMessageAt = 0;
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

function render(snapshot) {
  const status = snapshot.status || {};
  renderBanner(status);
  renderControls(status);
  renderLists(snapshot);
  drawChart(throughput(), false);
}

function throughput() {
  return (page.snapshot && page.snapshot.throughput) || [];
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
  const snapshot = page.snapshot || {};
  const failed = Math.max(count((snapshot.status || {}).totals, "failed"),
    (snapshot.failures || []).length);
  byId("retry-all").disabled = !live || failed === 0;
}

function bindActions() {
  byId("pause").addEventListener("click", onPause);
  byId("resume").addEventListener("click", () => act("/resume", {}, byId("resume"), applyPaused));
  byId("retry-all").addEventListener("click", onRetryAll);
  rowActions.retry = onRetry;
  rowActions.rescan = onRescan;
  bindTokenDialog();
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
