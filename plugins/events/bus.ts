/**
 * The event bus (`events:bus`): what plugins publish and subscribe through.
 *
 * - Every event the node emits (`events:local`) and every event a plugin
 *   publishes goes through the transforms, then into the store.
 * - Plugins define their own types (`saga.*`, `debate.*`) with a version
 *   and a zod schema; `publish` checks data against it. `custom.*` types
 *   take any JSON object (what `POST /api/v1/events` publishes).
 * - `subscribe(filter, handler, {from, name})` delivers matching events in
 *   offset order, at least once: a handler that throws gets the same event
 *   again after a backoff, never the next one. A named subscriber's cursor
 *   is kept in KV after each page (and every `ackEvery` events), so a
 *   restarted process resumes where it was; events it handled after the
 *   last save come again (duplicates, never gaps).
 *
 * @module
 */
import type { z } from "../../core/plugin.ts";
import { eventCursorKey } from "../../core/state/keys.ts";
import {
  NODE_EVENT_SCHEMAS,
  type NodeEvent,
  type NodeEvents,
} from "../../core/events.ts";
import {
  checkFilter,
  compileFilter,
  type Filter,
  filterFromParam,
} from "./filter.ts";
import {
  createEventStore,
  type EventStore,
  EventStoreError,
  type NewEvent,
  type ReadFrom,
  type StoredEvent,
} from "./store.ts";

/** Changes an event before it is stored, or drops it (`null`). */
export type EventTransform = (event: NewEvent) => NewEvent | null;

/** Where a subscription starts when it has no saved cursor. */
export type SubscribeFrom = "start" | "end" | ReadFrom;

/** Options for {@linkcode EventBus.subscribe}. */
export interface SubscribeOptions {
  /** Where to start without a saved cursor. @default {"end"} */
  from?: SubscribeFrom;
  /** Durable name: the cursor is kept in KV and a restart resumes from it. */
  name?: string;
  /** Only these streams. @default {every stream} */
  streams?: string[];
  /** Save the cursor at least every this many delivered events. @default {100} */
  ackEvery?: number;
  /** Longest wait between polls for other nodes' events, ms. @default {250} */
  maxPollMs?: number;
  /** Ends the subscription. */
  signal?: AbortSignal;
  /** Told when a handler throws (the event is retried) or a read fails (no event). */
  onError?: (err: unknown, event: StoredEvent | undefined) => void;
}

/** A running subscription. */
export interface EventSubscription {
  /** The offset of the last event handled (or skipped as not matching). */
  readonly offset: string;
  /** Events handed to the handler, retries included. */
  readonly delivered: number;
  /** Ends the loop after the event in hand; saves the cursor. */
  stop(): Promise<void>;
  /** Settles when the loop ends. */
  readonly done: Promise<void>;
}

/** A plugin-defined event type. */
interface DefinedType {
  version: number;
  schema: z.ZodType;
}

/** The `api` of `events:bus`. */
export interface EventBus {
  /** The store underneath (replay, counts, retention). */
  readonly store: EventStore;
  /**
   * Defines event type `type` (dot-separated, not one the node emits) with
   * its schema version and data schema.
   */
  define(type: string, version: number, schema: z.ZodType): void;
  /** Publishes a defined (or `custom.*`) type; resolves with its offset once stored. */
  publish(type: string, data: unknown): Promise<string>;
  /** Adds a transform run on every event before it is stored; returns its removal. */
  transform(fn: EventTransform): () => void;
  /** Delivers matching events to `handler` (see the module doc). */
  subscribe(
    filter: Filter | string,
    handler: (event: StoredEvent) => void | Promise<void>,
    options?: SubscribeOptions,
  ): Promise<EventSubscription>;
  /** Stops listening to the node and commits what is pending. */
  close(): Promise<void>;
}

/** Options for {@linkcode createEventBus}. */
export interface EventBusOptions {
  /** The node's emitter (`events:local`). */
  events: NodeEvents;
  /** Told when an event could not be stored, or a transform threw. */
  onError?: (err: unknown, event: NewEvent) => void;
}

const TYPE_RE = /^[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9_-]*)+$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const isObject = (v: unknown) =>
  v !== null && typeof v === "object" && !Array.isArray(v);

/**
 * Creates the bus over `kv`, listening to the node's emitter.
 *
 * @example Usage
 * ```ts
 * import { createEventBus } from "./bus.ts";
 * import { createNodeEvents } from "../../core/events.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const bus = createEventBus(kv, { events: createNodeEvents("n1") });
 * const seen: string[] = [];
 * const sub = await bus.subscribe('type ^= "custom."', (e) => void seen.push(e.type), { from: "start" });
 * await bus.publish("custom.hello", { who: "world" });
 * while (seen.length < 1) await new Promise((r) => setTimeout(r, 5));
 * await sub.stop();
 * await bus.close();
 * kv.close();
 * assert.deepEqual(seen, ["custom.hello"]);
 * ```
 */
