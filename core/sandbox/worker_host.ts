/**
 * The node's side of a plugin's Worker sandbox: starts the Worker with
 * exactly the permissions it is given, loads the plugin in it, and hands the
 * kernel an ordinary {@linkcode Plugin} whose `setup` serves the calls the
 * sandboxed plugin makes (`worker_main.ts` is the inside) against the real
 * {@linkcode PluginContext}: its logger, metrics, its own KV scope, the
 * router, its HTTP and API routes (each API route behind the node's chain
 * with the access the plugin declared), and `tasks:local` when required.
 *
 * A plugin's uncaught error or rejection never reaches the node: it is
 * reported, logged, and the plugin's health turns down. A plugin that stops
 * answering (an endless loop) fails its health check at the deadline.
 *
 * @module
 */
import { createRpc, type Rpc, type WireError } from "./rpc.ts";
import type { WireManifest, WireSetup } from "./worker_main.ts";
import type {
  Health,
  Plugin,
  PluginContext,
  PluginManifest,
  Running,
} from "../plugin.ts";
import type { ApiAccess, ApiRoutes } from "../http/plugin_api.ts";
import type { LogLevel } from "../observe/logger.ts";
import type { Labels } from "../observe/metrics.ts";
import type { TaskSubmission } from "../tasks.ts";
import {
  type SerialRequest,
  serialRequest,
  type SerialResponse,
  toResponse,
} from "./serial.ts";

/** Options of {@linkcode openWorkerSandbox}. */
export interface WorkerSandboxOptions {
  /** The Worker's permissions (every key explicit; see `permissions.ts`). */
  permissions: Deno.PermissionOptionsObject;
  /** Deadline of a call into the sandbox without its own. @default {10000} */
  timeoutMs?: number;
  /** Deadline of loading the plugin module. @default {30000} */
  loadTimeoutMs?: number;
}

/** A plugin loaded in its own Worker. */
export interface WorkerSandbox {
  /** The plugin's manifest, as it declared it (its config schema stays inside). */
  readonly manifest: WireManifest;
  /** What the kernel registers: `setup` starts serving the sandbox's calls. */
  readonly plugin: Plugin;
  /** Uncaught errors the plugin raised since setup (its health is down after one). */
  readonly crashes: WireError[];
  /** Ends the Worker at once. */
  terminate(reason?: string): void;
}

