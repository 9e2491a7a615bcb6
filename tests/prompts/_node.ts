/**
 * Real nodes with the prompt service for the prompt tests: in-process
 * nodes (real HTTP, gateway and KV file, shareable by several nodes) with
 * `builtin:prompts` loaded, and SDK agents that answer prompts over the
 * gateway.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "../../core/config.ts";
import { type NodeHandle, startNode } from "../../core/node.ts";
import type { Role } from "../../core/security/roles.ts";
import { BUILTINS } from "../../builtins.ts";
import { AgentClient, type AgentKey, generateAgentKey } from "../../sdk/mod.ts";
import { type PromptHandler, servePrompts } from "../../sdk/prompt_agent.ts";

/** A node with the prompt service. */
export interface PromptNode {
  handle: NodeHandle;
  url: string;
  /** fetch with a Bearer token for `role` (default analyst). */
  api(path: string, init?: RequestInit, role?: Role): Promise<Response>;
  /** POSTs a prompt body to `path` (default /send/prompt) with a token. */
  prompt(
    body: unknown,
    headers?: Record<string, string>,
    path?: string,
  ): Promise<
    { status: number; headers: Headers; body: Record<string, unknown> }
  >;
  /** Enrols a fresh key with `roles` (default worker). */
  enrolled(roles?: string[]): Promise<AgentKey>;
  /** The value of a metric series (summed over matching label sets). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options of {@linkcode startPromptNode}. */
export interface PromptNodeOptions {
  dir: string;
  name?: string;
  /** `pluginConfig.prompts`. */
  prompts?: Record<string, unknown>;
  /** `pluginConfig.gateway`. */
  gateway?: Record<string, unknown>;
  /** KV file name in `dir`, or a KV URL. @default {"shared.kv"} */
  kv?: string;
  /** What reaches `WS /ws` (routing records are `info`). @default {"error"} */
  logLevel?: "info" | "warn" | "error";
  /** `--balancer NAME`. */
  balancer?: string;
  /** More `pluginConfig` entries (a balancer's, say). */
  pluginConfig?: Record<string, unknown>;
  /** More top-level config fields (`health`, say). */
  config?: Record<string, unknown>;
}

/** Starts a node on port 0 with `builtin:prompts`. */
export async function startPromptNode(
  options: PromptNodeOptions,
): Promise<PromptNode> {
  const name = options.name ?? "a";
  const file = join(options.dir, `${name}.json`);
  await Deno.writeTextFile(
    file,
    JSON.stringify({
      ...options.config,
      pluginConfig: {
        ...options.pluginConfig,
        gateway: options.gateway ?? {},
        prompts: options.prompts ?? {},
      },
      rateLimit: {
        wsHandshake: { rate: 10_000, burst: 10_000 },
        ip: { rate: 100_000, burst: 100_000 },
        principal: { rate: 100_000, burst: 100_000 },
      },
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
    "--plugin",
    "builtin:prompts",
    "--config",
    file,
    "--log-level",
    options.logLevel ?? "error",
    ...options.balancer ? ["--balancer", options.balancer] : [],
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
    role: Role = "analyst",
  ) => {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${await token(role)}`);
    return await fetch(`${handle.url}${path}`, { ...init, headers });
  };
  return {
    handle,
    url: handle.url,
    api,
    async prompt(body, headers = {}, path = "/send/prompt") {
      const res = await api(path, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
      return {
        status: res.status,
        headers: res.headers,
        body: await res.json(),
      };
    },
    async enrolled(roles = ["worker"]) {
      const key = await generateAgentKey();
      const res = await api("/api/v1/agents", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          agentId: key.id,
          publicKey: key.publicKey,
          roles,
        }),
      }, "operator");
      assert.equal(res.status, 201, await res.text());
      return key;
    },
    async metric(metric, labels = {}) {
      const text = await (await fetch(`${handle.url}/metrics`)).text();
      const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
      let sum = 0;
      for (const line of text.split("\n")) {
        const m = /^([a-z_]+)(\{([^}]*)\})? (\S+)$/.exec(line);
        if (!m || m[1] !== metric) continue;
        const have = (m[3] ?? "").split(",");
        if (want.every((w) => have.includes(w))) sum += Number(m[4]);
      }
      return sum;
    },
    [Symbol.asyncDispose]: () => handle.shutdown(),
  };
}

/** The 32-byte seed of `key`. */
export function seedOf(key: AgentKey): Uint8Array {
  return Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" });
}

/**
 * An SDK agent on `node` answering `capability` with `handler`, connected and
 * subscribed; `via` connects it through another URL (a proxy in front of the
 * node).
 */
export async function promptAgent(
  node: PromptNode,
  key: AgentKey,
  capability: string,
  handler: PromptHandler,
  options: { signWith?: Uint8Array; via?: string } = {},
): Promise<AgentClient> {
  const agent = new AgentClient({
    url: options.via ?? node.url,
    id: key.id,
    privateKey: seedOf(key),
    backoff: { initialMs: 100, maxMs: 500 },
  });
  const connected = agent.connect();
  await servePrompts(agent, capability, handler, {
    key: options.signWith ?? seedOf(key),
  });
  await connected;
  return agent;
}

/** Reads `WS /ws` until `pick` returns a value (or `ms` pass). */
export function logStream(url: string) {
  const ws = new WebSocket(`${url.replace("http", "ws")}/ws`);
  const messages: { type: string; payload: Record<string, unknown> }[] = [];
  let changed = Promise.withResolvers<void>();
  ws.onmessage = (e) => {
    messages.push(JSON.parse(e.data));
    changed.resolve();
    changed = Promise.withResolvers();
  };
  const open = new Promise((r) => (ws.onopen = r));
  return {
    open,
    messages,
    /** Resolves once `pick` finds what it wants in the messages so far. */
    async until<T>(pick: (m: typeof messages) => T | undefined, ms = 5000) {
      const end = Date.now() + ms;
      for (;;) {
        const v = pick(messages);
        if (v !== undefined) return v;
        const left = end - Date.now();
        if (left <= 0) throw new Error("timed out waiting on WS /ws");
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          changed.promise,
          new Promise((r) => (timer = setTimeout(r, left))),
        ]);
        clearTimeout(timer);
      }
    },
    close: () =>
      new Promise<void>((r) => {
        if (ws.readyState === WebSocket.CLOSED) return r();
        ws.onclose = () => r();
        ws.close();
      }),
  };
}

/**
 * Waits until each node's advertisement in the shared KV (`shared.kv` in
 * `dir`) lists its capabilities.
 */
export async function advertised(dir: string, want: Record<string, string[]>) {
  const kv = await Deno.openKv(join(dir, "shared.kv"));
  try {
    for (const end = Date.now() + 10_000;;) {
      const ads = await kv.getMany<{ capabilities: string[] }[]>(
        Object.keys(want).map((id) => ["plugins", "prompts", "nodes", id]),
      );
      const ready = Object.values(want).every((caps, i) =>
        caps.every((c) => ads[i].value?.capabilities.includes(c))
      );
      if (ready) return;
      if (Date.now() > end) {
        throw new Error(`advertisements never listed ${JSON.stringify(want)}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    kv.close();
  }
}
