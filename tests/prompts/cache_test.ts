/**
 * The prompt cache and degradation on real nodes sharing one KV file: an
 * answer given without SAGE on one node is a hit on the other, SAGE answers
 * are never cached, a stale answer stands in when no agent can answer, and
 * a burst of 1,000 prompts meets a bounded queue while the node stays
 * healthy.
 *
 * @module
 */
import assert from "node:assert/strict";
import { promptAgent, startPromptNode } from "./_node.ts";

const tmp = () => Deno.makeTempDir({ prefix: "plexus-prompts-cache-" });

Deno.test("prompt cache: an answer without SAGE on one node is a hit on another node sharing the KV", async () => {
  const dir = await tmp();
  await using a = await startPromptNode({ dir, name: "a" });
  await using b = await startPromptNode({ dir, name: "b" });
  const rootKey = await a.enrolled();
  let calls = 0;
  await using _root = await promptAgent(a, rootKey, "prompt", (hop) => {
    calls++;
    return `answer ${calls} to ${hop.prompt}`;
  });
  const miss = await a.prompt({
    prompt: "Book a Room",
    sageEnabled: false,
    scenario: "hotel",
  });
  assert.equal(miss.status, 200, JSON.stringify(miss.body));
  assert.equal(miss.headers.get("x-cache"), "MISS");

  // Node b has no agent at all: the answer comes from the shared cache.
  const hit = await b.prompt(
    { prompt: "  book a   room ", scenario: "hotel" },
    { "X-SAGE-Enabled": "false" },
  );
  assert.equal(hit.status, 200, JSON.stringify(hit.body));
  assert.equal(hit.headers.get("x-cache"), "HIT");
  assert.equal(hit.body.response, "answer 1 to Book a Room");
  const meta = hit.body.metadata as Record<string, unknown>;
  assert.equal(meta.cached, true);
  assert.equal(meta.agent, rootKey.id);
  assert.notEqual(
    meta.requestId,
    (miss.body.metadata as Record<string, unknown>).requestId,
  );
  assert.equal(calls, 1);
  assert.equal(
    await b.metric("plexus_prompts_cache_total", { result: "hit" }),
    1,
  );
  // A hit is answered without waiting for its audit record's commit, but
  // it is audited: a later call on b waits for its own record, and b's
  // records are committed in order, so the hit's is stored by then.
  const later = await b.prompt({ prompt: "x", sageEnabled: true });
  assert.equal(later.status, 503, JSON.stringify(later.body));
  const audit = await (await b.api("/api/v1/audit", {}, "admin")).json() as {
    path: string;
    status: number;
    correlationId: string;
  }[];
  const hitRecord = audit.find((r) =>
    r.correlationId === hit.headers.get("x-request-id")
  );
  assert.deepEqual(
    [hitRecord?.path, hitRecord?.status],
    ["/send/prompt", 200],
    JSON.stringify(audit),
  );

  // Another scenario is another key.
  const other = await b.prompt({
    prompt: "Book a room",
    scenario: "order",
    sageEnabled: false,
  });
  assert.equal(other.status, 503, JSON.stringify(other.body));

  // A caller-chosen key set: the same prompt for another user is a miss.
  const u1 = await a.prompt(
    { prompt: "hi", sageEnabled: false, metadata: { userId: "u1" } },
    { "X-Cache-Key": "userId" },
  );
  assert.equal(u1.headers.get("x-cache"), "MISS");
  const u2 = await a.prompt(
    { prompt: "hi", sageEnabled: false, metadata: { userId: "u2" } },
    { "X-Cache-Key": "userId" },
  );
  assert.equal(u2.headers.get("x-cache"), "MISS");
  const u1again = await b.prompt(
    { prompt: "hi", sageEnabled: false, metadata: { userId: "u1" } },
    { "X-Cache-Key": "userId" },
  );
  assert.equal(u1again.headers.get("x-cache"), "HIT");
  assert.equal(u1again.body.response, u1.body.response);

  // Cache-Control: no-cache asks the agent again.
  const fresh = await a.prompt(
    { prompt: "Book a room", scenario: "hotel", sageEnabled: false },
    { "Cache-Control": "no-cache" },
  );
  assert.equal(fresh.headers.get("x-cache"), "MISS");
  assert.match(String(fresh.body.response), /^answer \d+ to Book a room$/);
  assert.notEqual(fresh.body.response, miss.body.response);

  // The last call before a shutdown: its lingering record is stored first.
  const last = await b.prompt({
    prompt: "Book a room",
    scenario: "hotel",
    sageEnabled: false,
  });
  assert.equal(last.headers.get("x-cache"), "HIT");
  await b.shutdown();
  const after = await (await a.api("/api/v1/audit", {}, "admin")).json() as {
    correlationId: string;
  }[];
  assert.ok(
    after.some((r) => r.correlationId === last.headers.get("x-request-id")),
    "the hit's record was stored before the node closed its KV",
  );
});

