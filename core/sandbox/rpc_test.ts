import assert from "node:assert/strict";
import { createRpc, SandboxCallError } from "./rpc.ts";
import { PlexusError } from "../errors.ts";

function pair(handlers: Parameters<typeof createRpc>[1] = {}) {
  const { port1, port2 } = new MessageChannel();
  const server = createRpc(port1, handlers, { timeoutMs: 200 });
  const client = createRpc(port2, {}, { timeoutMs: 200 });
  return {
    server,
    client,
    [Symbol.dispose]() {
      server.close("done");
      client.close("done");
      port1.close();
      port2.close();
    },
  };
}

Deno.test("rpc: calls answer, notes arrive, and a typed error keeps its code, status and retryable", async () => {
  const notes: unknown[] = [];
  using p = pair({
    double: (x) => (x as number) * 2,
    note: (x) => void notes.push(x),
    refuse: () => {
      throw new PlexusError("too_busy", "busy", {
        status: 429,
        retryable: true,
      });
    },
  });
  assert.deepEqual(
    await Promise.all([1, 2, 3].map((n) => p.client.call("double", n))),
    [2, 4, 6],
  );
  p.client.notify("note", { a: 1 });
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(notes, [{ a: 1 }]);
  const err = await p.client.call("refuse").catch((e) => e);
  assert.ok(err instanceof SandboxCallError);
  assert.equal(err.code, "too_busy");
  assert.equal(err.status, 429);
  assert.equal(err.retryable, true);
  await assert.rejects(p.client.call("missing"), /no method 'missing'/);
});

Deno.test("rpc: a call past its deadline rejects with timeout; a value that cannot be cloned fails only its own call in a batch", async () => {
  using p = pair({
    slow: () => new Promise((r) => setTimeout(r, 1000)),
    echo: (x) => x,
  });
  const slow = await p.client
    .call<never>("slow", undefined, { timeoutMs: 50 })
    .catch((e: SandboxCallError) => e);
  assert.equal(slow.code, "timeout");
  assert.match(slow.message, /did not answer within 50 ms/);
  // Both posted in the same turn: one batch.
  const [bad, good] = await Promise.allSettled([
    p.client.call("echo", { f: () => 1 }),
    p.client.call("echo", "fine"),
  ]);
  assert.equal(bad.status, "rejected");
  assert.deepEqual(good, { status: "fulfilled", value: "fine" });
});

Deno.test("rpc: close rejects every waiting call and any later one", async () => {
  using p = pair({ never: () => new Promise(() => {}) });
  const waiting = p.client.call("never", undefined, { timeoutMs: 10_000 });
  p.client.close("sandbox ended");
  await assert.rejects(waiting, /sandbox ended/);
  await assert.rejects(p.client.call("never"), /sandbox ended/);
  assert.equal(p.client.pending, 0);
});

Deno.test("rpc: calls made in one event-loop iteration leave in one post; a post that is not a message list is reported and the channel keeps working", async () => {
  const { port1, port2 } = new MessageChannel();
  let posts = 0;
  const counted = {
    postMessage(m: unknown) {
      posts++;
      port2.postMessage(m);
    },
    get onmessage() {
      return port2.onmessage;
    },
    set onmessage(h) {
      port2.onmessage = h;
    },
  };
  const malformed: unknown[] = [];
  const server = createRpc(port1, { echo: (x) => x }, {
    onMalformed: (m) => void malformed.push(m),
  });
  const client = createRpc(counted, {});
  try {
    assert.deepEqual(
      await Promise.all([1, 2, 3].map((n) => client.call("echo", n))),
      [1, 2, 3],
    );
    assert.equal(posts, 1);
    port2.postMessage({ t: "call", id: 1, m: "echo", a: 1 });
    port2.postMessage([9, "junk"]);
    assert.equal(await client.call("echo", "still"), "still");
    assert.deepEqual(malformed, [{ t: "call", id: 1, m: "echo", a: 1 }, [
      9,
      "junk",
    ]]);
  } finally {
    server.close("done");
    client.close("done");
    port1.close();
    port2.close();
  }
});
