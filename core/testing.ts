/**
 * Helpers for testing a plugin without starting a process: a real kernel on
 * an in-memory Deno KV, the real HTTP app (call routes with `request`), the
 * real router, and the log records captured in an array.
 *
 * @module
 */
import type { Hono } from "./_npm_types.ts";
import { createApp } from "./http/app.ts";
import type { AuthVariables } from "./http/auth.ts";
import { createKernel, type Kernel } from "./kernel.ts";
import { createLogger, type LogRecord } from "./observe/logger.ts";
import { createLogStream } from "./observe/log_stream.ts";
import { createMetrics, type MetricsRegistry } from "./observe/metrics.ts";
import { createRouter, type Router } from "./router.ts";
import { VERSION } from "./version.ts";
import { createTaskService } from "./tasks.ts";
import { createNodeEvents, emitPluginState } from "./events.ts";
import type { TaskService } from "./plugin.ts";
import { createSecurity, type Security } from "./http/security.ts";
import { SESSIONS_CAPABILITY } from "./http/session.ts";
import { generateNodeKey } from "./security/node_key.ts";
import type { Role } from "./security/roles.ts";
import type { Config } from "./config.ts";
import { nodeClient } from "./http/node_client.ts";

/** A kernel set up for tests. Dispose it with `await using` or `close()`. */
export interface TestKernel extends AsyncDisposable {
  /** The kernel, with the plugins registered (and started, unless `start: false`). */
  kernel: Kernel;
  /** The in-memory Deno KV the kernel runs on. */
  kv: Deno.Kv;
  /** The kernel's topic router (`router:local`). */
  router: Router;
  /** The kernel's metrics registry. */
  metrics: MetricsRegistry;
  /** The task service (`tasks:local`), working its queue on this kernel. */
  tasks: TaskService;
  /** Every log record, in order. */
  logs: LogRecord[];
  /** Sends a request through the node's HTTP handler (routes, errors, metrics). */
  request(path: string, init?: RequestInit): Promise<Response>;
  /** The node's HTTP app (what `request` calls). */
  app: Hono<{ Variables: AuthVariables }>;
  /** Token authority, keyring and limits of this test node. */
  security: Security;
  /**
   * A signed API token for `/api/v1` routes, e.g.
   * `t.request("/api/v1/tasks", { headers: { authorization: `Bearer ${await t.token("analyst")}` } })`.
   */
  token(role?: Role, sub?: string): Promise<string>;
  /**
   * Like `request`, with a `Bearer` token for `role` (default `admin`): for
   * `/api/v1` routes, which refuse anonymous calls.
   */
  api(path: string, init?: RequestInit, role?: Role): Promise<Response>;
  /** Stops the plugins and closes KV; safe to call twice. */
  close(): Promise<void>;
}

/** Options for {@linkcode createTestKernel}. */
export interface TestKernelOptions {
  /** Plugin config by plugin name. @default {{}} */
  pluginConfig?: Record<string, unknown>;
  /** Start the registered plugins at once. @default {true} */
  start?: boolean;
  /** CORS origins and body limit, as in the node config's `http` block. */
  http?: { corsOrigins?: string[]; bodyLimitBytes?: number };
  /** How long /health reuses a report. @default {0} */
  healthCacheMs?: number;
  /** Setup deadline in ms. @default {10000} */
  startTimeoutMs?: number;
  /** The node config's `auth` block. @default {the config defaults} */
  auth?: Partial<Config["auth"]>;
  /** The node config's `rateLimit` block. @default {the config defaults} */
  rateLimit?: Partial<Config["rateLimit"]>;
}

/**
 * Registers `plugins` (module default exports) on a fresh kernel and starts them.
 *
 * @example Usage
 * ```ts
 * import { createTestKernel } from "./testing.ts";
 * import { definePlugin } from "./plugin.ts";
 * const hello = definePlugin({
 *   manifest: {
 *     name: "hello", version: "1.0.0", kind: "extension", api: "^1",
 *     provides: ["extension:hello"],
 *   },
 *   setup(ctx) {
 *     ctx.http.get("/greet/:name", (c) => c.json({ message: `hello, ${c.req.param("name")}` }));
 *     return Promise.resolve({ stop: () => Promise.resolve() });
 *   },
 * });
 * await using t = await createTestKernel([hello]);
 * const res = await t.request("/plugins/hello/greet/ada");
 * (await res.json()).message; // "hello, ada"
 * ```
 */
export async function createTestKernel(
  plugins: unknown[],
  options: TestKernelOptions = {},
): Promise<TestKernel> {
  const logs: LogRecord[] = [];
  const logStream = createLogStream({ heartbeatMs: 0 });
  const log = createLogger({
    level: "debug",
    sinks: [(r) => logs.push(r), logStream.sink],
  });
  const kv = await Deno.openKv(":memory:");
  const metrics = createMetrics("plexus_");
  const router = createRouter({
    onError: (err, topic) =>
      log.error("router handler failed", { topic, error: err }),
  });
  const node = {
    id: "test-node",
    version: VERSION,
    address: "http://127.0.0.1:0",
    dataDir: ".",
  };
  const events = createNodeEvents(node.id, {
    onInvalid: (type, error) =>
      log.error("invalid node event dropped", { type, error }),
  });
  const tasks = createTaskService(kv, {
    nodeId: node.id,
    log,
    metrics,
    leaseMs: 5000,
    events,
  });
  const nodeKey = await generateNodeKey();
  const security = createSecurity({
    kv,
    nodeKey,
    auth: options.auth,
    rateLimit: options.rateLimit,
  });
  const kernel = createKernel({
    log,
    metrics,
    kv,
    router,
    node,
    core: {
      "tasks:local": tasks,
      "events:local": events,
      "node:key": nodeKey,
      [SESSIONS_CAPABILITY]: security.sessions,
    },
    nodeFetch: nodeClient(security),
    pluginConfig: options.pluginConfig,
    startTimeoutMs: options.startTimeoutMs,
    onStatus: (e) => emitPluginState(events, e),
  });
  await security.keyring.publishNode(nodeKey, node.id);
  const { app, fetch: serveHttp } = createApp({
    kernel,
    kv,
    metrics,
    log,
    logStream,
    node,
    tasks,
    healthCacheMs: options.healthCacheMs ?? 0,
    corsOrigins: options.http?.corsOrigins,
    bodyLimitBytes: options.http?.bodyLimitBytes,
    security,
    draining: () => false,
  });
  const request = async (path: string, init?: RequestInit) =>
    await serveHttp(new Request(new URL(path, "http://localhost"), init));
  const tokens = new Map<string, Promise<string>>();
  const token = (role: Role = "admin", sub = "test") => {
    const k = `${role} ${sub}`;
    if (!tokens.has(k)) tokens.set(k, security.jwt.issue(sub, role));
    return tokens.get(k)!;
  };
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await kernel.drain();
    await tasks.stop(1000);
    await kernel.stop();
    logStream.close();
    kv.close();
  };
  try {
    plugins.forEach((p, i) => kernel.register(p, `test:${i}`));
    if (options.start ?? true) {
      await kernel.start();
      tasks.start();
    }
  } catch (err) {
    await close();
    throw err;
  }
  return {
    kernel,
    kv,
    router,
    metrics,
    tasks,
    logs,
    app,
    security,
    token,
    request,
    api: async (path, init = {}, role = "admin") => {
      const headers = new Headers(init.headers);
      headers.set("authorization", `Bearer ${await token(role)}`);
      return await request(path, { ...init, headers });
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