export function createEventBus(
  kv: Deno.Kv,
  options: EventBusOptions,
): EventBus {
  let waiters: (() => void)[] = [];
  const wake = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  const store = createEventStore(kv, { onAppend: wake });
  const transforms = new Set<EventTransform>();
  const defined = new Map<string, DefinedType>();
  let lastAppend: Promise<string> | null = null;
  // Running subscriptions' stops, and their loops: close() ends them all.
  const live = new Set<() => void>();
  const loops = new Set<Promise<void>>();

  const append = (event: NodeEvent): Promise<string> => {
    let e: NewEvent | null = { stream: event.type.split(".")[0], ...event };
    for (const t of transforms) {
      const input: NewEvent = e;
      try {
        e = t(input);
      } catch (err) {
        // A broken transform leaves the event as it was.
        options.onError?.(err, input);
        e = input;
      }
      if (e === null) return Promise.resolve("");
    }
    const p = store.append(e);
    const stored = e;
    p.catch((err) => options.onError?.(err, stored));
    return p;
  };
  const unlisten = options.events.listen((event) => {
    lastAppend = append(event);
  });

  const subscribe: EventBus["subscribe"] = async (filter, handler, o = {}) => {
    const tree = typeof filter === "string"
      ? filterFromParam(filter)
      : checkFilter(filter);
    const match = compileFilter(tree);
    if (o.name !== undefined && !NAME_RE.test(o.name)) {
      throw new TypeError(
        `Cannot subscribe: name '${o.name}' is not like 'audit-log' (${NAME_RE})`,
      );
    }
    const ackEvery = o.ackEvery ?? 100;
    const maxPoll = o.maxPollMs ?? 250;
    let pos: ReadFrom | undefined;
    if (o.name !== undefined) {
      const saved = await kv.get<{ offset: string }>(eventCursorKey(o.name));
      if (saved.value) pos = { after: saved.value.offset };
    }
    if (!pos) {
      const from = o.from ?? "end";
      pos = from === "start"
        ? { after: "" }
        : from === "end"
        ? { after: await store.head() }
        : from;
    }
    let offset = "after" in pos ? pos.after : "";
    let saved = offset;
    let delivered = 0;
    let stopped = false;
    const ended = new AbortController();
    const stop = () => {
      stopped = true;
      ended.abort();
      wake();
    };
    o.signal?.addEventListener("abort", stop, { once: true });
    const save = async () => {
      if (o.name === undefined || offset === saved) return;
      const at = offset;
      await kv.set(eventCursorKey(o.name!), {
        offset: at,
        savedAt: Date.now(),
      });
      saved = at;
    };
    const sleep = (ms: number) =>
      new Promise<void>((resolve) => {
        const t = setTimeout(done, ms);
        function done() {
          clearTimeout(t);
          resolve();
        }
        waiters.push(done);
        ended.signal.addEventListener("abort", done, { once: true });
      });
    const loop = async () => {
      let idle = 10;
      let since = 0;
      while (!stopped) {
        const before = offset;
        let page;
        try {
          page = await store.read(pos!, { streams: o.streams });
        } catch (err) {
          if (stopped) break;
          o.onError?.(err, undefined);
          await sleep(maxPoll);
          continue;
        }
        for (const e of page.events) {
          if (stopped) break;
          if (match(e)) {
            for (let attempt = 1;; attempt++) {
              delivered++;
              try {
                await handler(e);
                break;
              } catch (err) {
                o.onError?.(err, e);
                if (stopped) return;
                await sleep(Math.min(5000, 50 * 2 ** Math.min(attempt, 7)));
                if (stopped) return;
              }
            }
            since++;
          }
          offset = e.offset;
          if (since >= ackEvery) {
            await save();
            since = 0;
          }
        }
        if (stopped) break;
        if (page.next > offset) offset = page.next;
        pos = { after: offset };
        await save();
        since = 0;
        if (offset === before) {
          // Local appends wake us at once; other nodes' are polled for.
          await sleep(idle);
          idle = Math.min(maxPoll, idle * 2);
        } else idle = 10;
      }
      await save();
    };
    const done = loop().finally(() => {
      live.delete(stop);
      loops.delete(done);
    });
    live.add(stop);
    loops.add(done);
    return {
      get offset() {
        return offset;
      },
      get delivered() {
        return delivered;
      },
      done,
      async stop() {
        stop();
        await done;
      },
    };
  };

  return {
    store,
    define(type, version, schema) {
      if (!TYPE_RE.test(type) || type in NODE_EVENT_SCHEMAS) {
        throw new TypeError(
          `Cannot define event type '${type}': ${
            type in NODE_EVENT_SCHEMAS
              ? "the node emits it"
              : `expected a dot-separated name like 'saga.step.completed'`
          }`,
        );
      }
      if (defined.has(type)) {
        throw new TypeError(
          `Cannot define event type '${type}': it is defined already`,
        );
      }
      if (!Number.isInteger(version) || version < 1) {
        throw new TypeError(
          `Cannot define event type '${type}': version must be an integer >= 1, got ${version}`,
        );
      }
      defined.set(type, { version, schema });
    },
    publish(type, data) {
      const def = defined.get(type);
      let version = 1;
      if (def) {
        const parsed = def.schema.safeParse(data);
        if (!parsed.success) {
          return Promise.reject(
            new EventStoreError(
              `event '${type}': ${
                parsed.error.issues.map((i) =>
                  `${i.path.join(".") || "(root)"}: ${i.message}`
                ).join("; ")
              }`,
            ),
          );
        }
        data = parsed.data;
        version = def.version;
      } else if (!type.startsWith("custom.") || !TYPE_RE.test(type)) {
        return Promise.reject(
          new EventStoreError(
            `event type '${type}' is not defined (define it, or use a 'custom.' type)`,
          ),
        );
      } else if (!isObject(data)) {
        return Promise.reject(
          new EventStoreError(`event '${type}': data must be a JSON object`),
        );
      }
      lastAppend = null;
      options.events.emitChecked(type, version, data);
      const p: Promise<string> | null = lastAppend;
      return p ?? Promise.reject(new Error("the event bus is closed"));
    },
    transform(fn) {
      transforms.add(fn);
      return () => void transforms.delete(fn);
    },
    subscribe,
    async close() {
      unlisten();
      for (const stop of [...live]) stop();
      await Promise.allSettled([...loops]);
      await store.close();
    },
  };
}
