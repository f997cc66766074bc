// The control API's changes (docs/control.md): a POST carrying X-Florasync-Token.
//
// Owns the token's life in the browser: asked for in a dialog the first time an action needs
// it, kept in localStorage (in memory where storage is off), asked for again after a 401.
// Never put in a URL or a cookie.

import { byId } from "./dom.js";
import { API } from "./state.js";

const TOKEN_KEY = "florasync.control-token";
let memoryToken = null;
let pending = null; // the dialog's answer while it is open

/** Wire the token dialog's buttons (once, at start). */
export function bindTokenDialog() {
  const dialog = byId("token-dialog");
  byId("token-cancel").addEventListener("click", () => dialog.close("cancel"));
  byId("token-form").addEventListener("submit", (event) => {
    event.preventDefault(); // closed by hand: the page's CSP has form-action 'none'
    dialog.close("save");
  });
}

/** POST JSON with the token; null when the user declined to give one. */
export async function post(path, body) {
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

function readToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || memoryToken;
  } catch {
    return memoryToken; // storage disabled: keep it for this page only
  }
}

function saveToken(token) {
  memoryToken = token;
  try {
    localStorage.setItem(TOKEN_KEY, token);
  } catch {
    // storage disabled: the page remembers it until it is closed
  }
}

function forgetToken() {
  memoryToken = null;
  try {
    localStorage.removeItem(TOKEN_KEY);
  } catch {
    // nothing stored
  }
}

/** Ask for the token in the dialog; resolves to it, or to null when cancelled. */
function askToken(why) {
  if (pending) return pending;
  const dialog = byId("token-dialog");
  const input = byId("token-input");
  byId("token-why").textContent = why;
  input.value = "";
  dialog.returnValue = "";
  pending = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      pending = null;
      const token = input.value.trim();
      input.value = "";
      if (dialog.returnValue !== "save" || !token) return resolve(null);
      saveToken(token);
      return resolve(token);
    }, { once: true });
  });
  dialog.showModal();
  input.focus();
  return pending;
}
