/**
 * The kernel: plugin registry, dependency resolution, lifecycle and
 * capability lookup.
 *
 * Boot is all or nothing. Every manifest, API range, dependency and config is
 * checked before any plugin starts; plugins then start in dependency order,
 * each under a deadline. If one fails, every plugin already started is
 * stopped again in reverse order and {@linkcode Kernel.start} throws a
 * {@linkcode PluginError} naming the plugin and the cause.
 *
 * @module
 */
import { deadline as withDeadline } from "./resilience/deadline.ts";
import { Hono } from "hono";
import type * as npm from "./_npm_types.ts";
import {
  capabilityMatches,
  describeIssues,
  type Health,
  type HealthEntry,
  KERNEL_API_VERSION,
  type KernelHandle,
  MAX_HEALTH_ENTRIES,
  type NodeIdentity,
  parseRequirement,
  type PermissionSpec,
  type Plugin,
  PluginError,
  type PluginKind,
  type Running,
  validatePlugin,
  type WebSocketHandler,
} from "./plugin.ts";
import { satisfies } from "./_semver.ts";
import type { Logger } from "./observe/logger.ts";
import type { MetricsRegistry } from "./observe/metrics.ts";
import type { Router } from "./router.ts";
import { scopeKv } from "./state/scoped_kv.ts";
import { pluginPrefix } from "./state/keys.ts";
import type { NodeFetch } from "./http/node_client.ts";
import {
  createScope,
  promoteTasks,
  type Scope,
  scopeRouter,
  scopeTasks,
  type TaskSlots,
} from "./plugin_scope.ts";
import type { TaskHandler, TaskService } from "./tasks.ts";
import {
  createServiceBroker,
  type ScopedServices,
  scopeServices,
  type ServiceBroker,
} from "./services.ts";
import {
  type ApiEnv,
  CORE_API_PREFIXES,
  createPluginApi,
  type PluginApi,
} from "./http/plugin_api.ts";
import { timed } from "./observe/otel.ts";

/** Lifecycle states of a plugin. */
export type PluginState =
  | "registered"
  | "starting"
  | "running"
  | "stopping"
  | "stopped"
  | "failed";

/** A plugin as the kernel tracks it. */
export interface PluginRecord {
  plugin: Plugin;
  /** Where it was loaded from (specifier or "inline"). */
  origin: string;
  state: PluginState;
  running?: Running;
  http?: Hono;
  /** Prefixes under `/api/v1` this plugin claimed in setup. */
  api?: Map<string, PluginApi>;
  /** Names under `/ws/` this plugin claimed in setup, and their handlers. */
  ws?: Map<string, WebSocketHandler>;
  /** Where it runs and what it may do (see {@linkcode PluginIsolation}). */
  isolation: PluginIsolation;
  error?: string;
  /** Whether this copy hears router messages and task runs, and its work in flight. */
  scope: Scope;
  /** Aborted when this copy stops. */
  controller?: AbortController;
  /** This copy's `ctx.services` (its actions go away with it). */
  services?: ScopedServices;
}

/**
 * Where a plugin runs and what it may do: `trusted` plugins run in the
 * node's process with all of its permissions; a `worker` plugin runs in its
 * own Worker with exactly `permissions` (docs/sandbox.md).
 */
export interface PluginIsolation {
  /** The operator's trust level for it. */
  trust: "trusted" | "worker" | "process";
  /** `"all"` (the node's) when trusted, else the Deno permissions it has. */
  permissions: "all" | PermissionSpec;
}

/** One row of `GET /api/v1/plugins`. */
export interface PluginInfo {
  /** The plugin's name. */
  name: string;
  /** The plugin's version. */
  version: string;
  /** The plugin's kind. */
  kind: PluginKind;
  /** The capabilities it provides. */
  provides: string[];
  /** Where it is in its life cycle. */
  status: PluginState;
  /** Where it was loaded from (specifier or "inline"). */
  origin: string;
  /** Its trust level. */
  trust: PluginIsolation["trust"];
  /** What it may do: `"all"` when trusted, else its Deno permissions. */
  permissions: PluginIsolation["permissions"];
  /** Why it failed, when it did. */
  error?: string;
}

