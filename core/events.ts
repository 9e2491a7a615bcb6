/**
 * The node's own events: their type names, a versioned zod schema per type,
 * and a tiny in-process emitter (`events:local`) that core, the gateway and
 * plugins call with one line each. The event bus plugin (`plugins/events`,
 * capability `events:bus`) listens to it and keeps the durable store; with no
 * listener, {@linkcode NodeEvents.emit} returns before building anything.
 *
 * Each event is `{id, type, version, at, node, seq, data}`: `seq` counts this
 * node's emits from 1, so a reader can check one node's events arrive in the
 * order it emitted them.
 *
 * @module
 */
import { z } from "zod";

const id = z.string().min(1).max(256);
const ms = z.number().int().nonnegative();

/**
 * Every event type the node emits → `{version, data}`: the schema version
 * (bumped on an incompatible change of `data`) and the schema of `data`.
 */
export const NODE_EVENT_SCHEMAS = {
  "agent.connected": {
    version: 1,
    data: z.strictObject({
      agentId: id,
      session: id,
      channels: z.array(z.string()).max(1024),
    }),
  },
  "agent.disconnected": {
    version: 1,
    data: z.strictObject({ agentId: id, session: id }),
  },
  "agent.health.changed": {
    version: 1,
    data: z.strictObject({
      agentId: id,
      status: z.enum(["healthy", "degraded", "unhealthy"]),
      detail: z.string().max(1024).optional(),
    }),
  },
  "task.started": {
    version: 1,
    data: z.strictObject({
      taskId: id,
      type: id,
      attempt: z.number().int().positive(),
      capability: id.optional(),
    }),
  },
  "task.progress": {
    version: 1,
    data: z.strictObject({
      taskId: id,
      type: id,
      progress: z.number().min(0).max(1),
      message: z.string().max(1024).optional(),
    }),
  },
  "task.completed": {
    version: 1,
    data: z.strictObject({
      taskId: id,
      type: id,
      attempt: z.number().int().positive(),
      durationMs: z.number().nonnegative(),
    }),
  },
  "task.failed": {
    version: 1,
    data: z.strictObject({
      taskId: id,
      type: id,
      attempt: z.number().int().positive(),
      durationMs: z.number().nonnegative(),
      error: z.string().max(4096),
    }),
  },
  "task.cancelled": {
    version: 1,
    data: z.strictObject({
      taskId: id,
      type: id,
      reason: z.string().max(1024),
    }),
  },
  "plugin.started": {
    version: 1,
    data: z.strictObject({ plugin: id }),
  },
  "plugin.stopped": {
    version: 1,
    data: z.strictObject({ plugin: id }),
  },
  "plugin.crashed": {
    version: 1,
    data: z.strictObject({ plugin: id, error: z.string().max(4096) }),
  },
  "cluster.leader.changed": {
    version: 1,
    data: z.strictObject({ leader: id.nullable(), epoch: ms }),
  },
  "node.joined": {
    version: 1,
    data: z.strictObject({ nodeId: id, address: z.string().max(2048) }),
  },
  "node.left": {
    version: 1,
    data: z.strictObject({
      nodeId: id,
      /**
       * `shutdown`: the node said so as it stopped; `down`: the leader saw
       * its heartbeats stop (a crash). Added later, so optional.
       */
      reason: z.enum(["shutdown", "down"]).optional(),
    }),
  },
} as const;

/** A type of event the node emits. */
export type NodeEventType = keyof typeof NODE_EVENT_SCHEMAS;

/** The `data` of event type `K`. */
export type NodeEventData<K extends NodeEventType> = z.output<
  typeof NODE_EVENT_SCHEMAS[K]["data"]
>;

/** One event as emitted (and as the bus stores it, plus its offset). */
export interface NodeEvent<D = unknown> {
  /** Unique id (a UUID). */
  id: string;
  /** Dot-separated type, e.g. `task.completed`. */
  type: string;
  /** Schema version of `data` for this type. */
  version: number;
  /** Wall-clock ms when it was emitted. */
  at: number;
  /** The emitting node's id. */
  node: string;
  /** This node's emit counter, from 1. */
  seq: number;
  /** The type's payload. */
  data: D;
}

