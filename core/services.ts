/**
 * Service calls (docs/services.md): actions defined by plugins on any node,
 * called from any node over a transport that declares request/reply (the
 * WebSocket mesh by default).
 *
 * - **Who offers what** is the transport's own responder table: each
 *   action is a responder on topic `svc.{action}`, announced to every
 *   linked node. A node whose process dies or whose link drops leaves the
 *   table the moment its socket closes, with no lease or heartbeat to wait
 *   out, and a node relinking announces its actions again in its handshake.
 *   (A registry in KV would keep a dead node's entries until they expire,
 *   and every call would pay a KV read or a cache that is wrong in
 *   between.)
 * - **Which node**: this one when it offers the action (no serialising;
 *   the params are still checked against the schema), else a balancer
 *   pick among the offering nodes: by affinity key with a consistent hash
 *   when the call has a `key`, otherwise P2C over latency and calls in
 *   flight. Circuit breakers per node leave out nodes that keep failing.
 * - **Failures**: one deadline covers the call and its retries; a retryable
 *   failure (the node went away before answering, an open circuit, a
 *   retryable error from the action) is tried again on another node after
 *   a backoff with full jitter. Errors the action throws come back as
 *   instances of their own class (`services_errors.ts`).
 * - **Ids**: each call carries a correlation id and a W3C `traceparent`
 *   (a new span under the caller's), and hands them on to nested calls.
 *
 * @module
 */
import type { ZodType } from "./_npm_types.ts";
import type { Balancer, Candidate } from "./contracts/balancer.ts";
import {
  type ActionCall,
  type ActionHandler,
  type ActionInfo,
  actionNameSchema,
  type ActionOptions,
  type CallOptions,
  type Services,
} from "./contracts/services.ts";
import { PlexusError } from "./errors.ts";
import type { Logger } from "./observe/logger.ts";
import { activeIds, Kind, otelEnabled, span } from "./observe/otel.ts";
import type { Labels, MetricsRegistry } from "./observe/metrics.ts";
import { describeIssues } from "./plugin.ts";
import { backoffDelay } from "./resilience/backoff.ts";
import {
  type CircuitBreakers,
  createCircuitBreakers,
} from "./resilience/circuit_breaker.ts";
import { CircuitOpenError, TimeoutError } from "./resilience/errors.ts";
import { withCircuitBreakers } from "./resilience/guarded.ts";
import { can, type Permission } from "./security/roles.ts";
import { createP2c, createRendezvous } from "./services_balance.ts";
import {
  fromWireError,
  ServiceError,
  toWireError,
  type WireError,
} from "./services_errors.ts";
import type { Responder, Transport } from "./transport.ts";
import type { Scope } from "./plugin_scope.ts";
import { type Clock, systemClock } from "./clock.ts";

/** The transport topic an action answers on. */
export const actionTopic = (action: string): string => `svc.${action}`;
const TOPIC_PREFIX = "svc.";
const OWNED = Symbol("owned actions");

/** One action defined on this node. */
export interface LocalAction {
  /** The action's name. */
  name: string;
  /** The plugin that defined it. */
  plugin: string;
  /** Params are checked with it where the action runs. */
  schema: ZodType;
  /** Runs a call whose params passed the schema. */
  handler: ActionHandler;
  /** HTTP permission and description. */
  options: ActionOptions;
}

