/**
 * The plugin contract: what a plugin module exports, what the kernel gives it,
 * and the zod schema its manifest is checked against.
 *
 * A plugin is a module whose default export is a {@linkcode Plugin}. Use
 * {@linkcode definePlugin} to get types for the config from its schema.
 * This module is the package's `./plugin` export: a plugin written outside
 * this repository imports everything it needs from here, `z` included, so
 * it needs no zod of its own (see "Writing a plugin" in the README).
 *
 * @module
 */
import { z as zod } from "zod";
import type * as npm from "./_npm_types.ts";
import type { Logger } from "./observe/logger.ts";
import type { MetricsRegistry } from "./observe/metrics.ts";
import type { ScopedKv } from "./state/scoped_kv.ts";
import type { Router } from "./router.ts";
import type * as tasks from "./tasks.ts";
import type { ApiRoutes } from "./http/plugin_api.ts";
import type { NodeFetch } from "./http/node_client.ts";
import type { NodeKey } from "./security/node_key.ts";
import type { Transport } from "./transport.ts";
import type { Consensus } from "./consensus.ts";
import type { Balancer } from "./contracts/balancer.ts";
import type { Services } from "./contracts/services.ts";
import { isRange, isVersion } from "./_semver.ts";

/**
 * zod's `z` (the very object `import { z } from "zod"` gives), the one the
 * kernel validates manifests and configs with, re-exported so a plugin's
 * config schema needs no import map entry of its own. Its types, such as
 * `z.infer<typeof schema>`, are in the {@linkcode z} namespace below; zod's
 * documentation is at https://zod.dev.
 *
 * @example Usage
 * ```ts
 * import { z } from "./plugin.ts";
 * const config = z.strictObject({ topic: z.string().default("audit.>") });
 * type Config = z.infer<typeof config>; // { topic: string }
 * const parsed: Config = config.parse({});
 * parsed.topic; // "audit.>"
 * ```
 */
export const z: typeof zod = zod;

/**
 * The zod types a plugin usually names, under the same `z` as the value:
 * `z.infer` (or `z.output`) and `z.input` for a schema's types, `z.ZodType`
 * for any schema, `z.ZodError` for what `parse` throws. For another zod type,
 * use the type of a value: `ReturnType<typeof z.string>`. (Types only, so
 * the namespace merges with the const `z` as zod's own `z` does.)
 */
export declare namespace z {
  /** The type a schema parses to (zod's `z.infer`, the same as `z.output`). */
  export type infer<T> = npm.ZodOutput<T>;
  /** The type a schema parses to (zod's `z.output`). */
  export type output<T> = npm.ZodOutput<T>;
  /** The type a schema accepts (zod's `z.input`): fields with defaults are optional. */
  export type input<T> = npm.ZodInput<T>;
  /** Any zod schema whose parsed value is an `Output` (zod's `z.ZodType`). */
  export type ZodType<Output = unknown, Input = unknown> = npm.ZodType<
    Output,
    Input
  >;
  /** What `schema.parse` throws (zod's `z.ZodError`), with the `issues` found. */
  export type ZodError<T = unknown> = npm.ZodError<T>;
}

