/**
 * The inside of a plugin's Worker sandbox: imports the plugin with the
 * Worker's own (narrow) permissions, and gives its `setup` a
 * {@linkcode PluginContext} whose every effect is a call to the node across
 * the boundary (see `worker_host.ts` for the other side): the logger,
 * metrics, the plugin's own KV scope, the router, HTTP and API routes,
 * WebSockets relayed from the node (`websocket_relay.ts`), and `kernel.get`
 * of the capabilities the manifest `requires` (today `tasks:local`). The
 * node's raw KV, its signing key and `ctx.nodeFetch` are not available here.
 *
 * @module
 */
import { Hono } from "hono";
import { createRpc, type Rpc, toWireError } from "./rpc.ts";
import { PlexusError } from "../errors.ts";
import type {
  KernelHandle,
  NodeIdentity,
  Plugin,
  PluginContext,
  Running,
  WebSocketHandler,
} from "../plugin.ts";
import type {
  ApiAccess,
  ApiEnv,
  ApiMethod,
  ApiRoutes,
} from "../http/plugin_api.ts";
import type { Logger, LogLevel } from "../observe/logger.ts";
import type {
  Counter,
  Gauge,
  Histogram,
  Labels,
  MetricsRegistry,
} from "../observe/metrics.ts";
import type { ScopedAtomic, ScopedKv } from "../state/scoped_kv.ts";
import type { Router, TopicHandler } from "../router.ts";
import type { TaskHandler, TaskService } from "../tasks.ts";
import { checkProgress } from "../task_progress.ts";
import type {
  ActionCall,
  ActionHandler,
  CallOptions,
  Services,
} from "../contracts/services.ts";
import type { ZodType } from "../_npm_types.ts";
import {
  fromWireError,
  ServiceError,
  toWireError as toServiceWireError,
  type WireError as ServiceWireError,
} from "../services_errors.ts";
import {
  type PackedRequest,
  packResponse,
  type SerialRequest,
  serialRequest,
  type SerialResponse,
  serialResponse,
  toRequest,
  toResponse,
  unpackRequest,
} from "./serial.ts";
import { insideRelay } from "./websocket_relay.ts";
import { callProxy, methodNames, refusal } from "./capability_proxy.ts";
import { describeIssues, parseRequirement, validatePlugin } from "../plugin.ts";

/** The manifest as it crosses: everything but the config schema. */
export interface WireManifest {
  name: string;
  version: string;
  kind: string;
  api: string;
  provides: string[];
  requires?: string[];
  permissions?: Record<string, boolean | string[]>;
  startTimeoutMs?: number;
  /** Whether the plugin has a config schema (validated in here). */
  hasConfig: boolean;
}

/** What `setup` is told. */
export interface WireSetup {
  name: string;
  config: unknown;
  node: NodeIdentity;
  /** Capabilities `kernel.has` answers true for. */
  capabilities: string[];
  /** The method names of each required capability's provider (its `running.api`). */
  apis: Record<string, string[]>;
}

class Unavailable extends PlexusError {
  override name = "SandboxUnavailable";
  constructor(what: string, why?: string) {
    super(
      "sandbox_unavailable",
      why ??
        `${what} is not available to a sandboxed plugin (run it trusted, see docs/sandbox.md)`,
      { status: 501 },
    );
  }
}

/**
 * `ctx.nodeFetch` from inside: the request crosses and the node signs and
 * sends it (its key never leaves the node). An aborted `signal` rejects
 * here; the node's call runs to its end.
 */
function nodeFetch(input: string | URL, init?: RequestInit) {
  const req = new Request(input, init);
  const answer = serialRequest(req).then((s) =>
    rpc.call<SerialResponse>("nodeFetch", s, { timeoutMs: 60_000 })
  );
  const signal = init?.signal;
  if (!signal) return answer.then(toResponse);
  return new Promise<Response>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const abort = () => reject(signal.reason);
    signal.addEventListener("abort", abort, { once: true });
    answer.then(toResponse).then(resolve, reject).finally(() =>
      signal.removeEventListener("abort", abort)
    );
  });
}

