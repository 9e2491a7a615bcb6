/**
 * Real nodes for the debate tests: an in-process node (real HTTP, gateway,
 * KV file) with the sagas, events and debates plugins; SDK agents with demo
 * stances, in this process or as their own processes (to SIGKILL); and a
 * reader of `GET /api/v1/events` as Server-Sent Events.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { NodeHandle } from "../../core/node.ts";
import { startTestNode } from "../gateway/_node.ts";
import type { Role } from "../../core/security/roles.ts";
import { AgentClient, type AgentKey, generateAgentKey } from "../../sdk/mod.ts";
import {
  serveDebates,
  type Stance,
} from "../../plugins/debates/agents/stances.ts";
import type { DebateView } from "../../plugins/debates/mod.ts";

/** The demo agent script (its `agent` mode runs one agent). */
export const RUN = fileURLToPath(
  new URL("../../plugins/debates/agents/run.ts", import.meta.url),
);

/** A node with the debates plugin. */
export interface DebateNode {
  handle: NodeHandle;
  url: string;
  dir: string;
  /** fetch with a Bearer token for `role` (default analyst). */
  api(path: string, init?: RequestInit, role?: Role): Promise<Response>;
  /** POSTs a debate; status and JSON body. */
  post(
    body: unknown,
    role?: Role,
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  /** GET /api/v1/debates/{id}. */
  view(id: string): Promise<DebateView>;
  /** Enrols a fresh key with the worker role. */
  enrolled(): Promise<AgentKey>;
  /** The value of a metric series (summed over matching label sets). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** What the agent and event helpers need of a node (in this process or not). */
export type NodeLike = Pick<DebateNode, "url" | "dir" | "api" | "enrolled">;

/** Enrols a fresh key with the worker role through `api` (an operator's). */
export async function enrol(
  api: (path: string, init: RequestInit) => Promise<Response>,
): Promise<AgentKey> {
  const key = await generateAgentKey();
  const res = await api("/api/v1/agents", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      agentId: key.id,
      publicKey: key.publicKey,
      roles: ["worker"],
    }),
  });
  assert.equal(res.status, 201, await res.text());
  return key;
}

/** Options of {@linkcode startDebateNode}. */
export interface DebateNodeOptions {
  /** Node id. @default {"a"} */
  name?: string;
  /** Load kv-lease (short lease) so one node of several drives the sagas. */
  lease?: boolean;
}

/** Starts a node on port 0 in `dir` (KV `dir/shared.kv`) with sagas, events and debates. */
export async function startDebateNode(
  dir: string,
  options: DebateNodeOptions = {},
): Promise<DebateNode> {
  const node = await startTestNode({
    dir,
    name: options.name ?? "a",
    plugins: ["builtin:sagas", "builtin:events", "builtin:debates"],
    pluginConfig: {
      "kv-lease": { leaseMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 100 },
    },
    consensus: options.lease ? "kv-lease" : undefined,
    role: "analyst",
  });
  const api = node.api;
  return {
    handle: node.handle,
    url: node.url,
    dir,
    api,
    async post(body, role) {
      const res = await api("/api/v1/debates", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }, role);
      return { status: res.status, body: await res.json() };
    },
    async view(id) {
      const res = await api(`/api/v1/debates/${id}`);
      assert.equal(res.status, 200, await res.clone().text());
      return await res.json();
    },
    enrolled: () => enrol((path, init) => api(path, init, "operator")),
    metric: node.metric,
    [Symbol.asyncDispose]: () => node.shutdown(),
  };
}

/** An SDK agent in this process answering debates with `stance`. */
export async function debateAgent(
  node: DebateNode,
  stance: Stance,
): Promise<{ id: string; agent: AgentClient }> {
  const key = await node.enrolled();
  const agent = new AgentClient({
    url: node.url,
    id: key.id,
    privateKey: Uint8Array.fromBase64(key.privateKey, {
      alphabet: "base64url",
    }),
    backoff: { initialMs: 100, maxMs: 500 },
  });
  const connected = agent.connect();
  await serveDebates(agent, stance);
  await connected;
  return { id: key.id, agent };
}

/** A demo agent in its own process; `questions` fills with each question it printed. */
export interface AgentProcess {
  id: string;
  child: Deno.ChildProcess;
  questions: { debateId: string; round: number; role: string }[];
  /** Resolves when the agent has printed a question matching `pick`. */
  asked(
    pick: (q: { round: number; role: string }) => boolean,
  ): Promise<void>;
  kill(): Promise<void>;
}

/** Spawns `run.ts agent` with a fresh enrolled key; resolves once it is ready. */
export async function agentProcess(
  node: NodeLike,
  stance: Stance,
  args: string[] = [],
): Promise<AgentProcess> {
  const key = await node.enrolled();
  const file = join(node.dir, `${key.id.slice(-12)}.json`);
  await Deno.writeTextFile(file, JSON.stringify(key));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      "--allow-sys",
      "--allow-write",
      RUN,
      "agent",
      "--url",
      node.url,
      "--key",
      file,
      "--stance",
      stance,
      ...args,
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const questions: AgentProcess["questions"] = [];
  const waiters = new Set<() => void>();
  const lines = async (
    stream: ReadableStream<Uint8Array>,
    on: (line: string) => void,
  ) => {
    let buf = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        on(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
  };
  const ready = Promise.withResolvers<void>();
  let stderr = "";
  const reading = Promise.all([
    lines(child.stdout, (line) => {
      questions.push(JSON.parse(line));
      for (const w of [...waiters]) w();
    }),
    lines(child.stderr, (line) => {
      stderr += line + "\n";
      if (line.includes(" ready")) ready.resolve();
    }).then(() =>
      ready.reject(new Error(`the agent ended before it was ready:\n${stderr}`))
    ),
  ]);
  await ready.promise;
  return {
    id: key.id,
    child,
    questions,
    asked(pick) {
      return new Promise((resolve) => {
        const check = () => {
          if (!questions.some(pick)) return;
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      });
    },
    async kill() {
      try {
        child.kill("SIGKILL");
      } catch { /* gone already */ }
      await child.status;
      await reading.catch(() => {});
    },
  };
}

/** One event read from `GET /api/v1/events`. */
export interface SeenEvent {
  type: string;
  offset: string;
  data: Record<string, unknown>;
}

/**
 * Reads `GET /api/v1/events` as Server-Sent Events for debate `id` from the
 * start of the store; resolves with every event up to `debate.finished`.
 */
export async function followDebate(
  node: NodeLike,
  id: string,
  timeoutMs = 60_000,
): Promise<SeenEvent[]> {
  const filter = `data.debateId == ${JSON.stringify(id)}`;
  const res = await node.api(
    `/api/v1/events?from=start&filter=${encodeURIComponent(filter)}`,
    {
      headers: { accept: "text/event-stream" },
      signal: AbortSignal.timeout(timeoutMs),
    },
  );
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /text\/event-stream/);
  const seen: SeenEvent[] = [];
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        throw new Error("the event stream ended before debate.finished");
      }
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const fields = new Map<string, string>();
        for (const line of block.split("\n")) {
          const i = line.indexOf(": ");
          if (i > 0) fields.set(line.slice(0, i), line.slice(i + 2));
        }
        if (!fields.has("data")) continue;
        const event = JSON.parse(fields.get("data")!);
        seen.push({
          type: fields.get("event") ?? event.type,
          offset: fields.get("id") ?? "",
          data: event.data,
        });
        if (event.type === "debate.finished") return seen;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