export type {
  ApiAccess,
  ApiContext,
  ApiEnv,
  ApiHandler,
  ApiMethod,
  ApiRoutes,
} from "./http/plugin_api.ts";
export type { Principal } from "./http/auth.ts";
export { markUnchanged, storeWithAudit } from "./security/audit.ts";
export type {
  SignatureAlgorithm,
  VerificationSuccess,
} from "./security/http_signatures/mod.ts";
export {
  type Permission,
  PERMISSION_NAMES,
  type Role,
  ROLES,
} from "./security/roles.ts";
export type { Router, TopicHandler } from "./router.ts";
export {
  isoNow,
  LOG_LEVELS,
  type Logger,
  type LogLevel,
} from "./observe/logger.ts";
export type {
  Counter,
  Gauge,
  Histogram,
  Labels,
  MetricsRegistry,
} from "./observe/metrics.ts";
export type { ScopedAtomic, ScopedKv } from "./state/scoped_kv.ts";
export {
  type Envelope,
  type EnvelopeDelivery,
  type EnvelopeParse,
  type EnvelopeType,
  parseEnvelope,
  safeParseEnvelope,
} from "./envelope.ts";
export { PlexusError, type PlexusErrorOptions } from "./errors.ts";
export {
  transportPlugin,
  type TransportPluginSpec,
  type TransportTelemetry,
} from "./transport_plugin.ts";
export {
  assertFits,
  type AttemptError,
  type DeadLetter,
  type Delivery,
  type DeliveryHandler,
  envelopeBytes,
  type PublishOptions,
  type RequestHandler,
  type RequestOptions,
  type Responder,
  type SubscribeOptions,
  type Subscription,
  type Transport,
  type TransportCaps,
  TransportError,
  type TransportErrorCode,
} from "./transport.ts";
export type { Consensus, LeaderChange, Member } from "./consensus.ts";
export type {
  Balancer,
  Candidate,
  Outcome,
  PickContext,
  RandomSource,
} from "./contracts/balancer.ts";
export {
  type BalancerApi,
  balancerPlugin,
  type BalancerPluginSpec,
} from "./balancer_plugin.ts";
export type {
  CircuitBreaker,
  CircuitBreakers,
  CircuitEvent,
  CircuitEvents,
  CircuitState,
} from "./resilience/circuit_breaker.ts";
export type { Unsubscribe } from "./resilience/_events.ts";
export type {
  ActionCall,
  ActionHandler,
  ActionInfo,
  ActionOptions,
  CallOptions,
  Services,
} from "./contracts/services.ts";
export {
  type ErrorClass,
  registerErrorType,
  ServiceError,
  type ServiceErrorCode,
} from "./services_errors.ts";

/**
 * The task service, the `api` of the kernel's `tasks:local` capability: a
 * plugin adds task types with `register(type, handler, schema?)` (the schema
 * checks payloads when a task is submitted; a refused one gets 400).
 *
 * @example Usage
 * ```ts
 * import { definePlugin, z } from "./plugin.ts";
 * export default definePlugin({
 *   manifest: {
 *     name: "resizer", version: "1.0.0", kind: "extension", api: "^1",
 *     provides: ["extension:resizer"],
 *   },
 *   async setup(ctx) {
 *     ctx.kernel.get("tasks:local").register(
 *       "resize",
 *       async (payload, { attempt }) => ({ payload, attempt }),
 *       z.strictObject({ width: z.number().int().positive() }),
 *     );
 *     return { stop: async () => {} };
 *   },
 * });
 * ```
 */
export type TaskService = tasks.TaskService;

/**
 * What a plugin hands `tasks:local`'s `provideCapabilities` to run
 * capability tasks on its workers (the gateway does this for its agents).
 */
export type CapabilityExecutor = tasks.CapabilityExecutor;
/** One worker offering a capability, as `TaskService.workers` lists it. */
export type CapabilityWorker = tasks.CapabilityWorker;
export type { TaskRun } from "./task_router.ts";
export type { NodeFetch } from "./http/node_client.ts";
export {
  NODE_KEY_ALG,
  type NodeKey,
  type NodePublicJwk,
} from "./security/node_key.ts";

/**
 * Runs one task: `payload` is what was submitted (checked by the type's
 * schema when it has one), the resolved value is the task's result, and a
 * throw fails this attempt (retried with backoff, then dead-lettered).
 * A node that dies mid-task loses its lease and the task runs again
 * elsewhere, so a handler must tolerate a repeat.
 *
 * @example Usage
 * ```ts
 * import type { TaskHandler } from "./plugin.ts";
 * const echo: TaskHandler = async (payload, { signal }) => {
 *   signal.throwIfAborted();
 *   return payload;
 * };
 * ```
 */
export type TaskHandler = tasks.TaskHandler;

/**
 * The second argument of a {@linkcode TaskHandler}: `id` is the task's id
 * (as `POST /api/v1/tasks` returned it), `attempt` counts runs from 1, and
 * `signal` aborts when the node shuts down (stop early and throw).
 *
 * @example Usage
 * ```ts
 * import type { TaskRunContext } from "./plugin.ts";
 * const describe = ({ id, attempt }: TaskRunContext) => `${id} try ${attempt}`;
 * ```
 */