// deno-lint-ignore no-explicit-any
const scope = globalThis as any;
let plugin: Plugin | undefined;
let running: Running | undefined;
let app: Hono | undefined;
const apis = new Map<string, Hono<ApiEnv>>();
const subscriptions = new Map<number, TopicHandler>();
const tasks = new Map<string, TaskHandler>();
/** Task runs here by id: what the host's `taskAbort` (a cancel) aborts. */
const taskCancels = new Map<string, AbortController>();
const actions = new Map<string, { schema: ZodType; handler: ActionHandler }>();
/** The node this sandbox runs on, for the errors its actions throw. */
let nodeId = "sandbox";
const sockets = new Map<string, WebSocketHandler>();
const aborts = new AbortController();

// A Worker talks through its global scope; a child process through the
// stdio port `process_entry.ts` installed before this module ran.
// The entry module imports this module, then the plugin, and hands the
// plugin's module over once it is evaluated: a plugin with a top-level
// await is still evaluating when the node's first call (load) arrives.
const evaluated = new Promise<Record<string, unknown>>((resolve) => {
  scope.__plexusPluginReady = resolve;
});

const rpc: Rpc = createRpc(scope.__plexusPort ?? scope, {
  async load(a) {
    // The entry module imported the plugin statically (see worker_host.ts).
    const mod = await evaluated as Record<string, unknown> | undefined;
    if (!mod || !("default" in mod)) {
      throw new Error(
        "the module has no default export (export default a {manifest, setup} object)",
      );
    }
    // The kernel's own check, so a sandboxed plugin is refused in its words.
    const p = validatePlugin(mod.default, (a as { url: string }).url);
    plugin = p;
    const { config, ...rest } = p.manifest;
    return { ...rest, hasConfig: config !== undefined } as WireManifest;
  },
  "config.check"(a) {
    validConfig((a as { name: string }).name, (a as { raw: unknown }).raw);
  },
  async setup(a) {
    const s = a as WireSetup;
    const config = validConfig(s.name, s.config);
    running = await plugin!.setup(context(s, config));
    return {
      hasHealth: typeof running?.health === "function",
      api: running?.api === undefined ? undefined : methodNames(running.api),
      // Concrete routes only: middleware and all() are the node's fallback.
      routes: app?.routes.filter((r) => r.method !== "ALL").map((r) => ({
        method: r.method,
        path: r.path,
      })),
    };
  },
  async stop() {
    aborts.abort(new Error("node shutting down"));
    await running?.stop(AbortSignal.timeout(5000));
  },
  async drain() {
    await running?.drain?.(AbortSignal.timeout(5000));
  },
  async health() {
    return running?.health ? await running.health() : { status: "up" };
  },
  async http(a) {
    const req = unpackRequest(a as PackedRequest);
    if (!app) return packResponse(new Response(null, { status: 404 }));
    return await packResponse(await app.fetch(req));
  },
  async api(a) {
    const { prefix, req, principal } = a as {
      prefix: string;
      req: SerialRequest;
      principal: unknown;
    };
    const sub = apis.get(prefix);
    if (!sub) return serialResponse(new Response(null, { status: 404 }));
    return await serialResponse(
      await sub.fetch(toRequest(req), { principal } as ApiEnv["Bindings"]),
    );
  },
  async deliver(a) {
    const { sub, payload, topic, replyTo } = a as {
      sub: number;
      payload: unknown;
      topic: string;
      replyTo?: string;
    };
    await subscriptions.get(sub)?.(payload, topic, replyTo);
  },
  async "ws.open"(a) {
    const { name, id, req } = a as {
      name: string;
      id: number;
      req: SerialRequest;
    };
    const handler = sockets.get(name);
    if (!handler) {
      return {
        response: await serialResponse(new Response(null, { status: 404 })),
      };
    }
    const r = await relay.open(id, toRequest(req), handler);
    return "accepted" in r ? r : { response: await serialResponse(r.response) };
  },
  "ws.opened": (a) => relay.handlers["ws.opened"](a),
  "ws.message": (a) => relay.handlers["ws.message"](a),
  "ws.closed": (a) => relay.handlers["ws.closed"](a),
  async "api.call"(a) {
    const { method, args } = a as { method: string; args: unknown[] };
    const api = running?.api as Record<string, unknown> | undefined;
    const fn = api?.[method];
    if (typeof fn !== "function") {
      throw new TypeError(`the plugin's api has no method '${method}'`);
    }
    return await fn.apply(api, args);
  },
  async service(a) {
    const { name, params, call } = a as {
      name: string;
      params: unknown;
      call: Omit<ActionCall, "action" | "call">;
    };
    try {
      const action = actions.get(name);
      if (!action) {
        throw new ServiceError(
          "service_not_found",
          `the sandbox no longer defines action '${name}'`,
          { action: name },
        );
      }
      const parsed = action.schema.safeParse(params);
      if (!parsed.success) {
        throw new ServiceError(
          "invalid_params",
          `action '${name}' refused its params: ${
            describeIssues(parsed.error, params)
          }`,
          { action: name },
        );
      }
      const nested = (
        action: string,
        p: unknown,
        o: CallOptions = {},
      ) =>
        callService(action, p, {
          correlationId: call.correlationId,
          traceparent: call.traceparent,
          ...o,
        });
      const v = await action.handler(parsed.data, {
        ...call,
        action: name,
        call: nested as ActionCall["call"],
      });
      return { v };
    } catch (err) {
      return { e: toServiceWireError(err, nodeId) };
    }
  },
  async task(a) {
    const { type, payload, run } = a as {
      type: string;
      payload: unknown;
      run: { id: string; attempt: number };
    };
    const handler = tasks.get(type);
    if (!handler) throw new Error(`no task handler '${type}' in the sandbox`);
    const cancel = new AbortController();
    taskCancels.set(run.id, cancel);
    try {
      return await handler(payload, {
        ...run,
        signal: AbortSignal.any([aborts.signal, cancel.signal]),
        progress(fraction, message) {
          checkProgress(run.id, fraction, message);
          rpc.notify("tasks.progress", { id: run.id, fraction, message });
        },
      });
    } finally {
      if (taskCancels.get(run.id) === cancel) taskCancels.delete(run.id);
    }
  },
  taskAbort(a) {
    const { id, reason } = a as { id: string; reason: string };
    taskCancels.get(id)?.abort(new Error(reason || `task '${id}' aborted`));
  },
}, { timeoutMs: 30_000 });
const relay = insideRelay(rpc);

