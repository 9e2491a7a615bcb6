/**
 * The node's side of a plugin's Worker sandbox: starts the Worker with
 * exactly the permissions it is given, loads the plugin in it, and hands the
 * kernel an ordinary {@linkcode Plugin} whose `setup` serves the calls the
 * sandboxed plugin makes (`worker_main.ts` is the inside) against the real
 * {@linkcode PluginContext}: its logger, metrics, its own KV scope, the
 * router, its HTTP and API routes (each API route behind the node's chain
 * with the access the plugin declared), its WebSockets (relayed,
 * `websocket_relay.ts`), `ctx.nodeFetch` when it requires `node:key`, and
 * the api of each capability it requires (`capability_proxy.ts`); the
 * node's `kernel.get` of a capability it provides calls into it.
 *
 * Containment: a plugin's uncaught error or rejection never reaches the
 * node, and neither does an endless loop (a missed health deadline). Either
 * is a crash: the Worker is ended and a new one is started after a backoff
 * (1 s, 2 s, 4 s … 30 s) with the same routes, task types and config; its
 * setup makes its subscriptions again. After `maxCrashes` crashes within
 * `crashWindowMs` it stays down, and `/health` says so. Requests to its
 * routes meanwhile answer 503.
 *
 * @module
 */
import { z } from "zod";
import type { ActionOptions, CallOptions } from "../contracts/services.ts";
import {
  fromWireError,
  toWireError as toServiceWireError,
  type WireError as ServiceWireError,
} from "../services_errors.ts";
import {
  createRpc,
  type Port,
  type Rpc,
  SandboxCallError,
  toWireError,
  type WireError,
} from "./rpc.ts";
import type { WireManifest, WireSetup } from "./worker_main.ts";
import type {
  Health,
  Plugin,
  PluginContext,
  PluginManifest,
  Running,
} from "../plugin.ts";
import { PlexusError } from "../errors.ts";
import { plexusErrorResponse } from "../http/errors.ts";
import { backoffDelay } from "../resilience/backoff.ts";
import type { Context } from "hono";
import type { ApiAccess, ApiRoutes } from "../http/plugin_api.ts";
import type { LogLevel } from "../observe/logger.ts";
import type { Labels } from "../observe/metrics.ts";
import type { TaskContext, TaskSubmission } from "../tasks.ts";
import {
  type PackedResponse,
  packRequest,
  type SerialRequest,
  serialRequest,
  type SerialResponse,
  serialResponse,
  toResponse,
  unpackResponse,
} from "./serial.ts";
import { type Accepted, type NodeRelay, nodeRelay } from "./websocket_relay.ts";
import { callProxy, methodNames, refusal } from "./capability_proxy.ts";
import { parseRequirement, PluginError } from "../plugin.ts";

/** When a crashed sandboxed plugin is started again, and when it stays down. */
export interface RestartPolicy {
  /** Crashes within `crashWindowMs` after which it stays down. @default {5} */
  maxCrashes?: number;
  /** The window `maxCrashes` counts in, ms. @default {60000} */
  crashWindowMs?: number;
  /** Delay before the first restart, doubling per recent crash, ms. @default {1000} */
  baseDelayMs?: number;
  /** Longest delay before a restart, ms. @default {30000} */
  maxDelayMs?: number;
}

/** A started sandbox: its port to the node, and how it ends. */
export interface Launched {
  /** Messages to and from the plugin's side (`worker_main.ts`). */
  port: Port;
  /** Ends it at once. */
  terminate(): void;
  /** Told once when it ends by itself or raises an error it did not handle. */
  onExit(callback: (why: string) => void): void;
}

/** Starts a sandbox running the plugin at `pluginUrl` (a Worker, or a child process). */
export type Launcher = (pluginUrl: string) => Launched;

/**
 * Starts a Worker with `permissions` whose initial static module graph is
 * the sandbox's inside and the plugin: Deno loads that graph without read
 * permission (a dynamic `import()` of the plugin would need read access to
 * every file it imports). The entry sets up the call channel first, then
 * evaluates the plugin module.
 */
