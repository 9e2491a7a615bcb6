/** The dashboard's page script (`/ui/app.js`), kept as a string so the bundle carries it. @module */

/** `/ui/app.js`: plain browser JavaScript, no build step. */
export const APP_JS = String
  .raw`// Plexus console: renders the live snapshot and log stream from /ws/dashboard
// and calls /api/v1 with the session cookie and its CSRF token.
const $ = (sel) => document.querySelector(sel);
const state = { session: null, samples: [], logs: [], lastSnapshot: null };
const LOG_KEEP = 500;
const SAMPLE_KEEP = 300; // five minutes at one snapshot a second

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  }
  return e;
}

function toast(text) {
  $("#toast").textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => ($("#toast").textContent = ""), 5000);
}

async function api(method, path, body) {
  const headers = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = state.session.csrf;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) location.assign("/ui/login");
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    throw new Error((data && data.error && data.error.message) || res.statusText);
  }
  return data;
}

const can = (role) => {
  const order = ["viewer", "analyst", "operator", "admin"];
  return order.indexOf(state.session.role) >= order.indexOf(role);
};

function renderCluster(s) {
  const c = s.cluster;
  $("#leader").textContent = c.leader == null ? "none" : c.leader;
  $("#epoch").textContent = c.epoch;
  $("#consensus").textContent = c.consensus;
  const rows = c.members.map((m) => {
    const h = s.health[m.id] || {};
    const n = (s.nodes || {})[m.id];
    return el("tr", { "data-node": m.id },
      el("td", {}, m.id, m.id === c.leader ? " ★" : ""),
      el("td", {}, m.address),
      el("td", { class: m.status }, m.status),
      el("td", { class: h.status || "" }, h.status || "?"),
      el("td", {}, h.version || (n && n.version) || ""),
      el("td", {}, n ? n.load.inflight : ""),
      el("td", {}, n ? Math.round(n.load.rss / 1048576) + " MiB" : ""),
      el("td", {}, new Date(m.lastSeen).toLocaleTimeString()));
  });
  $("#members tbody").replaceChildren(...rows);
  renderConsensus(s.consensus || {});
}

// Whatever scalar fields the consensus plugin's status route reports
// (Raft: role, term, commit, lastIndex, applied, ...), one row per member.
function renderConsensus(detail) {
  const ids = Object.keys(detail).sort();
  const keys = [];
  for (const id of ids) {
    for (const [k, v] of Object.entries(detail[id] || {})) {
      if (k !== "id" && k !== "address" && (typeof v !== "object" || v === null) && !keys.includes(k)) keys.push(k);
    }
  }
  $("#consensus-detail thead").replaceChildren(ids.length ? el("tr", {}, el("th", {}, "node"), ...keys.map((k) => el("th", {}, k))) : "");
  $("#consensus-detail tbody").replaceChildren(...ids.map((id) =>
    el("tr", { "data-consensus": id }, el("td", {}, id), ...keys.map((k) => el("td", {}, detail[id][k])))
  ));
}

function renderPlugins(plugins) {
  const rows = plugins.map((p) => {
    const perms = p.permissions === "all" ? "all" : JSON.stringify(p.permissions || {});
    const action = can("admin")
      ? el("button", { type: "button", "data-reload": p.name, onclick: () => reload(p.name) }, "Reload")
      : "";
    return el("tr", { "data-plugin": p.name },
      el("td", {}, p.name), el("td", {}, p.version), el("td", {}, p.kind),
      el("td", { class: p.status }, p.status),
      el("td", { class: p.restarts ? "warn" : "" }, p.restarts === undefined ? "" : p.restarts),
      el("td", {}, p.trust || ""),
      el("td", { class: "perms" }, perms), el("td", {}, action));
  });
  $("#plugins tbody").replaceChildren(...rows);
}

function renderAgents(agents) {
  const rows = agents.map((a) =>
    el("tr", { "data-agent": a.agentId },
      el("td", { title: a.agentId }, a.agentId.length > 24 ? a.agentId.slice(0, 14) + "…" + a.agentId.slice(-6) : a.agentId),
      el("td", {}, a.roles.join(", ")),
      el("td", { class: a.connected ? "up" : "offline" }, a.connected ? "connected" : "offline"),
      el("td", {}, a.channels.join(", ")),
      el("td", { class: "queued" }, a.queued),
      el("td", {}, a.lastSeen ? new Date(a.lastSeen).toLocaleTimeString() : "never"),
      el("td", {}, can("operator")
        ? el("button", { type: "button", "data-pick": a.agentId, onclick: () => {
          $("#agent-send [name=id]").value = a.agentId;
          $("#agent-send [name=channel]").focus();
        } }, "Message")
        : ""))
  );
  $("#agents tbody").replaceChildren(...rows);
}

function renderQueues(queues) {
  const rows = queues.map((q) =>
    el("tr", {}, el("td", {}, q.queue), el("td", { class: q.state === "dead" && q.depth ? "error" : "" }, q.state), el("td", {}, q.depth))
  );
  $("#queues tbody").replaceChildren(...rows);
}

function renderDead(dead, oldest) {
  const ops = can("operator");
  $("#purge-all").hidden = !ops || dead.length === 0;
  const rows = dead.map((d) =>
    el("tr", { "data-dead": d.id },
      el("td", { title: d.id }, d.id.slice(0, 8)),
      el("td", {}, d.type),
      el("td", {}, d.attempts),
      el("td", {}, d.deadAt ? new Date(d.deadAt).toLocaleTimeString() : ""),
      el("td", { class: "reason", title: d.reason || "" }, d.lastError || d.reason || ""),
      el("td", {}, ops
        ? [
          el("button", { type: "button", "data-replay": d.id, onclick: () => deadAction("replay", d.id) }, "Replay"),
          " ",
          el("button", { type: "button", "data-purge": d.id, onclick: () => deadAction("purge", d.id) }, "Purge"),
        ]
        : ""))
  );
  $("#dead tbody").replaceChildren(...rows);
  const ages = Object.entries(oldest || {}).filter(([, v]) => v > 0);
  $("#oldest").textContent = ages.length
    ? "oldest ready: " + ages.map(([q, v]) => q + " " + Math.round(v) + " s").join(", ")
    : "";
}

async function deadAction(action, id) {
  try {
    if (action === "replay") {
      await api("POST", "/api/v1/tasks/dead/" + encodeURIComponent(id) + "/replay", {});
      toast("replayed " + id);
    } else {
      const r = await api("POST", "/api/v1/tasks/dead/purge", id ? { ids: [id] } : {});
      toast("purged " + r.purged + " dead letter" + (r.purged === 1 ? "" : "s"));
    }
  } catch (err) {
    toast(action + ": " + err.message);
  }
}

function renderChart() {
  const canvas = $("#chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const pts = state.samples;
  if (pts.length < 2) return;
  const rate = pts.slice(1).map((p, i) => ({ t: p.t, v: Math.max(0, (p.requests - pts[i].requests) / ((p.t - pts[i].t) / 1000)) }));
  const mem = pts.map((p) => ({ t: p.t, v: p.rss / 1048576 }));
  const t0 = pts[0].t, t1 = pts[pts.length - 1].t;
  const line = (series, color) => {
    const vs = series.map((p) => p.v);
    const min = Math.min(...vs), max = Math.max(...vs);
    const span = max - min || 1;
    ctx.strokeStyle = color;
    ctx.beginPath();
    series.forEach((p, i) => {
      const x = ((p.t - t0) / Math.max(1, t1 - t0)) * (w - 4) + 2;
      const y = h - 4 - ((p.v - min) / span) * (h - 8);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  line(mem, "#3182ce");
  line(rate, "#dd6b20");
  $("#now-rss").textContent = Math.round(mem[mem.length - 1].v);
  $("#now-rate").textContent = rate[rate.length - 1].v.toFixed(1);
}

// Sagas running or compensating, each step as "id: state (attempts)";
// debates newest first, the running ones with their latest round's turns.
function renderWork(sagas, debates) {
  $("#sagas tbody").replaceChildren(...sagas.map((g) =>
    el("tr", { "data-saga": g.id },
      el("td", {}, g.id),
      el("td", {}, g.name),
      el("td", { class: g.status }, g.status, g.reason ? " — " + g.reason : ""),
      el("td", {}, g.steps.flatMap((st, i) => [i ? " → " : "", el("span", { class: "step " + st.status, "data-step": st.id }, st.id + ": " + st.status + (st.attempts > 1 ? " (" + st.attempts + ")" : ""))])),
      el("td", {}, new Date(g.updatedAt).toLocaleTimeString()))
  ));
  $("#debates tbody").replaceChildren(...debates.map((d) =>
    el("tr", { "data-debate": d.id },
      el("td", {}, d.id.slice(0, 8)),
      el("td", {}, d.topic.length > 60 ? d.topic.slice(0, 60) + "…" : d.topic),
      el("td", { class: d.status }, d.status),
      el("td", {}, d.roundsRun + " / " + d.rounds),
      el("td", {}, d.result ? d.result.position + " (" + Math.round(d.result.share * 100) + " %, round " + d.result.round + ")" : ""),
      el("td", {}, (d.turns || []).flatMap((t, i) => [i ? "; " : "", el("span", { class: "turn " + t.status }, "#" + t.participant + " " + (t.status === "answered" ? t.position + (t.confidence !== undefined ? " " + t.confidence : "") : "silent") + " " + t.latencyMs + " ms")])))
  ));
}

function onSnapshot(s) {
  state.lastSnapshot = s;
  renderCluster(s);
  renderPlugins(s.plugins);
  renderQueues(s.metrics.queues);
  renderAgents(s.agents || []);
  renderDead(s.dead || [], s.metrics.oldestReady);
  renderWork(s.sagas || [], s.debates || []);
  state.samples.push({ t: Date.now(), rss: s.metrics.rss, requests: s.metrics.requests });
  if (state.samples.length > SAMPLE_KEEP) state.samples.shift();
  renderChart();
}

function logMatches(entry) {
  const f = new FormData($("#log-filter"));
  const p = entry.payload || {};
  const level = f.get("level"), plugin = f.get("plugin"), corr = f.get("correlation");
  if (level && p.level !== level) return false;
  if (plugin && p.plugin !== plugin) return false;
  if (corr && p.correlationId !== corr) return false;
  return true;
}

function logLine(entry) {
  const p = entry.payload || {};
  const text = typeof p === "object"
    ? [p.time || entry.timestamp, p.level || entry.type, p.plugin ? "[" + p.plugin + "]" : "", p.msg || JSON.stringify(p), p.correlationId ? "corr=" + p.correlationId : ""].join(" ")
    : String(p);
  return el("li", { class: p.level || entry.type }, text);
}

function renderLogs() {
  $("#logs").replaceChildren(...state.logs.filter(logMatches).slice(-200).map(logLine));
}

function onLog(entry) {
  state.logs.push(entry);
  if (state.logs.length > LOG_KEEP) state.logs.shift();
  if (logMatches(entry)) {
    const list = $("#logs");
    list.append(logLine(entry));
    while (list.children.length > 200) list.firstChild.remove();
    list.scrollTop = list.scrollHeight;
  }
}

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/dashboard");
  ws.onopen = () => { $("#live").textContent = "live"; $("#live").className = "badge live"; };
  ws.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "snapshot") onSnapshot(m.payload);
    else if (m.type === "log" || m.type === "error" || m.type === "status") onLog(m);
  };
  ws.onclose = (ev) => {
    $("#live").textContent = "offline";
    $("#live").className = "badge offline";
    if (ev.code === 4001) return location.assign("/ui/login");
    setTimeout(connect, 2000);
  };
}

async function reload(name) {
  try {
    const r = await api("POST", "/api/v1/plugins/" + encodeURIComponent(name) + "/reload");
    toast("reloaded " + name + (r && r.version ? " (" + r.version + ")" : ""));
  } catch (err) {
    toast("reload " + name + ": " + err.message);
  }
}

function formHandler(sel, fn) {
  $(sel).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await fn(new FormData(ev.target));
    } catch (err) {
      toast(err.message);
    }
  });
}

async function main() {
  const res = await fetch("/ui/session", { credentials: "same-origin" });
  if (!res.ok) return location.assign("/ui/login");
  state.session = await res.json();
  $("#node").textContent = state.session.nodeId + " · " + state.session.version;
  $("#who").textContent = (state.session.name || state.session.sub) + " (" + state.session.role + ")";
  $("#logout").addEventListener("click", async () => {
    await api("POST", "/ui/auth/logout").catch(() => {});
    location.assign("/ui/login");
  });
  formHandler("#agent-status", async (f) => {
    $("#agent-out").textContent = JSON.stringify(await api("GET", "/api/v1/agents/" + encodeURIComponent(f.get("id")) + "/status"), null, 2);
  });
  formHandler("#agent-send", async (f) => {
    const r = await api("POST", "/api/v1/agents/" + encodeURIComponent(f.get("id")) + "/send", { channel: f.get("channel"), message: f.get("message"), message_type: "test" });
    toast("message " + r.message_id + ": " + r.status);
  });
  formHandler("#task-get", async (f) => {
    $("#task-out").textContent = JSON.stringify(await api("GET", "/api/v1/tasks/" + encodeURIComponent(f.get("id"))), null, 2);
  });
  $("#log-filter").addEventListener("input", renderLogs);
  $("#purge-all").addEventListener("click", () => deadAction("purge"));
  connect();
}

main();
`;
