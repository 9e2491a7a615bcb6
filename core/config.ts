/**
 * Node configuration: one zod schema, filled from defaults < config file <
 * environment < flags. Every flag, its variable and its default are declared
 * once in {@linkcode FLAGS}; `--help` and the parser are built from it.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { z } from "zod";
import { LOG_LEVELS, type LogLevel } from "./observe/logger.ts";
import {
  type PermissionSpec,
  permissionSpecSchema,
  preview,
} from "./plugin.ts";
import { INTEGRITY_HINT, isIntegrity } from "./sandbox/integrity.ts";

/**
 * Where a plugin runs: `trusted` in the node's own process, `worker` in a
 * Deno Worker with only the permissions granted, `process` in a child
 * `deno run` (docs/sandbox.md).
 */
export const TRUST_LEVELS = [
  "trusted",
  "worker",
  "process",
] as const satisfies readonly TrustLevel[];
/** A plugin's trust level, one of {@linkcode TRUST_LEVELS}. */
export type TrustLevel = "trusted" | "worker" | "process";

/** Zod schema of the node configuration. */
export const configSchema = z.strictObject({
  port: z.number().int().min(0).max(65535).default(8086),
  host: z.string().min(1).default("127.0.0.1"),
  nodeId: z.string().regex(
    /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/,
    "expected 1-64 letters, digits, '.', '_' or '-'",
  )
    .optional(),
  dataDir: z.string().min(1).default("./data"),
  kv: z.string().min(1).optional(),
  plugins: z.array(z.string().min(1)).default([]),
  pluginsDir: z.string().min(1).default("./plugins.d"),
  transport: z.string().min(1).optional(),
  /** Transports to load besides `transport`; several are routed by `routing` (docs/transports.md). */
  transports: z.array(z.string().min(1)).default([]),
  consensus: z.string().min(1).optional(),
  balancer: z.string().min(1).optional(),
  peers: z.array(z.url({ protocol: /^(https?|wss?)$/ })).default([]),
  logLevel: z.enum(LOG_LEVELS).default("info"),
  shutdownTimeoutMs: z.number().int().min(0).max(600_000).default(10_000),
  pluginStartTimeoutMs: z.number().int().min(1).max(600_000).default(10_000),
  /** Config per plugin name, validated against each plugin's own schema. */
  pluginConfig: z.record(z.string(), z.unknown()).default({}),
  /** Trust level per plugin name (default: trusted for built-ins, worker otherwise). */
  pluginTrust: z.record(z.string().min(1), z.enum(TRUST_LEVELS)).default({}),
  /** Deno permissions granted per plugin name to its sandbox (none by default). */
  pluginGrants: z.record(z.string().min(1), permissionSpecSchema).default({}),
  /** Pinned digest per plugin specifier as written in plugins (`sha256-<base64>`, SRI form). */
  pluginIntegrity: z.record(
    z.string().min(1),
    z.string().refine(isIntegrity, INTEGRITY_HINT),
  ).default({}),
  /** Load https:, http:, npm: and jsr: plugins that have no pluginIntegrity entry. */
  allowUnpinnedPlugins: z.boolean().default(false),
  /** Hot swap a plugin loaded from a local file when the file changes. */
  watchPlugins: z.boolean().default(false),
  logStream: z.strictObject({
    replay: z.number().int().min(0).max(100_000).default(100),
    heartbeatMs: z.number().int().min(0).default(30_000),
    maxBufferedBytes: z.number().int().min(1024).default(1 << 20),
  }).prefault({}),
  tasks: z.strictObject({
    /** Task handlers running at once on this node. */
    concurrency: z.number().int().min(1).max(1000).default(8),
    /** Lease per task; renewed every half lease while it runs. */
    leaseMs: z.number().int().min(100).max(3_600_000).default(30_000),
    /** Attempts before a task is dead. */
    maxAttempts: z.number().int().min(1).max(100).default(3),
    /** Largest task result stored (in KV chunks); a larger one fails its task at once. */
    maxResultBytes: z.number().int().min(1024).max(64 << 20).default(4 << 20),
    /** 0: a submit or completion returns once durable. N: opt-in group commit; a crash loses at most those of the last N ms (docs/state.md). */
    commitWindowMs: z.number().int().min(0).max(60_000).default(0),
  }).prefault({}),
  http: z.strictObject({
    /** Origins allowed by CORS (e.g. "https://ops.example.com"); empty = no CORS. */
    corsOrigins: z.array(z.url()).default([]),
    /** Largest request body on any route; larger gets 413. */
    bodyLimitBytes: z.number().int().min(1024).max(64 << 20).default(1 << 20),
    /** Open connections at once, WebSockets included; more are refused with 503 (default: from the open-file limit, see docs/http.md). */
    maxConnections: z.number().int().min(1).max(1_000_000).optional(),
    /** Open connections from one client IP (IPv6 by /64) (default: a quarter of maxConnections). */
    maxConnectionsPerIp: z.number().int().min(1).max(1_000_000).optional(),
    /** A connection must send a whole request head this soon after opening. */
    headTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
    /** A keep-alive connection with no request in flight closes after this long. */
    idleTimeoutMs: z.number().int().min(100).max(3_600_000).default(60_000),
  }).prefault({}),
  health: z.strictObject({
    /** Results are reused for this long so probes cannot overload plugins. */
    cacheMs: z.number().int().min(0).max(60_000).default(1000),
  }).prefault({}),
  auth: z.strictObject({
    /** `iss` of issued tokens and the only one accepted. */
    issuer: z.string().min(1).max(256).default("plexus"),
    /** `aud` of issued tokens and the only one accepted. */
    audience: z.string().min(1).max(256).default("plexus-api"),
    /** Leeway for `exp`/`nbf`/`iat`, seconds (at most 60). */
    clockToleranceS: z.number().int().min(0).max(60).default(30),
    /** Oldest acceptable RFC 9421 `created`, seconds. */
    signatureMaxAgeSec: z.number().int().min(1).max(3600).default(300),
    /** Revocations made on another node take effect here within this many ms (0: every request reads KV). */
    revocationRefreshMs: z.number().int().min(0).max(60_000).default(100),
    /** Refuse RFC 9421 signatures without a `nonce` (each nonce is accepted once). */
    requireNonce: z.boolean().default(true),
    /** Trusted-key lookups are reused this long (a removed key works elsewhere at most this long). */
    keyCacheMs: z.number().int().min(0).max(300_000).default(5000),
    /** `token`: `/ws` needs a viewer token like `/api/v1`; `open`: a token is optional. */
    logStream: z.enum(["open", "token"]).default("open"),
    /** Sign responses to requests carrying `Accept-Signature` with the node key. */
    signResponses: z.boolean().default(true),
    /** A dashboard session unused this long ends (docs/console.md). */
    sessionIdleMs: z.number().int().min(60_000).max(86_400_000).default(
      3_600_000,
    ),
    /** A dashboard session ends this long after its login, used or not. */
    sessionMaxMs: z.number().int().min(60_000).max(30 * 86_400_000).default(
      43_200_000,
    ),
  }).prefault({}),
  rateLimit: z.strictObject({
    /** Off only for benchmarks and closed test rigs. */
    enabled: z.boolean().default(true),
    /** Per client IP (IPv6 by /64), before authentication. */
    ip: rateLimitSchema(200, 400),
    /** Per authenticated principal (`sub`). */
    principal: rateLimitSchema(100, 200),
    /** WebSocket handshakes per client IP. */
    wsHandshake: rateLimitSchema(5, 20),
  }).prefault({}),
  /**
   * Loads the agent gateway plugin (`builtin:gateway`: `WS /ws/agent`,
   * `/api/v1/agents`); its settings are `pluginConfig.gateway`
   * (docs/gateway.md).
   */
  gateway: z.boolean().default(true),
  /**
   * Loads the operator's console (`builtin:dashboard`: the page at `/` and
   * `/ui/`, sign-in, `WS /ws/dashboard`); its settings are
   * `pluginConfig.dashboard` (docs/console.md).
   */
  dashboard: z.boolean().default(true),
  /** End-to-end sealed payloads on the node's transports (docs/security.md, "Sealed payloads"). */
  sealed: z.strictObject({
    /** Topic patterns whose payloads are sealed (first match applies), each encrypted to its recipients (`node:ID`, `agent:ID`). */
    topics: z.array(
      z.strictObject({
        pattern: z.string().min(1).max(512).regex(
          /^([^.\s*>]+|\*)(\.([^.\s*>]+|\*))*(\.>)?$|^>$/,
          "expected a topic pattern like 'orders.*' or 'billing.>'",
        ),
        recipients: z.array(
          z.string().regex(
            /^node:[A-Za-z0-9][A-Za-z0-9._-]{0,63}$|^agent:[A-Za-z0-9:_-]{1,128}$/,
            "expected 'node:' and a node id, or 'agent:' and an agent id",
          ),
        ).min(1).max(64),
        /** Agent recipients: the backend channel (`sealed` → `backend.{id}.sealed`) nodes forward the still-sealed message on, and the topics they subscribe to for it (default: the pattern). */
        deliver: z.strictObject({
          channel: z.string().regex(
            /^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$/,
            "expected a channel name like 'sealed'",
          ),
          topics: z.array(
            z.string().min(1).max(512).regex(
              /^[^.\s*>]+(\.[^.\s*>]+)*$/,
              "expected a topic without wildcards",
            ),
          ).max(64).optional(),
        }).optional(),
      }).refine(
        (r) => r.deliver || !r.recipients.some((id) => id.startsWith("agent:")),
        "a rule with 'agent:' recipients needs 'deliver': {\"channel\": …}",
      ),
    ).max(256).default([]),
    /** Oldest envelope timestamp a receiver accepts, ms before now; ids seen within it are refused as replays. */
    replayWindowMs: z.number().int().min(1000).max(86_400_000).default(300_000),
    /** How far a sealed envelope's timestamp may be ahead of the receiver's clock. */
    clockSkewMs: z.number().int().min(0).max(600_000).default(30_000),
    /** Message ids remembered per subscription for the replay check. */
    maxSeen: z.number().int().min(1000).max(10_000_000).default(100_000),
    /** Messages sealed under one session key before a new one is wrapped to the recipients. */
    rotateAfterMessages: z.number().int().min(1).max(1 << 30).default(100_000),
    /** Longest use of one session key. */
    rotateAfterMs: z.number().int().min(1000).max(86_400_000).default(600_000),
    /** Messages for agents a node hands to its gateway at once per topic; above 1 an agent may get them out of order. */
    forwardMaxInFlight: z.number().int().min(1).max(256).default(1),
    /** Seal and open on a worker thread of each sealed transport (pays only where a core is spare; docs/security.md, "What runs where"). */
    worker: z.boolean().default(false),
  }).prefault({}),
  /** Which transport each topic goes to, and its delivery guarantee (docs/transports.md). */
  routing: z.strictObject({
    /** Ordered rules; the first whose pattern matches a topic names its transport. */
    rules: z.array(z.strictObject({
      pattern: z.string().min(1).max(512).regex(
        /^([^.\s*>]+|\*)(\.([^.\s*>]+|\*))*(\.>)?$|^>$/,
        "expected a topic pattern like 'orders.*' or 'billing.>'",
      ),
      transport: z.string().min(1),
      delivery: z.enum(["at-most-once", "at-least-once", "exactly-once"])
        .optional(),
    })).max(256).default([]),
    /** Transport of topics no rule matches (default: the first transport loaded). */
    default: z.string().min(1).optional(),
    /** Guarantee of topics no rule matches (default: the transport's own, unchecked). */
    defaultDelivery: z.enum(["at-most-once", "at-least-once", "exactly-once"])
      .optional(),
    /** How long a handled message id is remembered to drop its duplicates (in memory; in KV for exactly-once). */
    dedupWindowMs: z.number().int().min(1000).max(86_400_000).default(600_000),
  }).prefault({}),
});

