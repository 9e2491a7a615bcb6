/**
 * Agent presence in KV (`["gateway", "presence", id]`): which node holds an
 * agent's connection, under which connection (`session`) id, since when,
 * what it subscribed to and when it was last heard from.
 *
 * One record per agent: a new connection overwrites it, which is how the
 * node holding an older connection learns it was replaced (its next write
 * finds another session id). Every write by a connection checks that the
 * record is still its own. `connected` alone is not trusted by readers: a
 * node that died without saying so leaves `connected: true` behind, so
 * {@linkcode isLive} also wants a recent `lastSeen`.
 *
 * @module
 */
import {
  gatewayPresenceKey,
  gatewayPresenceVersionKey,
} from "../core/state/keys.ts";
import type { NodeEvents } from "../core/events.ts";

/** Where and how an agent is (or was last) connected. */
export interface PresenceRecord {
  agentId: string;
  connected: boolean;
  /** The node holding (or that last held) the connection. */
  nodeId: string;
  /** That node's base URL, for node-to-node calls. */
  address: string;
  /** Connection id (random per connection). */
  session: string;
  /** The handshake's session id (`sid`). */
  sid: string;
  /** Wall-clock ms. */
  connectedAt: number;
  /** Wall-clock ms the agent was last heard from. */
  lastSeen: number;
  /** Subscribed backend channel names. */
  channels: string[];
  /** Wall-clock ms the session ends (max session age from the last key proof). */
  sessionExpires: number;
  /** The holder's heartbeat interval (readers judge `lastSeen` by it). */
  heartbeatMs: number;
  disconnectedAt?: number;
}

const MAX_CAS = 32;

/**
 * Whether `rec` says the agent is connected now: `connected` and heard from
 * within three heartbeats.
 *
 * @example Usage
 * ```ts
 * import { isLive } from "./presence.ts";
 * import assert from "node:assert/strict";
 * const rec = { connected: true, lastSeen: 0, heartbeatMs: 1000 };
 * assert.equal(isLive(rec, 2999), true);
 * assert.equal(isLive(rec, 3001), false);
 * ```
 */
export function isLive(
  rec: Pick<PresenceRecord, "connected" | "lastSeen" | "heartbeatMs"> | null,
  now: number,
): boolean {
  return !!rec && rec.connected && now - rec.lastSeen <= 3 * rec.heartbeatMs;
}

/** Presence records of every agent. */
export interface PresenceStore {
  get(agentId: string): Promise<PresenceRecord | null>;
  /** Writes `rec` as the agent's presence; returns what was there before. */
  claim(rec: PresenceRecord): Promise<PresenceRecord | null>;
  /**
   * Applies `patch` if the record still belongs to connection `session`;
   * false when another connection took it over (or it is gone).
   */
  update(
    agentId: string,
    session: string,
    patch: Partial<PresenceRecord>,
  ): Promise<boolean>;
  /** Marks connection `session` disconnected (if the record is still its own). */
  release(agentId: string, session: string, lastSeen: number): Promise<void>;
  remove(agentId: string): Promise<void>;
  /** Every record. */
  list(): AsyncIterable<PresenceRecord>;
  /**
   * Every record, as of at most `maxAgeMs` ago: the list read last is
   * reused while the presence version (moved by every write that changes
   * who is connected where, or to what) has not moved and it is younger
   * than `maxAgeMs`, so a reader pays one point read instead of a list.
   * Only `lastSeen` and `sessionExpires` may be older than the KV's (by at
   * most `maxAgeMs`). Concurrent callers share one read.
   */
  snapshot(maxAgeMs: number): Promise<readonly PresenceRecord[]>;
  /**
   * A health tracker for a new connection of `agentId`: emits
   * `agent.health.changed` on its transitions (see {@linkcode createAgentHealth}).
   */
  health(agentId: string, heartbeatMs: number): AgentHealth;
}

/** An agent connection's health, as `agent.health.changed` reports it. */
export type AgentHealthStatus = "healthy" | "degraded" | "unhealthy";

/** Request timeouts in a row that make an agent unhealthy. */
export const UNHEALTHY_TIMEOUTS = 3;

/**
 * One connection's health: what the connection tells it (frames heard,
 * requests answered or timed out, the clock at each check) in, a status
 * out, reported to `onChange` on each transition. Starts healthy.
 */
