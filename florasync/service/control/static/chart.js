// The throughput chart (issue 16): files and bytes per minute over the last hour, drawn by
// hand as an SVG of 60 bars (bytes) and a line (files), redrawn only when its data or width
// changed.

import { byId } from "./dom.js";
import { fmtBytes, fmtClock, plural } from "./format.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const HEIGHT = 150;
let drawn = ""; // the width and data last drawn

/** Draw `minutes` (the stream's `throughput`) unless that was drawn at this width already. */
export function drawChart(minutes, force) {
  const svg = byId("chart");
  const width = Math.max(200, Math.round(svg.getBoundingClientRect().width || 300));
  const key = width + "|" + JSON.stringify(minutes);
  if (!force && key === drawn) return;
  drawn = key;
  svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
  svg.replaceChildren(...chartShapes(minutes, width, HEIGHT));
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