/** Entries `kv.list` may return across the sandbox in one call. */
const MAX_LIST = 10_000;
const WORKER_URL = new URL("./worker_main.ts", import.meta.url).href;

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
  // The plugin is part of the Worker's initial static module graph, which
  // Deno loads without read permission (a dynamic import() of it would need
  // read access to every file it imports). The entry sets up the call
  // channel first, then evaluates the plugin module.
  const entry = [
    `import ${JSON.stringify(WORKER_URL)};`,
    `import * as mod from ${JSON.stringify(url)};`,
    `globalThis.__plexusPluginModule = mod;`,
  ].join("\n");
  const worker = new Worker(
    `data:application/javascript,${encodeURIComponent(entry)}`,
    {
      type: "module",
      name: `plugin ${url}`,
      deno: { permissions: options.permissions },
    },
  );
  let failLoad: ((err: Error) => void) | undefined;
  const loadFailed = new Promise<never>((_, reject) => {
    failLoad = reject;
  });
  loadFailed.catch(() => {});
  let ctx: PluginContext | undefined;
  let claimError: Error | undefined;
  const crashes: WireError[] = [];
  const unsubscribe = new Map<number, () => void>();
  const apis = new Map<string, ApiRoutes>();
  let ended = false;

  const need = (): PluginContext => {
    if (!ctx) throw new Error("the sandboxed plugin is not set up yet");
    return ctx;
  };
  const crashed = (e: WireError) => {
    crashes.push(e);
    if (crashes.length > 100) crashes.shift();
    ctx?.log.error("sandboxed plugin raised an uncaught error", {
      error: `${e.name}: ${e.message}`,
    });
  };

  const rpc: Rpc = createRpc(worker, {
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
          rpc.call("deliver", { sub, payload, topic, replyTo }),
      );
      unsubscribe.set(sub, off);
    },
    "router.unsubscribe"(a) {
      const { sub } = a as { sub: number };
      unsubscribe.get(sub)?.();
      unsubscribe.delete(sub);
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
      if (!routes) return;
      try {
        routes[method](path, access, async (c) =>
          toResponse(
            await rpc.call<SerialResponse>("api", {
              prefix,
              req: await serialRequest(c.req.raw),
              principal: c.var.principal,
            }),
          ));
      } catch (err) {
        claimError ??= err as Error;
      }
    },
    "tasks.register"(a) {
      const { type } = a as { type: string };
      const c = need();
      if (!(c.kernel as { has(c: string): boolean }).has("tasks:local")) return;
      c.kernel.get("tasks:local").register(
        type,
        (payload, run) =>
          rpc.call("task", {
            type,
            payload,
            run: { id: run.id, attempt: run.attempt },
          }, { timeoutMs: 60_000 }),
      );
    },
    "tasks.submit": (a) =>
      need().kernel.get("tasks:local").submit(a as TaskSubmission),
    "tasks.get": (a) =>
      need().kernel.get("tasks:local").get((a as { id: string }).id),
    crash(a) {
      crashed(a as WireError);
    },
  }, { timeoutMs: options.timeoutMs ?? 10_000 });

  // An error the worker did not handle must not end the node.
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    if (failLoad) return failLoad(new Error(e.message));
    crashed({ name: "Error", message: e.message });
  };
  const terminate = (reason = "sandbox ended") => {
    if (ended) return;
    ended = true;
    rpc.close(reason);
    for (const off of unsubscribe.values()) off();
    unsubscribe.clear();
    worker.terminate();
  };

  let manifest: WireManifest;
  try {
    manifest = await Promise.race([
      rpc.call<WireManifest>("load", { url }, {
        timeoutMs: options.loadTimeoutMs ?? 30_000,
      }),
      loadFailed,
    ]);
    failLoad = undefined;
  } catch (err) {
    terminate("load failed");
    throw new Error(
      `cannot load plugin in its sandbox: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  const { hasConfig: _, ...declared } = manifest;

  const plugin: Plugin = {
    manifest: declared as PluginManifest,
    async setup(c) {
      ctx = c;
      // Every plugin route goes in; the sandbox's own app answers or 404s.
      c.http.all("*", async (hc) =>
        toResponse(
          await rpc.call<SerialResponse>(
            "http",
            await serialRequest(hc.req.raw) satisfies SerialRequest,
          ),
        ));
      const capabilities = (manifest.requires ?? []).filter((r) =>
        c.kernel.has(r)
      );
      const setup: WireSetup = {
        name: c.name,
        config: c.config,
        node: { ...c.node },
        capabilities,
      };
      await rpc.call("setup", setup, {
        timeoutMs: manifest.startTimeoutMs ?? 10_000,
      });
      if (claimError) throw claimError;
      // Set when the sandbox misses a health deadline (an endless loop, a
      // blocked event loop): drain and stop then end the Worker at once.
      let unresponsive = false;
      const running: Running = {
        async stop() {
          try {
            if (!unresponsive) {
              await rpc.call("stop", undefined, { timeoutMs: 5000 });
            }
          } finally {
            terminate("plugin stopped");
          }
        },
        async drain() {
          if (unresponsive) return;
          await rpc.call("drain", undefined, { timeoutMs: 5000 });
        },
        async health() {
          if (crashes.length > 0) {
            const last = crashes.at(-1)!;
            return {
              status: "down",
              detail: `uncaught ${last.name}: ${last.message}`,
            };
          }
          try {
            // Inside the kernel's own 2 s health deadline, so the detail
            // says the sandbox did not answer.
            const h = await rpc.call<Health>("health", undefined, {
              timeoutMs: 1500,
            });
            unresponsive = false;
            return h;
          } catch (err) {
            if ((err as { code?: string }).code === "timeout") {
              unresponsive = true;
            }
            throw err;
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
    terminate,
  };
}