/** Options of {@linkcode createServiceBroker}. */
export interface ServiceBrokerOptions {
  /** This node's id. */
  nodeId: string;
  /** Warnings (a responder that could not be announced). */
  log?: Logger;
  /** `plexus_service_calls_total` and the per-node circuits' metrics. */
  metrics?: MetricsRegistry;
  /** Default deadline of a call, ms. @default {10000} */
  timeoutMs?: number;
  /** First retry's backoff cap (full jitter), ms. @default {25} */
  retryBaseMs?: number;
  /** Largest retry backoff cap, ms. @default {1000} */
  retryMaxMs?: number;
  /**
   * The balancers to use instead of the built-in ones (looked up at each
   * call, so a balancer plugin loaded or swapped takes over): `keyed` for
   * calls with an affinity key, `unkeyed` for the others. Return undefined
   * for the built-in.
   */
  balancers?: {
    keyed?: () => Balancer | undefined;
    unkeyed?: () => Balancer | undefined;
  };
  /** Circuit breakers of the built-in balancers. @default {Moleculer's defaults} */
  breakers?: CircuitBreakers;
  /** Uniform numbers in [0, 1) for the retry jitter. @default {Math.random} */
  random?: () => number;
}

/** The node's service layer: what `ctx.services` of every plugin is scoped from. */
export interface ServiceBroker extends Services {
  /** This node's id. */
  readonly nodeId: string;
  /**
   * Calls over `transport` from now on, and announces every action defined
   * here on it; resolves once the nodes linked now know them.
   */
  attach(transport: Transport): Promise<void>;
  /** The transport calls go over, once attached. */
  readonly transport: Transport | undefined;
  /** Adds `action` here (announced once attached). Throws if its name is taken. */
  add(action: LocalAction): Promise<void>;
  /** Swaps the definition of an action already here (a hot-swapped plugin). */
  replace(action: LocalAction): void;
  /** Removes the action here and stops announcing it. */
  remove(name: string): Promise<void>;
  /** The action defined here under `name`. */
  local(name: string): LocalAction | undefined;
  /** The names of the actions defined here, sorted (the node registry's `actions`). */
  localNames(): string[];
  /** Calls with the caller's API role (the HTTP route): the action's permission is checked where it runs. */
  callAs<R = unknown>(
    role: string | undefined,
    name: string,
    params: unknown,
    options?: CallOptions,
  ): Promise<R>;
  /** Stops answering calls (the node's shutdown). */
  close(): Promise<void>;
}

interface Parent {
  correlationId: string;
  traceId: string;
  spanId: string;
}

