/**
 * Real nodes with the prompt service for the prompt tests: the gateway
 * tests' in-process node (`tests/gateway/_node.ts`: real HTTP, gateway and
 * KV file, shareable by several nodes) with `builtin:prompts` loaded, and
 * SDK agents that answer prompts over the gateway.
 *
 * @module
 */
import { join } from "node:path";
import type { Role } from "../../core/security/roles.ts";
import { AgentClient, type AgentKey, generateAgentKey } from "../../sdk/mod.ts";
import { type PromptHandler, servePrompts } from "../../sdk/prompt_agent.ts";
import { startTestNode, type TestNode } from "../gateway/_node.ts";

/** A node with the prompt service: the gateway tests' node, plus prompt helpers. */
export interface PromptNode extends TestNode {
  /** POSTs a prompt body to `path` (default /send/prompt) with an analyst's token. */
  prompt(
    body: unknown,
    headers?: Record<string, string>,
    path?: string,
  ): Promise<
    { status: number; headers: Headers; body: Record<string, unknown> }
  >;
  /** Enrols a fresh key with `roles` (default worker). */
  enrolled(roles?: string[]): Promise<AgentKey>;
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

/**
 * Starts a node on port 0 with `builtin:prompts` (through the gateway
 * tests' {@linkcode startTestNode}), rate limits out of the way and
 * `api` calling as an analyst (who may send prompts).
 */
export async function startPromptNode(
  options: PromptNodeOptions,
): Promise<PromptNode> {
  const node = await startTestNode({
    ...options,
    plugins: ["builtin:prompts"],
    pluginConfig: { ...options.pluginConfig, prompts: options.prompts ?? {} },
    rateLimit: {
      wsHandshake: { rate: 10_000, burst: 10_000 },
      ip: { rate: 100_000, burst: 100_000 },
      principal: { rate: 100_000, burst: 100_000 },
    },
    role: "analyst" satisfies Role,
  });
  return {
    ...node,
    async prompt(body, headers = {}, path = "/send/prompt") {
      const res = await node.api(path, {
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
      await node.enrol(key, roles);
      return key;
    },
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
