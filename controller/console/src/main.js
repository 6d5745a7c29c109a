// The Vigil console: a single page over the controller's API (/api/v1). It holds no
// secret of its own: the session is an HttpOnly cookie, and every change carries the
// session's CSRF token.
import { storyElements, drawStory } from "./story.js";

const $ = (sel, root = document) => root.querySelector(sel);
const app = $("#app");
let me = null; // {name, role, csrf}
const ROLES = ["viewer", "responder", "admin"];
const may = (role) => me && ROLES.indexOf(me.role) >= ROLES.indexOf(role);

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && me?.csrf) headers["X-CSRF-Token"] = me.csrf;
  const resp = await fetch(`/api/v1${path}`, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (resp.status === 401 && path !== "/login") {
    me = null;
    showLogin();
    throw new ApiError(401, "the session ended: log in again");
  }
  if (!resp.ok) throw new ApiError(resp.status, data?.error || `${resp.status} ${resp.statusText}`);
  return data;
}

// ---------- small helpers ----------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(text, bad = false) {
  const t = $("#toast");
  t.textContent = text;
  t.className = bad ? "bad" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), bad ? 9000 : 4000);
}

const ago = (ns) => {
  if (!ns) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - ns / 1e9));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
};
const when = (ns) => (ns ? new Date(ns / 1e6).toLocaleString() : "");
const riskClass = (r) => `risk r${r >= 90 ? 3 : r >= 70 ? 2 : r >= 40 ? 1 : 0}`;
const riskBadge = (r) => h("span", { class: riskClass(r) }, r);
const pill = (text, kind = "") => h("span", { class: `pill ${kind}` }, text);
const statusPill = (s) =>
  pill(s, { done: "ok", pending: "warn", failed: "bad", refused: "bad", observed: "", nothing_to_do: "" }[s] ?? "");

function table(columns, rows, onClick) {
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c.title)))),
    h(
      "tbody",
      {},
      rows.length === 0
        ? h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "nothing yet"))
        : rows.map((r) =>
            h(
              "tr",
              { class: onClick ? "click" : "", onclick: onClick ? () => onClick(r) : null },
              columns.map((c) => h("td", { class: c.num ? "num" : "" }, c.cell(r))),
            ),
          ),
    ),
  );
}

function tiles(items) {
  return h("div", { class: "tiles" }, items.map(([n, l]) => h("div", { class: "tile" }, h("div", { class: "n" }, n), h("div", { class: "l" }, l))));
}

/// Runs `work` for a button, showing its outcome; refreshes the page after a change.
async function act(button, label, work) {
  button.disabled = true;
  try {
    await work();
    toast(`${label}: done`);
    refresh();
  } catch (e) {
    toast(`${label}: ${e.message}`, true);
  } finally {
    button.disabled = false;
  }
}

// Actions are records; one that settles another names it: an undo, a denial, or the
// approved action itself (which then carries the outcome, and the undo).
function settledIds(actions) {
  const by = new Map();
  for (const a of actions) if (a.body.settles) by.set(a.body.settles, a.body);
  return by;
}
const settledAs = (s) => (s.action === "undo" ? "undone" : s.action === "deny" ? "denied" : "approved");
const undoable = (a, settled) =>
  a.body.status === "done" &&
  a.body.undo &&
  !["nothing_to_undo", "impossible"].includes(a.body.undo.how) &&
  !settled.has(a.body.id);
const targetText = (t) => {
  if (!t) return "";
  if (t.type === "process_tree") return `process ${t.pid} ${t.exe || ""}`;
  if (t.type === "file") return t.path;
  if (t.type === "host") return `host ${t.name}`;
  if (t.type === "hash") return `sha256 ${t.sha256.slice(0, 16)}…`;
  return JSON.stringify(t);
};

// ---------- pages ----------

