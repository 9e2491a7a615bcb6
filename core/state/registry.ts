/**
 * The node registry: every node heartbeats a record into Deno KV, and anyone
 * reading the records derives membership (up, suspect, down) from each
 * heartbeat's age. Also builds the `GET /api/v1/cluster` body.
 *
 * The status comes from the `heartbeatAt` stored in the value, never from
 * whether the key still exists: `expireIn` only garbage-collects records of
 * nodes gone for long, and KV may keep them well past it. `heartbeatAt` is
 * the writer's wall clock and the age is taken on the reader's, so the
 * thresholds must dwarf the clock skew between hosts.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import type { Consensus, Member } from "../consensus.ts";
import { nodeKey } from "./keys.ts";

/**
 * A node's load as it reports it. `inflight` is work in progress (HTTP
 * requests, claimed tasks) as the node counts it, 0 when it does not;
 * `rss` is its resident set size in bytes. Raw measures rather than one
 * normalised score, so each balancer weighs them its own way.
 */
export interface NodeLoad {
  inflight: number;
  rss: number;
}

/**
 * The record at `nodeKey(id)`. Other readers (the kv-lease elector) rely on
 * exactly `id`, `address`, `version`, `load`, `heartbeatAt` and `startedAt`.
 */
export interface NodeRecord {
  id: string;
  /** Base URL of the node's HTTP server. */
  address: string;
  /** Plexus version the node runs. */
  version: string;
  load: NodeLoad;
  /** Wall-clock ms of the node's last heartbeat (its own clock). */
  heartbeatAt: number;
  /** Wall-clock ms when the node's registry started. */
  startedAt: number;
  /** Wall-clock ms when the node left cleanly; it counts as down from then on. */
  leftAt?: number;
  /** What the node offers, e.g. `{taskTypes: [...]}` (task routing reads it). */
  meta?: Record<string, unknown>;
}

/** Heartbeat ages at which a member turns suspect, then down. */
export interface StatusThresholds {
  suspectAfterMs: number;
  downAfterMs: number;
}

/** Options for {@linkcode createRegistry}. */
export interface RegistryOptions {
  nodeId: string;
  /**
   * Base URL other nodes reach this one at, or a getter read at every
   * heartbeat (the URL is known only once the server listens).
   */
  address: string | (() => string);
  version: string;
  /** @default {systemClock} */
  clock?: Clock;
  /** Interval between heartbeats. @default {1000} */
  heartbeatMs?: number;
  /** Heartbeat age from which a member is suspect. @default {5000} */
  suspectAfterMs?: number;
  /** Heartbeat age from which a member is down. @default {15000} */
  downAfterMs?: number;
  /** Reads the load for each heartbeat. @default {() => ({inflight: 0, rss: Deno.memoryUsage().rss})} */
  load?: () => NodeLoad;
  /** Told about failed heartbeats (the loop goes on); the registry logs nothing itself. */
  onError?: (err: unknown) => void;
  /** Read at each heartbeat into the record's `meta`. */
  meta?: () => Record<string, unknown>;
}

/** This node's membership in the registry, and everyone's records. */
export interface Registry {
  /** This node's id. */
  readonly nodeId: string;
  /** The thresholds `members()` applies. */
  readonly thresholds: StatusThresholds;
  /**
   * Writes the first heartbeat (resolves once it is stored) and keeps
   * heartbeating every `heartbeatMs` until `stop()`. Calling it again
   * while running returns the same promise.
   */
  start(): Promise<void>;
  /**
   * Ends the loop and writes a final record with `leftAt` set, so every
   * reader sees the node down at once (the record stays, for `lastSeen`,
   * until KV garbage-collects it). Never rejects: errors go to `onError`.
   */
  stop(): Promise<void>;
  /** Writes one heartbeat now and returns the record written. */
  heartbeat(): Promise<NodeRecord>;
  /**
   * This node's record as it would write it now (load read now), without
   * writing: `GET /api/v1/cluster/self`, which a member that does not share
   * this node's KV reads instead of the registry.
   */
  self(): Omit<NodeRecord, "heartbeatAt" | "leftAt" | "meta">;
  /** Every node's record, sorted by id. */
  nodes(): Promise<NodeRecord[]>;
  /** Every node as a {@linkcode Member}, sorted by id. */
  members(): Promise<Member[]>;
}

