// The control page's state banner (syncing, paused until when and by whom, key refused,
// journal down, unhealthy, rate limited), the identity line and the window's title.

import { byId } from "./dom.js";
import { count, fmtClock, fmtIn, isFuture, plural } from "./format.js";

/** The banner, the identity line and the title for one `status`. */
export function renderBanner(status) {
  renderIdentity(status);
  document.title = titleFor(status);
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

function renderIdentity(status) {
  const parts = [];
  if (status.host_id) parts.push("host " + status.host_id);
  if (status.workspace_id) parts.push("workspace " + status.workspace_id);
  if (status.version) parts.push("v" + status.version);
  byId("identity").textContent = parts.join(" · ");
}

function titleFor(status) {
  const paused = status.paused || {};
  if (status.key === "refused") return "florasync · key refused";
  if (paused.paused) return "florasync · paused";
  const failed = count(status.totals, "failed");
  return failed > 0 ? `florasync · ${failed} failed` : "florasync";
}