async function fleetPage() {
  const { hosts } = await api("GET", "/hosts");
  const online = hosts.filter((x) => x.connected).length;
  const isolated = hosts.filter((x) => x.report?.isolated).length;
  const dropped = hosts.reduce((n, x) => n + (x.report?.dropped || 0), 0);
  const search = h("input", { type: "search", placeholder: "filter by name, id, version…", id: "host-filter" });
  const body = h("div");
  const draw = () => {
    const q = search.value.toLowerCase();
    const rows = hosts.filter((x) => !q || JSON.stringify(x).toLowerCase().includes(q));
    body.replaceChildren(
      table(
        [
          { title: "Host", cell: (x) => h("div", {}, h("strong", {}, x.hostname), h("div", { class: "muted mono" }, x.id)) },
          { title: "State", cell: (x) => (x.revoked ? pill("revoked", "bad") : x.connected ? pill(x.through_replica ? "online via replica" : "online", "ok") : pill("offline")) },
          { title: "Isolated", cell: (x) => (x.report?.isolated ? pill("isolated", "crit") : "no") },
          { title: "Sensor", cell: (x) => x.report?.sensor_version || "" },
          { title: "Policy", cell: (x) => x.report?.policy_version ?? "" },
          { title: "Rules", cell: (x) => `${x.report?.rules_loaded ?? 0}${x.report?.rules_version ? ` (${x.report.rules_version})` : ""}` },
          { title: "Dropped", num: true, cell: (x) => x.report?.dropped ?? 0 },
          { title: "Last seen", cell: (x) => ago(x.last_seen_ns) },
          {
            title: "",
            cell: (x) =>
              may("responder") && !x.revoked
                ? x.report?.isolated
                  ? h("button", { class: "ghost", onclick: (ev) => { ev.stopPropagation(); act(ev.target, `release ${x.hostname}`, () => api("POST", `/hosts/${x.id}/release`, { force: false })); } }, "Release")
                  : h("button", { class: "danger", onclick: (ev) => { ev.stopPropagation(); if (confirm(`Isolate ${x.hostname}?`)) act(ev.target, `contain ${x.hostname}`, () => api("POST", `/hosts/${x.id}/contain`, { reason: "contained from the console" })); } }, "Contain")
                : "",
          },
        ],
        rows,
        (x) => (location.hash = `#/incidents?host=${encodeURIComponent(x.id)}`),
      ),
    );
  };
  search.addEventListener("input", draw);
  draw();
  return [h("h1", {}, "Fleet"), tiles([[hosts.length, "hosts"], [online, "online"], [isolated, "isolated"], [dropped, "events dropped"]]), h("div", { class: "row" }, search), body];
}

async function incidentsPage(params) {
  const host = params.get("host");
  const { incidents } = await api("GET", `/incidents${host ? `?host=${encodeURIComponent(host)}` : ""}`);
  const sorted = [...incidents].sort((a, b) => (a.closed ? 1 : 0) - (b.closed ? 1 : 0) || b.risk - a.risk || b.last_ns - a.last_ns);
  const open = incidents.filter((i) => !i.closed).length;
  return [
    h("h1", {}, host ? `Incidents on ${host}` : "Incidents"),
    tiles([[open, "open"], [incidents.length - open, "closed"], [incidents.filter((i) => !i.closed && i.risk >= 80).length, "open, risk ≥ 80"]]),
    table(
      [
        { title: "Risk", cell: (i) => riskBadge(i.risk) },
        { title: "Incident", cell: (i) => h("div", {}, h("span", { class: "mono" }, i.id), h("div", { class: "muted" }, [...i.rules].join(", "))) },
        { title: "Host", cell: (i) => i.host },
        { title: "Spans", cell: (i) => (i.spans.length > 1 ? pill(`${i.spans.length} hosts`, "warn") : "") },
        { title: "Alerts", num: true, cell: (i) => i.alerts },
        { title: "Source", cell: (i) => i.source },
        { title: "State", cell: (i) => (i.closed ? pill(`closed (${i.closed.how})`) : pill("open", "bad")) },
        { title: "Last", cell: (i) => ago(i.last_ns) },
      ],
      sorted,
      (i) => (location.hash = `#/incident/${encodeURIComponent(i.host)}/${encodeURIComponent(i.id)}`),
    ),
  ];
}

