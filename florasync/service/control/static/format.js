// How the control page writes numbers, sizes and times (pure functions, no DOM).

export function count(object, name) {
  return Number((object || {})[name]) || 0;
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

export function fmtBytes(value) {
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

export function fmtClock(iso, seconds = true) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso || "");
  const sameDay = date.toDateString() === new Date().toDateString();
  const clock = { hour: "2-digit", minute: "2-digit", hour12: false };
  if (seconds) clock.second = "2-digit";
  if (sameDay) return date.toLocaleTimeString([], clock);
  return date.toLocaleString([], { month: "short", day: "numeric", ...clock });
}

export function fmtIn(iso) {
  const seconds = Math.max(0, Math.round((new Date(iso).getTime() - Date.now()) / 1000));
  if (seconds < 60) return `in ${seconds} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `in ${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return minutes % 60 ? `in ${hours} h ${minutes % 60} min` : `in ${hours} h`;
}

export function isFuture(iso) {
  if (!iso) return false;
  const at = new Date(iso).getTime();
  return !Number.isNaN(at) && at > Date.now();
}
