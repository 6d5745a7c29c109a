// An incident's story as a graph: the chain of processes from the root cause to each one
// that alerted or was acted on, the files and endpoints each touched, each node with its
// evidence. Drawn with cytoscape (breadth-first layout, root at the top).
import cytoscape from "cytoscape";

const base = (p) => (p || "?").split("/").pop();

const procKey = (p) => `p:${p.pid}:${p.start}`;

function isEndpoint(entity) {
  return /^\[?[0-9a-f.:]+\]?:\d+$/i.test(entity) && !entity.startsWith("/");
}

/// The graph's elements, and for each node what it rests on, from the incident's alerts and
/// actions (host records' bodies).
export function storyElements(alerts, actions) {
  const nodes = new Map();
  const edges = new Map();
  const node = (id, data) => {
    const n = nodes.get(id);
    if (n) {
      Object.assign(n, { ...data, evidence: [...n.evidence, ...(data.evidence || [])] });
      if (data.role === "alerted") n.role = "alerted";
    } else {
      nodes.set(id, { id, evidence: [], ...data });
    }
  };
  const edge = (source, target, label) => {
    const id = `${source}>${target}:${label}`;
    if (!edges.has(id)) edges.set(id, { id, source, target, label });
  };
  for (const a of alerts) {
    const p = a.process || {};
    const chain = [...(p.ancestry || [])].reverse(); // root first
    let parent = null;
    for (const anc of chain) {
      const k = procKey(anc);
      node(k, { kind: "process", label: `${base(anc.exe)} [${anc.pid}]`, exe: anc.exe, pid: anc.pid, role: "ancestor" });
      if (parent) edge(parent, k, "ran");
      parent = k;
    }
    const k = procKey(p);
    const title = a.rule?.title || a.rule?.id || "alert";
    node(k, {
      kind: "process",
      label: `${base(p.exe)} [${p.pid}]`,
      exe: p.exe,
      pid: p.pid,
      cmdline: p.cmdline,
      user: p.user,
      role: "alerted",
      evidence: [`${title} (risk ${a.risk?.score ?? "?"})`],
    });
    if (parent) edge(parent, k, "ran");
    for (const e of a.entities || []) {
      const id = `e:${e}`;
      const kind = isEndpoint(e) ? "endpoint" : "file";
      node(id, { kind, label: kind === "file" ? e : e, role: "entity", evidence: [title] });
      edge(k, id, kind === "endpoint" ? "connected" : "touched");
    }
  }
  for (const r of actions) {
    const t = r.target || {};
    const path = t.path || t.file?.path;
    const pid = t.pid ?? t.process?.pid;
    const what = `${r.action}: ${r.status}`;
    if (path && nodes.has(`e:${path}`)) {
      nodes.get(`e:${path}`).acted = true;
      nodes.get(`e:${path}`).evidence.push(what);
    } else if (pid !== undefined) {
      for (const n of nodes.values()) {
        if (n.kind === "process" && n.pid === pid) {
          n.acted = true;
          n.evidence.push(what);
        }
      }
    }
  }
  return [
    ...[...nodes.values()].map((data) => ({ data, classes: [data.kind, data.role, data.acted ? "acted" : ""].join(" ") })),
    ...[...edges.values()].map((data) => ({ data })),
  ];
}

/// Draws the story in `container`; `onPick` hears the node clicked (its data).
export function drawStory(container, elements, onPick) {
  const cy = cytoscape({
    container,
    elements,
    wheelSensitivity: 0.3,
    style: [
      { selector: "node", style: {
        label: "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4,
        "text-wrap": "ellipsis", "text-max-width": 180, width: 26, height: 26,
        "background-color": "#a0aec0", color: "#1d2330",
      } },
      { selector: "node.process", style: { shape: "round-rectangle", "background-color": "#718096" } },
      { selector: "node.alerted", style: { "background-color": "#c53030", width: 32, height: 32 } },
      { selector: "node.file", style: { shape: "rectangle", "background-color": "#2f5bd3" } },
      { selector: "node.endpoint", style: { shape: "diamond", "background-color": "#b7791f" } },
      { selector: "node.acted", style: { "border-width": 4, "border-color": "#1d8a4c" } },
      { selector: "node:selected", style: { "overlay-opacity": 0.15, "overlay-color": "#2f5bd3" } },
      { selector: "edge", style: {
        width: 1.5, "line-color": "#a0aec0", "target-arrow-color": "#a0aec0",
        "target-arrow-shape": "triangle", "curve-style": "bezier",
        label: "data(label)", "font-size": 9, color: "#667085", "text-rotation": "autorotate",
      } },
    ],
    layout: { name: "breadthfirst", directed: true, spacingFactor: 1.1, padding: 20 },
  });
  cy.on("tap", "node", (ev) => onPick(ev.target.data()));
  return cy;
}