export function workerLauncher(
  permissions: Deno.PermissionOptionsObject,
): Launcher {
  return (pluginUrl) => {
    const entry = [
      `import ${JSON.stringify(WORKER_URL)};`,
      `import * as mod from ${JSON.stringify(pluginUrl)};`,
      `globalThis.__plexusPluginReady(mod);`,
    ].join("\n");
    const worker = new Worker(
      `data:application/javascript,${encodeURIComponent(entry)}`,
      {
        type: "module",
        name: `plugin ${pluginUrl}`,
        deno: { permissions },
      },
    );
    let exit: ((why: string) => void) | undefined;
    // An error the worker did not handle must not end the node.
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      exit?.(e.message);
    };
    return {
      port: worker,
      terminate: () => worker.terminate(),
      onExit: (cb) => {
        exit = cb;
      },
    };
  };
}

/** Options of {@linkcode openWorkerSandbox}. */
export interface WorkerSandboxOptions {
  /** The Worker's permissions (every key explicit; see `permissions.ts`). */
  permissions: Deno.PermissionOptionsObject;
  /** Starts the sandbox instead of a Worker (the `process` level). @default {workerLauncher(permissions)} */
  launcher?: Launcher;
  /** Deadline of a call into the sandbox without its own. @default {10000} */
  timeoutMs?: number;
  /** Deadline of loading the plugin module. @default {30000} */
  loadTimeoutMs?: number;
  /** Deadline of the plugin's health answer (inside the kernel's 2 s). @default {1500} */
  healthTimeoutMs?: number;
  /** Restarts after a crash. */
  restart?: RestartPolicy;
  /**
   * Calls and notes per second the plugin may send the node; more are
   * refused (calls answered 429, notes dropped and counted), and a plugin
   * over budget for 3 seconds in a row is ended as a crash (a flood).
   * @default {20000}
   */
  messagesPerSecond?: number;
  /**
   * Bytes a relayed WebSocket may have in flight each way (frames the plugin
   * has not taken yet, or the client has not); past it the socket is closed
   * 1013, and a single larger frame 1009.
   * @default {4194304}
   */
  socketBufferBytes?: number;
}

/** Where a sandboxed plugin is in its life. */
export type SandboxState =
  | "loaded"
  | "running"
  | "restarting"
  | "down"
  | "stopped";

/** One crash of a sandboxed plugin. */
export interface Crash {
  /** When, ms since the epoch. */
  at: number;
  /** What it raised (or why it was ended). */
  error: WireError;
}

/** A plugin loaded in its own Worker. */
export interface WorkerSandbox {
  /** The plugin's manifest, as it declared it (its config schema stays inside). */
  readonly manifest: WireManifest;
  /** What the kernel registers: `setup` starts serving the sandbox's calls. */
  readonly plugin: Plugin;
  /** Its crashes, oldest first (the last 100). */
  readonly crashes: readonly Crash[];
  /** Where it is now. */
  readonly state: SandboxState;
  /** Workers started for it so far (1 + restarts). */
  readonly starts: number;
  /**
   * Validates `raw` against the plugin's config schema inside the sandbox
   * (the schema never leaves it); rejects with a `PluginError` (phase
   * `config`) naming the plugin, the field and the value.
   */
  checkConfig(raw: unknown): Promise<void>;
  /** Ends the Worker at once; no restart follows. */
  terminate(reason?: string): void;
}

/**
 * Why this node cannot start a sandbox, or `undefined` when it can (or
 * cannot tell): the bundle (`dist/plexus.js`) does not carry the sandbox's
 * inside, `worker_main.ts`, which a sandbox loads as a module of its own.
 *
 * @example Usage
 * ```ts
 * import { sandboxUnsupported } from "./worker_host.ts";
 * import assert from "node:assert/strict";
 * assert.equal(sandboxUnsupported(), undefined); // run from the source tree
 * ```
 */
export function sandboxUnsupported(): string | undefined {
  if (!WORKER_URL.startsWith("file:")) return;
  try {
    Deno.statSync(new URL(WORKER_URL));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) return;
    return `this node cannot start a sandbox: it runs from a bundle (or a compiled binary), which does not carry the sandbox's module (${WORKER_URL} is missing); run the node from its source (deno task start, or deno run main.ts serve in the repository) to sandbox plugins`;
  }
}