function rateLimitSchema(rate: number, burst: number) {
  return z.strictObject({
    /** Requests admitted per `periodMs`, sustained. */
    rate: z.number().int().min(1).max(1_000_000).default(rate),
    periodMs: z.number().int().min(1).max(86_400_000).default(1000),
    /** Requests admitted back to back. */
    burst: z.number().int().min(1).max(1_000_000).default(burst),
  }).prefault({});
}

/** A rate limit: a token bucket refilled with `rate` per `periodMs`. */
export interface RateLimit {
  /** Requests admitted per `periodMs`, sustained. */
  rate: number;
  /** The refill period, ms. @default {1000} */
  periodMs: number;
  /** Requests admitted back to back. */
  burst: number;
}

/**
 * Validated configuration: what {@linkcode loadConfig} returns, with every
 * default filled in. docs/configuration.md describes each field (its flag,
 * environment variable and default).
 */
export interface Config {
  /** HTTP port (0 picks a free one). */
  port: number;
  /** Interface to listen on. */
  host: string;
  /** This node's id (generated once and kept in the data directory when unset). */
  nodeId?: string;
  /** Where the node keeps its files. */
  dataDir: string;
  /** Deno KV: a file path, `:memory:`, or a KV Connect URL (default: `plexus.kv` in `dataDir`). */
  kv: string;
  /** Plugin specifiers to load. */
  plugins: string[];
  /** Drop-in folder scanned for plugins at start. */
  pluginsDir: string;
  /** Built-in transport plugin to load. */
  transport?: string;
  /** Transports to load besides `transport`; several are routed by `routing` (docs/transports.md). */
  transports: string[];
  /** Built-in consensus plugin to load. */
  consensus?: string;
  /** Built-in balancing strategy to load. */
  balancer?: string;
  /** Other nodes' URLs. */
  peers: string[];
  /** The lowest level logged. */
  logLevel: LogLevel;
  /** Ms in-flight requests get to finish on SIGTERM. */
  shutdownTimeoutMs: number;
  /** Ms each plugin's setup may take. */
  pluginStartTimeoutMs: number;
  /** Config per plugin name, validated against each plugin's own schema. */
  pluginConfig: Record<string, unknown>;
  /**
   * Trust level per plugin name: `trusted` (in the node's process), `worker`
   * (a Deno Worker with only the granted permissions) or `process` (a child
   * `deno run`). A plugin not named here is `trusted` when built in
   * (`builtin:`) and `worker` otherwise (docs/sandbox.md).
   */
  pluginTrust: Record<string, "trusted" | "worker" | "process">;
  /**
   * Deno permissions the operator grants per plugin name to its sandbox; a
   * sandboxed plugin starts only when its manifest's `permissions` are all
   * granted here (docs/sandbox.md).
   */
  pluginGrants: Record<string, PermissionSpec>;
  /**
   * Pinned digest per plugin specifier as written in `plugins`
   * (`sha256-<base64>`, SRI form; `sha384-`/`sha512-` too; for `npm:` the
   * package's npm integrity): the plugin loads only when its bytes match, and
   * is refused before any of its code runs otherwise (docs/sandbox.md).
   */
  pluginIntegrity: Record<string, string>;
  /**
   * Load `https:`, `http:`, `npm:` and `jsr:` plugins that have no
   * `pluginIntegrity` entry (refused by default).
   */
  allowUnpinnedPlugins: boolean;
  /**
   * Hot swap a plugin loaded from a local file (or a drop-in folder) when
   * its file changes (`deno task dev` turns it on; docs/hot-swap.md).
   */
  watchPlugins: boolean;
  /** The live log stream (`/ws`). */
  logStream: {
    /** Messages kept for replay to new clients. */
    replay: number;
    /** Heartbeat period in ms; 0 turns heartbeats off. */
    heartbeatMs: number;
    /** Unsent bytes a client may hold before it is closed as too slow. */
    maxBufferedBytes: number;
  };
  /** The task service. */
  tasks: {
    /** Task handlers running at once on this node. */
    concurrency: number;
    /** Lease per task; renewed every half lease while it runs. */
    leaseMs: number;
    /** Attempts before a task is dead. */
    maxAttempts: number;
    /** Largest task result stored (in KV chunks); a larger one fails its task at once. */
    maxResultBytes: number;
    /** 0: a submit or completion returns once durable. N: opt-in group commit; a crash loses at most those of the last N ms (docs/state.md). */
    commitWindowMs: number;
  };
  /** The HTTP server. */
  http: {
    /** Origins allowed by CORS (e.g. "https://ops.example.com"); empty = no CORS. */
    corsOrigins: string[];
    /** Largest request body on any route; larger gets 413. */
    bodyLimitBytes: number;
    /** Open connections at once, WebSockets included; more are refused with 503 (default: from the open-file limit, see docs/http.md). */
    maxConnections?: number;
    /** Open connections from one client IP (IPv6 by /64) (default: a quarter of maxConnections). */
    maxConnectionsPerIp?: number;
    /** A connection must send a whole request head this soon after opening. */
    headTimeoutMs: number;
    /** A keep-alive connection with no request in flight closes after this long. */
    idleTimeoutMs: number;
  };
  /** The health check. */
  health: {
    /** Results are reused for this long so probes cannot overload plugins. */
    cacheMs: number;
  };
  /** API authentication. */
  auth: {
    /** `iss` of issued tokens and the only one accepted. */
    issuer: string;
    /** `aud` of issued tokens and the only one accepted. */
    audience: string;
    /** Leeway for `exp`/`nbf`/`iat`, seconds (at most 60). */
    clockToleranceS: number;
    /** Oldest acceptable RFC 9421 `created`, seconds. */
    signatureMaxAgeSec: number;
    /** Revocations made on another node take effect here within this many ms (0: every request reads KV). */
    revocationRefreshMs: number;
    /** Refuse RFC 9421 signatures without a `nonce` (each nonce is accepted once). */
    requireNonce: boolean;
    /** Trusted-key lookups are reused this long (a removed key works elsewhere at most this long). */
    keyCacheMs: number;
    /** `token`: `/ws` needs a viewer token like `/api/v1`; `open`: a token is optional. */
    logStream: "open" | "token";
    /** Sign responses to requests carrying `Accept-Signature` with the node key. */
    signResponses: boolean;
    /** A dashboard session unused this long ends (docs/console.md). */
    sessionIdleMs: number;
    /** A dashboard session ends this long after its login, used or not. */
    sessionMaxMs: number;
  };
  /** Rate limits. */
  rateLimit: {
    /** Off only for benchmarks and closed test rigs. */
    enabled: boolean;
    /** Per client IP (IPv6 by /64), before authentication. */
    ip: RateLimit;
    /** Per authenticated principal (`sub`). */
    principal: RateLimit;
    /** WebSocket handshakes per client IP. */
    wsHandshake: RateLimit;
  };
  /**
   * Loads the agent gateway plugin (`builtin:gateway`: `WS /ws/agent`,
   * `/api/v1/agents`); its settings are `pluginConfig.gateway`
   * (docs/gateway.md).
   */
  gateway: boolean;
  /**
   * Loads the operator's console (`builtin:dashboard`: the page at `/` and
   * `/ui/`, sign-in, `WS /ws/dashboard`); its settings are
   * `pluginConfig.dashboard` (docs/console.md).
   */
  dashboard: boolean;
  /** End-to-end sealed payloads on the node's transports (docs/security.md, "Sealed payloads"). */
  sealed: {
    /** Topic patterns whose payloads are sealed (first match applies), each encrypted to its recipients (`node:ID`, `agent:ID`). */
    topics: {
      pattern: string;
      recipients: string[];
      /** Agent recipients: the backend channel the still-sealed message is forwarded on, and the topics forwarders subscribe to. */
      deliver?: { channel: string; topics?: string[] };
    }[];
    /** Oldest envelope timestamp a receiver accepts, ms before now; ids seen within it are refused as replays. */
    replayWindowMs: number;
    /** How far a sealed envelope's timestamp may be ahead of the receiver's clock. */
    clockSkewMs: number;
    /** Message ids remembered per subscription for the replay check. */
    maxSeen: number;
    /** Messages sealed under one session key before a new one is wrapped to the recipients. */
    rotateAfterMessages: number;
    /** Longest use of one session key. */
    rotateAfterMs: number;
    /** Messages for agents a node hands to its gateway at once per topic; above 1 an agent may get them out of order. */
    forwardMaxInFlight: number;
    /** Seal and open on a worker thread of each sealed transport (pays only where a core is spare). */
    worker: boolean;
  };
  /** Which transport each topic goes to, and its delivery guarantee (docs/transports.md). */
  routing: {
    /** Ordered rules; the first whose pattern matches a topic names its transport. */
    rules: {
      pattern: string;
      transport: string;
      delivery?: "at-most-once" | "at-least-once" | "exactly-once";
    }[];
    /** Transport of topics no rule matches (default: the first transport loaded). */
    default?: string;
    /** Guarantee of topics no rule matches (default: the transport's own, unchecked). */
    defaultDelivery?: "at-most-once" | "at-least-once" | "exactly-once";
    /** How long a handled message id is remembered to drop its duplicates (in memory; in KV for exactly-once). */
    dedupWindowMs: number;
  };
}