async function incidentPage(host, id) {
  const [{ incidents }, alerts, actions] = await Promise.all([
    api("GET", `/incidents?host=${encodeURIComponent(host)}`),
    api("GET", `/alerts?host=${encodeURIComponent(host)}`),
    api("GET", `/actions?host=${encodeURIComponent(host)}`),
  ]);
  const inc = incidents.find((i) => i.id === id);
  if (!inc) return [h("h1", {}, "Incident"), h("p", {}, `No incident ${id} on ${host}.`)];
  const mine = alerts.records.filter((r) => r.body.incident === id).map((r) => r.body);
  const acts = actions.records.filter((r) => r.body.incident === id);
  const settled = settledIds(actions.records);
  const pending = acts.filter((a) => a.body.status === "pending" && !settled.has(a.body.id));
  const graph = h("div", { id: "graph" });
  const detail = h("div", { class: "panel", id: "node-detail" }, h("span", { class: "muted" }, "Click a node to see its evidence."));
  const alertItem = (a) =>
    h("li", { class: "alert" },
      h("div", { class: "t" }, when(a.time_ns)),
      h("strong", {}, a.rule?.title || "alert"), " ", riskBadge(a.risk?.score ?? 0),
      h("div", { class: "mono muted" }, `${a.process?.exe || "?"} [${a.process?.pid}] ${a.process?.cmdline || ""}`));
  const actionItem = (r) =>
    h("li", { class: "action" },
      h("div", { class: "t" }, when(r.body.time_ns)),
      h("strong", {}, r.body.action), " ", statusPill(r.body.status),
      h("div", {}, targetText(r.body.target)),
      h("div", { class: "muted" }, r.body.reason || ""),
      r.body.detail ? h("div", { class: "muted" }, r.body.detail) : null);
  const timeline = [
    ...mine.map((a) => ({ t: a.time_ns, el: alertItem(a) })),
    ...acts.map((r) => ({ t: r.body.time_ns, el: actionItem(r) })),
  ].sort((a, b) => a.t - b.t);
  const out = [
    h("h1", {}, "Incident ", h("span", { class: "mono" }, id), " ", riskBadge(inc.risk)),
    h(
      "div",
      { class: "row" },
      pill(inc.closed ? `closed (${inc.closed.how})` : "open", inc.closed ? "" : "bad"),
      h("span", {}, `on ${host}`),
      inc.spans.length > 1 ? pill(`spans ${inc.spans.join(", ")}`, "warn") : null,
      h("span", { class: "muted" }, [...inc.rules].join(" · ")),
    ),
  ];
  if (pending.length) {
    const approve = h("button", { id: "approve", onclick: (ev) => act(ev.target, "approve", () => api("POST", `/incidents/${encodeURIComponent(host)}/${encodeURIComponent(id)}/approve`, {})) }, `Approve ${pending.length} pending`);
    const deny = h("button", { class: "danger", onclick: (ev) => act(ev.target, "deny", () => api("POST", `/incidents/${encodeURIComponent(host)}/${encodeURIComponent(id)}/deny`, {})) }, "Deny");
    out.push(
      h("div", { class: "panel" }, h("h2", {}, "Waiting for approval"),
        table([{ title: "Action", cell: (a) => a.body.action }, { title: "Target", cell: (a) => targetText(a.body.target) }, { title: "Why", cell: (a) => a.body.reason }], pending),
        may("responder") ? h("div", { class: "row", style: "margin-top:10px" }, approve, deny) : h("p", { class: "muted" }, "A responder approves or denies these.")),
    );
  }
  out.push(
    h("div", { class: "split" },
      h("div", {}, h("div", { class: "legend" }, h("span", {}, h("i", { style: "background:#c53030" }), "alerted"), h("span", {}, h("i", { style: "background:#718096" }), "process"), h("span", {}, h("i", { style: "background:#2f5bd3" }), "file"), h("span", {}, h("i", { style: "background:#b7791f" }), "endpoint"), h("span", {}, h("i", { style: "background:#fff;border:3px solid #1d8a4c" }), "acted on")), graph, detail),
      h("div", { class: "panel" }, h("h2", {}, "Timeline"), h("ul", { class: "timeline" }, timeline.map((x) => x.el)))),
  );
  if (inc.indicators.length) out.push(h("div", { class: "panel" }, h("h2", {}, "Indicators"), h("pre", {}, inc.indicators.map((i) => JSON.stringify(i)).join("\n"))));
  if (inc.fleet_steps.length) out.push(h("div", { class: "panel" }, h("h2", {}, "What the fleet did"), table([{ title: "When", cell: (s) => when(s.time_ns) }, { title: "Step", cell: (s) => s.step }, { title: "Detail", cell: (s) => s.detail }, { title: "Clause", cell: (s) => h("code", {}, s.clause) }], inc.fleet_steps)));
  out.push(actionsTable(acts, settled, host));
  // Drawn once the page is in the document (cytoscape measures its container).
  setTimeout(() => {
    if (!graph.isConnected) return;
    const cy = drawStory(graph, storyElements(mine, acts.map((a) => a.body)), (d) => {
      detail.replaceChildren(
        h("strong", {}, d.label),
        d.cmdline ? h("div", { class: "mono" }, d.cmdline) : null,
        d.user ? h("div", { class: "muted" }, `user ${d.user}`) : null,
        d.evidence.length ? h("ul", {}, d.evidence.map((e) => h("li", {}, e))) : h("div", { class: "muted" }, "on the chain to what alerted"),
      );
    });
    window.__vigilGraph = { nodes: cy.nodes().length, edges: cy.edges().length };
  }, 0);
  return out;
}