/**
 * A member's status from its heartbeat age at `now`: `down` once it left or
 * its heartbeat is `downAfterMs` old, `suspect` from `suspectAfterMs`, else
 * `up` (a heartbeat from the future, i.e. clock skew, counts as fresh).
 *
 * @example Usage
 * ```ts
 * import { memberStatus } from "./registry.ts";
 * const t = { suspectAfterMs: 5_000, downAfterMs: 15_000 };
 * memberStatus({ heartbeatAt: 0 }, 4_999, t); // "up"
 * memberStatus({ heartbeatAt: 0 }, 5_000, t); // "suspect"
 * memberStatus({ heartbeatAt: 0 }, 15_000, t); // "down"
 * memberStatus({ heartbeatAt: 0, leftAt: 1 }, 1, t); // "down"
 * ```
 */
export function memberStatus(
  record: Pick<NodeRecord, "heartbeatAt" | "leftAt">,
  now: number,
  thresholds: StatusThresholds,
): Member["status"] {
  if (record.leftAt !== undefined) return "down";
  const age = now - record.heartbeatAt;
  if (age >= thresholds.downAfterMs) return "down";
  if (age >= thresholds.suspectAfterMs) return "suspect";
  return "up";
}

/** The `GET /api/v1/cluster` body (CONTRACTS.md). */
export interface ClusterView {
  nodeId: string;
  leader: string | null;
  epoch: number;
  /** The consensus plugin's name, or "none". */
  consensus: string;
  members: {
    id: string;
    address: string;
    status: Member["status"];
    /** ISO 8601 time of the last heartbeat. */
    lastSeen: string;
  }[];
}

/** Input of {@linkcode clusterView}. */
export interface ClusterViewInput {
  nodeId: string;
  /** The running consensus plugin, if any. */
  consensus?: Consensus;
  members: Member[];
}

/**
 * Builds the `GET /api/v1/cluster` body. Without a consensus plugin nobody
 * leads: `leader` is null, `epoch` 0 and `consensus` "none".
 *
 * @example Usage
 * ```ts
 * import { clusterView } from "./registry.ts";
 * const view = clusterView({
 *   nodeId: "a",
 *   members: [{ id: "a", address: "http://127.0.0.1:8080", status: "up", lastSeen: 0 }],
 * });
 * view.consensus; // "none"
 * view.members[0].lastSeen; // "1970-01-01T00:00:00.000Z"
 * ```
 */
export function clusterView(input: ClusterViewInput): ClusterView {
  const { consensus } = input;
  return {
    nodeId: input.nodeId,
    leader: consensus ? consensus.leader() : null,
    epoch: consensus ? consensus.epoch() : 0,
    consensus: consensus ? consensus.name : "none",
    members: input.members.map((m) => ({
      id: m.id,
      address: m.address,
      status: m.status,
      lastSeen: new Date(m.lastSeen).toISOString(),
    })),
  };
}

function checkMs(name: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
    throw new RangeError(
      `Cannot create registry: ${name} must be a finite number > 0, got ${
        String(value)
      }`,
    );
  }
  return value;
}

const defaultLoad = (): NodeLoad => ({
  inflight: 0,
  rss: Deno.memoryUsage().rss,
});

/**
 * Creates this node's registry over `kv`. Needs
 * `heartbeatMs < suspectAfterMs < downAfterMs`, or throws a RangeError.
 *
 * @example Usage
 * ```ts
 * import { createRegistry } from "./registry.ts";
 * const kv = await Deno.openKv(":memory:");
 * const registry = createRegistry(kv, {
 *   nodeId: "node-a",
 *   address: "http://127.0.0.1:8080",
 *   version: "0.1.0",
 * });
 * await registry.start();
 * (await registry.members())[0].status; // "up"
 * await registry.stop();
 * (await registry.members())[0].status; // "down"
 * kv.close();
 * ```
 */
