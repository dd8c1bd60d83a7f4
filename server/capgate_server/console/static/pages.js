// capgate console: the pages (agents, an agent, live decisions, approvals) and their actions,
// built with the helpers of console.js. Values from the server go on the page as text only.
"use strict";

const APPROVALS_POLL = 5000; // ms between refreshes of the approvals page

async function agentsPage(view) {
  const data = await api("GET", "/api/agents");
  const find = el("input", { id: "find-agent", type: "search", placeholder: "Find an agent" });
  const rows = data.agents.map((a) => el("tr", { "data-agent": a.id },
    el("td", {}, el("a", { href: "#/agents/" + encodeURIComponent(a.id) }, a.id)),
    el("td", {}, badge(a.status)),
    el("td", {}, a.owner),
    el("td", { class: "grants" }, a.ceiling.join("  ")),
    el("td", {}, a.last_use || "—"),
    el("td", { class: "alerts", title: a.alerts.length ? a.alerts[0].reason : "no alert this week" },
      a.alerts.length ? badge(String(a.alerts.length), "alert") : "0")));
  const body = el("tbody", {}, rows);
  find.addEventListener("input", () => {
    const q = find.value.toLowerCase();
    for (const r of rows) r.hidden = !r.dataset.agent.toLowerCase().includes(q);
  });
  put(view,
    el("h1", {}, "Agents"), find,
    el("table", { id: "agents" },
      el("thead", {}, el("tr", {}, ["Agent", "Status", "Owner", "Ceiling", "Last use", "Alerts"]
        .map((h) => el("th", {}, h)))), body),
    data.agents.length ? null : el("p", {}, "No agents registered yet."));
}

function treeNode(n) {
  const dead = n.revoked || n.dead_above || n.cut_off;
  const marks = [];
  if (n.revoked) marks.push(badge("revoked"));
  else if (n.cut_off) marks.push(badge("revoked: all tokens of " + n.agent, "revoked"));
  else if (n.dead_above) marks.push(badge("dead: revoked above", "dead"));
  if (n.suspended) marks.push(badge("suspended"));
  else if (n.agent_status !== "active") marks.push(badge(n.agent_status, "suspended"));
  const act = (!n.revoked && may("act")) ? el("button", {
    type: "button", class: "revoke small danger", on: { click: () => revokeHop(n) } },
  n.issued_by ? "Revoke hop" : "Revoke token") : null;
  const hop = el("div", { class: "hop" + (dead ? " dead" : "") + (n.revoked ? " revoked" : "") +
      (n.suspended ? " suspended" : ""), "data-id": n.id, "data-agent": n.agent },
  el("strong", {}, n.agent),
  el("span", { class: "via" }, n.issued_by ? " ← " + n.issued_by : " issued"),
  el("code", { class: "id", title: n.id }, n.id.slice(0, 8)),
  el("span", { class: "when" }, n.at), marks,
  n.restrictions.length ? el("div", { class: "restrictions" }, n.restrictions.join(" · ")) : null,
  n.truncated ? el("div", { class: "note" }, "more hops below (not shown)") : null, act);
  return el("li", {}, hop,
    n.children.length ? el("ul", {}, n.children.map(treeNode)) : null);
}

async function revokeHop(n) {
  const what = n.issued_by ? `the hop ${n.issued_by} → ${n.agent}` : `the token of ${n.agent}`;
  const answer = await confirmAction(`Revoke ${what} (${n.id})? Every token below it denies at once.`,
    { reason: true, ok: "Revoke" });
  if (!answer) return;
  try {
    await api("POST", "/api/revoke", { id: n.id, reason: answer.reason });
  } catch (e) { flash(e.message, "error"); return; }
  await route();
  flash(`revoked ${n.id}`);
}

async function agentAction(a, verb) {
  let body = {};
  if (verb === "ceiling") {
    const answer = await confirmAction(
      `Narrow the ceiling of ${a.id}: one grant a line, each inside the current ceiling. ` +
      "Live tokens narrow at once.", { grants: a.ceiling.join("\n"), ok: "Narrow" });
    if (!answer) return;
    body = { grants: answer.grants.split("\n").map((g) => g.trim()).filter((g) => g) };
  } else {
    const texts = {
      suspend: [`Suspend ${a.id}? Every token it holds or that passes through it denies until it is resumed.`, "Suspend"],
      resume: [`Resume ${a.id}?`, "Resume"],
      "revoke-all": [`Revoke every token issued to or delegated through ${a.id} until now? This cannot be undone.`, "Revoke all"],
    };
    const [text, ok] = texts[verb];
    if (!await confirmAction(text, { ok })) return;
  }
  try {
    await api("POST", `/api/agents/${encodeURIComponent(a.id)}/${verb}`, body);
  } catch (e) { flash(e.message, "error"); return; }
  await route();
  const done = { ceiling: "ceiling narrowed", suspend: "suspended", resume: "resumed",
    "revoke-all": "every token until now revoked" };
  flash(`${a.id}: ${done[verb]}`);
}