/**
 * The name in the manifest of the plugin at `url`, read in a Worker with
 * `permissions` that runs nothing but the plugin's module (it needs no
 * sandbox module, so it works from the bundle too).
 *
 * @example Usage
 * ```ts ignore
 * const name = await readPluginName(url, workerPermissions(NONE, url));
 * ```
 */
export async function readPluginName(
  url: string,
  permissions: Deno.PermissionOptionsObject,
): Promise<string> {
  const entry = [
    `import * as mod from ${JSON.stringify(url)};`,
    `const name = mod.default?.manifest?.name;`,
    `self.postMessage(typeof name === "string" ? { name } : { error: "the default export is not a {manifest, setup} object with a name" });`,
  ].join("\n");
  const worker = new Worker(
    `data:application/javascript,${encodeURIComponent(entry)}`,
    { type: "module", name: `plugin name ${url}`, deno: { permissions } },
  );
  try {
    return await new Promise<string>((resolve, reject) => {
      worker.onmessage = (e) =>
        e.data.name ? resolve(e.data.name) : reject(new Error(e.data.error));
      worker.onerror = (e) => {
        e.preventDefault();
        reject(new Error(e.message));
      };
    });
  } finally {
    worker.terminate();
  }
}

/** Entries `kv.list` may return across the sandbox in one call. */
const MAX_LIST = 10_000;
const WORKER_URL = new URL("./worker_main.ts", import.meta.url).href;

/** One Worker and its call channel. */
interface Conn {
  launched: Launched;
  /** Messages admitted in the current second, and seconds over budget in a row. */
  budget: {
    used: number;
    strikes: number;
    timer?: ReturnType<typeof setInterval>;
  };
  rpc: Rpc;
  /** Router subscriptions made for this Worker. */
  unsubscribe: Map<number, () => void>;
  /** WebSockets relayed to this Worker. */
  sockets: NodeRelay;
  ended: boolean;
}

/**
 * Starts a Worker with `options.permissions` and loads the plugin at `url`
 * in it. Rejects (and ends the Worker) when the module cannot be loaded or
 * is not a plugin.
 *
 * @example Usage
 * ```ts ignore
 * const sandbox = await openWorkerSandbox(pluginUrl, { permissions: { read: false, net: false } });
 * kernel.register(sandbox.plugin, spec);
 * ```
 */