/**
 * Capabilities the kernel always provides (more can be added through
 * {@linkcode KernelOptions.core}, e.g. `tasks:local`).
 */
export const CORE_CAPABILITIES = ["state:kv", "router:local"] as const;

/** Options for {@linkcode createKernel}. */
export interface KernelOptions {
  /** The node's logger; each plugin gets a child of it. */
  log: Logger;
  /** The node's metrics registry. */
  metrics: MetricsRegistry;
  /** The node's Deno KV (`state:kv`; each plugin gets a scoped part as `ctx.kv`). */
  kv: Deno.Kv;
  /** The node's topic router (`router:local`). */
  router: Router;
  /** Who the node is, handed to every plugin. */
  node: NodeIdentity;
  /** Raw config per plugin name, validated against each manifest's schema. */
  pluginConfig?: Record<string, unknown>;
  /** Deadline for a setup without its own `startTimeoutMs`. @default {10000} */
  startTimeoutMs?: number;
  /** Deadline for each plugin's stop. @default {5000} */
  stopTimeoutMs?: number;
  /** Deadline for each plugin's health check. @default {2000} */
  healthTimeoutMs?: number;
  /** Extra kernel-provided capabilities and the values `get` returns for them. */
  core?: Record<string, unknown>;
  /**
   * Signed node-to-node fetch handed to plugins as `ctx.nodeFetch`.
   * @default {a fetch that refuses: this kernel has no node key}
   */
  nodeFetch?: NodeFetch;
  /**
   * The node's service broker, scoped into each plugin's `ctx.services`.
   * @default {a broker on this node only (no transport attached)}
   */
  services?: ServiceBroker;
  /** Told about every state change (feeds the live log stream). */
  onStatus?: (
    event: { plugin: string; state: PluginState; error?: string },
  ) => void;
}

/** The kernel. */
export interface Kernel extends KernelHandle {
  /** Adds a plugin module's default export; validates manifest and API range. */
  register(
    candidate: unknown,
    origin?: string,
    isolation?: PluginIsolation,
  ): Plugin;
  /** Resolves dependencies, validates configs, starts everything or nothing. */
  start(): Promise<void>;
  /**
   * Calls `drain` of every running plugin that has one, in reverse start
   * order, each within the stop deadline (the node's shutdown does this
   * before its HTTP server drains); failures are logged, not thrown.
   */
  drain(): Promise<void>;
  /** Stops running plugins in reverse start order; resolves with failures. */
  stop(): Promise<PluginError[]>;
  /**
   * Hot swap: starts `candidate` (a new version of the running plugin of the
   * same name) beside the old one, then moves its HTTP and API routes,
   * WebSocket names, router subscriptions and task types over in one step,
   * lets the old copy finish its work in flight within the stop deadline and
   * stops it. Rejects with a {@linkcode PluginError} — and leaves the old
   * copy serving — when the new one is invalid (manifest, API range,
   * dependencies, config) or its setup fails.
   */
  replace(
    candidate: unknown,
    origin?: string,
    isolation?: PluginIsolation,
  ): Promise<SwapReport>;
  /**
   * Health of every registered plugin, with latency in ms, and the entries
   * plugins add ({@linkcode Health.entries}) as `{plugin}/{key}`.
   */
  health(): Promise<
    Record<
      string,
      { name: string; status: "up" | "down"; latency?: number; detail?: string }
    >
  >;
  /** Every registered plugin, in registration order. */
  list(): PluginInfo[];
  /** The Hono sub-app of a running plugin, if it registered routes. */
  httpFor(name: string): npm.Hono | undefined;
  /** The app serving `/api/v1/{prefix}` for a running plugin, if one claimed it. */
  apiFor(prefix: string): npm.Hono<ApiEnv> | undefined;
  /** The handler of `GET /ws/{name}` for a running plugin, if one claimed it. */
  websocketFor(name: string): WebSocketHandler | undefined;
  /** The node's service broker (what every `ctx.services` is scoped from). */
  readonly services: ServiceBroker;
}