Deno.test("prompt cache: SAGE answers are never cached", async () => {
  const dir = await tmp();
  await using a = await startPromptNode({ dir, name: "a" });
  await using b = await startPromptNode({ dir, name: "b" });
  const rootKey = await a.enrolled();
  await using _root = await promptAgent(a, rootKey, "prompt", () => "signed");
  const r = await a.prompt({ prompt: "x", sageEnabled: true });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.headers.get("x-cache"), "MISS");
  const again = await b.prompt({ prompt: "x", sageEnabled: true });
  assert.equal(again.status, 503, JSON.stringify(again.body));
  const plain = await b.prompt({ prompt: "x", sageEnabled: false });
  assert.equal(plain.status, 503, "a SAGE answer is not a non-SAGE hit");
});

Deno.test("prompt cache: with no agent up, a stale answer is served as STALE; past the max staleness, 503 with Retry-After", async () => {
  const dir = await tmp();
  await using a = await startPromptNode({ dir, name: "a" });
  await using b = await startPromptNode({
    dir,
    name: "b",
    prompts: { cache: { ttlMs: 1, maxStaleMs: 3_600_000 } },
  });
  await using c = await startPromptNode({
    dir,
    name: "c",
    prompts: { cache: { ttlMs: 1, maxStaleMs: 0 } },
  });
  const rootKey = await a.enrolled();
  await using _root = await promptAgent(a, rootKey, "prompt", () => "kept");
  const miss = await a.prompt({ prompt: "status?", sageEnabled: false });
  assert.equal(miss.headers.get("x-cache"), "MISS");
  await new Promise((r) => setTimeout(r, 5)); // older than b's and c's 1 ms TTL

  const stale = await b.prompt({ prompt: "status?", sageEnabled: false });
  assert.equal(stale.status, 200, JSON.stringify(stale.body));
  assert.equal(stale.headers.get("x-cache"), "STALE");
  assert.equal(stale.body.response, "kept");
  const meta = stale.body.metadata as Record<string, unknown>;
  assert.equal(meta.stale, true);
  assert.equal(meta.cached, true);
  assert.ok((meta.ageMs as number) >= 5);
  const logs = stale.body.logs as { level: string; content: string }[];
  assert.match(
    logs.at(-1)!.content,
    /stale cached answer .*no agent offering 'prompt'/,
  );
  assert.equal(logs.at(-1)!.level, "warn");

  const gone = await c.prompt({ prompt: "status?", sageEnabled: false });
  assert.equal(gone.status, 503, JSON.stringify(gone.body));
  assert.equal(gone.headers.get("retry-after"), "5");
});