export async function openWorkerSandbox(
  url: string,
  options: WorkerSandboxOptions,
): Promise<WorkerSandbox> {
  const policy = {
    maxCrashes: options.restart?.maxCrashes ?? 5,
    crashWindowMs: options.restart?.crashWindowMs ?? 60_000,
    baseDelayMs: options.restart?.baseDelayMs ?? 1000,
    maxDelayMs: options.restart?.maxDelayMs ?? 30_000,
  };
  const healthTimeoutMs = options.healthTimeoutMs ?? 1500;
  const budget = options.messagesPerSecond ?? 20_000;
  // Host-side state that outlives a Worker: routes and task types are
  // registered once and call whichever Worker is current.
  let ctx: PluginContext | undefined;
  let claimError: Error | undefined;
  const crashes: Crash[] = [];
  const apis = new Map<string, ApiRoutes>();
  const apiRoutes = new Set<string>();
  const taskTypes = new Set<string>();
  /** Task runs in the sandbox now, by task id: where its progress goes. */
  const taskRuns = new Map<string, TaskContext>();
  const actionNames = new Set<string>();
  const socketNames = new Set<string>();
  let nextSocket = 1;
  let current: Conn | undefined;
  /** The node's view of the api the sandboxed plugin's setup returned. */
  let providedApi: unknown;
  /** Adds the plugin's HTTP routes on the node, once (its first setup). */
  let routesFrom:
    | ((routes: { method: string; path: string }[]) => void)
    | undefined;
  let state: SandboxState = "loaded";
  let starts = 0;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;

  const need = (): PluginContext => {
    if (!ctx) throw new Error("the sandboxed plugin is not set up yet");
    return ctx;
  };
  const name = () => ctx?.name ?? url;
  /** A call into the current Worker; 503 while there is none. */
  const call = <T>(
    method: string,
    args?: unknown,
    o?: { timeoutMs?: number },
  ): Promise<T> => {
    if (!current || state !== "running") {
      return Promise.reject(
        new SandboxCallError(
          "unavailable",
          `plugin '${name()}' is ${state === "down" ? "down" : "restarting"}`,
          { status: 503, retryable: state !== "down" },
        ),
      );
    }
    return current.rpc.call<T>(method, args, o);
  };
  /** A route's answer from the sandbox, or the node's JSON error. */
  const answer = async (
    run: () => Promise<SerialResponse>,
  ): Promise<Response> => {
    try {
      return toResponse(await run());
    } catch (err) {
      if (err instanceof PlexusError) return plexusErrorResponse(err);
      throw err;
    }
  };

  /** A relayed WebSocket upgrade: the plugin's handler decides inside. */
  const openSocket = async (
    wsName: string,
    req: Request,
  ): Promise<Response> => {
    try {
      const conn = current;
      const id = nextSocket++;
      const r = await call<
        { accepted: Accepted } | { response: SerialResponse }
      >("ws.open", { name: wsName, id, req: await serialRequest(req) });
      if ("response" in r) return toResponse(r.response);
      if (conn !== current || !conn || conn.ended) {
        throw new SandboxCallError(
          "unavailable",
          `plugin '${name()}' restarted while accepting /ws/${wsName}`,
          { status: 503, retryable: true },
        );
      }
      return conn.sockets.attach(id, req, r.accepted);
    } catch (err) {
      if (err instanceof PlexusError) return plexusErrorResponse(err);
      throw err;
    }
  };

  const end = (conn: Conn, reason: string, socketCode = 1011) => {
    if (conn.ended) return;
    conn.ended = true;
    conn.sockets.closeAll(socketCode, `plugin sandbox ended: ${reason}`);
    conn.rpc.close(reason);
    for (const off of conn.unsubscribe.values()) off();
    conn.unsubscribe.clear();
    clearInterval(conn.budget.timer);
    conn.launched.terminate();
    if (current === conn) current = undefined;
  };

  /** Records a crash of `conn` (or of a start that failed) and decides what follows. */
  const crashed = (conn: Conn | undefined, error: WireError) => {
    if (conn && (conn.ended || conn !== current)) return;
    const at = Date.now();
    crashes.push({ at, error });
    if (crashes.length > 100) crashes.shift();
    ctx?.log.error("sandboxed plugin crashed", {
      error: `${error.name}: ${error.message}`,
    });
    if (state !== "running" && state !== "restarting") return;
    if (conn) end(conn, `crashed: ${error.message}`);
    const recent = crashes.filter((c) => at - c.at < policy.crashWindowMs)
      .length;
    if (recent >= policy.maxCrashes) {
      state = "down";
      ctx?.log.error("sandboxed plugin stays down", {
        crashes: recent,
        windowMs: policy.crashWindowMs,
      });
      return;
    }
    state = "restarting";
    const delay = backoffDelay(recent, {
      baseMs: policy.baseDelayMs,
      maxMs: policy.maxDelayMs,
    });
    ctx?.log.warn("restarting sandboxed plugin", { inMs: delay });
    restartTimer = setTimeout(restart, delay);
  };

  const restart = async () => {
    restartTimer = undefined;
    if (state !== "restarting") return;
    let conn: Conn;
    try {
      conn = (await spawn()).conn;
    } catch (err) {
      // It did not even load: a crash too, retried later.
      return crashed(undefined, toWireError(err));
    }
    if (state !== "restarting") return end(conn, "stopped meanwhile");
    current = conn;
    state = "running";
    try {
      await setupInside(conn);
      ctx?.log.info("sandboxed plugin restarted", { starts });
    } catch (err) {
      crashed(conn, toWireError(err));
    }
  };

  const setupInside = async (conn: Conn) => {
    const c = need();
    const apis: Record<string, string[]> = {};
    for (const cap of required()) {
      if (refusal(cap) || cap === "tasks:local" || cap === "router:local") {
        continue;
      }
      try {
        apis[cap] = requiredApi(cap).methods;
      } catch {
        // Not provided: the plugin's kernel.get says so, as the node's would.
      }
    }
    const setup: WireSetup = {
      name: c.name,
      config: c.config,
      node: { ...c.node },
      capabilities: required().filter((r) => c.kernel.has(r)),
      apis,
    };
    const answer = await conn.rpc.call<
      { api?: string[]; routes?: { method: string; path: string }[] }
    >("setup", setup, {
      timeoutMs: manifest.startTimeoutMs ?? 10_000,
    });
    if (claimError) throw claimError;
    routesFrom?.(answer?.routes ?? []);
    routesFrom = undefined;
    // The api a restarted Worker returns is called through the first proxy.
    if (answer?.api && !providedApi) {
      providedApi = callProxy(
        manifest.provides[0] ?? c.name,
        answer.api,
        (method, args) =>
          call("api.call", { method, args }, { timeoutMs: 60_000 }),
      );
    }
  };

  /** The capabilities the manifest requires, without version ranges. */
  const required = () =>
    (manifest.requires ?? []).map((r) => parseRequirement(r).capability);
  const requiredApis = new Map<string, { api: object; methods: string[] }>();
  /** A required capability's provider api, and the methods that may be called. */
  const requiredApi = (cap: string) => {
    const api = need().kernel.get(cap) as object;
    let known = requiredApis.get(cap);
    if (known?.api !== api) {
      known = { api, methods: methodNames(api) };
      requiredApis.set(cap, known);
    }
    return known;
  };

  const spawn = async (): Promise<{ conn: Conn; manifest: WireManifest }> => {
    const launched = (options.launcher ?? workerLauncher(options.permissions))(
      url,
    );
    starts++;
    let failLoad: ((err: Error) => void) | undefined;
    const loadFailed = new Promise<never>((_, reject) => {
      failLoad = reject;
    });
    loadFailed.catch(() => {});
    const conn = {
      launched,
      unsubscribe: new Map(),
      ended: false,
      budget: { used: 0, strikes: 0 },
    } as unknown as Conn;
    conn.sockets = nodeRelay(() => conn.rpc, {
      maxBufferBytes: options.socketBufferBytes ?? 4 << 20,
      onOverflow: (code, reason) =>
        ctx?.log.warn("relayed websocket closed", { code, reason }),
    });
    let refused = 0;
    conn.budget.timer = setInterval(() => {
      const over = conn.budget.used > budget;
      conn.budget.strikes = over ? conn.budget.strikes + 1 : 0;
      if (refused > 0) {
        ctx?.metrics.counter(
          "plexus_sandbox_messages_refused_total",
          "Calls and notes a sandboxed plugin sent over its message budget",
        ).inc({ plugin: name() }, refused);
        refused = 0;
      }
      conn.budget.used = 0;
      if (conn.budget.strikes >= 3) {
        crashed(conn, {
          name: "Flood",
          message: `sent more than ${budget} messages a second for 3 seconds`,
        });
      }
    }, 1000);
    conn.rpc = createRpc(launched.port, {
      log(a) {
        const { level, msg, fields } = a as {
          level: LogLevel;
          msg: string;
          fields?: Record<string, unknown>;
        };
        const log = need().log;
        (log[level] ?? log.info).call(log, String(msg), fields);
      },
      metric(a) {
        const m = a as {
          kind: string;
          name: string;
          help: string;
          op: string;
          value?: number;
          labels?: Labels;
          buckets?: number[];
        };
        const reg = need().metrics;
        try {
          if (m.kind === "counter") {
            reg.counter(m.name, m.help).inc(m.labels, m.value);
          } else if (m.kind === "gauge") {
            const g = reg.gauge(m.name, m.help);
            if (m.op === "set") g.set(m.value ?? 0, m.labels);
            else if (m.op === "inc") g.inc(m.labels, m.value);
            else g.remove(m.labels);
          } else if (m.kind === "histogram") {
            reg.histogram(m.name, m.help, m.buckets).observe(
              m.value ?? 0,
              m.labels,
            );
          }
        } catch (err) {
          need().log.warn("metric from the sandbox refused", {
            metric: m.name,
            error: (err as Error).message,
          });
        }
      },
      "kv.get": (a) => need().kv.get((a as { key: Deno.KvKey }).key),
      "kv.set": (a) => {
        const { key, value, options: o } = a as {
          key: Deno.KvKey;
          value: unknown;
          options?: { expireIn?: number };
        };
        return need().kv.set(key, value, o);
      },
      "kv.delete": (a) => need().kv.delete((a as { key: Deno.KvKey }).key),
      async "kv.list"(a) {
        const { prefix, options: o } = a as {
          prefix: Deno.KvKey;
          options?: Deno.KvListOptions;
        };
        const out: Deno.KvEntry<unknown>[] = [];
        for await (const e of need().kv.list({ prefix }, o)) {
          if (out.length === MAX_LIST) {
            throw new Error(
              `kv.list across the sandbox returns at most ${MAX_LIST} entries: page with limit and cursor`,
            );
          }
          out.push(e);
        }
        return out;
      },
      "kv.atomic"(a) {
        const { checks, ops } = a as {
          checks: Deno.AtomicCheck[];
          ops: {
            op: "set" | "delete" | "sum";
            key: Deno.KvKey;
            value?: unknown;
            options?: { expireIn?: number };
            n?: bigint;
          }[];
        };
        const atomic = need().kv.atomic().check(...checks);
        for (const o of ops) {
          if (o.op === "set") atomic.set(o.key, o.value, o.options);
          else if (o.op === "delete") atomic.delete(o.key);
          else atomic.sum(o.key, BigInt(o.n ?? 0n));
        }
        return atomic.commit();
      },
      "router.subscribe"(a) {
        const { pattern, sub } = a as { pattern: string; sub: number };
        const off = need().router.subscribe(
          pattern,
          (payload, topic, replyTo) =>
            conn.rpc.call("deliver", { sub, payload, topic, replyTo }),
        );
        conn.unsubscribe.set(sub, off);
      },
      "router.unsubscribe"(a) {
        const { sub } = a as { sub: number };
        conn.unsubscribe.get(sub)?.();
        conn.unsubscribe.delete(sub);
      },
      "router.publish"(a) {
        const { topic, payload, replyTo } = a as {
          topic: string;
          payload: unknown;
          replyTo?: string;
        };
        need().router.publish(topic, payload, replyTo);
      },
      "router.request"(a) {
        const { topic, payload, options: o } = a as {
          topic: string;
          payload: unknown;
          options?: { timeoutMs?: number };
        };
        return need().router.request(topic, payload, o);
      },
      "api.claim"(a) {
        const { prefix } = a as { prefix: string };
        if (apis.has(prefix)) return; // claimed before a restart
        try {
          apis.set(prefix, need().api(prefix));
        } catch (err) {
          claimError ??= err as Error;
        }
      },
      "api.route"(a) {
        const { prefix, method, path, access } = a as {
          prefix: string;
          method: "get" | "post" | "put" | "patch" | "delete";
          path: string;
          access: ApiAccess;
        };
        const routes = apis.get(prefix);
        const id = `${prefix} ${method} ${path}`;
        if (!routes || apiRoutes.has(id)) return; // registered before a restart
        apiRoutes.add(id);
        try {
          routes[method](
            path,
            access,
            (c) =>
              answer(async () =>
                await call<SerialResponse>("api", {
                  prefix,
                  req: await serialRequest(c.req.raw),
                  principal: c.var.principal,
                })
              ),
          );
        } catch (err) {
          claimError ??= err as Error;
        }
      },
      "ws.claim"(a) {
        const { name: wsName } = a as { name: string };
        if (socketNames.has(wsName)) return; // claimed before a restart
        try {
          need().websocket(wsName, (req) => openSocket(wsName, req));
          socketNames.add(wsName);
        } catch (err) {
          claimError ??= err as Error;
        }
      },
      ...conn.sockets.handlers,
      async "services.define"(a) {
        const { name: action, options: o } = a as {
          name: string;
          options?: ActionOptions;
        };
        if (actionNames.has(action)) return; // defined before a restart
        // The schema cannot cross: the sandbox checks the params itself.
        await need().services.define(action, z.unknown(), async (params, c) => {
          const r = await call<{ v?: unknown; e?: ServiceWireError }>(
            "service",
            {
              name: action,
              params,
              call: {
                caller: c.caller,
                correlationId: c.correlationId,
                traceparent: c.traceparent,
                role: c.role,
              },
            },
            { timeoutMs: 600_000 },
          );
          if (r.e) throw fromWireError(r.e);
          return r.v;
        }, o);
        actionNames.add(action);
      },
      async "services.call"(a) {
        const { name: action, params, options: o } = a as {
          name: string;
          params: unknown;
          options?: CallOptions;
        };
        try {
          return { v: await need().services.call(action, params, o) };
        } catch (err) {
          return { e: toServiceWireError(err, need().node.id) };
        }
      },
      "services.list": () => need().services.list(),
      "tasks.register"(a) {
        const { type } = a as { type: string };
        const c = need();
        if (!c.kernel.has("tasks:local") || taskTypes.has(type)) return;
        taskTypes.add(type);
        c.kernel.get("tasks:local").register(type, async (payload, run) => {
          taskRuns.set(run.id, run);
          // A cancel aborts the handler's signal inside the sandbox too.
          const abort = () =>
            void call("taskAbort", {
              id: run.id,
              reason: String((run.signal.reason as Error)?.message ?? ""),
            }).catch(() => {});
          run.signal.addEventListener("abort", abort, { once: true });
          try {
            return await call("task", {
              type,
              payload,
              run: { id: run.id, attempt: run.attempt },
            }, { timeoutMs: 60_000 });
          } finally {
            run.signal.removeEventListener("abort", abort);
            if (taskRuns.get(run.id) === run) taskRuns.delete(run.id);
          }
        });
      },
      "tasks.progress"(a) {
        const { id, fraction, message } = a as {
          id: string;
          fraction: number;
          message?: string;
        };
        taskRuns.get(id)?.progress(fraction, message);
      },
      "tasks.submit": (a) =>
        need().kernel.get("tasks:local").submit(a as TaskSubmission),
      "tasks.get": (a) =>
        need().kernel.get("tasks:local").get((a as { id: string }).id),
      "tasks.cancel": (a) => {
        const { id, reason } = a as { id: string; reason?: string };
        return need().kernel.get("tasks:local").cancel(id, reason);
      },
      async "kernel.call"(a) {
        const { capability, method, args } = a as {
          capability: string;
          method: string;
          args: unknown[];
        };
        const c = need();
        if (!required().includes(capability)) {
          throw new PlexusError(
            "sandbox_unavailable",
            `plugin '${c.name}' does not require '${capability}'`,
            { status: 403 },
          );
        }
        // These two cross through their own narrower calls (tasks.*, router.*).
        const refused = capability === "tasks:local" ||
            capability === "router:local"
          ? `capability '${capability}' is reached through its own calls`
          : refusal(capability);
        if (refused) {
          throw new PlexusError("sandbox_unavailable", refused, {
            status: 501,
          });
        }
        const { api, methods } = requiredApi(capability);
        if (!methods.includes(method)) {
          throw new TypeError(
            `capability '${capability}' has no method '${method}'`,
          );
        }
        const fn = (api as Record<string, (...a: unknown[]) => unknown>)[
          method
        ];
        return await fn.apply(api, args);
      },
      async nodeFetch(a) {
        const s = a as SerialRequest;
        const c = need();
        if (
          !(manifest.requires ?? []).some((r) =>
            r === "node:key" || r.startsWith("node:key@")
          )
        ) {
          throw new PlexusError(
            "sandbox_unavailable",
            `plugin '${c.name}' may use ctx.nodeFetch only when its manifest requires 'node:key'`,
            { status: 501 },
          );
        }
        const target = new URL(s.url);
        if (!netAllows(options.permissions.net, target)) {
          throw new PlexusError(
            "not_capable",
            `plugin '${c.name}': ctx.nodeFetch to '${target.host}' is outside its net permission (ask for it in the manifest's permissions.net and grant it in pluginGrants.${c.name})`,
            { status: 403 },
          );
        }
        return await serialResponse(
          await c.nodeFetch(s.url, {
            method: s.method,
            headers: s.headers,
            body: s.body,
          }),
        );
      },
      crash(a) {
        crashed(conn, a as WireError);
      },
    }, {
      timeoutMs: options.timeoutMs ?? 10_000,
      admit: () => {
        if (++conn.budget.used <= budget) return true;
        refused++;
        return false;
      },
    });
    launched.onExit((why) => {
      if (failLoad) return failLoad(new Error(why));
      crashed(conn, { name: "Error", message: why });
    });
    try {
      const m = await Promise.race([
        conn.rpc.call<WireManifest>("load", { url }, {
          timeoutMs: options.loadTimeoutMs ?? 30_000,
        }),
        loadFailed,
      ]);
      failLoad = undefined;
      return { conn, manifest: m };
    } catch (err) {
      end(conn, "load failed");
      throw new Error(
        `cannot load plugin in its sandbox: ${(err as Error).message}`,
        { cause: err },
      );
    }
  };

  const first = await spawn();
  current = first.conn;
  const manifest = first.manifest;
  const { hasConfig: _, ...declared } = manifest;

  const plugin: Plugin = {
    manifest: declared as PluginManifest,
    async setup(c) {
      ctx = c;
      // Every plugin route goes in; the sandbox's own app answers or 404s.
      // The route's request and answer cross packed (serial.ts): the
      // cheapest form to clone, paid on every request.
      const forward = async (hc: Context) => {
        try {
          return unpackResponse(
            await call<PackedResponse>("http", await packRequest(hc.req.raw)),
          );
        } catch (err) {
          if (err instanceof PlexusError) return plexusErrorResponse(err);
          throw err;
        }
      };
      c.http.all("*", forward);
      // The routes the plugin declared, too: they only name the node's
      // route label (plexus_http_requests_total{route}), as in-process.
      routesFrom = (routes) => {
        const base = `/plugins/${c.name}`;
        for (const { method, path } of routes) {
          if (!path.startsWith(base)) continue;
          c.http.on(method, path.slice(base.length) || "/", forward);
        }
      };
      if (!current) throw new Error("the sandbox ended before its setup");
      state = "running";
      try {
        await setupInside(current);
      } catch (err) {
        state = "stopped";
        throw err;
      }
      const running: Running = {
        api: providedApi,
        async stop() {
          const was = state;
          state = "stopped";
          clearTimeout(restartTimer);
          const conn = current;
          if (!conn) return;
          try {
            if (was === "running") {
              await conn.rpc.call("stop", undefined, { timeoutMs: 5000 });
            }
          } finally {
            end(conn, "plugin stopped", 1001);
          }
        },
        async drain() {
          if (state !== "running" || !current) return;
          await current.rpc.call("drain", undefined, { timeoutMs: 5000 });
        },
        async health(): Promise<Health> {
          const last = crashes.at(-1)?.error;
          const why = last ? `${last.name}: ${last.message}` : "";
          if (state === "down") {
            return {
              status: "down",
              detail:
                `crashed ${policy.maxCrashes} times within ${policy.crashWindowMs} ms; not restarted (last: ${why})`,
            };
          }
          if (state === "restarting" || !current) {
            return { status: "down", detail: `restarting after ${why}` };
          }
          const conn = current;
          try {
            return await conn.rpc.call<Health>("health", undefined, {
              timeoutMs: healthTimeoutMs,
            });
          } catch (err) {
            if ((err as { code?: string }).code !== "timeout") throw err;
            // A blocked event loop: end this Worker and start another.
            const message =
              `did not answer its health check within ${healthTimeoutMs} ms`;
            crashed(conn, { name: "Unresponsive", message });
            return { status: "down", detail: message };
          }
        },
      };
      return running;
    },
  };

  return {
    manifest,
    plugin,
    crashes,
    get state() {
      return state;
    },
    get starts() {
      return starts;
    },
    async checkConfig(raw) {
      if (!manifest.hasConfig || !current) return;
      try {
        await current.rpc.call("config.check", { name: manifest.name, raw });
      } catch (err) {
        throw new PluginError(manifest.name, "config", (err as Error).message);
      }
    },
    terminate(reason = "sandbox ended") {
      state = "stopped";
      clearTimeout(restartTimer);
      if (current) end(current, reason);
    },
  };
}

/** Whether a sandbox's `net` permission covers `url` (a host without a port covers any). */
function netAllows(
  net: Deno.PermissionOptionsObject["net"],
  url: URL,
): boolean {
  if (net === true || net === "inherit") return true;
  if (!Array.isArray(net)) return false;
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  return net.some((h) => h === url.hostname || h === `${url.hostname}:${port}`);
}
