/**
 * The live snapshot pushed to every open dashboard page: the cluster view,
 * each member's `/health` (status, version), the plugins and the node's
 * metrics, gathered once per interval for all pages (never per page, never
 * faster than once a second) and only while a page is open.
 *
 * @module
 */
import type { PluginContext } from "../../core/plugin.ts";
import type { NodeRecord } from "../../core/state/registry.ts";
import { gatewayOutboxKey, nodeKey, queueKeys } from "../../core/state/keys.ts";

/** What one snapshot holds (the page renders it). */
export interface Snapshot {
  /** `GET /api/v1/cluster` of this node. */
  cluster: unknown;
  /** `GET /health` of each member, by member id (an error string when it did not answer). */
  health: Record<string, unknown>;
  /** `GET /api/v1/plugins` of this node. */
  plugins: unknown;
  /** A few of this node's metrics (from `GET /metrics`). */
  metrics: MetricSample;
  /** The oldest dead letters of the task queue (`GET /api/v1/tasks/dead?limit=20`). */
  dead: unknown;
  /**
   * Each node's version, load (in-flight tasks, RSS) and start time: from
   * the registry records in this node's KV, else (a member with its own KV)
   * from its `GET /api/v1/cluster/self`.
   */
  nodes: Record<string, Pick<NodeRecord, "version" | "load" | "startedAt">>;
  /**
   * The consensus plugin's own status of each member, when it serves
   * `GET /api/v1/{consensus}/status` (Raft: role, term, commit and log
   * indexes, applied), by member id.
   */
  consensus: Record<string, unknown>;
  /** The first {@linkcode MAX_AGENTS} enrolled agents (with the gateway plugin): presence and queued messages. */
  agents: AgentRow[];
  /** Sagas running or compensating (with the sagas plugin), each step's state. */
  sagas: SagaRow[];
  /** The newest debates (with the debates plugin); the running ones with their turns. */
  debates: DebateRow[];
}

/** One saga as the page lists it. */
export interface SagaRow {
  id: string;
  name: string;
  status: string;
  /** Every step in order, with its state and attempts so far. */
  steps: { id: string; status: string; attempts: number }[];
  reason?: string;
  updatedAt: number;
}

/** One debate as the page lists it. */
export interface DebateRow {
  id: string;
  topic: string;
  status: string;
  roundsRun: number;
  rounds: number;
  participants: number;
  result?: { position: string; round: number; share: number };
  /** The turns of its latest round (running debates only). */
  turns?: {
    round: number;
    participant: number;
    ref: string;
    status: string;
    position?: string;
    confidence?: number;
    latencyMs: number;
  }[];
}

/** Sagas listed per state, debates per snapshot, at most. */
export const MAX_SAGAS = 20;
export const MAX_DEBATES = 10;
/** Running debates whose turns each snapshot reads. */
const DEBATES_WITH_TURNS = 3;

/** One agent as the page lists it. */
export interface AgentRow {
  agentId: string;
  roles: string[];
  connected: boolean;
  /** ISO 8601, or null when never seen. */
  lastSeen: string | null;
  /** The channels it is subscribed to while connected. */
  channels: string[];
  /** Messages waiting in its durable outboxes (ready, delayed or in flight). */
  queued: number;
}

/** Agents listed per snapshot at most. */
export const MAX_AGENTS = 50;
/** The agents are read again every this many snapshots. */
const AGENTS_EVERY = 3;

/** The metrics the page charts and lists. */
export interface MetricSample {
  /** Resident set size, bytes. */
  rss: number;
  /** HTTP requests served since start (all routes). */
  requests: number;
  /** Queue depth by queue and state. */
  queues: { queue: string; state: string; depth: number }[];
  /** Age of the oldest ready message per queue, seconds. */
  oldestReady: Record<string, number>;
}

const LINE_RE = /^(plexus_[a-z_]+)(?:\{([^}]*)\})? ([0-9.eE+-]+|NaN)$/;
const LABEL_RE = /([a-z_]+)="((?:[^"\\]|\\.)*)"/g;

