/**
 * Boots one node: logger and live log stream, node identity, Deno KV, the
 * kernel with its plugins, and the HTTP server; and shuts it down again in
 * reverse, gracefully.
 *
 * @module
 */
import { join } from "node:path";
import type { Config } from "./config.ts";
import { ConfigError } from "./config.ts";
import { createKernel, type Kernel, type SwapReport } from "./kernel.ts";
import { createServiceBroker } from "./services.ts";
import type { BalancerApi } from "./balancer_plugin.ts";
import type { Transport } from "./transport.ts";
import {
  builtinNames,
  type PluginCatalog,
  resolveSpecifier,
  scanDropIn,
} from "./loader.ts";
import { type PluginWatch, watchPlugins } from "./plugin_watch.ts";
import { loadAtTrust, type TrustedLoad } from "./sandbox/load.ts";
import type { WorkerSandbox } from "./sandbox/worker_host.ts";
import {
  createLogger,
  type Logger,
  type LogSink,
  stdoutSink,
} from "./observe/logger.ts";
import {
  createLogStream,
  LOG_STREAM_CAPABILITY,
  type LogStream,
} from "./observe/log_stream.ts";
import { createMetrics } from "./observe/metrics.ts";
import { type NodeIdentity, type Plugin, PluginError } from "./plugin.ts";
import { createRouter } from "./router.ts";
import { openStore } from "./state/store.ts";
import { createApp } from "./http/app.ts";
import { errorResponse } from "./http/errors.ts";
import {
  defaultConnectionLimits,
  type GuardedServer,
  serveGuarded,
} from "./http/listener.ts";
import { VERSION } from "./version.ts";
import type { Consensus } from "./consensus.ts";
import { createTaskService, NoAgentError } from "./tasks.ts";
import { createNodeEvents, emitPluginState } from "./events.ts";
import { startMembershipEvents } from "./membership_events.ts";
import type { TaskService } from "./plugin.ts";
import {
  createTaskRouter,
  type TaskRouter,
  type TaskRun,
} from "./task_router.ts";
import type { Balancer } from "./contracts/balancer.ts";
import { createRegistry, memberStatus } from "./state/registry.ts";
import { loadOrCreateNodeKey } from "./security/node_key.ts";
import { SEALING_POLICY } from "./security/sealed_transport.ts";
import { transportRoutingPlugin } from "./transport_routing_plugin.ts";
import { createSecurity, type Security } from "./http/security.ts";
import { SESSIONS_CAPABILITY } from "./http/session.ts";
import { nodeClient } from "./http/node_client.ts";

/** A running node. */
export interface NodeHandle {
  /** Base URL the HTTP server listens on. */
  url: string;
  /** Token authority, keyring and limits (e.g. `security.jwt.issue` in tests). */
  security: Security;
  /** Who the node is. */
  node: NodeIdentity;
  /** The node's kernel, with its plugins started. */
  kernel: Kernel;
  /** The task service (`tasks:local`). */
  tasks: TaskService;
  /** The node's logger. */
  log: Logger;
  /** The live log stream behind `WS /ws`. */
  logStream: LogStream;
  /**
   * Hot swap: loads plugin `name` again from where it came (at its trust
   * level, its file read afresh) and replaces the running copy with it
   * (`Kernel.replace`). Rejects with a `PluginError` and leaves the old copy
   * serving when the new one cannot load or start; built-ins cannot be
   * reloaded (phase `swap`).
   */
  reload(name: string): Promise<SwapReport & { trust: string }>;
  /**
   * Stops accepting, lets in-flight requests finish within
   * `shutdownTimeoutMs`, stops plugins in reverse order and closes KV.
   */
  shutdown(reason?: string): Promise<void>;
}

/** Options for {@linkcode startNode}. */
export interface StartNodeOptions {
  /** Log sinks besides the live log stream. @default {[stdoutSink]} */
  sinks?: LogSink[];
  /** Folder relative plugin paths resolve against. @default {Deno.cwd()} */
  cwd?: string;
  /**
   * What `builtin:` specifiers and `--transport`/`--consensus`/`--balancer`
   * can name (`main.ts` passes `BUILTINS` from `builtins.ts`). @default {{}}
   */
  builtins?: PluginCatalog;
}

const KIND_FOLDERS = {
  transport: "transports",
  consensus: "consensus",
  balancer: "balancers",
} as const;