function decisionRow(d) {
  return el("tr", { class: d.allowed ? "allow" : "deny", "data-seq": d.seq },
    el("td", {}, d.last_at),
    el("td", {}, d.allowed ? badge("allow") : badge("deny")),
    el("td", {}, d.count),
    el("td", {}, d.chain.join(" → ")),
    el("td", {}, d.action),
    el("td", { class: "resource" }, d.resource),
    el("td", { class: "code" }, d.code),
    el("td", { class: "caveat" }, d.caveat || ""),
    el("td", {}, d.by));
}

const DECISION_HEAD = ["Last", "Decision", "Count", "Chain", "Action", "Resource", "Code",
  "Caveat", "Asked by"];

function decisionTable(id, decisions) {
  return el("table", { id, class: "decisions" },
    el("thead", {}, el("tr", {}, DECISION_HEAD.map((h) => el("th", {}, h)))),
    el("tbody", {}, decisions.map(decisionRow)));
}

async function agentPage(view, id) {
  const a = await api("GET", "/api/agents/" + encodeURIComponent(id));
  const actions = may("act") ? el("div", { class: "actions" },
    a.status === "active"
      ? el("button", { type: "button", id: "suspend", class: "danger", on: { click: () => agentAction(a, "suspend") } }, "Suspend")
      : el("button", { type: "button", id: "resume", on: { click: () => agentAction(a, "resume") } }, "Resume"),
    el("button", { type: "button", id: "narrow", on: { click: () => agentAction(a, "ceiling") } }, "Narrow ceiling"),
    el("button", { type: "button", id: "revoke-all", class: "danger", on: { click: () => agentAction(a, "revoke-all") } }, "Revoke all tokens")) : null;
  put(view,
    el("p", {}, el("a", { href: "#/agents" }, "← Agents")),
    el("h1", {}, a.id, " ", badge(a.status)),
    el("dl", { class: "facts" },
      el("dt", {}, "Owner"), el("dd", {}, a.owner || "—"),
      el("dt", {}, "Description"), el("dd", {}, a.description || "—"),
      el("dt", {}, "Max TTL / depth"), el("dd", {}, `${a.max_ttl}s / ${a.max_depth}`),
      el("dt", {}, "Rate"), el("dd", {}, a.rate || "none"),
      el("dt", {}, "Approval rules"), el("dd", {}, a.approvals.join("; ") || "none"),
      el("dt", {}, "Last use"), el("dd", {}, a.last_use || "—")),
    actions,
    el("div", { class: "columns" },
      el("div", {}, el("h2", {}, "Ceiling"),
        el("ul", { id: "ceiling", class: "grants" }, a.ceiling.map((g) => el("li", {}, el("code", {}, g))))),
      el("div", {}, el("h2", {}, "Actual use (recent allows)"),
        a.use.length
          ? el("ul", { id: "use", class: "grants" }, a.use.map((u) =>
            el("li", {}, el("code", {}, `${u.action}:${u.resource}`), ` × ${u.count}`)))
          : el("p", { id: "use", class: "note" }, "No allowed request recorded lately."))),
    el("h2", {}, "Alerts"),
    a.alerts.length
      ? el("table", { id: "alerts" },
        el("thead", {}, el("tr", {}, ["When", "Kind", "Why", "Done"].map((h) => el("th", {}, h)))),
        el("tbody", {}, a.alerts.map((r) => el("tr", {},
          el("td", {}, r.at), el("td", {}, r.kind), el("td", {}, r.reason),
          el("td", {}, badge(r.containment, r.containment === "alert" ? "alert" : "suspended"))))))
      : el("p", { class: "note", id: "alerts" }, "No governance alert for this agent."),
    el("h2", {}, "Live tokens and their delegation trees"),
    a.tokens.length
      ? el("div", { id: "trees" }, a.tokens.map((t) => el("ul", { class: "tree" }, treeNode(t))))
      : el("p", { id: "trees" }, "No live token found for this agent."),
    el("h2", {}, "Recent decisions"),
    decisionTable("agent-decisions", a.decisions));
}

function stopLive() {
  if (state.live) { state.live.close(); state.live = null; }
}