/**
 * Reads the page's few numbers out of Prometheus text.
 *
 * @example Usage
 * ```ts
 * import { metricSample } from "./snapshot.ts";
 * import assert from "node:assert/strict";
 * const s = metricSample([
 *   "plexus_process_resident_memory_bytes 1048576",
 *   'plexus_http_requests_total{method="GET",route="/health",status="200"} 3',
 *   'plexus_queue_depth{queue="tasks",state="dead"} 2',
 * ].join("\n"));
 * assert.deepEqual(s.queues, [{ queue: "tasks", state: "dead", depth: 2 }]);
 * assert.equal(s.rss, 1048576);
 * assert.equal(s.requests, 3);
 * ```
 */
export function metricSample(text: string): MetricSample {
  const out: MetricSample = {
    rss: 0,
    requests: 0,
    queues: [],
    oldestReady: {},
  };
  for (const line of text.split("\n")) {
    const m = LINE_RE.exec(line);
    if (!m) continue;
    const value = Number(m[3]);
    if (m[1] === "plexus_process_resident_memory_bytes") out.rss = value;
    else if (m[1] === "plexus_http_requests_total") out.requests += value;
    else if (
      m[1] === "plexus_queue_depth" ||
      m[1] === "plexus_queue_oldest_ready_age_seconds"
    ) {
      const labels: Record<string, string> = {};
      for (const l of (m[2] ?? "").matchAll(LABEL_RE)) labels[l[1]] = l[2];
      if (m[1] !== "plexus_queue_depth") {
        out.oldestReady[labels.queue ?? "?"] = value;
        continue;
      }
      out.queues.push({
        queue: labels.queue ?? "?",
        state: labels.state ?? "?",
        depth: value,
      });
    }
  }
  return out;
}

/** The sockets that get snapshots. */
export interface Snapshots {
  /** Sends snapshots to `socket` until it closes. */
  add(socket: WebSocket): void;
  /** Stops the timer and forgets every socket. */
  close(): void;
}

const MEMBER_TIMEOUT_MS = 800;

/**
 * Gathers snapshots through this node's own HTTP API (signed node calls, so
 * the same routes and checks as any client) every `intervalMs`.
 *
 * @example Usage
 * ```ts ignore
 * const snapshots = createSnapshots(ctx, { intervalMs: 1000 });
 * snapshots.add(socket);
 * ```
 */