export type TaskRunContext = Parameters<TaskHandler>[1];

/** The kernel's plugin API version; manifests declare a range against it. */
export const KERNEL_API_VERSION = "1.0.0";

/** Plugin kinds. */
export const PLUGIN_KINDS = [
  "transport",
  "consensus",
  "balancer",
  "extension",
] as const;
/** A plugin kind. */
export type PluginKind = typeof PLUGIN_KINDS[number];

/**
 * Deno permissions a sandboxed copy of the plugin may use. Each is `true`
 * (all), `false` (none) or the allowed list, as Deno's `--allow-*` flags take
 * it.
 */
export interface PermissionSpec {
  /** File system reads (`--allow-read`): paths. */
  read?: boolean | string[];
  /** File system writes (`--allow-write`): paths. */
  write?: boolean | string[];
  /** Network (`--allow-net`): hosts, optionally with a port. */
  net?: boolean | string[];
  /** Environment variables (`--allow-env`): names. */
  env?: boolean | string[];
  /** System information (`--allow-sys`): API names such as `hostname`. */
  sys?: boolean | string[];
  /** Subprocesses (`--allow-run`): programs. */
  run?: boolean | string[];
  /** Native libraries (`--allow-ffi`): paths. */
  ffi?: boolean | string[];
  /** Remote module imports (`--allow-import`): hosts. */
  import?: boolean | string[];
}

/** What a plugin declares about itself. */
export interface PluginManifest<C = unknown> {
  /** Unique name: lower case letters, digits, `.`, `_`, `-`, optionally `@scope/`. */
  name: string;
  /** The plugin's own semantic version. */
  version: string;
  /** What the plugin is: a transport, consensus, balancer or extension. */
  kind: PluginKind;
  /** Kernel API range this plugin works with, e.g. `"^1"`. */
  api: string;
  /** Capabilities provided, `kind:name` (e.g. `transport:redis-streams`). */
  provides: string[];
  /**
   * Capabilities needed, optionally with a version range on the provider:
   * `state:kv`, `consensus:*`, `transport:redis-streams@^1.2`.
   */
  requires?: string[];
  /** Schema the plugin's config is validated against before setup. */
  config?: z.ZodType<C>;
  /** Deno permissions the plugin needs (see {@linkcode PermissionSpec}). */
  permissions?: PermissionSpec;
  /** Longest time setup may take before the boot fails. @default {10000} */
  startTimeoutMs?: number;
}

/** One more line a plugin adds to `/health` (an agent, a peer, a link). */
export interface HealthEntry {
  /** Whether it works; a `down` entry makes the node `degraded`, as a down plugin does. */
  status: "up" | "down";
  /** Its latency in ms (e.g. its last round trip), when the plugin knows one. */
  latency?: number;
  /** A short human-readable explanation. */
  detail?: string;
}

/**
 * Health reported by a running plugin.
 *
 * @example A plugin listing each connected agent as its own `/health` entry
 * ```ts
 * import type { Health } from "./plugin.ts";
 * const health: Health = {
 *   status: "up",
 *   entries: { "root/agent-1": { status: "up", latency: 2.5 } },
 * };
 * // GET /health: services["prompts/root/agent-1"] = {name, status, latency}
 * ```
 */
export interface Health {
  /** Whether the plugin works. */
  status: "up" | "down";
  /** A short human-readable explanation, such as the failing check's error. */
  detail?: string;
  /**
   * More entries for `/health`'s `services`, a set that may change from one
   * check to the next, each listed as `{plugin}/{key}`: at most
   * {@linkcode MAX_HEALTH_ENTRIES}, keys of 1-200 printable characters
   * (others are left out, and the plugin's `detail` says how many).
   */
  entries?: Record<string, HealthEntry>;
}

/** Most `/health` entries one plugin may add ({@linkcode Health.entries}). */
export const MAX_HEALTH_ENTRIES = 64;