async function decisionsPage(view) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const agent = el("input", { id: "f-agent", placeholder: "agent", value: params.get("agent") || "" });
  const decision = el("select", { id: "f-decision" },
    ["any", "allow", "deny"].map((d) => el("option", { value: d, selected: params.get("decision") === d }, d)));
  const code = el("input", { id: "f-code", placeholder: "code (e.g. revoked)", value: params.get("code") || "" });
  const apply = el("button", { type: "submit" }, "Filter");
  const form = el("form", { id: "filters" }, agent, decision, code, apply);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (agent.value) q.set("agent", agent.value);
    if (decision.value !== "any") q.set("decision", decision.value);
    if (code.value) q.set("code", code.value);
    location.hash = "#/decisions" + (q.toString() ? "?" + q : "");
  });
  const query = new URLSearchParams();
  for (const k of ["agent", "decision", "code"]) if (params.get(k)) query.set(k, params.get(k));
  const data = await api("GET", "/api/decisions?" + query);
  const table = decisionTable("live", data.decisions);
  const body = table.querySelector("tbody");
  const seen = new Set(data.decisions.map((d) => d.seq));
  const tally = { allow: 0, deny: 0 };
  for (const d of data.decisions) tally[d.allowed ? "allow" : "deny"] += d.count;
  const counts = el("p", { id: "tally" });
  const status = el("span", { id: "live-status", class: "badge" }, "connecting");
  const showTally = () => { counts.textContent = `allows: ${tally.allow} · denies: ${tally.deny} (shown)`; };
  showTally();
  put(view, el("h1", {}, "Live decisions ", status), form, counts, table);
  stopLive();
  query.set("after", data.follow_from);
  const source = new EventSource("/api/decisions/stream?" + query);
  state.live = source;
  source.onopen = () => { status.textContent = "live"; status.className = "badge live"; };
  source.onerror = async () => {
    status.textContent = "reconnecting";
    status.className = "badge";
    try { await api("GET", "/api/session"); } catch (e) { /* logged out: the login shows */ }
  };
  source.onmessage = (m) => {
    const d = JSON.parse(m.data);
    if (seen.has(d.seq)) return;
    seen.add(d.seq);
    tally[d.allowed ? "allow" : "deny"] += d.count;
    showTally();
    body.prepend(decisionRow(d));
    while (body.children.length > 500) body.lastChild.remove();
  };
}

async function approvalsPage(view) {
  const data = await api("GET", "/api/approvals");
  const rows = data.approvals.map((a) => el("tr", { "data-approval": a.id },
    el("td", {}, el("code", {}, a.id.slice(0, 12))),
    el("td", {}, a.requested_by),
    el("td", {}, a.presenter),
    el("td", {}, a.action),
    el("td", { class: "resource" }, a.resource),
    el("td", {}, Object.entries(a.ctx).map(([k, v]) => `${k}=${v}`).join(", ")),
    el("td", {}, a.note),
    el("td", {}, `${a.votes.filter((v) => v.approve).length} of ${a.needed}`),
    el("td", {}, a.wait_until),
    el("td", {},
      el("button", { type: "button", class: "approve", on: { click: () => decide(a, true) } }, "Approve"),
      el("button", { type: "button", class: "deny danger", on: { click: () => decide(a, false) } }, "Deny"))));
  clearTimeout(state.poll);
  const poll = () => { // new requests show up; an open dialog is never disturbed
    if (location.hash !== "#/approvals" || !state.session) return;
    if (document.getElementById("confirm").open) state.poll = setTimeout(poll, APPROVALS_POLL);
    else route();
  };
  state.poll = setTimeout(poll, APPROVALS_POLL);
  put(view, el("h1", {}, "Approvals waiting"),
    rows.length ? el("table", { id: "approvals" },
      el("thead", {}, el("tr", {}, ["Request", "Asked by", "Presenter", "Action", "Resource",
        "Context", "Note", "Votes", "Lapses", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)) : el("p", { id: "approvals" }, "Nothing waits for approval."));
}

async function decide(a, approve) {
  const answer = await confirmAction(
    `${approve ? "Approve" : "Deny"} ${a.action} on ${a.resource} for ${a.presenter}?`,
    { reason: true, ok: approve ? "Approve" : "Deny" });
  if (!answer) return;
  try {
    await api("POST", "/api/approvals/" + encodeURIComponent(a.id),
      { approve, reason: answer.reason });
  } catch (e) { flash(e.message, "error"); return; }
  await route();
  flash(`${approve ? "approved" : "denied"} ${a.id.slice(0, 12)}`);
}