/** What {@linkcode Kernel.replace} did. */
export interface SwapReport {
  /** The plugin's name. */
  name: string;
  /** The version that was serving. */
  from: string;
  /** The version serving now. */
  to: string;
  /** Setup of the new copy, ms (the old one served meanwhile). */
  setupMs: number;
  /** Waiting for the old copy's work in flight, then stopping it, ms. */
  retireMs: number;
  /** Whether the old copy's work finished before the stop deadline. */
  drained: boolean;
}

const WS_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;

/** A plugin name → the names it must start after. */
export interface ResolvedPlan {
  /** Plugin names in start order. */
  order: string[];
  /** Each plugin's name → the names of the plugins it starts after. */
  dependsOn: Map<string, string[]>;
}

/**
 * Resolves `requires` against `provides` and orders plugins so each starts
 * after its providers. Throws a {@linkcode PluginError} for a missing
 * capability, a version mismatch, a duplicate provider or a cycle, naming the
 * plugins involved.
 */
export function resolvePlan(
  plugins: readonly Plugin[],
  coreCapabilities: readonly string[] = CORE_CAPABILITIES,
): ResolvedPlan {
  const byName = new Map(plugins.map((p) => [p.manifest.name, p]));
  const providerOf = new Map<string, string>();
  for (const p of plugins) {
    for (const cap of p.manifest.provides) {
      const other = providerOf.get(cap);
      if (other !== undefined || coreCapabilities.includes(cap)) {
        throw new PluginError(
          p.manifest.name,
          "resolve",
          `capability '${cap}' is provided by both '${
            other ?? "the kernel"
          }' and '${p.manifest.name}'`,
        );
      }
      providerOf.set(cap, p.manifest.name);
    }
  }
  const dependsOn = new Map<string, string[]>();
  for (const p of plugins) {
    const deps = new Set<string>();
    for (const req of p.manifest.requires ?? []) {
      const { capability, range } = parseRequirement(req);
      if (coreCapabilities.some((c) => capabilityMatches(capability, c))) {
        if (range && !satisfies(KERNEL_API_VERSION, range)) {
          throw new PluginError(
            p.manifest.name,
            "resolve",
            `plugin '${p.manifest.name}' requires '${req}' but the kernel provides version ${KERNEL_API_VERSION}`,
          );
        }
        continue;
      }
      const matches = [...providerOf].filter(([cap]) =>
        capabilityMatches(capability, cap)
      );
      if (matches.length === 0) {
        throw new PluginError(
          p.manifest.name,
          "resolve",
          `plugin '${p.manifest.name}' requires '${capability}', which no loaded plugin provides` +
            ` (loaded: ${
              plugins.map((x) => x.manifest.name).join(", ") || "none"
            })`,
        );
      }
      const fitting = matches.filter(([, name]) =>
        !range || satisfies(byName.get(name)!.manifest.version, range)
      );
      if (fitting.length === 0) {
        const seen = matches.map(([, n]) =>
          `'${n}' ${byName.get(n)!.manifest.version}`
        ).join(", ");
        throw new PluginError(
          p.manifest.name,
          "resolve",
          `plugin '${p.manifest.name}' requires '${capability}@${range}' but only ${seen} provide it`,
        );
      }
      for (const [, name] of fitting) {
        if (name !== p.manifest.name) deps.add(name);
      }
    }
    dependsOn.set(p.manifest.name, [...deps]);
  }
  // Depth-first topological sort in registration order; grey nodes on the
  // stack reveal a cycle, which is reported as the path that closes it.
  const order: string[] = [];
  const color = new Map<string, "grey" | "black">();
  const stack: string[] = [];
  const visit = (name: string) => {
    const c = color.get(name);
    if (c === "black") return;
    if (c === "grey") {
      const cycle = [...stack.slice(stack.indexOf(name)), name];
      throw new PluginError(
        name,
        "resolve",
        `dependency cycle: ${cycle.join(" -> ")}`,
      );
    }
    color.set(name, "grey");
    stack.push(name);
    for (const dep of dependsOn.get(name)!) visit(dep);
    stack.pop();
    color.set(name, "black");
    order.push(name);
  };
  for (const p of plugins) visit(p.manifest.name);
  return { order, dependsOn };
}