// Config is written out for the documentation and for JSR; this fails type
// checking when it and the schema drift apart.
type Same<A, B> = [A] extends [B] ? [B] extends [A] ? true : false : false;
type Assert<T extends true> = T;
type _ConfigMatchesSchema = Assert<
  Same<Config, z.output<typeof configSchema> & { kv: string }>
>;

/**
 * `list`: repeatable, each value split on commas. `map`: the same, each item
 * `NAME=VALUE`, filling a record per name (a later source overrides one name,
 * not the whole record).
 */
type FlagType = "string" | "integer" | "list" | "boolean" | "map";

/** One command-line flag. */
export interface FlagSpec {
  /** Flag name without dashes. */
  flag: string;
  /** Config field it sets. */
  key: keyof z.input<typeof configSchema>;
  type: FlagType;
  env?: string;
  /** What `--help` and errors call the value (`map`: the part after `=`). @default {"VALUE"} */
  valueName?: string;
  /** Default as shown by `--help`. */
  shownDefault: string;
  help: string;
}

/** Every `serve` flag. */
export const FLAGS: FlagSpec[] = [
  {
    flag: "port",
    key: "port",
    type: "integer",
    env: "PLEXUS_PORT",
    shownDefault: "8086",
    help: "HTTP port (0 picks a free one)",
  },
  {
    flag: "host",
    key: "host",
    type: "string",
    env: "PLEXUS_HOST",
    shownDefault: "127.0.0.1",
    help: "interface to listen on",
  },
  {
    flag: "node-id",
    key: "nodeId",
    type: "string",
    env: "PLEXUS_NODE_ID",
    shownDefault: "generated once, kept in DATA_DIR/node-id",
    help: "this node's id",
  },
  {
    flag: "kv",
    key: "kv",
    type: "string",
    env: "PLEXUS_KV",
    shownDefault: "./data/plexus.kv",
    help:
      "Deno KV: a file path, :memory:, or a KV Connect URL (token in DENO_KV_ACCESS_TOKEN)",
  },
  {
    flag: "plugin",
    key: "plugins",
    type: "list",
    env: "PLEXUS_PLUGINS",
    shownDefault: "none",
    help: "plugin specifier, repeatable (env: comma-separated)",
  },
  {
    flag: "plugins-dir",
    key: "pluginsDir",
    type: "string",
    env: "PLEXUS_PLUGINS_DIR",
    shownDefault: "./plugins.d",
    help: "drop-in folder scanned for plugins at start",
  },
  {
    flag: "transport",
    key: "transports",
    type: "list",
    env: "PLEXUS_TRANSPORT",
    shownDefault: "none",
    help:
      "transport to load, repeatable (env: comma-separated); several are routed by the config's routing rules",
  },
  {
    flag: "consensus",
    key: "consensus",
    type: "string",
    env: "PLEXUS_CONSENSUS",
    shownDefault: "none",
    help: "built-in consensus plugin to load",
  },
  {
    flag: "balancer",
    key: "balancer",
    type: "string",
    env: "PLEXUS_BALANCER",
    shownDefault: "none",
    help: "built-in balancing strategy to load",
  },
  {
    flag: "gateway",
    key: "gateway",
    type: "boolean",
    env: "PLEXUS_GATEWAY",
    shownDefault: "on",
    help:
      "load the agent gateway (WS /ws/agent, /api/v1/agents); --no-gateway runs without it",
  },
  {
    flag: "dashboard",
    key: "dashboard",
    type: "boolean",
    env: "PLEXUS_DASHBOARD",
    shownDefault: "on",
    help:
      "serve the operator's console at / and /ui/ (sign-in, live cluster view); --no-dashboard runs without it",
  },
  {
    flag: "peers",
    key: "peers",
    type: "list",
    env: "PLEXUS_PEERS",
    shownDefault: "none",
    help: "other nodes' URLs, comma-separated",
  },
  {
    flag: "data-dir",
    key: "dataDir",
    type: "string",
    env: "PLEXUS_DATA_DIR",
    shownDefault: "./data",
    help: "where the node keeps its files",
  },
  {
    flag: "log-level",
    key: "logLevel",
    type: "string",
    env: "PLEXUS_LOG_LEVEL",
    shownDefault: "info",
    help: "debug, info, warn or error",
  },
  {
    flag: "shutdown-timeout",
    key: "shutdownTimeoutMs",
    type: "integer",
    env: "PLEXUS_SHUTDOWN_TIMEOUT_MS",
    shownDefault: "10000",
    help: "ms in-flight requests get to finish on SIGTERM",
  },
  {
    flag: "plugin-start-timeout",
    key: "pluginStartTimeoutMs",
    type: "integer",
    env: "PLEXUS_PLUGIN_START_TIMEOUT_MS",
    shownDefault: "10000",
    help: "ms each plugin's setup may take",
  },
  {
    flag: "plugin-trust",
    key: "pluginTrust",
    type: "map",
    env: "PLEXUS_PLUGIN_TRUST",
    valueName: "LEVEL",
    shownDefault: "trusted for builtin:, else worker",
    help:
      "NAME=LEVEL: run plugin NAME trusted, worker or process (env: comma-separated)",
  },
  {
    flag: "allow-unpinned-plugins",
    key: "allowUnpinnedPlugins",
    type: "boolean",
    env: "PLEXUS_ALLOW_UNPINNED_PLUGINS",
    shownDefault: "off",
    help:
      "load https:, http:, npm: and jsr: plugins without a pluginIntegrity pin",
  },
  {
    flag: "watch-plugins",
    key: "watchPlugins",
    type: "boolean",
    env: "PLEXUS_WATCH_PLUGINS",
    shownDefault: "off (on in deno task dev)",
    help:
      "hot swap a plugin loaded from a local file when the file changes (docs/hot-swap.md)",
  },
];