/** Called with every emitted event, synchronously; must not throw. */
export type NodeEventListener = (event: NodeEvent) => void;

/** The node's emitter: the `api` of the kernel capability `events:local`. */
export interface NodeEvents {
  /**
   * Emits `type` with `data` to every listener. Cheap when nobody listens
   * (returns at once). `data` is checked against the type's schema; an
   * invalid one is dropped and reported to `onInvalid`, never thrown at the
   * caller (an event must not fail the work it reports).
   */
  emit<K extends NodeEventType>(type: K, data: NodeEventData<K>): void;
  /**
   * Emits an event whose type another module defined (a plugin's `saga.*`),
   * already validated by the caller.
   */
  emitChecked(type: string, version: number, data: unknown): NodeEvent | null;
  /** Adds a listener; returns the function that removes it. */
  listen(listener: NodeEventListener): () => void;
  /** Whether anybody listens. */
  readonly listening: boolean;
}

/** Options for {@linkcode createNodeEvents}. */
export interface NodeEventsOptions {
  /** Told about an event whose data failed its schema (a bug at the call site). */
  onInvalid?: (type: string, error: string) => void;
  /** Wall clock. @default {Date.now} */
  now?: () => number;
}

/**
 * Creates a node's emitter.
 *
 * @example Usage
 * ```ts
 * import { createNodeEvents, type NodeEvent } from "./events.ts";
 * import assert from "node:assert/strict";
 * const events = createNodeEvents("n1");
 * const seen: NodeEvent[] = [];
 * const stop = events.listen((e) => seen.push(e));
 * events.emit("plugin.started", { plugin: "hello" });
 * stop();
 * events.emit("plugin.stopped", { plugin: "hello" });
 * assert.deepEqual(seen.map((e) => [e.type, e.seq, e.node]), [["plugin.started", 1, "n1"]]);
 * ```
 */
export function createNodeEvents(
  nodeId: string,
  options: NodeEventsOptions = {},
): NodeEvents {
  const listeners = new Set<NodeEventListener>();
  const now = options.now ?? Date.now;
  let seq = 0;
  const deliver = (type: string, version: number, data: unknown) => {
    const event: NodeEvent = {
      id: crypto.randomUUID(),
      type,
      version,
      at: now(),
      node: nodeId,
      seq: ++seq,
      data,
    };
    for (const l of listeners) l(event);
    return event;
  };
  return {
    emit(type, data) {
      if (listeners.size === 0) return;
      const schema = NODE_EVENT_SCHEMAS[type];
      const parsed = schema.data.safeParse(data);
      if (!parsed.success) {
        options.onInvalid?.(
          type,
          parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`)
            .join("; "),
        );
        return;
      }
      deliver(type, schema.version, parsed.data);
    },
    emitChecked(type, version, data) {
      if (listeners.size === 0) return null;
      return deliver(type, version, data);
    },
    listen(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    get listening() {
      return listeners.size > 0;
    },
  };
}

/**
 * Emits the event for a plugin's new lifecycle state: `running` →
 * `plugin.started`, `stopped` → `plugin.stopped`, `failed` →
 * `plugin.crashed`; other states emit nothing.
 *
 * @example Usage
 * ```ts
 * import { createNodeEvents, emitPluginState } from "./events.ts";
 * import assert from "node:assert/strict";
 * const events = createNodeEvents("n1");
 * const types: string[] = [];
 * events.listen((e) => types.push(e.type));
 * emitPluginState(events, { plugin: "p", state: "failed", error: "boom" });
 * assert.deepEqual(types, ["plugin.crashed"]);
 * ```
 */
export function emitPluginState(
  events: NodeEvents,
  change: { plugin: string; state: string; error?: string },
): void {
  const { plugin, state, error } = change;
  if (state === "running") events.emit("plugin.started", { plugin });
  else if (state === "stopped") events.emit("plugin.stopped", { plugin });
  else if (state === "failed") {
    events.emit("plugin.crashed", { plugin, error: error ?? "unknown" });
  }
}