/** `raw` through the manifest's config schema, as the kernel does in-process. */
function validConfig(name: string, raw: unknown): unknown {
  const schema = plugin!.manifest.config;
  if (!schema) return raw;
  const parsed = schema.safeParse(raw ?? {});
  if (!parsed.success) {
    throw new Error(
      `plugin '${name}' has invalid config: ${
        describeIssues(parsed.error, raw ?? {})
      }`,
    );
  }
  return parsed.data;
}

// A plugin's stray throw or rejection is reported, not fatal to the node.
scope.addEventListener("unhandledrejection", (e: PromiseRejectionEvent) => {
  e.preventDefault();
  rpc.notify("crash", toWireError(e.reason));
});
scope.addEventListener("error", (e: ErrorEvent) => {
  e.preventDefault();
  rpc.notify("crash", toWireError(e.error ?? e.message));
});

function logger(fields: Record<string, unknown>): Logger {
  const emit =
    (level: LogLevel) => (msg: string, more?: Record<string, unknown>) =>
      rpc.notify("log", { level, msg, fields: { ...fields, ...more } });
  return {
    debug: emit("debug"),
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
    child: (more) => logger({ ...fields, ...more }),
    enabled: () => true,
  };
}

function metrics(): MetricsRegistry {
  const key = (l?: Labels) => JSON.stringify(l ?? {});
  const send = (
    kind: string,
    name: string,
    help: string,
    op: string,
    value: number | undefined,
    labels?: Labels,
    buckets?: number[],
  ) => rpc.notify("metric", { kind, name, help, op, value, labels, buckets });
  return {
    counter(name, help): Counter {
      const seen = new Map<string, number>();
      const inc = (labels?: Labels, by = 1) => {
        seen.set(key(labels), (seen.get(key(labels)) ?? 0) + by);
        send("counter", name, help, "inc", by, labels);
      };
      return {
        inc,
        get: (labels) => seen.get(key(labels)) ?? 0,
        labels: (labels) => ({ inc: (by?: number) => inc(labels, by) }),
      };
    },
    gauge(name, help): Gauge {
      const seen = new Map<string, number>();
      return {
        set(value, labels) {
          seen.set(key(labels), value);
          send("gauge", name, help, "set", value, labels);
        },
        inc(labels, by = 1) {
          seen.set(key(labels), (seen.get(key(labels)) ?? 0) + by);
          send("gauge", name, help, "inc", by, labels);
        },
        get: (labels) => seen.get(key(labels)) ?? 0,
        remove(labels) {
          seen.delete(key(labels));
          send("gauge", name, help, "remove", undefined, labels);
        },
      };
    },
    histogram(name, help, buckets): Histogram {
      const seen = new Map<string, { count: number; sum: number }>();
      const observe = (value: number, labels?: Labels) => {
        const s = seen.get(key(labels)) ?? { count: 0, sum: 0 };
        seen.set(key(labels), { count: s.count + 1, sum: s.sum + value });
        send("histogram", name, help, "observe", value, labels, buckets);
      };
      return {
        observe,
        labels: (labels) => ({ observe: (v: number) => observe(v, labels) }),
        get: (labels) => seen.get(key(labels)) ?? { count: 0, sum: 0 },
      };
    },
    render: () => {
      throw new Unavailable("metrics.render");
    },
    toJSON: () => {
      throw new Unavailable("metrics.toJSON");
    },
  };
}