/** Bad flags, environment or config: the CLI prints the message and exits 2. */
export class ConfigError extends Error {
  /** Always `"ConfigError"`. */
  override name = "ConfigError";
}

/** Where each top-level field's value came from, for error messages. */
type Origins = Map<string, string>;

function convert(spec: FlagSpec, raw: string, origin: string): unknown {
  if (spec.type === "list") {
    return raw.split(",").map((s) => s.trim()).filter(Boolean);
  }
  if (spec.type === "map") {
    const pairs: [string, string][] = [];
    for (const item of raw.split(",").map((s) => s.trim()).filter(Boolean)) {
      const m = /^([^=]+)=(.*)$/.exec(item);
      const name = m?.[1].trim(), value = m?.[2].trim();
      if (!name || !value) {
        throw new ConfigError(
          `${origin}: expected NAME=${
            spec.valueName ?? "VALUE"
          }, got '${item}'`,
        );
      }
      if (PROTOTYPE_KEYS.has(name)) {
        throw new ConfigError(
          `${origin}: name '${name}' is not allowed, got '${item}'`,
        );
      }
      pairs.push([name, value]);
    }
    return Object.fromEntries(pairs);
  }
  if (spec.type === "boolean") {
    const v = raw.trim().toLowerCase();
    if (["true", "1", "on", "yes"].includes(v)) return true;
    if (["false", "0", "off", "no"].includes(v)) return false;
    throw new ConfigError(`${origin}: expected true or false, got '${raw}'`);
  }
  if (spec.type === "integer") {
    if (!/^-?\d+$/.test(raw.trim())) {
      throw new ConfigError(`${origin}: expected an integer, got '${raw}'`);
    }
    return Number(raw);
  }
  return raw;
}