Deno.test("prompts: 1,000 concurrent prompts meet a bounded queue (429/503), the rest are answered, the node stays healthy", async () => {
  await using node = await startPromptNode({
    dir: await tmp(),
    prompts: { maxConcurrent: 4, maxQueued: 4 },
  });
  const rootKey = await node.enrolled();
  await using _root = await promptAgent(
    node,
    rootKey,
    "prompt",
    async (hop) => {
      await new Promise((r) => setTimeout(r, 5));
      return `ok ${hop.prompt}`;
    },
  );
  const token = await node.handle.security.jwt.issue("burst", "analyst");
  const results = await Promise.all(
    Array.from({ length: 1000 }, async (_, i) => {
      try {
        const res = await fetch(`${node.url}/send/prompt`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${token}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({ prompt: `p${i}`, sageEnabled: true }),
        });
        const body = await res.json();
        return {
          status: res.status,
          retryAfter: res.headers.get("retry-after"),
          body,
        };
      } catch (err) {
        return { status: 0, retryAfter: null, body: String(err) };
      }
    }),
  );
  const by = new Map<number, number>();
  for (const r of results) by.set(r.status, (by.get(r.status) ?? 0) + 1);
  const summary = JSON.stringify(Object.fromEntries(by));
  for (const status of by.keys()) {
    assert.ok([200, 429, 503].includes(status), summary);
  }
  assert.ok((by.get(200) ?? 0) >= 8, summary);
  assert.ok((by.get(429) ?? 0) + (by.get(503) ?? 0) > 0, summary);
  for (const r of results) {
    if (r.status === 200) {
      assert.equal(r.body.response, `ok ${r.body.response.slice(3)}`);
    }
    if (r.status === 429) assert.equal(r.retryAfter, "1");
  }
  const health = await fetch(`${node.url}/health`);
  assert.equal(health.status, 200);
  assert.equal((await health.json()).status, "healthy");
  const after = await node.prompt({ prompt: "after", sageEnabled: true });
  assert.equal(after.status, 200, JSON.stringify(after.body));
});

Deno.test("prompt cache: with the root agent's circuit open (balancer plugin), the stale answer is served", async () => {
  await using node = await startPromptNode({
    dir: await tmp(),
    balancer: "round-robin",
    pluginConfig: {
      "round-robin": {
        circuitBreaker: {
          minRequests: 2,
          threshold: 0.5,
          halfOpenAfterMs: 600_000,
        },
      },
    },
  });
  const rootKey = await node.enrolled();
  let failing = false;
  await using _root = await promptAgent(node, rootKey, "prompt", () => {
    if (failing) throw new Error("model backend down");
    return "good answer";
  });
  const ok = await node.prompt({ prompt: "weather?", sageEnabled: false });
  assert.equal(ok.headers.get("x-cache"), "MISS");
  failing = true;
  // A failure the agent reports is an answer (502), not a reason for a
  // stand-in; with the success before it, half the calls failed: the
  // circuit opens (minRequests 2, threshold 0.5).
  const failed = await node.prompt(
    { prompt: "weather?", sageEnabled: false },
    { "Cache-Control": "no-cache" },
  );
  assert.equal(failed.status, 502, JSON.stringify(failed.body));
  assert.match(
    (failed.body.error as { message: string }).message,
    /model backend down/,
  );
  const stale = await node.prompt(
    { prompt: "weather?", sageEnabled: false },
    { "Cache-Control": "no-cache" },
  );
  assert.equal(stale.status, 200, JSON.stringify(stale.body));
  assert.equal(stale.headers.get("x-cache"), "STALE");
  assert.equal(stale.body.response, "good answer");
  const logs = stale.body.logs as { content: string }[];
  assert.match(logs.at(-1)!.content, /has its circuit open/);
  // SAGE on: nothing to stand in, 503.
  const none = await node.prompt({ prompt: "weather?", sageEnabled: true });
  assert.equal(none.status, 503, JSON.stringify(none.body));
  assert.match(
    (none.body.error as { message: string }).message,
    /circuit open/,
  );
});