export interface AgentHealth {
  readonly status: AgentHealthStatus;
  /** Any frame from the agent arrived (a pong, a message, an answer). */
  heard(now: number): void;
  /** A request to the agent was answered (its handler works again). */
  answered(now: number): void;
  /** A request to the agent timed out. */
  timedOut(now: number, detail: string): void;
  /** Re-judges the silence at `now` (the connection calls it on a timer). */
  check(now: number): void;
}

/**
 * A health tracker with these rules (`heartbeatMs` = h, the node's ping
 * interval): **degraded** when nothing was heard for more than 1.5 h, or a
 * request to the agent timed out; **unhealthy** when nothing was heard for
 * more than 2 h (the node closes the connection with 4002 right after, as
 * docs/protocol.md says), or {@linkcode UNHEALTHY_TIMEOUTS} requests in a
 * row timed out while it still answers pings; **healthy** again once it is
 * heard from and its last request (if any timed out) has been answered.
 * The worse of the silence and request judgements wins.
 *
 * @example Usage
 * ```ts
 * import { createAgentHealth } from "./presence.ts";
 * import assert from "node:assert/strict";
 * const seen: string[] = [];
 * const h = createAgentHealth(1000, (status) => seen.push(status), 0);
 * h.check(1600); // 1.6 intervals silent
 * h.check(2100); // 2.1
 * h.heard(2200);
 * assert.deepEqual(seen, ["degraded", "unhealthy", "healthy"]);
 * ```
 */
export function createAgentHealth(
  heartbeatMs: number,
  onChange: (status: AgentHealthStatus, detail: string) => void,
  now: number,
): AgentHealth {
  let lastHeard = now;
  let timeouts = 0;
  let lastTimeout = "";
  let status: AgentHealthStatus = "healthy";
  const judge = (at: number) => {
    const silent = at - lastHeard;
    const bySilence: [AgentHealthStatus, string] = silent > 2 * heartbeatMs
      ? [
        "unhealthy",
        `nothing heard for ${silent} ms (heartbeat ${heartbeatMs} ms)`,
      ]
      : silent > 1.5 * heartbeatMs
      ? [
        "degraded",
        `nothing heard for ${silent} ms (heartbeat ${heartbeatMs} ms)`,
      ]
      : ["healthy", "answering again"];
    const byRequests: [AgentHealthStatus, string] =
      timeouts >= UNHEALTHY_TIMEOUTS
        ? [
          "unhealthy",
          `${timeouts} requests in a row timed out: ${lastTimeout}`,
        ]
        : timeouts > 0
        ? ["degraded", `a request timed out: ${lastTimeout}`]
        : ["healthy", "answering again"];
    const rank = { healthy: 0, degraded: 1, unhealthy: 2 };
    const [next, detail] = rank[byRequests[0]] > rank[bySilence[0]]
      ? byRequests
      : bySilence;
    if (next !== status) {
      status = next;
      onChange(next, detail);
    }
  };
  return {
    get status() {
      return status;
    },
    heard(at) {
      lastHeard = Math.max(lastHeard, at);
      // Healthy with no timeout pending: hearing from it changes nothing
      // (every record heard comes here; judge() allocates).
      if (status === "healthy" && timeouts === 0) return;
      judge(at);
    },
    answered(at) {
      timeouts = 0;
      lastHeard = Math.max(lastHeard, at);
      judge(at);
    },
    timedOut(at, detail) {
      timeouts++;
      lastTimeout = detail;
      judge(at);
    },
    check: judge,
  };
}

/**
 * Presence over `kv`; with `events`, a claim emits `agent.connected` and a
 * release that marks the record disconnected emits `agent.disconnected`.
 *
 * @example Usage
 * ```ts
 * import { createPresence } from "./presence.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const p = createPresence(kv);
 * const rec = {
 *   agentId: "a1", connected: true, nodeId: "n1", address: "http://n1", session: "s1",
 *   sid: "x", connectedAt: 0, lastSeen: 0, channels: [], sessionExpires: 1, heartbeatMs: 1000,
 * };
 * await p.claim(rec);
 * await p.claim({ ...rec, session: "s2" });
 * assert.equal(await p.update("a1", "s1", { lastSeen: 5 }), false);
 * kv.close();
 * ```
 */