/** Options for {@linkcode loadConfig}. */
export interface LoadConfigOptions {
  /** The environment variables to read. @default {Deno.env.toObject()} */
  env?: Record<string, string | undefined>;
  /** Reads the config file; injectable for tests. */
  readFile?: (path: string) => string;
}

/** Result of parsing the command line. */
export type ParsedCommand =
  | { help: true }
  | { help: false; config: Config };

/**
 * Builds the configuration from `argv` (flags after the subcommand), the
 * environment and an optional JSON config file.
 *
 * @example Usage
 * ```ts
 * import { loadConfig } from "./config.ts";
 * const parsed = loadConfig(["--port", "9000"], { env: { PLEXUS_PORT: "8000" } });
 * if (!parsed.help) parsed.config.port; // 9000: flags beat the environment
 * ```
 */
export function loadConfig(
  argv: string[],
  options: LoadConfigOptions = {},
): ParsedCommand {
  const env = options.env ?? Deno.env.toObject();
  const readFile = options.readFile ??
    ((p: string) => Deno.readTextFileSync(p));
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: "boolean", short: "h" },
        config: { type: "string" },
        ...Object.fromEntries(
          FLAGS.flatMap((f): [
            string,
            { type: "boolean" | "string"; multiple?: boolean },
          ][] =>
            f.type === "boolean"
              ? [[f.flag, { type: "boolean" as const }], [
                `no-${f.flag}`,
                { type: "boolean" as const },
              ]]
              : [[f.flag, {
                type: "string" as const,
                multiple: f.type === "list" || f.type === "map",
              }]]
          ),
        ),
      },
    }));
  } catch (err) {
    throw new ConfigError(cliMessage(err as Error));
  }
  if (values.help) return { help: true };

  const merged: Record<string, unknown> = {};
  const origins: Origins = new Map();
  /**
   * Sets a field from the environment or a flag. A `map` flag overrides only
   * the names it gives (each remembered as `key.name` for error messages).
   */
  const set = (spec: FlagSpec, value: unknown, origin: string) => {
    if (spec.type !== "map") {
      merged[spec.key] = value;
      origins.set(spec.key, origin);
      return;
    }
    const before = merged[spec.key];
    const keep = before !== null && typeof before === "object" &&
        !Array.isArray(before)
      ? before
      : {};
    merged[spec.key] = { ...keep, ...value as Record<string, string> };
    if (keep !== before || !origins.has(spec.key)) {
      origins.set(spec.key, origin);
    }
    for (const name of Object.keys(value as object)) {
      origins.set(`${spec.key}.${name}`, origin);
    }
  };

  const file = (values.config as string | undefined) ?? env.PLEXUS_CONFIG;
  if (file) {
    let text: string;
    try {
      text = readFile(file);
    } catch (err) {
      throw new ConfigError(
        `--config: cannot read '${file}': ${(err as Error).message}`,
      );
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(
        `--config: '${file}' is not valid JSON: ${(err as Error).message}`,
      );
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      throw new ConfigError(
        `--config: '${file}' must hold a JSON object, got ${preview(data)}`,
      );
    }
    const polluting = prototypeKeyPath(data);
    if (polluting !== undefined) {
      throw new ConfigError(
        `config file ${file}: field '${polluting}' is not allowed (__proto__ and constructor keys are refused at any depth)`,
      );
    }
    for (const [k, v] of Object.entries(data)) {
      merged[k] = v;
      origins.set(k, `config file ${file}`);
    }
  }
  for (const spec of FLAGS) {
    const raw = spec.env ? env[spec.env] : undefined;
    if (raw === undefined || raw === "") continue;
    set(spec, convert(spec, raw, `env ${spec.env}`), `env ${spec.env}`);
  }
  for (const spec of FLAGS) {
    if (spec.type === "boolean") {
      const on = values[spec.flag], off = values[`no-${spec.flag}`];
      if (on && off) {
        throw new ConfigError(
          `--${spec.flag} and --no-${spec.flag} contradict each other`,
        );
      }
      if (on === undefined && off === undefined) continue;
      merged[spec.key] = Boolean(on);
      origins.set(spec.key, `flag --${on ? "" : "no-"}${spec.flag}`);
      continue;
    }
    const raw = values[spec.flag];
    if (raw === undefined) continue;
    const origin = `flag --${spec.flag}`;
    if (spec.type === "map") {
      for (const r of raw as string[]) {
        set(spec, convert(spec, r, origin), origin);
      }
      continue;
    }
    merged[spec.key] = Array.isArray(raw)
      ? raw.flatMap((r) => convert(spec, r, origin) as string[])
      : convert(spec, raw as string, origin);
    origins.set(spec.key, origin);
  }

  const gateway = merged.gateway;
  if (gateway !== null && typeof gateway === "object") {
    throw new ConfigError(
      `${
        origins.get("gateway") ?? "config"
      }: 'gateway' is now true or false (load the gateway plugin or not); its settings moved to 'pluginConfig.gateway' (docs/gateway.md)`,
    );
  }
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const more = parsed.error.issues.length > 1
      ? ` (and ${parsed.error.issues.length - 1} more)`
      : "";
    if (issue.code === "unrecognized_keys") {
      // Only the file can hold unknown fields: flags and env set known ones.
      throw new ConfigError(
        `${file ? `config file ${file}` : "config"}: ${
          unknownFields(issue.path, issue.keys)
        }${more}`,
      );
    }
    const top = String(issue.path[0] ?? "");
    const flag = FLAGS.find((f) => f.key === top);
    const field = issue.path.join(".") || "(root)";
    const origin = origins.get(issue.path.slice(0, 2).join(".")) ??
      origins.get(top);
    let seen: unknown = merged;
    for (const p of issue.path) {
      seen = (seen as Record<PropertyKey, unknown> | undefined)?.[p];
    }
    const name = origin?.startsWith("flag")
      ? `--${flag!.flag}`
      : origin?.startsWith("env")
      ? flag!.env
      : field;
    throw new ConfigError(
      `${name}: ${issue.message}, got ${preview(seen)}${
        origin ? ` from ${origin}` : ""
      }${name !== field ? ` (field '${field}')` : ""}${more}`,
    );
  }
  const config = parsed.data as Config;
  config.kv ??= join(config.dataDir, "plexus.kv");
  return { help: false, config };
}