export function createRegistry(
  kv: Deno.Kv,
  options: RegistryOptions,
): Registry {
  const { nodeId, address, version } = options;
  if (typeof nodeId !== "string" || nodeId.length === 0) {
    throw new TypeError(
      `Cannot create registry: nodeId must be a non-empty string, got ${
        typeof nodeId === "string" ? "''" : String(nodeId)
      }`,
    );
  }
  if (typeof address !== "string" && typeof address !== "function") {
    throw new TypeError(
      `Cannot create registry: address must be a string or a function, got ${typeof address}`,
    );
  }
  if (typeof version !== "string") {
    throw new TypeError(
      `Cannot create registry: version must be a string, got ${typeof version}`,
    );
  }
  const addressNow = typeof address === "string" ? () => address : address;
  const clock = options.clock ?? systemClock;
  const heartbeatMs = checkMs("heartbeatMs", options.heartbeatMs ?? 1_000);
  const suspectAfterMs = checkMs(
    "suspectAfterMs",
    options.suspectAfterMs ?? 5_000,
  );
  const downAfterMs = checkMs("downAfterMs", options.downAfterMs ?? 15_000);
  if (!(heartbeatMs < suspectAfterMs && suspectAfterMs < downAfterMs)) {
    throw new RangeError(
      `Cannot create registry: need heartbeatMs < suspectAfterMs < downAfterMs, got ${heartbeatMs}, ${suspectAfterMs}, ${downAfterMs}`,
    );
  }
  const thresholds: StatusThresholds = { suspectAfterMs, downAfterMs };
  const load = options.load ?? defaultLoad;
  const onError = options.onError ?? (() => {});
  // Long enough that a down node stays listed for a while, yet goes eventually.
  const expireIn = 10 * downAfterMs;
  let startedAt = clock.now();
  let running: { ready: Promise<void>; loop: Promise<void> } | undefined;
  let abort: AbortController | undefined;

  const write = async (leftAt?: number): Promise<NodeRecord> => {
    const now = clock.now();
    const record: NodeRecord = {
      id: nodeId,
      address: addressNow(),
      version,
      load: load(),
      heartbeatAt: now,
      startedAt,
      ...(leftAt === undefined ? {} : { leftAt }),
      ...(options.meta ? { meta: options.meta() } : {}),
    };
    await kv.set(nodeKey(nodeId), record, { expireIn });
    return record;
  };

  const nodes = async (): Promise<NodeRecord[]> => {
    const out: NodeRecord[] = [];
    for await (const e of kv.list<NodeRecord>({ prefix: nodeKey() })) {
      // Skip anything that is not a node record rather than fail the view.
      if (typeof e.value?.heartbeatAt === "number") out.push(e.value);
    }
    return out.sort((a, b) => a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  };

  return {
    nodeId,
    thresholds,
    heartbeat: () => write(),
    self: () => ({
      id: nodeId,
      address: addressNow(),
      version,
      load: load(),
      startedAt,
    }),
    nodes,

    start() {
      if (running) return running.ready;
      startedAt = clock.now();
      const ctrl = abort = new AbortController();
      const ready = write().then(() => {}, (err) => {
        // Not started after all: the caller gets the error, not onError.
        ctrl.abort(err);
        running = undefined;
        throw err;
      });
      // The first sleep begins now, alongside the first write, so the beat
      // is timed from start() and the loop waits before start() resolves.
      const loop = (async () => {
        while (!ctrl.signal.aborted) {
          try {
            await clock.sleep(heartbeatMs, ctrl.signal);
          } catch {
            return; // aborted by stop() or a failed start
          }
          try {
            await write();
          } catch (err) {
            onError(err);
          }
        }
      })();
      running = { ready, loop };
      return ready;
    },

    async stop() {
      if (!running) return;
      const { ready, loop } = running;
      abort!.abort(new Error("registry stopped"));
      // The leaving record must be the last write.
      await Promise.all([ready.catch(() => {}), loop]);
      running = undefined;
      try {
        await write(clock.now());
      } catch (err) {
        onError(err);
      }
    },

    async members() {
      const now = clock.now();
      return (await nodes()).map((r) => ({
        id: r.id,
        address: r.address,
        status: memberStatus(r, now, thresholds),
        lastSeen: r.heartbeatAt,
      }));
    },
  };
}