/**
 * Maps `--gateway` and `--transport` & co. to `builtin:` specifiers, or a
 * ConfigError listing what exists. A name that is not built in is fine when
 * a plugin loaded from elsewhere provides it (`provided` holds their
 * capabilities, e.g. `balancer:fewest-picks`): nothing more to load.
 *
 * @example Usage
 * ```ts
 * import { kindSpecifiers } from "./node.ts";
 * const builtins = { "balancers/random": () => Promise.resolve({}) };
 * kindSpecifiers({ balancer: "random" }, builtins); // ["builtin:balancers/random"]
 * kindSpecifiers({ balancer: "mine" }, builtins, ["balancer:mine"]); // []
 * ```
 */
export function kindSpecifiers(
  config:
    & Pick<Config, "transport" | "consensus" | "balancer">
    & Partial<Pick<Config, "gateway" | "transports" | "dashboard">>,
  builtins: PluginCatalog,
  provided: readonly string[] = [],
): string[] {
  const specs: string[] = [];
  if (config.gateway) {
    if (!("gateway" in builtins)) {
      throw new ConfigError(
        "--gateway: this build has no gateway plugin (run with --no-gateway)",
      );
    }
    specs.push("builtin:gateway");
  }
  // A build without the console (a custom catalog) simply serves no page.
  if (config.dashboard && "dashboard" in builtins) {
    specs.push("builtin:dashboard");
  }
  for (
    const [key, folder] of Object.entries(KIND_FOLDERS) as [
      keyof typeof KIND_FOLDERS,
      string,
    ][]
  ) {
    const names = key === "transport"
      ? transportNames(config)
      : config[key]
      ? [config[key]]
      : [];
    for (const name of names) {
      const known = builtinNames(builtins, folder);
      if (!known.includes(name)) {
        if (provided.includes(`${key}:${name}`)) continue;
        throw new ConfigError(
          `--${key}: unknown ${key} '${name}' (built in: ${
            known.length ? known.join(", ") : "none"
          }; no loaded plugin provides '${key}:${name}')`,
        );
      }
      specs.push(`builtin:${folder}/${name}`);
    }
  }
  return specs;
}

/** `transport` then `transports` (`--transport`, repeatable), each once. */
function transportNames(
  config: Partial<Pick<Config, "transport" | "transports">>,
): string[] {
  return [
    ...new Set([
      ...(config.transport ? [config.transport] : []),
      ...(config.transports ?? []),
    ]),
  ];
}