export function createPresence(
  kv: Deno.Kv,
  events?: NodeEvents,
): PresenceStore {
  const versionKey = gatewayPresenceVersionKey();
  const cas = async (
    agentId: string,
    next: (cur: PresenceRecord | null) => PresenceRecord | null | undefined,
  ): Promise<{ before: PresenceRecord | null; wrote: boolean }> => {
    const key = gatewayPresenceKey(agentId);
    for (let i = 0; i < MAX_CAS; i++) {
      const entry = await kv.get<PresenceRecord>(key);
      const value = next(entry.value);
      if (value === undefined) return { before: entry.value, wrote: false };
      const op = kv.atomic().check(entry);
      if (membershipMoved(entry.value, value)) op.sum(versionKey, 1n);
      const res = await (value === null ? op.delete(key) : op.set(key, value))
        .commit();
      if (res.ok) return { before: entry.value, wrote: true };
    }
    throw new Error(
      `Cannot write presence of '${agentId}': still contended after ${MAX_CAS} attempts`,
    );
  };
  let cached: { version: bigint; at: number; list: PresenceRecord[] } | null =
    null;
  let reading: Promise<readonly PresenceRecord[]> | undefined;
  const readSnapshot = async (
    maxAgeMs: number,
  ): Promise<readonly PresenceRecord[]> => {
    const now = Date.now();
    const v = (await kv.get<Deno.KvU64>(versionKey)).value?.value ?? 0n;
    if (cached && cached.version === v && now - cached.at < maxAgeMs) {
      return cached.list;
    }
    const list: PresenceRecord[] = [];
    for await (
      const e of kv.list<PresenceRecord>({ prefix: gatewayPresenceKey() })
    ) list.push(e.value);
    // The version was read before the list: a write between the two makes
    // the next reader list again, never keep an older list.
    cached = { version: v, at: now, list };
    return list;
  };
  return {
    async get(agentId) {
      return (await kv.get<PresenceRecord>(gatewayPresenceKey(agentId))).value;
    },
    snapshot(maxAgeMs) {
      return reading ??= readSnapshot(maxAgeMs).finally(() =>
        reading = undefined
      );
    },
    async claim(rec) {
      const { before } = await cas(rec.agentId, () => rec);
      events?.emit("agent.connected", {
        agentId: rec.agentId,
        session: rec.session,
        channels: rec.channels,
      });
      return before;
    },
    async update(agentId, session, patch) {
      return (await cas(
        agentId,
        (cur) => cur?.session === session ? { ...cur, ...patch } : undefined,
      )).wrote;
    },
    async release(agentId, session, lastSeen) {
      const { wrote } = await cas(agentId, (cur) =>
        cur?.session === session
          ? {
            ...cur,
            connected: false,
            lastSeen: Math.max(cur.lastSeen, lastSeen),
            disconnectedAt: Date.now(),
          }
          : undefined);
      if (wrote) events?.emit("agent.disconnected", { agentId, session });
    },
    health(agentId, heartbeatMs) {
      return createAgentHealth(
        heartbeatMs,
        (status, detail) =>
          events?.emit("agent.health.changed", {
            agentId,
            status,
            detail: detail.slice(0, 1024),
          }),
        Date.now(),
      );
    },
    async remove(agentId) {
      await kv.atomic().delete(gatewayPresenceKey(agentId)).sum(versionKey, 1n)
        .commit();
    },
    async *list() {
      for await (
        const e of kv.list<PresenceRecord>({ prefix: gatewayPresenceKey() })
      ) yield e.value;
    },
  };
}

/**
 * Whether a presence write from `before` to `after` changes what a list
 * reader acts on: who is connected, where, in which session, to which
 * channels (not `lastSeen` or `sessionExpires`, which heartbeats move).
 */
function membershipMoved(
  before: PresenceRecord | null,
  after: PresenceRecord | null,
): boolean {
  if (before === null || after === null) return before !== after;
  return before.connected !== after.connected ||
    before.nodeId !== after.nodeId ||
    before.session !== after.session ||
    before.heartbeatMs !== after.heartbeatMs ||
    before.channels.length !== after.channels.length ||
    before.channels.some((c, i) => c !== after.channels[i]);
}