const HEX = Array.from(
  { length: 256 },
  (_, i) => i.toString(16).padStart(2, "0"),
);
// Random bytes for trace and span ids, drawn 4 KiB at a time.
const randomPool = new Uint8Array(4096);
let randomAt = randomPool.length;
const hex = (bytes: number) => {
  if (randomAt + bytes > randomPool.length) {
    crypto.getRandomValues(randomPool);
    randomAt = 0;
  }
  let s = "";
  for (let i = 0; i < bytes; i++) s += HEX[randomPool[randomAt++]];
  return s;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// Milliseconds that never go back, from Date.now(): performance.now() is an
// op in Deno and was 40% of the broker's own CPU per call (four reads: the
// deadline, the latency, P2C's and the breaker's clocks). A millisecond is
// fine for deadlines and breaker windows, and P2C's EWMA averages the
// rounding of sub-millisecond latencies out.
let lastMs = 0;
const coarseNow = () => {
  const t = Date.now();
  if (t > lastMs) lastMs = t;
  return lastMs;
};
const coarseClock: Clock = { ...systemClock, mono: coarseNow };

/** `metrics` with `extra` labels added to every counter and gauge series. */
function withLabels(metrics: MetricsRegistry, extra: Labels): MetricsRegistry {
  const l = (labels?: Labels) => ({ ...labels, ...extra });
  return {
    ...metrics,
    counter(name, help) {
      const c = metrics.counter(name, help);
      return {
        inc: (labels, by) => c.inc(l(labels), by),
        get: (labels) => c.get(l(labels)),
        labels: (labels) => c.labels(l(labels)),
      };
    },
    gauge(name, help, collect) {
      const g = metrics.gauge(name, help, collect);
      return {
        set: (value, labels) => g.set(value, l(labels)),
        inc: (labels, by) => g.inc(l(labels), by),
        get: (labels) => g.get(l(labels)),
        remove: (labels) => g.remove(l(labels)),
      };
    },
    histogram(name, help, buckets) {
      const h = metrics.histogram(name, help, buckets);
      return {
        observe: (value, labels) => h.observe(value, l(labels)),
        labels: (labels) => h.labels(l(labels)),
        get: (labels) => h.get(l(labels)),
      };
    },
    render: () => metrics.render(),
    toJSON: () => metrics.toJSON(),
  };
}

/** Reply on the wire: the value, or the error. */
type Reply = { v?: unknown; e?: WireError };

/**
 * Creates the node's service broker.
 *
 * @example Usage
 * ```ts
 * import { z } from "zod";
 * import { createServiceBroker } from "./services.ts";
 * const broker = createServiceBroker({ nodeId: "n1" });
 * await broker.add({
 *   name: "math.double", plugin: "calc", options: {},
 *   schema: z.number(), handler: (n) => (n as number) * 2,
 * });
 * await broker.call("math.double", 21); // 42
 * ```
 */
export function createServiceBroker(
  options: ServiceBrokerOptions,
): ServiceBroker {
  const me = options.nodeId;
  const defaultTimeout = options.timeoutMs ?? 10_000;
  const retryBaseMs = options.retryBaseMs ?? 25;
  const retryMaxMs = options.retryMaxMs ?? 1000;
  const random = options.random ?? Math.random;
  const actions = new Map<string, LocalAction>();
  const responders = new Map<string, Promise<Responder | undefined>>();
  let transport: Transport | undefined;
  let closed = false;
  const breakers = options.breakers ??
    createCircuitBreakers({
      // The task router's breakers guard the same node ids: a label of
      // their own keeps the two sets of series apart.
      metrics: options.metrics &&
        withLabels(options.metrics, { breakers: "services" }),
      clock: coarseClock,
      // An action's own refusal (4xx) says nothing about the node's health.
      isFailure: (err) => !(err instanceof PlexusError) || err.status >= 500,
    });
  const builtinKeyed = withCircuitBreakers(createRendezvous(), breakers);
  const builtinUnkeyed = withCircuitBreakers(
    createP2c({ now: coarseNow }),
    breakers,
  );
  const calls = options.metrics?.counter(
    "plexus_service_calls_total",
    "Service calls made from this node, by action and result (ok, error)",
  );
  const counters = new Map<string, Record<"ok" | "error", () => void>>();
  const count = (action: string, result: "ok" | "error") => {
    if (!calls) return;
    let c = counters.get(action);
    if (!c) {
      const ok = calls.labels({ action, result: "ok" });
      const error = calls.labels({ action, result: "error" });
      counters.set(
        action,
        c = { ok: () => ok.inc(), error: () => error.inc() },
      );
    }
    c[result]();
  };
  // Candidate objects per responder list (the transport hands out the same
  // array until the table changes), so a call allocates none.
  const candidateCache = new WeakMap<readonly string[], Candidate[]>();
  const candidatesOf = (nodes: readonly string[]): Candidate[] => {
    let c = candidateCache.get(nodes);
    if (!c) {
      c = nodes.map((id) => ({ id }));
      candidateCache.set(nodes, c);
    }
    return c;
  };

  const announce = (name: string) => {
    const t = transport;
    if (!t?.respond || responders.has(name)) return Promise.resolve();
    const registered = t.respond(actionTopic(name), answer(name)).catch(
      (err) => {
        options.log?.warn("service action not announced", {
          action: name,
          error: err,
        });
        return undefined;
      },
    );
    responders.set(name, registered);
    return registered.then(() => {});
  };

  /** Runs a call of local action `name` with checked params. */
  const runLocal = async (
    name: string,
    params: unknown,
    call: ActionCall,
  ): Promise<unknown> => {
    const action = actions.get(name);
    if (!action) {
      // Gone between the pick and the call (a stop or swap): another node
      // may offer it, so this is retryable.
      throw new ServiceError(
        "no_node",
        `node '${me}' no longer offers action '${name}'`,
        { action: name, node: me },
      );
    }
    const permission: Permission = action.options.permission ??
      "tasks:write";
    if (call.role !== undefined && !can(call.role, permission)) {
      throw new ServiceError(
        "forbidden",
        `role '${call.role}' may not call action '${name}': it needs '${permission}'`,
        { action: name, permission },
      );
    }
    const parsed = action.schema.safeParse(params);
    if (!parsed.success) {
      throw new ServiceError(
        "invalid_params",
        `action '${name}' refused its params: ${
          describeIssues(parsed.error, params)
        }`,
        { action: name, node: me },
      );
    }
    return await action.handler(parsed.data, call);
  };

  /** The transport responder of action `name`. */
  const answer = (name: string) =>
  (
    body: unknown,
    info: { from: string; headers: Record<string, string> },
  ): Promise<Reply> => {
    const h = info.headers;
    const run = async (): Promise<Reply> => {
      // OTel on: the server span's ids, so nested calls hang under it.
      const active = activeIds();
      const [, wireTrace = hex(16), wireSpan = hex(8)] = (h.tp ?? "").split(
        "-",
      );
      const traceId = active?.traceId ?? wireTrace;
      const parent: Parent = {
        correlationId: h.cid ?? wireTrace,
        traceId,
        spanId: active?.spanId ?? wireSpan,
      };
      try {
        const v = await runLocal(
          name,
          body,
          callContext(name, info.from, parent, h.role),
        );
        return { v };
      } catch (err) {
        return { e: toWireError(err, me) };
      }
    };
    return otelEnabled
      ? span(
        "service.handle",
        {
          "plexus.service.action": name,
          "plexus.service.caller": info.from,
          "plexus.node": me,
        },
        run,
        { parent: h.tp, kind: Kind.SERVER },
      )
      : run();
  };

  const callContext = (
    action: string,
    caller: string,
    span: Parent,
    role: string | undefined,
  ): ActionCall => ({
    action,
    caller,
    correlationId: span.correlationId,
    traceparent: `00-${span.traceId}-${span.spanId}-01`,
    role,
    call: <R>(next: string, params: unknown, opts?: CallOptions) =>
      invoke(next, params, opts ?? {}, span, undefined) as Promise<R>,
  });

  const pickNode = (
    name: string,
    opts: CallOptions,
    excluded: Set<string>,
  ): { node: string; balancer?: Balancer } => {
    if (opts.nodeId !== undefined) {
      if (opts.nodeId === me && actions.has(name)) return { node: me };
      if (transport?.responders?.(actionTopic(name)).includes(opts.nodeId)) {
        return { node: opts.nodeId };
      }
      throw new ServiceError(
        actions.has(name) || offered(name) ? "no_node" : "service_not_found",
        `node '${opts.nodeId}' does not offer action '${name}' (offered by: ${
          nodesOf(name).join(", ") || "no node"
        })`,
        { action: name, node: opts.nodeId },
      );
    }
    if (actions.has(name) && !excluded.has(me)) return { node: me };
    const all = transport?.responders?.(actionTopic(name)) ?? [];
    let nodes = all;
    if (excluded.size > 0 || all.includes(me)) {
      nodes = all.filter((n) => n !== me && !excluded.has(n));
    }
    if (nodes.length === 0) {
      if (all.length === 0 && !actions.has(name)) {
        throw new ServiceError(
          "service_not_found",
          `no reachable node offers action '${name}'`,
          { action: name },
        );
      }
      throw new ServiceError(
        "no_node",
        `no other node offering action '${name}' is left to try (tried: ${
          [...excluded].join(", ")
        })`,
        { action: name, tried: [...excluded] },
      );
    }
    const keyed = opts.key !== undefined;
    const balancer =
      (keyed ? options.balancers?.keyed?.() : options.balancers?.unkeyed?.()) ??
        (keyed ? builtinKeyed : builtinUnkeyed);
    const picked = balancer.pick(
      candidatesOf(nodes),
      keyed ? { key: opts.key } : undefined,
    );
    if (!picked) {
      throw new ServiceError(
        "no_node",
        `every node offering action '${name}' has an open circuit (${
          nodes.join(", ")
        })`,
        { action: name, nodes: [...nodes] },
      );
    }
    return { node: picked.id, balancer };
  };

  const offered = (name: string) =>
    (transport?.responders?.(actionTopic(name)).length ?? 0) > 0;
  const nodesOf = (name: string) => [
    ...transport?.responders?.(actionTopic(name)) ?? [],
  ];

  const unwrap = (reply: unknown) => {
    const r = reply as Reply | undefined;
    if (r?.e) throw fromWireError(r.e);
    return r?.v;
  };

  /** One attempt on `node` (a plain promise chain: no async frame per call). */
  const callOnce = (
    name: string,
    params: unknown,
    node: string,
    span: Parent,
    role: string | undefined,
    remainingMs: number,
  ): Promise<unknown> => {
    if (node === me) {
      const run = runLocal(name, params, callContext(name, me, span, role));
      let timer: ReturnType<typeof setTimeout> | undefined;
      return Promise.race([
        run,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () =>
              reject(new TimeoutError(`service call '${name}'`, remainingMs)),
            remainingMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    }
    const t = transport;
    if (!t?.request) {
      return Promise.reject(
        new ServiceError(
          "no_node",
          `action '${name}' is offered by node '${node}' but no request/reply transport is attached here`,
          { action: name, node },
        ),
      );
    }
    const headers: Record<string, string> = {
      tp: `00-${span.traceId}-${span.spanId}-01`,
    };
    if (span.correlationId !== span.traceId) headers.cid = span.correlationId;
    if (role !== undefined) headers.role = role;
    return t.request(node, actionTopic(name), params, {
      timeoutMs: remainingMs,
      headers,
    }).then(unwrap);
  };

  /**
   * A call. OTel on and no parent given: inside a client span (under the
   * active one), whose ids travel as the call's traceparent.
   */
  const invoke = (
    name: string,
    params: unknown,
    opts: CallOptions,
    parent: Parent | undefined,
    role: string | undefined,
  ): Promise<unknown> =>
    otelEnabled && parent === undefined && !opts.traceparent
      ? span(
        "service.call",
        { "plexus.service.action": name, "plexus.node": me },
        () => invokeUntraced(name, params, opts, parent, role),
        { kind: Kind.CLIENT },
      )
      : invokeUntraced(name, params, opts, parent, role);

  const invokeUntraced = async (
    name: string,
    params: unknown,
    opts: CallOptions,
    parent: Parent | undefined,
    role: string | undefined,
  ): Promise<unknown> => {
    if (closed) {
      throw new ServiceError("no_node", `node '${me}' is shutting down`, {
        action: name,
      });
    }
    const timeout = opts.timeout ?? defaultTimeout;
    const retries = opts.nodeId === undefined ? opts.retries ?? 0 : 0;
    let t0 = coarseNow();
    const deadlineAt = t0 + timeout;
    // OTel on, nothing given: the call continues the real active span.
    const active = opts.traceparent || parent ? undefined : activeIds();
    const traceId =
      (opts.traceparent ? opts.traceparent.split("-")[1] : parent?.traceId) ??
        active?.traceId ?? hex(16);
    // Without one given, the trace id is the correlation id (one id less on
    // the wire).
    const span: Parent = {
      correlationId: opts.correlationId ?? parent?.correlationId ?? traceId,
      traceId,
      spanId: active?.spanId ?? hex(8),
    };
    const excluded = new Set<string>();
    for (let attempt = 0;; attempt++) {
      if (attempt > 0) t0 = coarseNow();
      const remaining = deadlineAt - t0;
      if (remaining <= 0) {
        count(name, "error");
        throw new TimeoutError(`service call '${name}'`, timeout);
      }
      let node: string;
      let balancer: Balancer | undefined;
      try {
        ({ node, balancer } = pickNode(name, opts, excluded));
      } catch (err) {
        count(name, "error");
        throw err;
      }
      try {
        const value = await callOnce(name, params, node, span, role, remaining);
        balancer?.report(node, {
          ok: true,
          latencyMs: coarseNow() - t0,
        });
        count(name, "ok");
        return value;
      } catch (err) {
        // An action's own refusal (4xx) is an answer: the node is fine.
        const nodeFailed = !(err instanceof PlexusError) || err.status >= 500;
        balancer?.report(node, {
          ok: !nodeFailed,
          latencyMs: coarseNow() - t0,
        });
        const retryable = err instanceof PlexusError && err.retryable &&
          !(err instanceof TimeoutError && node === me);
        if (!retryable || attempt >= retries) {
          count(name, "error");
          throw err;
        }
        excluded.add(node);
        const wait = backoffDelay(attempt + 1, {
          baseMs: retryBaseMs,
          maxMs: retryMaxMs,
          jitter: "full",
          random,
        });
        if (deadlineAt - coarseNow() <= wait) {
          count(name, "error");
          throw err instanceof CircuitOpenError ||
              !(err instanceof TimeoutError)
            ? err
            : new TimeoutError(`service call '${name}'`, timeout);
        }
        await sleep(wait);
      }
    }
  };

  const checkName = (name: string) => {
    const r = actionNameSchema.safeParse(name);
    if (!r.success) {
      throw new TypeError(
        `Cannot define action '${name}': expected dot-separated segments like 'orders.create'`,
      );
    }
  };

  const broker: ServiceBroker = {
    nodeId: me,
    get transport() {
      return transport;
    },
    async attach(t) {
      if (!t.caps.requestReply || !t.respond || !t.request) {
        throw new TypeError(
          `Cannot call services over transport '${t.name}': it does not declare request/reply (caps.requestReply)`,
        );
      }
      transport = t;
      await Promise.all([...actions.keys()].map(announce));
    },
    async add(action) {
      checkName(action.name);
      const other = actions.get(action.name);
      if (other) {
        throw new Error(
          `Cannot define action '${action.name}': plugin '${other.plugin}' defines it on this node already`,
        );
      }
      actions.set(action.name, action);
      await announce(action.name);
    },
    replace(action) {
      actions.set(action.name, action);
    },
    async remove(name) {
      if (!actions.delete(name)) return;
      const r = responders.get(name);
      responders.delete(name);
      await (await r)?.close();
    },
    local: (name) => actions.get(name),
    localNames: () => [...actions.keys()].sort(),
    define(name, schema, handler, opts = {}) {
      return broker.add({
        name,
        plugin: "(node)",
        schema,
        handler: handler as ActionHandler,
        options: opts,
      });
    },
    call<R>(name: string, params: unknown, opts: CallOptions = {}) {
      return invoke(name, params, opts, undefined, undefined) as Promise<R>;
    },
    callAs<R>(
      role: string | undefined,
      name: string,
      params: unknown,
      opts: CallOptions = {},
    ) {
      return invoke(name, params, opts, undefined, role) as Promise<R>;
    },
    list() {
      const out = new Map<string, ActionInfo>();
      for (const [topic, nodes] of transport?.listResponders?.() ?? []) {
        if (!topic.startsWith(TOPIC_PREFIX)) continue;
        const name = topic.slice(TOPIC_PREFIX.length);
        out.set(name, { name, nodes: [...nodes] });
      }
      for (const a of actions.values()) {
        const info = out.get(a.name) ?? { name: a.name, nodes: [me] };
        if (!info.nodes.includes(me)) info.nodes = [...info.nodes, me].sort();
        info.plugin = a.plugin;
        info.permission = a.options.permission ?? "tasks:write";
        if (a.options.description) info.description = a.options.description;
        out.set(a.name, info);
      }
      return Promise.resolve(
        [...out.values()].sort((a, b) => a.name < b.name ? -1 : 1),
      );
    },
    async close() {
      closed = true;
      const all = [...responders.values()];
      responders.clear();
      await Promise.all(all.map(async (r) => (await r)?.close()));
    },
  };
  return broker;
}

/** `ctx.services` of one plugin copy, and what the kernel does with it at a swap or stop. */
export interface ScopedServices extends Services {
  /** Removes every action this copy defined (it stopped or failed to start). */
  retire(): Promise<void>;
  /**
   * The swap: this copy's definitions replace `previous`'s, and actions
   * `previous` defined that this copy did not go away.
   */
  takeOver(previous: ScopedServices | undefined): Promise<void>;
}

/**
 * `ctx.services` as plugin `plugin`'s copy with `scope` sees it: its
 * actions run only while the copy is live and count as its work; a
 * replacement defining the same names waits (staged) until the swap.
 *
 * @example Usage
 * ```ts
 * import { z } from "zod";
 * import { createServiceBroker, scopeServices } from "./services.ts";
 * import { createScope } from "./plugin_scope.ts";
 * const broker = createServiceBroker({ nodeId: "n1" });
 * const services = scopeServices(broker, "calc", createScope(true));
 * await services.define("math.inc", z.number(), (n) => n + 1);
 * await services.call("math.inc", 1); // 2
 * await services.retire();
 * ```
 */
export function scopeServices(
  broker: ServiceBroker,
  plugin: string,
  scope: Scope,
): ScopedServices {
  const mine = new Map<string, LocalAction>();
  const staged = new Map<string, LocalAction>();
  const services: ScopedServices = {
    define(name, schema, handler, opts = {}) {
      const action: LocalAction = {
        name,
        plugin,
        schema,
        options: opts,
        handler: (params, call) => {
          if (!scope.live) {
            throw new ServiceError(
              "no_node",
              `plugin '${plugin}' on node '${broker.nodeId}' is being replaced: action '${name}' is not served by this copy`,
              { action: name },
            );
          }
          return scope.track(() => handler(params as never, call));
        },
      };
      if (mine.has(name) || staged.has(name)) {
        return Promise.reject(
          new Error(
            `Cannot define action '${name}': plugin '${plugin}' defined it already`,
          ),
        );
      }
      if (!scope.live) {
        staged.set(name, action);
        return Promise.resolve();
      }
      mine.set(name, action);
      return broker.add(action).catch((err) => {
        mine.delete(name);
        throw err;
      });
    },
    call: (name, params, opts) => broker.call(name, params, opts),
    list: () => broker.list(),
    async retire() {
      const names = [...mine.keys()];
      mine.clear();
      staged.clear();
      await Promise.all(
        names.filter((n) => broker.local(n)?.plugin === plugin).map((n) =>
          broker.remove(n)
        ),
      );
    },
    async takeOver(previous) {
      const gone: string[] = [];
      const added: Promise<void>[] = [];
      for (const [name, action] of staged) {
        if (broker.local(name)?.plugin === plugin) broker.replace(action);
        else added.push(broker.add(action));
        mine.set(name, action);
      }
      staged.clear();
      if (previous) {
        const old = previous as ScopedServices & {
          [OWNED]?: Map<string, LocalAction>;
        };
        for (const name of old[OWNED]?.keys() ?? []) {
          if (!mine.has(name)) gone.push(name);
        }
        old[OWNED]?.clear();
      }
      await Promise.all([...added, ...gone.map((n) => broker.remove(n))]);
    },
  };
  Object.defineProperty(services, OWNED, { value: mine });
  return services;
}