async function resolveNodeId(config: Config): Promise<string> {
  if (config.nodeId) return config.nodeId;
  const file = join(config.dataDir, "node-id");
  try {
    const id = (await Deno.readTextFile(file)).trim();
    if (id) return id;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const id = `node-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(file, id + "\n");
  return id;
}

/**
 * Attaches the node's service calls to its request/reply transport: the
 * mesh when loaded, else the first running transport that declares
 * `caps.requestReply`. Without one, service calls stay on this node.
 */
async function attachServices(kernel: Kernel, log: Logger): Promise<void> {
  const transports = kernel.list()
    .filter((p) => p.kind === "transport" && p.status === "running")
    .flatMap((p) => p.provides.filter((c) => c.startsWith("transport:")))
    .sort((a, b) =>
      Number(b === "transport:websocket-mesh") -
      Number(a === "transport:websocket-mesh")
    );
  for (const capability of transports) {
    const t = kernel.get<Transport>(capability);
    if (!t?.caps?.requestReply) continue;
    // A wrapper may copy an inner transport's caps without its methods.
    if (typeof t.respond !== "function" || typeof t.request !== "function") {
      log.warn(
        "transport declares request/reply but lacks respond() or request(): not used for service calls",
        { transport: t.name },
      );
      continue;
    }
    await kernel.services.attach(t);
    log.info("service calls ready", { transport: t.name });
    return;
  }
  if (transports.length > 0) {
    log.info(
      "service calls stay on this node: no transport declares request/reply",
      { transports },
    );
  }
}

/**
 * Starts a node from a validated config.
 *
 * @example Usage
 * ```ts ignore
 * const { config } = loadConfig(["--port", "0", "--kv", ":memory:"]);
 * const node = await startNode(config);
 * await node.shutdown();
 * ```
 */
export async function startNode(
  config: Config,
  options: StartNodeOptions = {},
): Promise<NodeHandle> {
  const builtins = options.builtins ?? {};
  const logStream = createLogStream(config.logStream);
  const log = createLogger({
    level: config.logLevel,
    sinks: [...(options.sinks ?? [stdoutSink]), logStream.sink],
  });
  await Deno.mkdir(config.dataDir, { recursive: true });
  const nodeId = await resolveNodeId(config);
  const nodeLog = log.child({ node: nodeId });
  // The signing key first: a bad key file stops the node before KV opens.
  const nodeKey = await loadOrCreateNodeKey(config.dataDir);
  const kv = await openStore(config.kv);
  const security = createSecurity({
    kv,
    nodeKey,
    auth: config.auth,
    rateLimit: config.rateLimit,
  });
  const node: NodeIdentity = {
    id: nodeId,
    version: VERSION,
    address: `http://${
      config.host.includes(":") ? `[${config.host}]` : config.host
    }:${config.port}`,
    dataDir: config.dataDir,
    peers: config.peers,
  };
  const metrics = createMetrics("plexus_");
  const router = createRouter({
    onError: (err, topic) =>
      nodeLog.error("router handler failed", { topic, error: err }),
  });
  const events = createNodeEvents(nodeId, {
    onInvalid: (type, error) =>
      nodeLog.error("invalid node event dropped", { type, error }),
  });
  const consensus = (): Consensus | undefined =>
    kernel.has("consensus:*") ? kernel.get("consensus:*") : undefined;
  const tasks = createTaskService(kv, {
    nodeId,
    log: nodeLog.child({ component: "tasks" }),
    metrics,
    concurrency: config.tasks.concurrency,
    leaseMs: config.tasks.leaseMs,
    maxAttempts: config.tasks.maxAttempts,
    maxResultBytes: config.tasks.maxResultBytes,
    commitWindowMs: config.tasks.commitWindowMs,
    events,
    // The leader sweeps; with no consensus plugin every node does.
    sweeper: () => consensus()?.isLeader() ?? true,
    // With --balancer, claimed tasks run where the balancer picks.
    router: () => taskRouter,
    runOnAgent: (task) => runOnAgent(task),
    clusterTypes: async () => {
      const now = Date.now();
      return (await registry.nodes())
        .filter((n) => memberStatus(n, now, registry.thresholds) === "up")
        .flatMap((n) => (n.meta?.taskTypes as string[] | undefined) ?? []);
    },
  });
  let taskRouter: TaskRouter | undefined;
  let balancer: Balancer | undefined;
  /**
   * A capability task on a worker here (an agent of the gateway plugin),
   * picked by the balancer.
   */
  const runOnAgent = async (task: TaskRun): Promise<unknown> => {
    const cap = task.capability!;
    const agents = tasks.workers(cap);
    if (agents.length === 0) {
      throw new NoAgentError(
        `no agent offers capability '${cap}' on ${nodeId}`,
      );
    }
    const agent = balancer
      ? balancer.pick(agents, task.key ? { key: task.key } : undefined)
      : agents[Math.floor(Math.random() * agents.length)];
    if (!agent) {
      throw new NoAgentError(
        `every agent offering '${cap}' has an open circuit`,
      );
    }
    const start = performance.now();
    try {
      const result = await agent.run(task, {
        timeoutMs: config.tasks.leaseMs,
      });
      balancer?.report(agent.id, {
        ok: true,
        latencyMs: performance.now() - start,
      });
      return result;
    } catch (err) {
      balancer?.report(agent.id, {
        ok: false,
        latencyMs: performance.now() - start,
      });
      throw err;
    }
  };
  // Service calls balance with the balancer plugins when loaded
  // (consistent-hash for keyed calls, p2c-ewma for the rest), else the
  // broker's built-in rendezvous hash and P2C.
  // One pool per plugin copy (`create()`), apart from the task router's.
  const pools = new WeakMap<BalancerApi, Balancer>();
  const balancerFor = (capability: string) => () => {
    if (!kernel.has(capability)) return undefined;
    const api = kernel.get<BalancerApi>(capability);
    let pool = pools.get(api);
    if (!pool) pools.set(api, pool = api.create());
    return pool;
  };
  const services = createServiceBroker({
    nodeId,
    log: nodeLog.child({ component: "services" }),
    metrics,
    balancers: {
      keyed: balancerFor("balancer:consistent-hash"),
      unkeyed: balancerFor("balancer:p2c-ewma"),
    },
  });
  const kernel = createKernel({
    services,
    log: nodeLog,
    metrics,
    kv,
    router,
    node,
    core: {
      "tasks:local": tasks,
      "events:local": events,
      "node:key": nodeKey,
      [SEALING_POLICY]: config.sealed,
      [SESSIONS_CAPABILITY]: security.sessions,
      [LOG_STREAM_CAPABILITY]: logStream,
    },
    nodeFetch: nodeClient(security),
    pluginConfig: config.pluginConfig,
    startTimeoutMs: config.pluginStartTimeoutMs,
    onStatus: (e) => {
      emitPluginState(events, e);
      logStream.publish("status", e);
      nodeLog.info(
        `plugin ${e.plugin} ${e.state}`,
        e.error ? { plugin: e.plugin, error: e.error } : { plugin: e.plugin },
      );
    },
  });

  let server: GuardedServer | undefined;
  // Sandboxed plugins' Workers: ended with the node even if never started.
  const sandboxes = new Map<string, WorkerSandbox>();
  const endSandboxes = () => {
    for (const s of sandboxes.values()) s.terminate("node stopped");
  };
  // Where each plugin that is not built in came from, for a reload.
  const specs = new Map<string, string>();
  const trustOptions = {
    cwd: options.cwd,
    builtins,
    pluginTrust: config.pluginTrust,
    pluginGrants: config.pluginGrants,
    pluginConfig: config.pluginConfig,
    log: nodeLog,
    pins: config,
  };
  // Sandboxes loaded but not registered yet, ended if a later load fails.
  const unregistered: WorkerSandbox[] = [];
  try {
    const load = async (spec: string) => {
      const loaded = await loadAtTrust(spec, trustOptions);
      if (loaded.sandbox) unregistered.push(loaded.sandbox);
      return loaded;
    };
    const others: [string, TrustedLoad][] = [];
    for (
      const spec of [
        ...config.plugins,
        ...await scanDropIn(config.pluginsDir, options.cwd),
      ]
    ) {
      others.push([spec, await load(spec)]);
    }
    // `--transport` & co. name a built-in, or a plugin loaded above.
    const provided = others.flatMap(([, l]) => {
      const p = (l.value as Partial<Plugin> | null)?.manifest?.provides;
      return Array.isArray(p) ? p : [];
    });
    const kinds: [string, TrustedLoad][] = [];
    for (const spec of kindSpecifiers(config, builtins, provided)) {
      kinds.push([spec, await load(spec)]);
    }
    // Several transports (or any routing): one `transport:routed` over them.
    const transports = transportNames(config);
    if (
      transports.length > 1 || config.routing.rules.length > 0 ||
      config.routing.defaultDelivery !== undefined
    ) {
      kernel.register(
        transportRoutingPlugin(config.routing, transports),
        "builtin:transport-routing",
      );
    }
    // Built-ins first, as listed; then the rest in load order.
    for (const [spec, loaded] of [...kinds, ...others]) {
      const { name } = kernel.register(loaded.value, loaded.origin, {
        trust: loaded.trust,
        permissions: loaded.permissions,
      }).manifest;
      if (loaded.sandbox) sandboxes.set(name, loaded.sandbox);
      if (!spec.startsWith("builtin:")) specs.set(name, spec);
    }
    // Published before serving, so tokens from this node verify everywhere.
    await security.keyring.publishNode(nodeKey, nodeId);
    await kernel.start();
    await attachServices(kernel, nodeLog);
    consensus()?.onLeaderChange((c) =>
      events.emit("cluster.leader.changed", c)
    );
    tasks.start();
  } catch (err) {
    for (const s of unregistered) s.terminate("node stopped");
    endSandboxes();
    kv.close();
    logStream.close();
    // A routing rule the transports cannot serve is a config error (exit 2).
    if (err instanceof PluginError && err.cause instanceof ConfigError) {
      throw err.cause;
    }
    throw err;
  }

  // Created now so the app can list members; started once the server listens
  // and the address is known.
  const registry = createRegistry(kv, {
    nodeId,
    address: () => node.address,
    version: VERSION,
    load: () => ({ inflight: tasks.running(), rss: Deno.memoryUsage().rss }),
    meta: () => ({
      taskTypes: tasks.types(),
      agentCapabilities: Object.keys(tasks.capabilities()),
      actions: services.localNames(),
    }),
    onError: (err) => nodeLog.warn("registry heartbeat failed", { error: err }),
  });
  if (config.balancer) {
    // Looked up at every call: a hot-swapped balancer plugin takes over at
    // once (a report for a pick the old copy made goes to the new one).
    const capability = `balancer:${config.balancer}`;
    const current = () => kernel.get<Balancer>(capability);
    balancer = {
      get name() {
        return current().name;
      },
      pick: (candidates, ctx) => current().pick(candidates, ctx),
      report: (endpoint, outcome) => current().report(endpoint, outcome),
    };
    taskRouter = createTaskRouter({
      nodeId,
      balancer,
      registry,
      call: nodeClient(security),
      memberStatus: async () => {
        const c = consensus();
        return new Map(
          c ? (await c.members()).map((m) => [m.id, m.status]) : [],
        );
      },
      handlesHere: (task) =>
        task.capability === undefined
          ? tasks.types().includes(task.type)
          : tasks.workers(task.capability).length > 0,
      log: nodeLog.child({ component: "task-router" }),
      metrics,
      timeoutMs: config.tasks.leaseMs,
    });
  }
  let draining = false;
  let reloads = 0;
  const reload = async (name: string) => {
    const spec = specs.get(name);
    if (spec === undefined) {
      throw new PluginError(
        name,
        "swap",
        kernel.list().some((p) => p.name === name)
          ? `plugin '${name}' is built into this node and cannot be reloaded`
          : `no plugin named '${name}' is loaded`,
      );
    }
    const loaded = await loadAtTrust(spec, {
      ...trustOptions,
      fresh: ++reloads,
    });
    try {
      const named = (loaded.value as Partial<Plugin> | null)?.manifest?.name;
      if (named !== undefined && named !== name) {
        throw new PluginError(
          name,
          "manifest",
          `'${spec}' now names plugin '${named}', not '${name}': a reload cannot rename a plugin`,
        );
      }
      const report = await kernel.replace(loaded.value, loaded.origin, {
        trust: loaded.trust,
        permissions: loaded.permissions,
      });
      const old = sandboxes.get(name);
      if (loaded.sandbox) sandboxes.set(name, loaded.sandbox);
      else sandboxes.delete(name);
      old?.terminate("replaced by a new version");
      return { ...report, trust: loaded.trust };
    } catch (err) {
      loaded.sandbox?.terminate("new version refused");
      throw err;
    }
  };
  const { fetch: serveHttp, drainAudit } = createApp({
    reload,
    sandboxOf: (name) => sandboxes.get(name),
    registry,
    kernel,
    kv,
    metrics,
    log: nodeLog,
    logStream,
    node,
    tasks,
    healthCacheMs: config.health.cacheMs,
    corsOrigins: config.http.corsOrigins,
    bodyLimitBytes: config.http.bodyLimitBytes,
    security,
    draining: () => draining,
  });
  // Requests still running at the drain deadline are answered 503. (Deno
  // cannot abort a server whose graceful shutdown has begun: aborting the
  // serve signal then throws an uncaught BadResource and kills the process.)
  // Each one's resolver waits in a slot of an array (free slots reused), not
  // as an abort listener: ~0.25 against ~0.65 µs a request for the wrapper in
  // a micro-benchmark (a Set of resolvers: ~0.6, hashing each closure).
  const inFlight: (((res: Response) => void) | undefined)[] = [];
  const freeSlots: number[] = [];
  const cutOff = () => {
    const res = errorResponse(
      503,
      "node shutting down: request cut off at the deadline",
    );
    for (const answer of inFlight) answer?.(res.clone());
    inFlight.length = 0;
    freeSlots.length = 0;
  };
  const release = (slot: number, answer: (res: Response) => void) => {
    if (inFlight[slot] !== answer) return; // cut off: the slot is gone
    inFlight[slot] = undefined;
    freeSlots.push(slot);
  };
  const handler = (
    req: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ): Response | Promise<Response> => {
    const res = serveHttp(req, info);
    if (!(res instanceof Promise)) return res;
    return new Promise<Response>((resolve, reject) => {
      const slot = freeSlots.length > 0 ? freeSlots.pop()! : inFlight.length;
      inFlight[slot] = resolve;
      res.then((r) => {
        release(slot, resolve);
        resolve(r);
      }, (err) => {
        release(slot, resolve);
        reject(err);
      });
    });
  };
  const limits = defaultConnectionLimits();
  limits.maxConnections = config.http.maxConnections ?? limits.maxConnections;
  limits.maxConnectionsPerIp = config.http.maxConnectionsPerIp ??
    Math.min(limits.maxConnectionsPerIp, limits.maxConnections);
  limits.headTimeoutMs = config.http.headTimeoutMs;
  limits.idleTimeoutMs = config.http.idleTimeoutMs;
  try {
    server = serveGuarded({
      port: config.port,
      hostname: config.host,
      limits,
      log: nodeLog.child({ component: "http" }),
      metrics,
      onError: (err) => {
        nodeLog.error("request handler threw", { error: err });
        return errorResponse(500, "internal error");
      },
    }, handler);
  } catch (err) {
    await tasks.stop(0);
    await kernel.stop();
    endSandboxes();
    kv.close();
    logStream.close();
    throw new ConfigError(
      `--port: cannot listen on ${config.host}:${config.port}: ${
        (err as Error).message
      }`,
    );
  }
  const addr = server.addr;
  const host = addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  const url = `http://${host}:${addr.port}`;
  node.address = url;
  try {
    await registry.start();
  } catch (err) {
    await server.shutdown();
    await tasks.stop(0);
    await kernel.stop();
    endSandboxes();
    kv.close();
    logStream.close();
    throw new Error(
      `Cannot join the node registry: ${(err as Error).message}`,
      { cause: err },
    );
  }
  events.emit("node.joined", { nodeId, address: url });
  // Members that die without leaving: the leader announces node.left for
  // them (and node.joined when one answers again), once per transition.
  const membership = startMembershipEvents(kv, {
    registry,
    events,
    isLeader: () => consensus()?.isLeader(),
    onError: (err) =>
      nodeLog.warn("membership events: a look failed", { error: err }),
  });
  nodeLog.info(`plexus listening on ${url}`, {
    url,
    version: VERSION,
    kv: config.kv,
  });
  let watch: PluginWatch | undefined;
  if (config.watchPlugins) {
    const urls = new Map<string, string>();
    for (const [name, spec] of specs) {
      const target = resolveSpecifier(spec, { cwd: options.cwd });
      if ("url" in target) urls.set(name, target.url);
    }
    watch = watchPlugins(urls, {
      reload,
      log: nodeLog.child({ component: "plugin-watch" }),
    });
  }

  let closing: Promise<void> | undefined;
  const shutdown = (reason = "shutdown requested") => {
    closing ??= (async () => {
      draining = true;
      nodeLog.info("shutting down", {
        reason,
        deadlineMs: config.shutdownTimeoutMs,
      });
      logStream.close();
      watch?.close();
      // Leave the registry first: peers see this node down while it drains.
      membership.stop();
      await registry.stop();
      await services.close();
      events.emit("node.left", { nodeId, reason: "shutdown" });
      // Long-lived connections go first (the gateway closes its agents with
      // 1001, so their un-acked messages are back in their queues before
      // KV closes), then in-flight requests drain.
      await kernel.drain();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timedOut = await Promise.race([
        server!.shutdown().then(() => false),
        new Promise<boolean>((
          r,
        ) => (timer = setTimeout(() => r(true), config.shutdownTimeoutMs))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        nodeLog.warn(
          "in-flight requests did not finish in time; closing them",
          {
            deadlineMs: config.shutdownTimeoutMs,
          },
        );
        cutOff();
        // A streaming body may hold its connection; do not wait for ever.
        let grace: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          server!.finished.catch(() => {}),
          new Promise((r) => (grace = setTimeout(r, 1000))),
        ]);
        clearTimeout(grace);
      }
      // Tasks still running at the deadline keep their leases, which expire
      // and hand them to another node.
      await tasks.stop(config.shutdownTimeoutMs);
      await kernel.stop();
      endSandboxes();
      // Records of answered calls still lingering for a group commit.
      await drainAudit();
      kv.close();
      nodeLog.info("stopped", { node: nodeId });
    })();
    return closing;
  };

  return {
    url,
    node,
    kernel,
    tasks,
    log: nodeLog,
    logStream,
    security,
    reload,
    shutdown,
  };
}
