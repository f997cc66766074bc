// The control page's lists: folders, uploads in flight, failures, the last synced files and
// recent events. Each row is kept by its key and updated in place, so a button stays put under
// the pointer while snapshots arrive.

import { byId, make, notice, safeUrl, setText, syncList } from "./dom.js";
import { count, fmtBytes, fmtClock } from "./format.js";
import { API, page } from "./state.js";

const FAILURE_PAGE = 200;
const FAILURE_CAP = 5000;

/** What a row's buttons do, set by app.js: (path, button) => void. */
export const rowActions = { retry: null, rescan: null };

/** Every list of the page from one snapshot. */
export function renderLists(snapshot) {
  const status = snapshot.status || {};
  renderFolders(status.folders || []);
  renderTransfers(snapshot.transfers || []);
  // the totals are counted every few seconds, the list is read each time: the larger is newer
  const failures = snapshot.failures || [];
  renderFailures(failures, Math.max(failures.length, count(status.totals, "failed")));
  renderSynced(snapshot.recent || []);
  renderEvents(snapshot.events || []);
}

function renderFolders(folders) {
  syncList(byId("folders"), folders, (f) => f.path, buildFolder, updateFolder);
  byId("folders-empty").hidden = folders.length > 0;
}

function buildFolder() {
  const row = make("li", "row folder");
  row.dataset.testid = "folder-row";
  const main = make("div", "row-main");
  main.append(pathLabel(), make("span", "project muted"), make("span", "counts"));
  const side = make("div", "row-side");
  const rescan = make("button", "small", "Rescan");
  rescan.type = "button";
  rescan.dataset.testid = "rescan";
  rescan.addEventListener("click", () => rowActions.rescan(row.dataset.path, rescan));
  side.append(make("span", "badge watch"), rescan);
  row.append(main, side);
  return row;
}

function updateFolder(row, folder) {
  row.dataset.path = folder.path;
  setFolderPath(row, folder.path);
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
  retry.addEventListener("click", () => rowActions.retry(row.dataset.path, retry));
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
    if (page.snapshot) renderLists(page.snapshot);
  } catch (error) {
    notice("Could not list every failure: " + (error.message || error), "error");
  } finally {
    page.fetchingFailures = false;
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
  const link = make("a", "asset-link", "Asset in FLORA");
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

/** A folder's own name first, then where it is. */
function setFolderPath(row, path) {
  const text = String(path || "").replace(/\/+$/, "") || "/";
  const cut = text.lastIndexOf("/") + 1;
  setText(row.querySelector(".path .name"), text.slice(cut) || text);
  setText(row.querySelector(".path .dir"), text.slice(0, cut));
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