const PROTOTYPE_KEYS = new Set(["__proto__", "constructor"]);

/** The dotted path of the first `__proto__` or `constructor` key in parsed JSON, if any. */
function prototypeKeyPath(data: unknown): string | undefined {
  // Iterative, so a deeply nested file cannot overflow the stack.
  const stack: { value: unknown; path: string }[] = [{ value: data, path: "" }];
  while (stack.length > 0) {
    const { value, path } = stack.pop()!;
    if (value === null || typeof value !== "object") continue;
    for (const [k, v] of Object.entries(value)) {
      const at = path ? `${path}.${k}` : k;
      if (PROTOTYPE_KEYS.has(k)) return at;
      stack.push({ value: v, path: at });
    }
  }
  return undefined;
}

/**
 * "unknown field 'plugin' (did you mean 'plugins'?)" for the keys zod did not
 * recognise at `path`, or the known fields there when none is close.
 */
function unknownFields(path: PropertyKey[], keys: string[]): string {
  const known = knownFields(path);
  const prefix = path.length ? `${path.join(".")}.` : "";
  const named = keys.map((k) => `'${prefix}${k}'`).join(", ");
  const hints = keys.flatMap((k) => {
    const near = closestField(k, known, path.length === 0);
    return near === undefined ? [] : [`'${prefix}${near}'`];
  });
  const hint = hints.length
    ? ` (did you mean ${hints.join(", ")}?)`
    : known.length
    ? ` (known here: ${known.join(", ")})`
    : "";
  return `unknown field${keys.length > 1 ? "s" : ""} ${named}${hint}`;
}