/** A started plugin. */
export interface Running {
  /** Releases everything setup acquired; must finish before `signal` aborts. */
  stop(signal: AbortSignal): Promise<void>;
  /** Reports the plugin's health for the node's health check. */
  health?(): Promise<Health>;
  /** The value `kernel.get(capability)` returns for this plugin's capabilities. */
  api?: unknown;
  /**
   * Called once when the node begins to shut down, after it left the
   * cluster registry and before the HTTP server drains (plugins in reverse
   * start order, each within the stop deadline): close long-lived
   * connections here, such as WebSockets, so their clients reconnect to
   * another node while requests finish. `stop` follows later.
   */
  drain?(signal: AbortSignal): Promise<void>;
}

/**
 * Answers a WebSocket upgrade request claimed with `ctx.websocket(name)`,
 * usually with `Deno.upgradeWebSocket(req).response`. A thrown
 * `PlexusError` becomes its JSON error response.
 */
export type WebSocketHandler = (req: Request) => Response | Promise<Response>;

/** Who this node is. */
export interface NodeIdentity {
  /** The node's id (`--node-id`), unique in the cluster. */
  id: string;
  /** The Plexus version the node runs. */
  version: string;
  /** Base URL other nodes and clients reach this node at. */
  address: string;
  /** The node's data directory (`--data-dir`). */
  dataDir: string;
  /** Other nodes' base URLs (`--peers`), for plugins that link nodes. */
  peers?: string[];
}

/**
 * What `kernel.get(capability)` returns for the capabilities whose type the
 * kernel knows: the ones it provides itself, and the contract of every
 * transport, consensus and balancer by kind. Any other capability (an
 * extension's, `gateway:agents`) takes a type argument:
 * `get<AgentGateway>("gateway:agents")`.
 *
 * @example Usage
 * ```ts
 * import type { Capabilities } from "./plugin.ts";
 * type Tasks = Capabilities["tasks:local"]; // TaskService
 * type Leader = Capabilities["consensus:*"]; // Consensus
 * ```
 */
export interface Capabilities {
  /** The node's raw Deno KV (`ctx.kv` is the plugin's own scoped part of it). */
  "state:kv": Deno.Kv;
  /** The node's in-process topic router (the same one as `ctx.router`). */
  "router:local": Router;
  /** The task service: register task types and submit tasks. */
  "tasks:local": TaskService;
  /** Any transport (`transport:*` or one by name). */
  [transport: `transport:${string}`]: Transport;
  /** Any consensus (`consensus:*` or one by name). */
  [consensus: `consensus:${string}`]: Consensus;
  /** Any balancer (`balancer:NAME`). */
  [balancer: `balancer:${string}`]: Balancer;
  /**
   * The node's Ed25519 signing key (the one its tokens and HTTP signatures
   * use): for plugins that prove the node's identity, like the gateway's
   * handshake. Any plugin can read it today; the sandbox (issue 16) limits
   * it to plugins granted it.
   */
  "node:key": NodeKey;
}

/** Capability lookup offered to plugins. */
export interface KernelHandle {
  /**
   * The `api` of the plugin (or kernel service) providing `capability`
   * (`"consensus:*"` matches any), typed by {@linkcode Capabilities}.
   * Throws if none.
   */
  get<K extends keyof Capabilities>(capability: K): Capabilities[K];
  /**
   * The `api` of the plugin providing `capability`, typed by the caller
   * (a capability outside {@linkcode Capabilities}, or a plugin's richer
   * type, e.g. `get<RaftConsensus>("consensus:raft")`). Throws if none.
   */
  get<T = unknown>(capability: string): T;
  /** Whether a started plugin provides `capability`. */
  has(capability: string): boolean;
}