function actionsTable(records, settled, host) {
  return h("div", { class: "panel" }, h("h2", {}, "Actions"),
    table(
      [
        { title: "When", cell: (r) => when(r.body.time_ns) },
        { title: "Host", cell: (r) => r.host },
        { title: "Action", cell: (r) => h("span", {}, r.body.action, r.body.settles ? h("span", { class: "muted" }, ` of ${r.body.settles}`) : null) },
        { title: "Target", cell: (r) => targetText(r.body.target) },
        { title: "Status", cell: (r) => statusPill(r.body.status) },
        { title: "Why", cell: (r) => h("div", {}, r.body.reason, r.body.detail ? h("div", { class: "muted" }, r.body.detail) : null) },
        { title: "Undo", cell: (r) => undoCell(r, settled, host) },
      ],
      [...records].reverse(),
    ));
}

function undoCell(r, settled, host) {
  if (settled.has(r.body.id)) {
    const s = settled.get(r.body.id);
    return h("span", { class: "settled", title: s.id }, pill(settledAs(s), settledAs(s) === "undone" ? "" : "ok"));
  }
  if (r.body.undo?.how === "impossible") return h("span", { class: "muted" }, `no undo: ${r.body.undo.why || "impossible"}`);
  if (!undoable(r, settled)) return "";
  if (!may("responder")) return pill(r.body.undo.how);
  return h("button", { class: "ghost undo", onclick: (ev) => act(ev.target, `undo ${r.body.id}`, () => api("POST", `/hosts/${encodeURIComponent(host || r.host)}/undo`, { action: r.body.id })) }, "Undo");
}

async function approvalsPage() {
  const { records } = await api("GET", "/actions");
  const settled = settledIds(records);
  const pending = records.filter((r) => r.body.status === "pending" && !settled.has(r.body.id));
  const groups = new Map();
  for (const r of pending) {
    const k = `${r.host}\u0000${r.body.incident}`;
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(r);
  }
  const out = [h("h1", {}, "Waiting for approval")];
  if (!groups.size) out.push(h("p", { class: "muted" }, "Nothing waits for a person."));
  for (const [k, rs] of groups) {
    const [host, incident] = k.split("\u0000");
    out.push(h("div", { class: "panel" },
      h("div", { class: "row" }, h("strong", {}, host), h("a", { href: `#/incident/${encodeURIComponent(host)}/${encodeURIComponent(incident)}`, class: "mono" }, incident)),
      table([{ title: "Action", cell: (r) => r.body.action }, { title: "Target", cell: (r) => targetText(r.body.target) }, { title: "Why", cell: (r) => r.body.reason }, { title: "Since", cell: (r) => ago(r.body.time_ns) }], rs),
      may("responder") ? h("div", { class: "row", style: "margin-top:10px" },
        h("button", { onclick: (ev) => act(ev.target, "approve", () => api("POST", `/incidents/${encodeURIComponent(host)}/${encodeURIComponent(incident)}/approve`, {})) }, "Approve"),
        h("button", { class: "danger", onclick: (ev) => act(ev.target, "deny", () => api("POST", `/incidents/${encodeURIComponent(host)}/${encodeURIComponent(incident)}/deny`, {})) }, "Deny")) : null));
  }
  return out;
}

async function actionsPage() {
  const { records } = await api("GET", "/actions");
  const settled = settledIds(records);
  const counts = (s) => records.filter((r) => r.body.status === s).length;
  return [h("h1", {}, "Actions"), tiles([[records.length, "records"], [counts("done"), "done"], [counts("pending"), "pending"], [counts("failed") + counts("refused"), "failed or refused"]]), actionsTable(records, settled)];
}

