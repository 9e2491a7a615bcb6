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
import { gatewayPresenceKey } from "../core/state/keys.ts";
import { retryLocked } from "../core/state/store.ts";
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
  const cas = async (
    agentId: string,
    next: (cur: PresenceRecord | null) => PresenceRecord | null | undefined,
  ): Promise<{ before: PresenceRecord | null; wrote: boolean }> => {
    const key = gatewayPresenceKey(agentId);
    for (let i = 0; i < MAX_CAS; i++) {
      const entry = await kv.get<PresenceRecord>(key);
      const value = next(entry.value);
      if (value === undefined) return { before: entry.value, wrote: false };
      const res = await retryLocked(() => {
        const op = kv.atomic().check(entry);
        return (value === null ? op.delete(key) : op.set(key, value)).commit();
      });
      if (res.ok) return { before: entry.value, wrote: true };
    }
    throw new Error(
      `Cannot write presence of '${agentId}': still contended after ${MAX_CAS} attempts`,
    );
  };
  return {
    async get(agentId) {
      return (await kv.get<PresenceRecord>(gatewayPresenceKey(agentId))).value;
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
    async remove(agentId) {
      await retryLocked(() => kv.delete(gatewayPresenceKey(agentId)));
    },
    async *list() {
      for await (
        const e of kv.list<PresenceRecord>({ prefix: gatewayPresenceKey() })
      ) yield e.value;
    },
  };
}