/** Attributes of a plugin's setup and stop spans (OTel on). */
function pluginAttrs(plugin: Plugin): Record<string, string> {
  const m = plugin.manifest;
  return {
    "plexus.plugin": m.name,
    "plexus.plugin.version": m.version,
    "plexus.plugin.kind": m.kind,
  };
}

function deadline<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  return withDeadline(promise, ms, {
    error: () => new Error(`${what} did not finish within ${ms} ms`),
  });
}

/** Refuses a plugin whose manifest's `api` range this kernel does not satisfy. */
function checkApiRange(plugin: Plugin): void {
  const { name, api } = plugin.manifest;
  if (!satisfies(KERNEL_API_VERSION, api)) {
    throw new PluginError(
      name,
      "manifest",
      `plugin '${name}' needs kernel API '${api}' but this kernel offers ${KERNEL_API_VERSION}`,
    );
  }
}

/** The handler of a task type whose plugin no longer handles it. */
function noHandler(plugin: string, type: string): TaskHandler {
  return () =>
    Promise.reject(
      new Error(
        `plugin '${plugin}' no longer handles task type '${type}' (it was replaced or failed to start)`,
      ),
    );
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Creates a kernel.
 *
 * @example Usage
 * ```ts ignore
 * const kernel = createKernel({ log, metrics, kv, router, node });
 * kernel.register(helloPlugin, "builtin:examples/hello");
 * await kernel.start();
 * ```
 */
export function createKernel(options: KernelOptions): Kernel {
  const { log, metrics, kv, router, node } = options;
  const records = new Map<string, PluginRecord>();
  const started: string[] = [];
  const startTimeout = options.startTimeoutMs ?? 10_000;
  const stopTimeout = options.stopTimeoutMs ?? 5_000;
  const coreApis: Record<string, unknown> = {
    "state:kv": kv,
    "router:local": router,
    ...options.core,
  };
  const healthTimeout = options.healthTimeoutMs ?? 2_000;
  const services = options.services ??
    createServiceBroker({ nodeId: node.id, log, metrics });
  const nodeFetch: NodeFetch = options.nodeFetch ??
    (() =>
      Promise.reject(
        new Error("this kernel has no node key: node-to-node calls are off"),
      ));

  const stateGauge = metrics.gauge(
    "plexus_plugin_state",
    "1 for each plugin's current lifecycle state",
    () => {
      for (const [name, r] of records) {
        for (
          const s of [
            "registered",
            "starting",
            "running",
            "stopping",
            "stopped",
            "failed",
          ] as const
        ) {
          stateGauge.set(r.state === s ? 1 : 0, { plugin: name, state: s });
        }
      }
    },
  );
  const setupSeconds = metrics.gauge(
    "plexus_plugin_setup_seconds",
    "Seconds each plugin's setup took",
  );

  const setState = (r: PluginRecord, state: PluginState, error?: string) => {
    r.state = state;
    r.error = error;
    options.onStatus?.({ plugin: r.plugin.manifest.name, state, error });
  };

  /** Who other than plugin `self` serves `/api/v1/{prefix}`: "the node's core routes" or "plugin 'x'". */
  const apiOwner = (prefix: string, self: string): string | undefined => {
    if (CORE_API_PREFIXES.includes(prefix)) return "the node's core routes";
    for (const [name, r] of records) {
      if (name !== self && r.api?.has(prefix)) return `plugin '${name}'`;
    }
  };
  // Task types registered through plugins' scopes, and who runs each.
  const taskSlots: TaskSlots = new Map();
  const swapping = new Set<string>();
  // Set by stop(): a swap whose new copy finishes starting after it is undone.
  let stopped = false;

  /** Validates `plugin`'s config against its manifest's schema. */
  const configFor = (plugin: Plugin): unknown => {
    const name = plugin.manifest.name;
    const raw = options.pluginConfig?.[name] ?? {};
    if (!plugin.manifest.config) return raw;
    const parsed = plugin.manifest.config.safeParse(raw);
    if (!parsed.success) {
      throw new PluginError(
        name,
        "config",
        `plugin '${name}' has invalid config: ${
          describeIssues(parsed.error, raw)
        }`,
      );
    }
    return parsed.data;
  };

  /** One started copy of a plugin and what it claimed. */
  interface Launched {
    running: Running;
    http: Hono;
    api: Map<string, PluginApi>;
    ws: Map<string, WebSocketHandler>;
    controller: AbortController;
    /** Task handlers a replacement registered, taking over at the swap. */
    staged: Map<string, TaskHandler>;
    services: ScopedServices;
    setupMs: number;
  }

  /**
   * Runs one copy's setup under its deadline, with the router and task
   * service seen through `scope`; if it fails, undoes what the copy made
   * and throws.
   */
  const launch = async (
    plugin: Plugin,
    config: unknown,
    scope: Scope,
  ): Promise<Launched> => {
    const name = plugin.manifest.name;
    const controller = new AbortController();
    // Requests are counted, so a swap knows when the old copy's are done.
    const counted = async (_c: unknown, next: () => Promise<void>) => {
      await scope.track(next);
    };
    const http = new Hono().basePath(`/plugins/${name}`);
    http.use(counted);
    const claimed = new Map<string, PluginApi>();
    const api = (prefix: string) => {
      const owner = claimed.has(prefix)
        ? `plugin '${name}'`
        : apiOwner(prefix, name);
      if (owner) {
        throw new Error(`/api/v1/${prefix} is already served by ${owner}`);
      }
      const created = createPluginApi(prefix);
      created.app.use(counted);
      claimed.set(prefix, created);
      return created.routes;
    };
    const sockets = new Map<string, WebSocketHandler>();
    const websocket = (wsName: string, handler: WebSocketHandler) => {
      if (!WS_NAME_RE.test(wsName)) {
        throw new TypeError(
          `Cannot serve /ws/${wsName}: a name is one lower-case path segment like 'agent'`,
        );
      }
      for (const [other, o] of records) {
        if (
          (other !== name && o.ws?.has(wsName)) ||
          (other === name && sockets.has(wsName))
        ) {
          throw new Error(
            `/ws/${wsName} is already served by plugin '${other}'`,
          );
        }
      }
      sockets.set(wsName, handler);
    };
    const staged = new Map<string, TaskHandler>();
    const scopedRouter = scopeRouter(router, scope);
    const scoped: Record<string, unknown> = {
      ...coreApis,
      "router:local": scopedRouter,
    };
    if (coreApis["tasks:local"]) {
      scoped["tasks:local"] = scopeTasks(
        coreApis["tasks:local"] as TaskService,
        { slots: taskSlots, plugin: name, scope, staged },
      );
    }
    const handle: KernelHandle = {
      get: <T>(capability: string): T =>
        capability in scoped
          ? scoped[capability] as T
          : kernel.get<T>(capability),
      has: (capability) => kernel.has(capability),
    } as KernelHandle;
    const scopedServices = scopeServices(services, name, scope);
    const t0 = performance.now();
    // Timed, not active: what setup starts (loops, subscriptions) must not
    // become children of its span.
    const setup = timed(
      "plugin.setup",
      pluginAttrs(plugin),
      Promise.resolve().then(() =>
        plugin.setup({
          name,
          config,
          log: log.child({ plugin: name }),
          metrics,
          kv: scopeKv(kv, pluginPrefix(name)),
          router: scopedRouter,
          http,
          api,
          websocket,
          nodeFetch,
          kernel: handle,
          services: scopedServices,
          node,
          signal: controller.signal,
        })
      ),
    );
    const ms = plugin.manifest.startTimeoutMs ?? startTimeout;
    try {
      const running = await deadline(setup, ms, `setup of plugin '${name}'`);
      if (!running || typeof running.stop !== "function") {
        throw new Error(
          `setup returned ${
            running === undefined ? "nothing" : "a value without stop()"
          }`,
        );
      }
      return {
        running,
        http,
        api: claimed,
        ws: sockets,
        controller,
        staged,
        services: scopedServices,
        setupMs: performance.now() - t0,
      };
    } catch (err) {
      controller.abort(err);
      // A setup that finishes after its deadline must still be undone.
      setup.then((late) => late?.stop?.(AbortSignal.timeout(stopTimeout)))
        .catch(() => {});
      scope.unsubscribeAll();
      for (const [type, slot] of taskSlots) {
        if (slot.scope === scope) slot.handler = noHandler(name, type);
      }
      await scopedServices.retire();
      throw err;
    }
  };

  const kernel: Kernel = {
    services,
    register(
      candidate,
      origin = "inline",
      isolation = { trust: "trusted", permissions: "all" },
    ) {
      const plugin = validatePlugin(candidate, origin);
      const { name } = plugin.manifest;
      checkApiRange(plugin);
      const existing = records.get(name);
      if (existing) {
        throw new PluginError(
          name,
          "manifest",
          `plugin name '${name}' is used twice: by ${existing.origin} and by ${origin}`,
        );
      }
      records.set(name, {
        plugin,
        origin,
        isolation,
        state: "registered",
        scope: createScope(true),
      });
      return plugin;
    },

    async start() {
      const plugins = [...records.values()].map((r) => r.plugin);
      const plan = resolvePlan(plugins, Object.keys(coreApis));
      // Validate every config before anything starts, so a typo never leaves
      // half a node running.
      const configs = new Map<string, unknown>();
      for (const p of plugins) configs.set(p.manifest.name, configFor(p));
      for (const name of plan.order) {
        const r = records.get(name)!;
        setState(r, "starting");
        try {
          const l = await launch(r.plugin, configs.get(name), r.scope);
          Object.assign(r, {
            running: l.running,
            http: l.http,
            api: l.api,
            ws: l.ws,
            controller: l.controller,
            services: l.services,
          });
          started.push(name);
          setupSeconds.set(l.setupMs / 1000, { plugin: name });
          setState(r, "running");
        } catch (err) {
          setState(r, "failed", message(err));
          log.error("plugin setup failed; rolling back", {
            plugin: name,
            error: message(err),
          });
          await kernel.stop();
          throw new PluginError(
            name,
            "setup",
            `plugin '${name}' failed to start: ${message(err)}`,
            {
              cause: err,
            },
          );
        }
      }
    },

    async replace(
      candidate,
      origin = "inline",
      isolation = { trust: "trusted", permissions: "all" },
    ) {
      const plugin = validatePlugin(candidate, origin);
      const name = plugin.manifest.name;
      const r = records.get(name);
      if (!r) {
        throw new PluginError(
          name,
          "swap",
          `no plugin named '${name}' is loaded (loaded: ${
            [...records.keys()].join(", ") || "none"
          })`,
        );
      }
      if (r.state !== "running") {
        throw new PluginError(
          name,
          "swap",
          `plugin '${name}' is ${r.state}: only a running plugin can be replaced`,
        );
      }
      if (swapping.has(name)) {
        throw new PluginError(
          name,
          "swap",
          `plugin '${name}' is being replaced already`,
        );
      }
      checkApiRange(plugin);
      // Every other plugin must still find what it requires, and the new
      // version what it requires.
      resolvePlan(
        [...records.values()].map((o) =>
          o.plugin === r.plugin ? plugin : o.plugin
        ),
        Object.keys(coreApis),
      );
      const config = configFor(plugin);
      swapping.add(name);
      try {
        const scope = createScope(false);
        let l: Launched;
        try {
          l = await launch(plugin, config, scope);
        } catch (err) {
          throw new PluginError(
            name,
            "setup",
            `plugin '${name}' ${plugin.manifest.version} failed to start, so ${r.plugin.manifest.version} keeps serving: ${
              message(err)
            }`,
            { cause: err },
          );
        }
        if (stopped) {
          scope.unsubscribeAll();
          await l.services.retire();
          await l.running.stop(AbortSignal.timeout(stopTimeout)).catch(
            () => {},
          );
          throw new PluginError(
            name,
            "swap",
            `plugin '${name}' was not replaced: the node is stopping`,
          );
        }
        // The swap, in one synchronous step: from here on every request,
        // message and task run reaches the new copy.
        const old = { ...r };
        Object.assign(r, {
          plugin,
          origin,
          isolation,
          running: l.running,
          http: l.http,
          api: l.api,
          ws: l.ws,
          controller: l.controller,
          scope,
          services: l.services,
        });
        old.scope.live = false;
        scope.live = true;
        promoteTasks(taskSlots, scope, l.staged);
        const servicesMoved = l.services.takeOver(old.services);
        for (const [type, slot] of taskSlots) {
          if (slot.plugin === name && slot.scope === old.scope) {
            slot.scope = scope;
            slot.handler = noHandler(name, type);
          }
        }
        setupSeconds.set(l.setupMs / 1000, { plugin: name });
        log.info(`plugin ${name} replaced`, {
          plugin: name,
          from: old.plugin.manifest.version,
          to: plugin.manifest.version,
        });
        setState(r, "running");
        // Retire the old copy: it drains, finishes what it runs, stops.
        const t0 = performance.now();
        if (old.running?.drain) {
          await deadline(
            old.running.drain(AbortSignal.timeout(stopTimeout)),
            stopTimeout,
            `drain of the old copy of '${name}'`,
          ).catch((err) =>
            log.warn("old copy's drain failed", {
              plugin: name,
              error: message(err),
            })
          );
        }
        const drained = await old.scope.idle(stopTimeout);
        if (!drained) {
          log.warn("old copy still had work running at the stop deadline", {
            plugin: name,
            inflight: old.scope.inflight,
          });
        }
        old.controller?.abort(new Error("replaced by a new version"));
        try {
          await deadline(
            old.running!.stop(AbortSignal.timeout(stopTimeout)),
            stopTimeout,
            `stop of the old copy of '${name}'`,
          );
        } catch (err) {
          log.error("old copy failed to stop", {
            plugin: name,
            error: message(err),
          });
        }
        old.scope.unsubscribeAll();
        await servicesMoved.catch((err) =>
          log.warn("service actions not moved to the new copy", {
            plugin: name,
            error: message(err),
          })
        );
        return {
          name,
          from: old.plugin.manifest.version,
          to: plugin.manifest.version,
          setupMs: +l.setupMs.toFixed(2),
          retireMs: +(performance.now() - t0).toFixed(2),
          drained,
        };
      } finally {
        swapping.delete(name);
      }
    },

    async drain() {
      for (const name of [...started].reverse()) {
        const r = records.get(name)!;
        if (!r.running?.drain) continue;
        try {
          await deadline(
            r.running.drain(AbortSignal.timeout(stopTimeout)),
            stopTimeout,
            `drain of plugin '${name}'`,
          );
        } catch (err) {
          log.error("plugin drain failed", {
            plugin: name,
            error: message(err),
          });
        }
      }
    },

    async stop() {
      stopped = true;
      const failures: PluginError[] = [];
      while (started.length > 0) {
        const name = started.pop()!;
        const r = records.get(name)!;
        r.controller?.abort(new Error("node shutting down"));
        setState(r, "stopping");
        await r.services?.retire().catch(() => {});
        try {
          await deadline(
            timed(
              "plugin.stop",
              pluginAttrs(r.plugin),
              r.running!.stop(AbortSignal.timeout(stopTimeout)),
            ),
            stopTimeout,
            `stop of plugin '${name}'`,
          );
          setState(r, "stopped");
        } catch (err) {
          setState(r, "failed", message(err));
          failures.push(
            new PluginError(
              name,
              "stop",
              `plugin '${name}' failed to stop: ${message(err)}`,
              { cause: err },
            ),
          );
          log.error("plugin stop failed", {
            plugin: name,
            error: message(err),
          });
        }
      }
      return failures;
    },

    async health() {
      const out: Record<
        string,
        {
          name: string;
          status: "up" | "down";
          latency?: number;
          detail?: string;
        }
      > = {};
      await Promise.all([...records].map(async ([name, r]) => {
        if (r.state !== "running") {
          out[name] = { name, status: "down", detail: r.error ?? r.state };
          return;
        }
        if (!r.running?.health) {
          out[name] = { name, status: "up" };
          return;
        }
        const t0 = performance.now();
        try {
          const h: Health = await deadline(
            r.running.health(),
            healthTimeout,
            `health of '${name}'`,
          );
          out[name] = {
            name,
            status: h.status === "up" ? "up" : "down",
            latency: +(performance.now() - t0).toFixed(2),
          };
          if (h.detail) out[name].detail = h.detail;
          addHealthEntries(out, name, h.entries);
        } catch (err) {
          out[name] = {
            name,
            status: "down",
            latency: +(performance.now() - t0).toFixed(2),
            detail: message(err),
          };
        }
      }));
      return out;
    },

    list() {
      return [...records.values()].map((r) => ({
        name: r.plugin.manifest.name,
        version: r.plugin.manifest.version,
        kind: r.plugin.manifest.kind,
        provides: r.plugin.manifest.provides,
        status: r.state,
        origin: r.origin,
        trust: r.isolation.trust,
        permissions: r.isolation.permissions,
        ...(r.error ? { error: r.error } : {}),
      }));
    },

    httpFor(name) {
      const r = records.get(name);
      return r?.state === "running" ? r.http : undefined;
    },

    websocketFor(name) {
      for (const r of records.values()) {
        const handler = r.ws?.get(name);
        if (handler) return r.state === "running" ? handler : undefined;
      }
    },

    apiFor(prefix) {
      for (const r of records.values()) {
        const api = r.api?.get(prefix);
        if (api) return r.state === "running" ? api.app : undefined;
      }
    },

    get<T>(capability: string): T {
      if (capability in coreApis) return coreApis[capability] as T;
      for (const name of started) {
        const r = records.get(name)!;
        if (
          r.plugin.manifest.provides.some((c) =>
            capabilityMatches(capability, c)
          )
        ) {
          return r.running!.api as T;
        }
      }
      throw new Error(`No running plugin provides '${capability}'`);
    },

    has(capability) {
      if (capability in coreApis) {
        return true;
      }
      return started.some((n) =>
        records.get(n)!.plugin.manifest.provides.some((c) =>
          capabilityMatches(capability, c)
        )
      );
    },
  };
  return kernel;
}

const ENTRY_KEY = /^[\x21-\x7e][\x20-\x7e]{0,199}$/;

/**
 * Adds a plugin's own `/health` entries as `{plugin}/{key}`, checked (a
 * sandboxed plugin's answer is untrusted): at most MAX_HEALTH_ENTRIES, keys of
 * printable ASCII, a status of up or down, a finite latency, a string detail.
 * What is left out is counted in the plugin's detail.
 */
function addHealthEntries(
  out: Record<
    string,
    { name: string; status: "up" | "down"; latency?: number; detail?: string }
  >,
  plugin: string,
  entries: unknown,
): void {
  if (entries === undefined) return;
  const list = typeof entries === "object" && entries !== null
    ? Object.entries(entries as Record<string, unknown>)
    : [];
  let skipped = list.length === 0 && typeof entries !== "object" ? 1 : 0;
  let added = 0;
  for (const [key, value] of list) {
    const e = value as Partial<HealthEntry> | null;
    if (
      added >= MAX_HEALTH_ENTRIES || !ENTRY_KEY.test(key) ||
      typeof e !== "object" || e === null ||
      (e.status !== "up" && e.status !== "down")
    ) {
      skipped++;
      continue;
    }
    const name = `${plugin}/${key}`;
    out[name] = { name, status: e.status };
    if (typeof e.latency === "number" && Number.isFinite(e.latency)) {
      out[name].latency = e.latency;
    }
    if (typeof e.detail === "string") out[name].detail = e.detail.slice(0, 500);
    added++;
  }
  if (skipped > 0) {
    const note = `${skipped} health entr${
      skipped === 1 ? "y" : "ies"
    } left out`;
    out[plugin].detail = out[plugin].detail
      ? `${out[plugin].detail}; ${note}`
      : note;
  }
}