async function huntsPage() {
  const { hunts } = await api("GET", "/hunts");
  const query = h("textarea", { id: "hunt-query", rows: 3, placeholder: 'connections where port = 4444' });
  const result = h("div", { id: "hunt-result" });
  const name = h("input", { placeholder: "name", id: "standing-name" });
  const every = h("input", { type: "number", min: 10, value: 300, style: "width:90px" });
  const respond = h("select", {}, h("option", { value: "record" }, "record"), h("option", { value: "isolate" }, "isolate"));
  const run = h("button", {
    id: "hunt-run",
    onclick: async (ev) => {
      ev.target.disabled = true;
      result.replaceChildren(h("p", { class: "muted" }, "hunting…"));
      try {
        const o = await api("POST", "/hunt", { query: query.value });
        result.replaceChildren(
          h("p", {}, `${o.hits.length} hits; ${o.edges_searched} edges searched across ${o.hosts} hosts in ${o.millis} ms`),
          table([{ title: "Host", cell: (x) => x.host }, { title: "Process", cell: (x) => `${x.exe || "?"} [${x.pid}]` }, { title: "Command line", cell: (x) => h("span", { class: "mono" }, x.cmdline) }, { title: "Target", cell: (x) => x.target || "" }], o.hits),
        );
      } catch (e) {
        result.replaceChildren(h("pre", { class: "error" }, e.message));
      } finally {
        ev.target.disabled = false;
      }
    },
  }, "Run");
  const keep = h("button", { class: "ghost", onclick: (ev) => act(ev.target, "keep the hunt", () => api("POST", "/hunts", { name: name.value, query: query.value, every_secs: Number(every.value), respond: respond.value })) }, "Keep as standing hunt");
  return [
    h("h1", {}, "Hunts"),
    h("div", { class: "panel" }, query, h("div", { class: "row", style: "margin-top:8px" }, may("responder") ? run : h("span", { class: "muted" }, "A responder runs hunts."), may("responder") ? [name, "every", every, "s, then", respond, keep] : null), result),
    h("h2", {}, "Standing hunts"),
    table([{ title: "Name", cell: (x) => x.name }, { title: "Query", cell: (x) => h("code", {}, x.query) }, { title: "Every", cell: (x) => `${x.every_secs}s` }, { title: "Respond", cell: (x) => x.respond }, { title: "", cell: (x) => (may("responder") ? h("button", { class: "ghost", onclick: (ev) => act(ev.target, `drop ${x.name}`, () => api("DELETE", `/hunts/${encodeURIComponent(x.name)}`)) }, "Remove") : "") }], hunts),
  ];
}

async function sweepsPage(params) {
  const sha = h("input", { placeholder: "SHA-256", size: 70, class: "mono" });
  const out = h("div");
  const show = (r) =>
    out.replaceChildren(
      h("p", {}, `sweep ${r.sweep.id}: ${r.answers.length} of ${r.hosts} hosts answered`, r.waiting.length ? `; waiting for ${r.waiting.join(", ")}` : ""),
      table([{ title: "Host", cell: (a) => a.host }, { title: "Found", cell: (a) => (a.error ? pill(a.error, "bad") : a.found.length ? a.found.join("\n") : "nothing") }], r.answers),
    );
  const id = params.get("id");
  if (id) show(await api("GET", `/sweeps/${encodeURIComponent(id)}`));
  return [
    h("h1", {}, "Sweeps"),
    h("div", { class: "panel" }, h("div", { class: "row" }, sha, may("responder") ? h("button", { onclick: (ev) => act(ev.target, "sweep", async () => show(await api("POST", "/sweeps", { sha256: sha.value.trim() }))) }, "Sweep the fleet") : null), out),
  ];
}

async function rulesPage() {
  const [{ hosts }, fp] = await Promise.all([api("GET", "/hosts"), api("GET", "/fleet-policy")]);
  const policy = h("textarea", { rows: 8, placeholder: "policy TOML (the sensors' policy)" });
  const files = h("input", { type: "file", multiple: true, accept: ".yml,.yaml" });
  const errors = h("div");
  const fail = (e) => errors.replaceChildren(h("pre", { class: "error" }, e.message));
  return [
    h("h1", {}, "Rules & policy"),
    h("h2", {}, "In force per host"),
    table([{ title: "Host", cell: (x) => x.hostname }, { title: "Rules loaded", num: true, cell: (x) => x.report?.rules_loaded ?? 0 }, { title: "Rule set", cell: (x) => x.report?.rules_version || "installed" }, { title: "Policy version", cell: (x) => x.report?.policy_version ?? "" }], hosts),
    may("admin")
      ? h("div", { class: "panel" },
          h("h2", {}, "Push"),
          h("div", { class: "row" }, files, h("button", { onclick: async (ev) => { errors.replaceChildren(); const list = await Promise.all([...files.files].map(async (f) => ({ name: f.name, text: await f.text() }))); act(ev.target, "push rules", () => api("POST", "/rules", { files: list }).catch((e) => { fail(e); throw e; })); } }, "Validate and push rules")),
          policy,
          h("div", { class: "row", style: "margin-top:8px" }, h("button", { onclick: (ev) => { errors.replaceChildren(); act(ev.target, "push policy", () => api("POST", "/policy", { text: policy.value }).catch((e) => { fail(e); throw e; })); } }, "Validate and push policy")),
          errors)
      : h("p", { class: "muted" }, "An admin pushes rules and policy."),
    h("h2", {}, `Fleet policy version ${fp.policy.version} (${fp.set ? "set by an operator" : "shipped"})`),
    h("pre", {}, JSON.stringify(fp.policy, null, 2)),
  ];
}

