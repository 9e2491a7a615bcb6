/**
 * Answers as Server-Sent Events on a real node with SDK agents: partial
 * output reaches the client while the agent still works, the stream ends
 * with the verification block, and a client that goes away cancels the
 * agent's work.
 *
 * @module
 */
import assert from "node:assert/strict";
import { nodeClient } from "../../core/http/node_client.ts";
import { advertised, promptAgent, startPromptNode } from "./_node.ts";

const tmp = () => Deno.makeTempDir({ prefix: "plexus-prompts-sse-" });

interface Event {
  event: string;
  data: Record<string, unknown>;
}

/** Reads SSE events from `res` one at a time. */
function events(res: Response) {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return {
    async next(): Promise<Event | undefined> {
      for (;;) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
          const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "null");
          return { event, data };
        }
        const { value, done } = await reader.read();
        if (done) return undefined;
        buffer += value;
      }
    },
    cancel: () => reader.cancel(),
  };
}

function post(
  url: string,
  token: string,
  body: unknown,
  signal?: AbortSignal,
) {
  return fetch(`${url}/send/prompt`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      accept: "text/event-stream",
    },
    body: JSON.stringify(body),
    signal,
  });
}

Deno.test("prompt streaming: partial output arrives while the agent works; the stream ends with the verification block", async () => {
  await using node = await startPromptNode({ dir: await tmp() });
  const key = await node.enrolled();
  const go = Promise.withResolvers<void>();
  await using _root = await promptAgent(node, key, "prompt", async (hop) => {
    await hop.stream("Hel");
    await go.promise; // the client must see "Hel" before the rest exists
    await hop.stream("lo");
    return "Hello";
  });
  const token = await node.handle.security.jwt.issue("sse", "analyst");
  const res = await post(node.url, token, { prompt: "hi", sageEnabled: true });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /^text\/event-stream/);
  assert.equal(res.headers.get("x-cache"), "MISS");
  const stream = events(res);
  const seen: Event[] = [];
  for (;;) {
    const e = await stream.next();
    assert.ok(e, "the stream ended before the first partial");
    seen.push(e);
    if (e.event === "partial") break;
  }
  assert.deepEqual(seen.at(-1)!.data, { hop: 0, agent: key.id, delta: "Hel" });
  assert.ok(seen.some((e) => e.event === "log" && e.data.to === key.id));
  go.resolve();
  for (;;) {
    const e = await stream.next();
    if (!e) break;
    seen.push(e);
  }
  const partials = seen.filter((e) => e.event === "partial").map((e) =>
    e.data.delta
  );
  assert.deepEqual(partials, ["Hel", "lo"]);
  const last = seen.at(-1)!;
  assert.equal(last.event, "result");
  assert.equal(last.data.response, "Hello");
  assert.equal(last.data.cache, "MISS");
  const v = last.data.sageVerification as {
    verified: boolean;
    chain: unknown[];
  };
  assert.equal(v.verified, true);
  assert.equal(v.chain.length, 1);
});

Deno.test("prompt streaming: a client that disconnects cancels the agent's work", async () => {
  await using node = await startPromptNode({ dir: await tmp() });
  const key = await node.enrolled();
  const cancelled = Promise.withResolvers<string>();
  await using _root = await promptAgent(node, key, "prompt", async (hop) => {
    await hop.stream("working");
    // Works until told to stop (or 20 s, which fails the test below).
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 20_000);
      hop.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        cancelled.resolve(String((hop.signal.reason as Error).message));
        resolve();
      });
    });
    return "never read";
  });
  const token = await node.handle.security.jwt.issue("sse", "analyst");
  const client = new AbortController();
  const res = await post(
    node.url,
    token,
    { prompt: "long job", sageEnabled: false },
    client.signal,
  );
  const stream = events(res);
  for (;;) {
    const e = await stream.next();
    assert.ok(e);
    if (e.event === "partial") break;
  }
  client.abort();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reason = await Promise.race([
    cancelled.promise,
    new Promise<never>((_, reject) =>
      timer = setTimeout(
        () => reject(new Error("the agent was not cancelled within 10 s")),
        10_000,
      )
    ),
  ]);
  clearTimeout(timer);
  assert.equal(reason, "cancelled by the node");
});

Deno.test("prompt streaming: a cache hit is one result event with X-Cache: HIT", async () => {
  await using node = await startPromptNode({ dir: await tmp() });
  const key = await node.enrolled();
  await using _root = await promptAgent(node, key, "prompt", () => "cached");
  const first = await node.prompt({ prompt: "same", sageEnabled: false });
  assert.equal(first.headers.get("x-cache"), "MISS");
  const token = await node.handle.security.jwt.issue("sse", "analyst");
  const res = await post(node.url, token, {
    prompt: "same",
    sageEnabled: false,
  });
  assert.equal(res.headers.get("x-cache"), "HIT");
  const stream = events(res);
  const e = await stream.next();
  assert.equal(e?.event, "result");
  assert.equal(e?.data.response, "cached");
  assert.equal(e?.data.cache, "HIT");
  assert.equal(await stream.next(), undefined);
});

