// Small DOM helpers of the control page. Data reaches the DOM only as text or attribute
// values (textContent, dataset, href after `safeUrl`), never as markup.

export const byId = (id) => document.getElementById(id);

/**
 * Make `list`'s children match `items` in order, reusing the element of each key: rows that
 * stay are updated in place, so a button is never swapped out under the user's pointer.
 */
export function syncList(list, items, keyOf, build, update) {
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

export function make(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text != null) element.textContent = text;
  return element;
}

export function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
}

export function notice(text, kind) {
  const box = byId("notice");
  box.dataset.kind = kind;
  box.textContent = text;
  box.hidden = false;
}

export function hideNotice() {
  byId("notice").hidden = true;
}

/** Only http(s) links reach an href: a `javascript:` URL from anywhere must not. */
export function safeUrl(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value, window.location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}
