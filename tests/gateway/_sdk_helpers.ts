/**
 * Helpers for the agent SDK's end-to-end tests (tests/gateway/sdk_test.ts):
 * SDK clients with small reconnect delays, a message collector, agents
 * enrolled through the HTTP API of an in-process node or a real process,
 * and `main.ts` subcommands run as real processes.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  AgentClient,
  type AgentClientOptions,
  type AgentKey,
  type AgentMessage,
  generateAgentKey,
} from "../../sdk/mod.ts";
import { deadline, type PlexusProcess } from "../integration/_process.ts";
import type { TestNode } from "./_node.ts";

/** Reconnect delays small enough for tests (the SDK's default is 5 s → 60 s). */
export const TEST_BACKOFF = { initialMs: 100, maxMs: 500 } as const;

/** The 32-byte seed of `key`, as the SDK takes it. */
export function seedOf(key: AgentKey): Uint8Array {
  return Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" });
}

/** An SDK client for `key` on `url` (not connected yet), with {@linkcode TEST_BACKOFF}. */
export function sdkClient(
  url: string,
  key: AgentKey,
  options: Partial<AgentClientOptions> = {},
): AgentClient {
  return new AgentClient({
    url,
    id: key.id,
    privateKey: seedOf(key),
    backoff: TEST_BACKOFF,
    ...options,
  });
}

/** A fresh key enrolled on an in-process node through `POST /api/v1/agents`. */
export async function enrolledKey(
  n: TestNode,
  roles = ["agent"],
): Promise<AgentKey> {
  const key = await generateAgentKey();
  const r = await n.post("/api/v1/agents", {
    agentId: key.id,
    publicKey: key.publicKey,
    roles,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return key;
}

/** POSTs JSON to a node process with an operator token; status and parsed body. */
export async function postTo(
  p: PlexusProcess,
  path: string,
  body: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await p.api(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  }, "operator");
  return { status: res.status, body: await res.json() };
}

/** Enrols `key` on a node process. */
export async function enrolOn(
  p: PlexusProcess,
  key: AgentKey,
  roles = ["agent"],
): Promise<void> {
  const r = await postTo(p, "/api/v1/agents", {
    agentId: key.id,
    publicKey: key.publicKey,
    roles,
  });
  assert.equal(r.status, 201, JSON.stringify(r.body));
}

/** Collects what an SDK message handler receives. */
export class Inbox {
  readonly messages: AgentMessage[] = [];
  #wake?: () => void;

  /** The handler to pass to `subscribe`. */
  readonly handler = (m: AgentMessage): void => {
    this.messages.push(m);
    this.#wake?.();
  };

  /** The payloads received so far. */
  get payloads(): unknown[] {
    return this.messages.map((m) => m.payload);
  }

  /** Resolves once at least `n` messages arrived. */
  async waitFor(n: number, ms = 10_000): Promise<AgentMessage[]> {
    await deadline(
      (async () => {
        while (this.messages.length < n) {
          await new Promise<void>((r) => (this.#wake = r));
        }
      })(),
      ms,
      `${n} message(s) (have ${this.messages.length})`,
    );
    return this.messages;
  }
}

/** A `plexus_…` series' value in Prometheus text (the sum over matching label sets). */
export function metricValue(
  text: string,
  metric: string,
  labels: Record<string, string> = {},
): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== metric) continue;
    const have = (m[3] ?? "").split(",");
    if (want.every((w) => have.includes(w))) sum += Number(m[4]);
  }
  return sum;
}

/** Reads a stream as text lines as they arrive. */
export class LineReader {
  readonly lines: string[] = [];
  readonly done: Promise<void>;
  #wake?: () => void;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      let rest = "";
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        rest += chunk;
        let nl: number;
        while ((nl = rest.indexOf("\n")) >= 0) {
          this.lines.push(rest.slice(0, nl));
          rest = rest.slice(nl + 1);
          this.#wake?.();
        }
      }
      if (rest) this.lines.push(rest);
      this.#wake?.();
    })();
  }

  /** Resolves with the first line (seen or future) that matches `pred`. */
  async waitFor(
    pred: (line: string) => boolean,
    what: string,
    ms = 20_000,
  ): Promise<string> {
    let ended = false;
    this.done.then(() => {
      ended = true;
      this.#wake?.();
    });
    return await deadline(
      (async () => {
        for (;;) {
          const hit = this.lines.find(pred);
          if (hit !== undefined) return hit;
          if (ended) {
            throw new Error(
              `stream ended before ${what}:\n${this.lines.join("\n")}`,
            );
          }
          await new Promise<void>((r) => (this.#wake = r));
        }
      })(),
      ms,
      what,
    );
  }
}

export { freePort, runMain, spawnMain } from "../integration/_process.ts";