/** Field names the schema knows at `path` (an object section), else none. */
function knownFields(path: PropertyKey[]): string[] {
  let schema: z.ZodType | undefined = configSchema;
  for (const p of [...path, undefined]) {
    while (
      schema instanceof z.ZodDefault || schema instanceof z.ZodPrefault ||
      schema instanceof z.ZodOptional
    ) {
      schema = schema.unwrap() as z.ZodType;
    }
    if (schema instanceof z.ZodRecord && p !== undefined) {
      // Any key of a record (a plugin name): on to its value's fields.
      schema = schema.valueType as z.ZodType;
      continue;
    }
    if (!(schema instanceof z.ZodObject)) return [];
    if (p === undefined) return Object.keys(schema.shape);
    schema = schema.shape[String(p)] as z.ZodType | undefined;
  }
  return [];
}

/**
 * The known field `key` most likely meant: the field a flag of that name sets
 * (`plugin` → `plugins`), the camelCase of a kebab-case key, or the nearest
 * by edit distance (at most one edit per three characters).
 */
function closestField(
  key: string,
  known: string[],
  topLevel: boolean,
): string | undefined {
  if (topLevel) {
    const flag = FLAGS.find((f) => f.flag === key);
    if (flag) return flag.key;
  }
  const camel = key.replace(/[-_]+([a-z0-9])/gi, (_, c) => c.toUpperCase())
    .toLowerCase();
  const same = known.find((k) => k.toLowerCase() === camel);
  if (same) return same;
  let best: string | undefined;
  let bestDistance = Math.max(1, Math.floor(key.length / 3)) + 1;
  for (const k of known) {
    const d = editDistance(camel, k.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best;
}

/** Levenshtein distance with adjacent transpositions counted as one edit. */
function editDistance(a: string, b: string): number {
  const d = Array.from(
    { length: a.length + 1 },
    (_, i) => Array.from({ length: b.length + 1 }, (_, j) => i || j),
  );
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(
        d[i - 1][j] + 1,
        d[i][j - 1] + 1,
        d[i - 1][j - 1] + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.length][b.length];
}

/** One line for an error from `node:util`'s `parseArgs`, naming the flag. */
export function cliMessage(err: Error): string {
  const unknown = /Unknown option '([^']+)'/.exec(err.message);
  if (unknown) return `unknown flag ${unknown[1]} (see --help)`;
  const missing = /Option '([^']+?)(?: <value>)?' argument missing/.exec(
    err.message,
  );
  if (missing) {
    return `flag ${missing[1].split(",").pop()!.trim()} needs a value`;
  }
  const ambiguous = /Option '([^']+)' argument is ambiguous/.exec(err.message);
  if (ambiguous) {
    return `flag ${ambiguous[1]} needs a value (write ${
      ambiguous[1]
    }=VALUE for one starting with '-')`;
  }
  const positional = /Unexpected argument '([^']+)'/.exec(err.message);
  if (positional) return `unexpected argument '${positional[1]}' (see --help)`;
  return err.message.split("\n")[0];
}