/** What the kernel hands a plugin's setup. */
export interface PluginContext<C = unknown> {
  /** The plugin's name, from its manifest. */
  name: string;
  /** Validated config (the manifest's schema applied to `pluginConfig[name]`). */
  config: C;
  /** Logger whose records carry `{plugin: name}`. */
  log: Logger;
  /** Metrics registry; names must start with `plexus_`. */
  metrics: MetricsRegistry;
  /** Deno KV keyspace private to this plugin. */
  kv: ScopedKv;
  /** In-process topic router (pub/sub, request/reply). */
  router: Router;
  /** Hono app mounted at `/plugins/{name}`, outside the API's auth chain. */
  http: npm.Hono;
  /**
   * Claims `/api/v1/{prefix}` for routes behind the node's authentication,
   * permission, rate-limit and audit chain, each declared with the
   * permission it needs. Throws if a core route or another plugin has the
   * prefix (the start fails naming both).
   */
  api(prefix: string): ApiRoutes;
  /**
   * Claims `GET /ws/{name}` for WebSocket upgrades. The node answers
   * plain requests 426, refuses upgrades while draining (503), from origins
   * it does not allow (403) and over the per-IP handshake rate limit (429),
   * then calls `handler`; authentication is the plugin's own (a socket
   * cannot carry the API's headers from a browser). Throws if the name is
   * taken.
   */
  websocket(name: string, handler: WebSocketHandler): void;
  /**
   * `fetch` for calls to other nodes, signed with this node's key (RFC 9421),
   * so routes declared with access `"node"` on the receiving node accept them.
   */
  nodeFetch: NodeFetch;
  /** Capability lookup: the `api` of other plugins and kernel services. */
  kernel: KernelHandle;
  /**
   * Service calls (docs/services.md): `define` actions any node can call,
   * `call` actions wherever they run. This copy's actions go away when it
   * stops or is replaced.
   */
  services: Services;
  /** Who this node is. */
  node: NodeIdentity;
  /** Aborted when the node begins to shut down. */
  signal: AbortSignal;
}

/** A plugin module's default export. */
export interface Plugin<C = unknown> {
  /** What the plugin declares about itself, checked before `setup`. */
  manifest: PluginManifest<C>;
  /**
   * Starts the plugin with its validated config; the returned
   * {@linkcode Running} stops it.
   */
  setup(ctx: PluginContext<C>): Promise<Running>;
}

/**
 * Identity function that gives a plugin's `setup` the type of its config.
 *
 * @example Usage
 * ```ts
 * import { z } from "zod";
 * import { definePlugin } from "./plugin.ts";
 * export default definePlugin({
 *   manifest: {
 *     name: "greeter", version: "1.0.0", kind: "extension", api: "^1",
 *     provides: ["extension:greeter"], config: z.object({ greeting: z.string().default("hi") }),
 *   },
 *   async setup(ctx) {
 *     ctx.log.info(ctx.config.greeting);
 *     return { stop: async () => {} };
 *   },
 * });
 * ```
 */
export function definePlugin<C>(plugin: Plugin<C>): Plugin<C> {
  return plugin;
}

const NAME_RE = /^(@[a-z0-9][a-z0-9._-]*\/)?[a-z0-9][a-z0-9._-]{0,63}$/;
const CAPABILITY_RE = /^[a-z][a-z0-9-]*:(\*|[a-z0-9][a-z0-9._/-]*)$/;
const REQUIREMENT_RE =
  /^([a-z][a-z0-9-]*:(?:\*|[a-z0-9][a-z0-9._/-]*))(?:@(.+))?$/;

const permissionValue = z.union([z.boolean(), z.array(z.string())], {
  error: "expected true, false or a list of strings",
});

/**
 * Zod schema for {@linkcode PermissionSpec}: each permission `true`, `false`
 * or a list of strings, and no other key. The manifest's `permissions` and
 * the operator's `pluginGrants` are both checked with it.
 */
export const permissionSpecSchema: z.ZodType<PermissionSpec> = z.strictObject({
  read: permissionValue.optional(),
  write: permissionValue.optional(),
  net: permissionValue.optional(),
  env: permissionValue.optional(),
  sys: permissionValue.optional(),
  run: permissionValue.optional(),
  ffi: permissionValue.optional(),
  import: permissionValue.optional(),
});