export function createSnapshots(
  ctx: Pick<PluginContext, "nodeFetch" | "node" | "log">,
  options: { intervalMs: number; kv?: Deno.Kv },
): Snapshots {
  const sockets = new Set<WebSocket>();
  let timer: ReturnType<typeof setInterval> | undefined;
  let running = false;
  const self = () => ctx.node.address;
  const get = async (url: string) => {
    const res = await ctx.nodeFetch(url, {
      signal: AbortSignal.timeout(MEMBER_TIMEOUT_MS),
    });
    if (!res.ok) throw new Error(`${url}: ${res.status}`);
    return res;
  };
  const json = async (url: string) => await (await get(url)).json();
  const gather = async (): Promise<Snapshot> => {
    const [cluster, plugins, dead, metrics] = await Promise.all([
      json(`${self()}/api/v1/cluster`),
      json(`${self()}/api/v1/plugins`),
      json(`${self()}/api/v1/tasks/dead?limit=20`).catch(() => []),
      get(`${self()}/metrics`).then(async (r) => metricSample(await r.text())),
    ]);
    const members = (cluster as { members?: { id: string; address: string }[] })
      .members ?? [];
    const health: Record<string, unknown> = {};
    const consensus: Record<string, unknown> = {};
    const name = (cluster as { consensus?: string }).consensus;
    const detail = name && name !== "none" && /^[a-z0-9-]+$/.test(name)
      ? `/api/v1/${name}/status`
      : undefined;
    await Promise.all(members.map(async (m) => {
      try {
        const res = await fetch(`${m.address}/health`, {
          signal: AbortSignal.timeout(MEMBER_TIMEOUT_MS),
        });
        health[m.id] = await res.json();
      } catch (err) {
        health[m.id] = { status: "unreachable", error: (err as Error).message };
        return;
      }
      if (!detail) return;
      try {
        consensus[m.id] = await json(`${m.address}${detail}`);
      } catch {
        // This consensus plugin has no status route, or the node is busy.
      }
    }));
    const nodes: Snapshot["nodes"] = {};
    if (options.kv) {
      for await (
        const e of options.kv.list<NodeRecord>({ prefix: nodeKey() }, {
          limit: 256,
        })
      ) {
        const { version, load, startedAt } = e.value;
        nodes[e.value.id] = { version, load, startedAt };
      }
    }
    // Members whose records this node's KV does not hold (each node has its
    // own KV, as with Raft) report their own load.
    await Promise.all(
      members.filter((m) =>
        !nodes[m.id] && (health[m.id] as { status?: string })?.status !==
          "unreachable"
      ).map(async (m) => {
        try {
          const r = await json(`${m.address}/api/v1/cluster/self`) as {
            version: string;
            load: NodeRecord["load"];
            startedAt: number;
          };
          nodes[m.id] = {
            version: r.version,
            load: r.load,
            startedAt: r.startedAt,
          };
        } catch {
          // An older node without the route, or busy: no load shown.
        }
      }),
    );
    // Presence moves with heartbeats (seconds apart): the agents are read
    // every AGENTS_EVERY snapshots, not every one, to keep API calls few.
    if (ticks++ % AGENTS_EVERY === 0) {
      agents = await agentRows().catch((err) => {
        ctx.log.debug("dashboard agents snapshot failed", { error: err });
        return agents;
      });
    }
    const [sagas, debates] = await Promise.all([
      sagaRows().catch((err) => {
        ctx.log.debug("dashboard sagas snapshot failed", { error: err });
        return [];
      }),
      debateRows().catch((err) => {
        ctx.log.debug("dashboard debates snapshot failed", { error: err });
        return [];
      }),
    ]);
    return {
      cluster,
      health,
      plugins,
      metrics,
      dead,
      nodes,
      consensus,
      agents,
      sagas,
      debates,
    };
  };
  /** `path` of this node's API, or null when no plugin serves it (404). */
  const optional = async (path: string): Promise<unknown | null> => {
    const res = await ctx.nodeFetch(`${self()}${path}`, {
      signal: AbortSignal.timeout(MEMBER_TIMEOUT_MS),
    });
    if (res.status === 404) {
      await res.body?.cancel();
      return null;
    }
    if (!res.ok) throw new Error(`${path}: ${res.status}`);
    return await res.json();
  };
  const sagaRows = async (): Promise<SagaRow[]> => {
    type Saga = {
      id: string;
      def: { name: string; groups: { id: string }[][] };
      status: string;
      steps: Record<string, { status: string; attempts: unknown[] }>;
      reason?: string;
      updatedAt: number;
    };
    const rows: SagaRow[] = [];
    for (const status of ["running", "compensating"]) {
      const page = await optional(
        `/api/v1/sagas?status=${status}&limit=${MAX_SAGAS}`,
      ) as { sagas: Saga[] } | null;
      if (!page) return [];
      for (const g of page.sagas) {
        rows.push({
          id: g.id,
          name: g.def.name,
          status: g.status,
          steps: g.def.groups.flat().map((d) => ({
            id: d.id,
            status: g.steps[d.id]?.status ?? "pending",
            attempts: g.steps[d.id]?.attempts.length ?? 0,
          })),
          ...(g.reason ? { reason: g.reason } : {}),
          updatedAt: g.updatedAt,
        });
      }
    }
    return rows.sort((a, b) => b.updatedAt - a.updatedAt);
  };
  const debateRows = async (): Promise<DebateRow[]> => {
    type Debate = Omit<DebateRow, "participants" | "turns"> & {
      participants: unknown[];
    };
    const page = await optional(`/api/v1/debates?limit=${MAX_DEBATES}`) as
      | { debates: Debate[] }
      | null;
    if (!page) return [];
    const rows: DebateRow[] = page.debates.map((d) => ({
      id: d.id,
      topic: d.topic,
      status: d.status,
      roundsRun: d.roundsRun,
      rounds: d.rounds,
      participants: d.participants.length,
      ...(d.result ? { result: d.result } : {}),
    }));
    await Promise.all(
      rows.filter((r) => r.status === "running").slice(0, DEBATES_WITH_TURNS)
        .map(async (r) => {
          const view = await optional(
            `/api/v1/debates/${encodeURIComponent(r.id)}`,
          ) as { turns?: NonNullable<DebateRow["turns"]> } | null;
          const turns = view?.turns ?? [];
          const last = Math.max(0, ...turns.map((t) => t.round));
          r.turns = turns.filter((t) => t.round === last).map((t) => ({
            round: t.round,
            participant: t.participant,
            ref: t.ref,
            status: t.status,
            ...(t.position ? { position: t.position } : {}),
            ...(t.confidence !== undefined ? { confidence: t.confidence } : {}),
            latencyMs: t.latencyMs,
          }));
        }),
    );
    return rows;
  };
  /** Messages waiting for `agentId` across its outbox queues (KV counters). */
  const queued = async (agentId: string): Promise<number> => {
    if (!options.kv) return 0;
    let n = 0;
    for await (
      const e of options.kv.list<{ queue: string }>({
        prefix: gatewayOutboxKey(agentId),
      })
    ) {
      const k = queueKeys(e.value.queue);
      const counts = await options.kv.getMany<Deno.KvU64[]>([
        k.count("ready"),
        k.count("delayed"),
        k.count("inflight"),
      ]);
      for (const c of counts) {
        const v = c.value?.value ?? 0n;
        if (v < 1n << 63n) n += Number(v); // a transient wrap below zero reads as 0
      }
    }
    return n;
  };
  const agentRows = async (): Promise<AgentRow[]> => {
    const res = await ctx.nodeFetch(`${self()}/api/v1/agents`, {
      signal: AbortSignal.timeout(MEMBER_TIMEOUT_MS),
    });
    if (res.status === 404) { // no gateway plugin on this node
      await res.body?.cancel();
      return [];
    }
    if (!res.ok) throw new Error(`/api/v1/agents: ${res.status}`);
    const list = (await res.json() as { agentId: string; roles: string[] }[])
      .slice(0, MAX_AGENTS);
    return await Promise.all(list.map(async (a) => {
      const s = await json(
        `${self()}/api/v1/agents/${encodeURIComponent(a.agentId)}/status`,
      ) as { connected: boolean; last_seen: string | null; channels: string[] };
      return {
        agentId: a.agentId,
        roles: a.roles,
        connected: s.connected,
        lastSeen: s.last_seen,
        channels: s.channels,
        queued: await queued(a.agentId),
      };
    }));
  };
  let ticks = 0;
  let agents: AgentRow[] = [];
  const tick = async () => {
    if (running) return; // a slow gather is skipped, never stacked
    running = true;
    try {
      const payload = await gather();
      const text = JSON.stringify({
        type: "snapshot",
        payload,
        timestamp: new Date().toISOString(),
      });
      for (const s of sockets) {
        if (s.readyState === WebSocket.OPEN) s.send(text);
      }
    } catch (err) {
      ctx.log.debug("dashboard snapshot failed", { error: err });
    } finally {
      running = false;
    }
  };
  const stopIfIdle = () => {
    if (sockets.size === 0 && timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
  };
  return {
    add(socket) {
      sockets.add(socket);
      socket.addEventListener("open", () => tick(), { once: true });
      socket.addEventListener("close", () => {
        sockets.delete(socket);
        stopIfIdle();
      }, { once: true });
      timer ??= setInterval(tick, options.intervalMs);
    },
    close() {
      for (const s of sockets) s.close(1001, "dashboard stopping");
      sockets.clear();
      stopIfIdle();
    },
  };
}