/** The `serve --help` text, built from {@linkcode FLAGS}. */
export function serveHelp(): string {
  const rows = [
    ...FLAGS.map((f) => [
      f.type === "boolean"
        ? `--[no-]${f.flag}`
        : `--${f.flag}${
          f.type === "map"
            ? ` NAME=${f.valueName ?? "VALUE"}...`
            : f.type === "list"
            ? ` ${f.valueName ?? "VALUE"}...`
            : ` ${f.valueName ?? "VALUE"}`
        }`,
      `${f.help}; default ${f.shownDefault}${f.env ? `; env ${f.env}` : ""}`,
    ]),
    [
      "--config FILE.json",
      "JSON config file (any field of the schema); default none; env PLEXUS_CONFIG",
    ],
    ["-h, --help", "show this help"],
  ];
  return formatHelp(
    "Usage: plexus [serve] [flags]",
    "Runs one Plexus node. Precedence: defaults < config file < environment < flags.",
    rows,
  );
}

/** A subcommand's `--help` text: usage, one line about it, aligned flag rows. */
export function formatHelp(
  usage: string,
  about: string,
  rows: string[][],
): string {
  const width = Math.max(...rows.map((r) => r[0].length)) + 2;
  return [
    usage,
    "",
    about,
    "",
    "Flags:",
    ...rows.map(([a, b]) => `  ${a.padEnd(width)}${b}`),
  ].join("\n");
}