/** Zod schema for {@linkcode PluginManifest}. */
export const manifestSchema: z.ZodType<PluginManifest> = z.strictObject({
  name: z.string().regex(
    NAME_RE,
    "expected a lower-case name like 'redis-streams'",
  ),
  version: z.string().refine(
    isVersion,
    "expected a semantic version like '1.2.3'",
  ),
  kind: z.enum(PLUGIN_KINDS),
  api: z.string().refine(isRange, "expected a semver range like '^1'"),
  provides: z.array(
    z.string().regex(
      CAPABILITY_RE,
      "expected 'kind:name' like 'transport:redis-streams'",
    ),
  ),
  requires: z.array(
    z.string().regex(
      REQUIREMENT_RE,
      "expected 'kind:name' or 'kind:name@range'",
    ).refine(
      (r) => {
        const range = REQUIREMENT_RE.exec(r)?.[2];
        return range === undefined || isRange(range);
      },
      "the part after '@' must be a semver range",
    ),
  ).optional(),
  config: z.custom<z.ZodType>(
    (v) =>
      typeof v === "object" && v !== null &&
      typeof (v as z.ZodType).safeParse === "function",
    "expected a zod schema",
  ).optional(),
  permissions: permissionSpecSchema.optional(),
  startTimeoutMs: z.number().int().positive().max(600_000).optional(),
});

/** Splits `kind:name@range` into capability and optional range. */
export function parseRequirement(
  req: string,
): { capability: string; range?: string } {
  const m = REQUIREMENT_RE.exec(req);
  if (!m) throw new TypeError(`Cannot parse requirement '${req}'`);
  return { capability: m[1], range: m[2] };
}

/** Whether a provided capability satisfies a wanted one (`kind:*` matches any name). */
export function capabilityMatches(wanted: string, provided: string): boolean {
  if (wanted === provided) return true;
  if (wanted.endsWith(":*")) return provided.startsWith(wanted.slice(0, -1));
  return false;
}

/** Raised when a module is not a valid plugin; names the plugin or its specifier. */
export class PluginError extends Error {
  /** `"PluginError"`. */
  override name = "PluginError";
  /** Plugin name, or the specifier when the name is not known yet. */
  readonly plugin: string;
  /** Which step failed. */
  readonly phase:
    | "load"
    | "manifest"
    | "config"
    | "resolve"
    | "setup"
    | "stop"
    | "swap";
  /**
   * Creates the error for `plugin`'s failed `phase`.
   *
   * @param plugin The plugin's name, or its specifier when the name is not known yet.
   * @param phase Which step failed.
   * @param message The error message.
   * @param options The standard error options (`cause`).
   */
  constructor(
    plugin: string,
    phase: PluginError["phase"],
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.plugin = plugin;
    this.phase = phase;
  }
}

/** Formats zod issues as `field: message (got value)` joined by `; `. */
export function describeIssues(error: z.ZodError, input: unknown): string {
  return error.issues.map((issue) => {
    const path = issue.path.length ? issue.path.join(".") : "(root)";
    if (issue.code === "unrecognized_keys") return `${path}: ${issue.message}`;
    return `${path}: ${issue.message} (got ${
      preview(valueAt(input, issue.path))
    })`;
  }).join("; ");
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let v: unknown = input;
  for (const p of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

/** A short printable form of a value for error messages. */
export function preview(v: unknown): string {
  if (v === undefined) return "nothing";
  if (typeof v === "function") return "a function";
  try {
    const s = JSON.stringify(v);
    return s.length > 60 ? s.slice(0, 57) + "..." : s;
  } catch {
    return String(v);
  }
}

/**
 * Checks that `value` is a plugin module's default export and its manifest is
 * valid; returns it typed, or throws a {@linkcode PluginError} naming every bad field.
 */
export function validatePlugin(value: unknown, origin: string): Plugin {
  if (value === null || typeof value !== "object") {
    throw new PluginError(
      origin,
      "manifest",
      `${origin}: default export must be a plugin object {manifest, setup}, got ${
        preview(value)
      }`,
    );
  }
  const candidate = value as Partial<Plugin>;
  const rawName = (candidate.manifest as { name?: unknown } | undefined)?.name;
  const label = typeof rawName === "string" && rawName ? rawName : origin;
  const parsed = manifestSchema.safeParse(candidate.manifest);
  if (!parsed.success) {
    throw new PluginError(
      label,
      "manifest",
      `plugin '${label}' has an invalid manifest: ${
        describeIssues(parsed.error, candidate.manifest)
      }`,
    );
  }
  if (typeof candidate.setup !== "function") {
    throw new PluginError(
      label,
      "manifest",
      `plugin '${label}' has no setup function (got ${
        preview(candidate.setup)
      })`,
    );
  }
  return candidate as Plugin;
}