function kv(): ScopedKv {
  const atomic = (): ScopedAtomic => {
    const checks: Deno.AtomicCheck[] = [];
    const ops: unknown[] = [];
    const op: ScopedAtomic = {
      check(...c) {
        checks.push(...c);
        return op;
      },
      set(key, value, options) {
        ops.push({ op: "set", key, value, options });
        return op;
      },
      delete(key) {
        ops.push({ op: "delete", key });
        return op;
      },
      sum(key, n) {
        ops.push({ op: "sum", key, n });
        return op;
      },
      commit: () => rpc.call("kv.atomic", { checks, ops }),
    };
    return op;
  };
  return {
    get: (key) => rpc.call("kv.get", { key }),
    set: (key, value, options) => rpc.call("kv.set", { key, value, options }),
    delete: (key) => rpc.call("kv.delete", { key }),
    list<T>(
      selector: { prefix: Deno.KvKey },
      options?: Deno.KvListOptions,
    ): AsyncIterable<Deno.KvEntry<T>> {
      return {
        async *[Symbol.asyncIterator]() {
          const entries = await rpc.call<Deno.KvEntry<T>[]>("kv.list", {
            prefix: selector.prefix,
            options,
          });
          yield* entries;
        },
      };
    },
    atomic,
  } as ScopedKv;
}

function router(): Router {
  let next = 1;
  return {
    subscribe(pattern, handler) {
      const sub = next++;
      subscriptions.set(sub, handler);
      const ready = rpc.call("router.subscribe", { pattern, sub });
      ready.catch((err) =>
        rpc.notify("log", {
          level: "error",
          msg: "subscribe failed",
          fields: { pattern, error: toWireError(err) },
        })
      );
      return () => {
        subscriptions.delete(sub);
        ready.then(() => rpc.notify("router.unsubscribe", { sub }), () => {});
      };
    },
    // The count of subscribers is not known this side of the boundary.
    publish(topic, payload, replyTo) {
      rpc.notify("router.publish", { topic, payload, replyTo });
      return 0;
    },
    request: (topic, payload, options) =>
      rpc.call("router.request", { topic, payload, options }, {
        timeoutMs: (options?.timeoutMs ?? 5000) + 1000,
      }),
  };
}

function apiRoutes(prefix: string): ApiRoutes {
  const sub = new Hono<ApiEnv>().basePath(`/api/v1/${prefix}`);
  sub.use(async (c, next) => {
    if (c.env?.principal) c.set("principal", c.env.principal);
    await next();
  });
  apis.set(prefix, sub);
  rpc.notify("api.claim", { prefix });
  const method = (name: "get" | "post" | "put" | "patch" | "delete") => {
    const add: ApiMethod = (path, access: ApiAccess, handler) => {
      sub[name](path, handler);
      rpc.notify("api.route", { prefix, method: name, path, access });
      return routes;
    };
    return add;
  };
  const routes: ApiRoutes = {
    prefix,
    get: method("get"),
    post: method("post"),
    put: method("put"),
    patch: method("patch"),
    delete: method("delete"),
  };
  return routes;
}

