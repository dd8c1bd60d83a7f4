// capgate console: a single page over the console's JSON API (no framework, no build step).
// This file: the helpers, the session, the confirmation dialog and the routing; the pages
// themselves are in pages.js. Every value from the server is put on the page as text
// (textContent), never as markup.
"use strict";

const state = { session: null, live: null, poll: null };

// -- helpers ---------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Replace a container's content, leaving out the parts a page does not show (null).
function put(node, ...parts) {
  node.replaceChildren(...parts.flat().filter((p) => p !== null && p !== undefined && p !== false));
}

function badge(text, kind) { return el("span", { class: "badge " + (kind || text) }, text); }

async function api(method, path, body) {
  const headers = {};
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    headers["X-CSRF-Token"] = state.session ? state.session.csrf : "";
    init.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, init);
  let data = {};
  try { data = await r.json(); } catch (e) { data = {}; }
  if (r.status === 401 && path !== "/api/login") {
    const ended = state.session !== null; // a session that ended says why; a first visit not
    state.session = null;
    showLogin(ended ? (data.error || "log in again") : "");
    throw new Error(data.error || "log in again");
  }
  if (!r.ok) throw new Error(data.error || ("HTTP " + r.status));
  return data;
}

function flash(message, kind) {
  const old = document.getElementById("flash");
  if (old) old.remove();
  const note = el("p", { id: "flash", class: kind || "ok", role: "status" }, message);
  document.getElementById("view").prepend(note);
}

// The confirmation dialog: every action asks first (and most ask why).
function confirmAction(text, opts) {
  opts = opts || {};
  const dialog = document.getElementById("confirm");
  const reason = document.getElementById("confirm-reason");
  const grants = document.getElementById("confirm-grants");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-reason-label").hidden = !opts.reason;
  reason.hidden = !opts.reason;
  reason.value = "";
  grants.hidden = opts.grants === undefined;
  grants.value = opts.grants || "";
  document.getElementById("confirm-ok").textContent = opts.ok || "Confirm";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") return resolve(null);
      resolve({ reason: reason.value, grants: grants.value });
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function may(what) { return state.session && state.session.may.includes(what); }

// -- login and the frame ---------------------------------------------------------------------

function showLogin(message) {
  stopLive();
  clearTimeout(state.poll);
  document.getElementById("bar").hidden = true;
  document.getElementById("view").replaceChildren();
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("credential").focus();
}

function showFrame() {
  document.getElementById("login").hidden = true;
  document.getElementById("bar").hidden = false;
  const nav = document.getElementById("nav");
  const links = [];
  if (may("agents")) links.push(el("a", { href: "#/agents" }, "Agents"));
  if (may("decisions")) links.push(el("a", { href: "#/decisions" }, "Live decisions"));
  if (may("approvals")) links.push(el("a", { href: "#/approvals" }, "Approvals"));
  nav.replaceChildren(...links);
  document.getElementById("who").textContent =
    state.session.principal + " (" + state.session.role + ")";
}

async function login(event) {
  event.preventDefault();
  const field = document.getElementById("credential");
  try {
    state.session = await api("POST", "/api/login", { credential: field.value });
  } catch (e) {
    document.getElementById("login-error").textContent = e.message;
    return;
  }
  field.value = "";
  showFrame();
  if (!location.hash || location.hash === "#/") location.hash = may("agents") ? "#/agents" : "#/approvals";
  else route();
}

async function logout() {
  try { await api("POST", "/api/logout", {}); } catch (e) { /* ended already */ }
  state.session = null;
  location.hash = "";
  showLogin("logged out");
}

// -- routing -----------------------------------------------------------------------------------

async function route() {
  if (!state.session) return;
  const view = document.getElementById("view");
  const hash = location.hash.split("?")[0];
  if (!hash.startsWith("#/decisions")) stopLive();
  clearTimeout(state.poll);
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("current", hash.startsWith(a.getAttribute("href")));
  }
  try {
    if (hash.startsWith("#/agents/") && may("agents")) {
      await agentPage(view, decodeURIComponent(hash.slice("#/agents/".length)));
    } else if (hash === "#/decisions" && may("decisions")) await decisionsPage(view);
    else if (hash === "#/approvals" && may("approvals")) await approvalsPage(view);
    else if (may("agents")) await agentsPage(view);
    else await approvalsPage(view);
  } catch (e) {
    if (state.session) put(view, el("p", { class: "error" }, e.message));
  }
}

async function start() {
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  try {
    state.session = await api("GET", "/api/session");
  } catch (e) {
    return; // showLogin already ran
  }
  showFrame();
  await route();
}

document.addEventListener("DOMContentLoaded", start);