async function auditPage() {
  const { entries } = await api("GET", "/audit");
  return [
    h("h1", {}, "Audit"),
    table([{ title: "When", cell: (e) => when(e.time_ns) }, { title: "Who", cell: (e) => e.who }, { title: "Command", cell: (e) => h("code", {}, e.command) }, { title: "Outcome", cell: (e) => (e.outcome === "ok" ? pill("ok", "ok") : pill(e.outcome, "bad")) }], [...entries].reverse()),
  ];
}

// ---------- routing, login, live updates ----------

function route() {
  const [path, query] = (location.hash.slice(1) || "/fleet").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  switch (parts[0]) {
    case "incidents": return ["incidents", () => incidentsPage(params)];
    case "incident": return ["incidents", () => incidentPage(parts[1], parts[2])];
    case "approvals": return ["approvals", approvalsPage];
    case "actions": return ["actions", actionsPage];
    case "hunts": return ["hunts", huntsPage];
    case "sweeps": return ["sweeps", () => sweepsPage(params)];
    case "rules": return ["rules", rulesPage];
    case "audit": return ["audit", auditPage];
    default: return ["fleet", fleetPage];
  }
}

let rendering = 0;
async function render() {
  if (!me) return;
  const [name, page] = route();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  const mine = ++rendering;
  try {
    const content = await page();
    if (mine !== rendering) return;
    app.replaceChildren(...content);
  } catch (e) {
    if (mine === rendering && e.status !== 401) app.replaceChildren(h("h1", {}, "Something failed"), h("pre", { class: "error" }, e.message));
  }
  updatePending();
}

async function updatePending() {
  try {
    const { records } = await api("GET", "/actions");
    const settled = settledIds(records);
    const n = records.filter((r) => r.body.status === "pending" && !settled.has(r.body.id)).length;
    const b = $("#pending-count");
    b.textContent = n;
    b.hidden = n === 0;
  } catch {
    /* shown by the page */
  }
}

// A change re-draws the page, at most every 700 ms; a page with a form being filled in
// (a hunt being written) keeps its input.
let refreshTimer = null;
function refresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => {
    refreshTimer = null;
    const typing = document.activeElement && ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName);
    if (!typing) render();
  }, 700);
}

let events = null;
function listen() {
  events?.close();
  events = new EventSource("/api/v1/events");
  events.addEventListener("open", () => $("#live").classList.add("on"));
  events.addEventListener("error", () => $("#live").classList.remove("on"));
  events.addEventListener("change", refresh);
  events.addEventListener("lagged", refresh);
}

function showLogin() {
  events?.close();
  $("#top").hidden = true;
  const name = h("input", { id: "login-name", placeholder: "operator name", autocomplete: "username" });
  const password = h("input", { id: "login-password", type: "password", placeholder: "password", autocomplete: "current-password" });
  const error = h("div", { class: "muted", id: "login-error" });
  const form = h("form", {
    class: "panel login",
    onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        me = await api("POST", "/login", { name: name.value, password: password.value });
        started();
      } catch (e) {
        error.textContent = e.message;
      }
    },
  }, h("h1", {}, "Vigil"), name, password, h("button", { type: "submit", id: "login-submit" }, "Log in"), error);
  app.replaceChildren(form);
  name.focus();
}

function started() {
  $("#top").hidden = false;
  $("#who").textContent = `${me.name} · ${me.role}`;
  listen();
  render();
}

$("#logout").addEventListener("click", async () => {
  try {
    await api("POST", "/logout", {});
  } finally {
    me = null;
    showLogin();
  }
});
window.addEventListener("hashchange", render);

(async () => {
  try {
    me = await api("GET", "/session");
    started();
  } catch {
    showLogin();
  }
})();