async function callService(
  name: string,
  params: unknown,
  options?: CallOptions,
): Promise<unknown> {
  const r = await rpc.call<{ v?: unknown; e?: ServiceWireError }>(
    "services.call",
    { name, params, options },
    { timeoutMs: (options?.timeout ?? 10_000) + 5_000 },
  );
  if (r.e) throw fromWireError(r.e);
  return r.v;
}

/** `ctx.services` inside the sandbox: handlers and schemas stay here. */
function services(): Services {
  return {
    define(name, schema, handler, options) {
      if (actions.has(name)) {
        return Promise.reject(
          new Error(`Cannot define action '${name}': it is defined already`),
        );
      }
      actions.set(name, { schema, handler: handler as ActionHandler });
      return rpc.call<void>("services.define", { name, options }).catch(
        (err) => {
          actions.delete(name);
          throw err;
        },
      );
    },
    call: <R>(name: string, params: unknown, options?: CallOptions) =>
      callService(name, params, options) as Promise<R>,
    list: () => rpc.call("services.list"),
  };
}

function taskService(): TaskService {
  const service = {
    register(type: string, handler: TaskHandler) {
      tasks.set(type, handler);
      rpc.notify("tasks.register", { type });
    },
    types: () => [...tasks.keys()].sort(),
    submit: (task: unknown) => rpc.call("tasks.submit", task),
    get: (id: string) => rpc.call("tasks.get", { id }),
    cancel: (id: string, reason?: string) =>
      rpc.call("tasks.cancel", { id, reason }),
  };
  return new Proxy(service, {
    get(target, prop) {
      if (prop in target) return target[prop as keyof typeof target];
      if (typeof prop === "symbol" || prop === "then") return undefined;
      throw new Unavailable(`tasks:local.${prop}`);
    },
  }) as unknown as TaskService;
}

function context(s: WireSetup, config: unknown): PluginContext {
  nodeId = s.node.id;
  app = new Hono().basePath(`/plugins/${s.name}`);
  const requires = new Set(
    (plugin!.manifest.requires ?? []).map((r) =>
      parseRequirement(r).capability
    ),
  );
  const ctxRouter = router();
  const proxies = new Map<string, unknown>();
  const kernel: KernelHandle = {
    get(capability: string) {
      if (!requires.has(capability)) {
        throw new Unavailable(
          `capability '${capability}' (not in the manifest's requires)`,
        );
      }
      const refused = refusal(capability);
      if (refused) throw new Unavailable(capability, refused);
      if (capability === "tasks:local") return taskService();
      if (capability === "router:local") return ctxRouter;
      const methods = s.apis[capability];
      if (!methods) {
        throw new Error(`no running plugin provides '${capability}'`);
      }
      if (!proxies.has(capability)) {
        proxies.set(
          capability,
          callProxy(
            capability,
            methods,
            (method, args) =>
              rpc.call("kernel.call", { capability, method, args }, {
                timeoutMs: 60_000,
              }),
          ),
        );
      }
      return proxies.get(capability);
    },
    has: (capability: string) => s.capabilities.includes(capability),
  } as KernelHandle;
  return {
    name: s.name,
    config,
    log: logger({}),
    metrics: metrics(),
    kv: kv(),
    router: ctxRouter,
    http: app,
    api: apiRoutes,
    websocket(name, handler) {
      sockets.set(name, handler);
      rpc.notify("ws.claim", { name });
    },
    services: services(),
    nodeFetch: requires.has("node:key") ? nodeFetch : () =>
      Promise.reject(
        new Unavailable(
          "ctx.nodeFetch",
          `ctx.nodeFetch signs with the node's key: plugin '${s.name}' may use it in its sandbox only when its manifest requires 'node:key'`,
        ),
      ),
    kernel,
    node: s.node,
    signal: aborts.signal,
  };
}
