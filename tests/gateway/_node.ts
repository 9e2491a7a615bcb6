/**
 * In-process nodes for the gateway tests and the suites built on the
 * gateway (tests/prompts/_node.ts adds the prompt service): real HTTP and
 * WebSocket servers on loopback (`startNode`), a KV file in a temporary
 * folder (shareable by several nodes) or a KV URL, and helpers for the
 * agent API.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "../../core/config.ts";
import { type NodeHandle, startNode } from "../../core/node.ts";
import type { Role } from "../../core/security/roles.ts";
import type { AgentKey } from "./_raw_client.ts";
import { BUILTINS } from "../../builtins.ts";
import { type Gateway, localGateway } from "../../gateway/mod.ts";

/** A test node and its helpers. */
export interface TestNode {
  handle: NodeHandle;
  /** The node's gateway plugin, whole (local kicks, connection counts). */
  gateway: Gateway;
  url: string;
  /** `ws://…/ws/agent`. */
  ws: string;
  /** fetch with a Bearer token for `role` (default operator). */
  api(path: string, init?: RequestInit, role?: Role): Promise<Response>;
  /** POST JSON with a token; returns status and parsed body. */
  post(
    path: string,
    body: unknown,
    role?: Role,
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  /** Enrols `agent` with `roles` (default `agent`), as an operator. */
  enrol(
    agent: Pick<AgentKey, "id" | "publicKey">,
    roles?: string[],
  ): Promise<void>;
  /** The value of a metric series in the Prometheus text (summed over matching label sets). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  shutdown(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options for {@linkcode startTestNode}. */
export interface TestNodeOptions {
  /** Folder for the KV file and data dirs. */
  dir: string;
  name?: string;
  /** The gateway plugin's config (`pluginConfig.gateway`). */
  gateway?: Record<string, unknown>;
  /** KV file name inside `dir` (nodes sharing it share state), or a KV URL. @default {"shared.kv"} */
  kv?: string;
  /** More plugins to load (`--plugin`), e.g. `builtin:prompts`. */
  plugins?: string[];
  /** More `pluginConfig` entries (beside `gateway`). */
  pluginConfig?: Record<string, unknown>;
  /** More top-level config fields (`health`, say). */
  config?: Record<string, unknown>;
  /** `rateLimit` config. @default {{ wsHandshake: { rate: 10000, burst: 10000 } }} */
  rateLimit?: Record<string, unknown>;
  /** `--log-level` (what reaches `WS /ws`). @default {"error"} */
  logLevel?: "debug" | "info" | "warn" | "error";
  /** `--balancer NAME`. */
  balancer?: string;
  /** `--consensus NAME`, e.g. `kv-lease`. */
  consensus?: string;
  /** The role of `api`'s token when a call names none. @default {"operator"} */
  role?: Role;
}

/** Starts a node on port 0 with relaxed handshake rate limits. */
export async function startTestNode(
  options: TestNodeOptions,
): Promise<TestNode> {
  const name = options.name ?? "a";
  const file = join(options.dir, `${name}.json`);
  await Deno.writeTextFile(
    file,
    JSON.stringify({
      ...options.config,
      pluginConfig: {
        ...options.pluginConfig,
        gateway: options.gateway ?? {},
      },
      rateLimit: options.rateLimit ??
        { wsHandshake: { rate: 10_000, burst: 10_000 } },
    }),
  );
  const kv = options.kv ?? "shared.kv";
  const parsed = loadConfig([
    "--port",
    "0",
    "--node-id",
    name,
    "--kv",
    /^https?:/.test(kv) ? kv : join(options.dir, kv),
    "--data-dir",
    join(options.dir, name),
    "--plugins-dir",
    join(options.dir, "none"),
    ...(options.plugins ?? []).flatMap((p) => ["--plugin", p]),
    "--config",
    file,
    "--log-level",
    options.logLevel ?? "error",
    ...options.balancer ? ["--balancer", options.balancer] : [],
    ...options.consensus ? ["--consensus", options.consensus] : [],
  ], { env: {} });
  if (parsed.help) throw new Error("unreachable");
  const handle = await startNode(parsed.config, {
    sinks: [],
    builtins: BUILTINS,
  });
  const tokens = new Map<string, Promise<string>>();
  const token = (role: Role) => {
    if (!tokens.has(role)) {
      tokens.set(role, handle.security.jwt.issue(`test-${role}`, role));
    }
    return tokens.get(role)!;
  };
  const api = async (
    path: string,
    init: RequestInit = {},
    role: Role = options.role ?? "operator",
  ) => {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${await token(role)}`);
    return await fetch(`${handle.url}${path}`, { ...init, headers });
  };
  const post = async (path: string, body: unknown, role?: Role) => {
    const res = await api(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    }, role);
    return { status: res.status, body: await res.json() };
  };
  return {
    handle,
    gateway: localGateway(handle.kernel),
    url: handle.url,
    ws: `${handle.url.replace("http", "ws")}/ws/agent`,
    api,
    post,
    async enrol(agent, roles = ["agent"]) {
      const r = await post("/api/v1/agents", {
        agentId: agent.id,
        publicKey: agent.publicKey,
        roles,
      }, "operator");
      assert.equal(r.status, 201, JSON.stringify(r.body));
    },
    async metric(metric, labels = {}) {
      const text = await (await fetch(`${handle.url}/metrics`)).text();
      const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
      let sum = 0;
      for (const line of text.split("\n")) {
        if (!line.startsWith(metric)) continue;
        const m = /^([a-z_]+)(\{([^}]*)\})? (\S+)$/.exec(line);
        if (!m || m[1] !== metric) continue;
        const have = (m[3] ?? "").split(",");
        if (want.every((w) => have.includes(w))) sum += Number(m[4]);
      }
      return sum;
    },
    shutdown: () => handle.shutdown(),
    [Symbol.asyncDispose]: () => handle.shutdown(),
  };
}

/** Polls `check` until it returns true (or a truthy value). */
export async function until<T>(
  check: () => Promise<T> | T,
  what: string,
  ms = 5000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