Deno.test("prompt streaming across nodes: the root agent on the other node streams its pieces in order to the client of the node answering the prompt", async () => {
  const dir = await tmp();
  const prompts = { advertiseMs: 100 };
  await using a = await startPromptNode({ dir, name: "a", prompts });
  await using b = await startPromptNode({ dir, name: "b", prompts });
  const key = await a.enrolled();
  const go = Promise.withResolvers<void>();
  await using _root = await promptAgent(b, key, "prompt", async (hop) => {
    await hop.stream("Hel");
    await go.promise; // the client on a must see "Hel" before the rest exists
    for (const piece of ["l", "o", ",", " ", "w", "orld"]) {
      await hop.stream(piece);
    }
    return "Hello, world";
  });
  await advertised(dir, { b: ["prompt"] });
  const token = await a.handle.security.jwt.issue("sse", "analyst");
  const res = await post(a.url, token, { prompt: "hi", sageEnabled: true });
  assert.equal(res.status, 200);
  const stream = events(res);
  const seen: Event[] = [];
  for (;;) {
    const e = await stream.next();
    assert.ok(e, "the stream ended before the first partial");
    seen.push(e);
    if (e.event === "partial") break;
  }
  assert.deepEqual(seen.at(-1)!.data, { hop: 0, agent: key.id, delta: "Hel" });
  go.resolve();
  for (;;) {
    const e = await stream.next();
    if (!e) break;
    seen.push(e);
  }
  const partials = seen.filter((e) => e.event === "partial").map((e) =>
    e.data.delta
  );
  // Every piece, in order, before the result.
  assert.deepEqual(partials.join("|"), "Hel|l|o|,| |w|orld");
  const last = seen.at(-1)!;
  assert.equal(last.event, "result");
  assert.equal(last.data.response, "Hello, world");
  const v = last.data.sageVerification as {
    verified: boolean;
    chain: { agent: string }[];
  };
  assert.equal(v.verified, true);
  assert.deepEqual(v.chain.map((l) => l.agent), [key.id]);
  assert.ok(
    seen.some((e) =>
      e.event === "log" && e.data.from === "node:a" && e.data.to === "node:b"
    ),
  );

  // Pieces are taken only from the node the prompt sent a hop to, while it runs.
  const asB = nodeClient(b.handle.security);
  const send = (body: unknown) =>
    asB(`${a.url}/api/v1/prompts/partial`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const pieces = [{ hop: 0, delta: "forged" }];
  const over = await send({
    requestId: (last.data.metadata as { requestId: string }).requestId,
    agentId: key.id,
    pieces,
    via: "b",
  });
  assert.deepEqual(await over.json(), { taken: 0 }, "the prompt is over");
  const posing = await send({
    requestId: "r",
    agentId: key.id,
    pieces,
    via: "c",
  });
  assert.equal(posing.status, 403);
  await posing.body?.cancel();
  const viewer = await a.api("/api/v1/prompts/partial", {
    method: "POST",
    body: JSON.stringify({ requestId: "r", agentId: key.id, pieces, via: "b" }),
  });
  assert.equal(viewer.status, 403, "a user's token is not a node's signature");
  await viewer.body?.cancel();
});

Deno.test("prompt streaming across nodes: a client that disconnects from the node answering the prompt cancels the root agent on the other node", async () => {
  const dir = await tmp();
  const prompts = { advertiseMs: 100 };
  await using a = await startPromptNode({ dir, name: "a", prompts });
  await using b = await startPromptNode({ dir, name: "b", prompts });
  const key = await a.enrolled();
  const cancelled = Promise.withResolvers<string>();
  await using _root = await promptAgent(b, key, "prompt", async (hop) => {
    await hop.stream("working");
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 20_000);
      hop.signal.addEventListener("abort", () => {
        clearTimeout(timer);
        cancelled.resolve(String((hop.signal.reason as Error).message));
        resolve();
      });
    });
    return "never read";
  });
  await advertised(dir, { b: ["prompt"] });
  const token = await a.handle.security.jwt.issue("sse", "analyst");
  const client = new AbortController();
  const res = await post(
    a.url,
    token,
    { prompt: "long job", sageEnabled: false },
    client.signal,
  );
  const stream = events(res);
  for (;;) {
    const e = await stream.next();
    assert.ok(e);
    if (e.event === "partial") {
      assert.equal(e.data.delta, "working");
      break;
    }
  }
  client.abort();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reason = await Promise.race([
    cancelled.promise,
    new Promise<never>((_, reject) =>
      timer = setTimeout(
        () => reject(new Error("the agent on b was not cancelled within 10 s")),
        10_000,
      )
    ),
  ]);
  clearTimeout(timer);
  assert.equal(reason, "cancelled by the node");
});
