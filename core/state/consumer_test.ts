import assert from "node:assert/strict";
import { consume } from "./consumer.ts";
import { DurableQueue } from "./queue.ts";

async function waitFor(
  pred: () => Promise<boolean> | boolean,
  what: string,
  ms = 15_000,
) {
  const deadline = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("consumer: acks with the handler's result, naks throws until the DLQ, honours term", async () => {
  const kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<{ n: number; mode: "ok" | "throw" | "term" }>(
    kv,
    "work",
  );
  const errors: unknown[] = [];
  const c = consume(q, (d) => {
    if (d.payload.mode === "throw") throw new Error(`cannot do ${d.payload.n}`);
    if (d.payload.mode === "term") return d.term("refused");
    return Promise.resolve(d.payload.n * 2);
  }, {
    concurrency: 3,
    leaseMs: 5000,
    onError: (e) => errors.push(e),
    minPollMs: 5,
    maxPollMs: 50,
  });
  try {
    const ok = await q.enqueue({ n: 21, mode: "ok" });
    const bad = await q.enqueue({ n: 1, mode: "throw" }, {
      maxAttempts: 2,
      backoff: { baseMs: 10, maxMs: 10 },
    });
    const refused = await q.enqueue({ n: 2, mode: "term" });
    await waitFor(
      async () => (await q.get(bad.id))?.state === "dead",
      "the failing message to be dead",
    );
    await waitFor(
      async () => (await q.get(ok.id))?.state === "done",
      "the good message",
    );
    assert.equal((await q.get(ok.id))?.result, 42);
    assert.deepEqual((await q.get(bad.id))?.errors.map((e) => e.error), [
      "cannot do 1",
      "cannot do 1",
    ]);
    await waitFor(
      async () => (await q.get(refused.id))?.state === "dead",
      "the refused message",
    );
    assert.equal((await q.get(refused.id))?.deadReason, "refused");
    assert.deepEqual(errors, []);
  } finally {
    await c.stop();
    kv.close();
  }
});

Deno.test("consumer: runs at most `concurrency` handlers and stop() waits for running ones", async () => {
  const kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<number>(kv, "bounded");
  let active = 0;
  let peak = 0;
  let finished = 0;
  const c = consume(q, async () => {
    peak = Math.max(peak, ++active);
    await new Promise((r) => setTimeout(r, 20));
    active--;
    finished++;
  }, { concurrency: 2, minPollMs: 5 });
  try {
    for (let i = 0; i < 10; i++) await q.enqueue(i);
    await waitFor(() => finished >= 3, "some work");
  } finally {
    await c.stop();
  }
  assert.equal(peak, 2);
  assert.equal(
    active,
    0,
    "stop() returned only after running handlers finished",
  );
  kv.close();
});

Deno.test("consumer: a long handler keeps its lease, so no other consumer takes the message", async () => {
  const kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<string>(kv, "long");
  const seenBy: string[] = [];
  const handler = (name: string) => async () => {
    seenBy.push(name);
    await new Promise((r) => setTimeout(r, 2500));
  };
  const a = consume(q, handler("a"), {
    leaseMs: 1000,
    consumer: "a",
    sweepEveryMs: 50,
  });
  const { id } = await q.enqueue("slow job");
  await waitFor(() => seenBy.length === 1, "the first claim");
  const b = consume(q, handler("b"), {
    leaseMs: 1000,
    consumer: "b",
    sweepEveryMs: 50,
  });
  try {
    await waitFor(
      async () => (await q.get(id))?.state === "done",
      "the slow job",
    );
    assert.deepEqual(seenBy, ["a"]);
    assert.equal((await q.get(id))?.attempts, 1);
  } finally {
    await a.stop();
    await b.stop();
    kv.close();
  }
});

Deno.test("consumer: a result the queue refuses dead-letters its message and is reported to onError", async () => {
  const kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<number>(kv, "big", { maxResultBytes: 1024 });
  const errors: unknown[] = [];
  const c = consume(q, (d) => Promise.resolve("x".repeat(d.payload)), {
    onError: (e) => errors.push(e),
    minPollMs: 5,
    maxPollMs: 50,
  });
  try {
    const big = await q.enqueue(4096);
    const small = await q.enqueue(10);
    await waitFor(
      async () =>
        (await q.get(big.id))?.state === "dead" &&
        (await q.get(small.id))?.state === "done",
      "the big result dead, the small one done",
    );
    await waitFor(() => errors.length > 0, "onError");
    assert.equal((errors[0] as Error).name, "UnstorableResultError");
    assert.match((errors[0] as Error).message, /over the limit of 1024 bytes/);
  } finally {
    await c.stop();
    kv.close();
  }
});

Deno.test("consumer: a handler may ack through its second argument; the consumer does not ack again", async () => {
  const kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<number>(kv, "early");
  const errors: unknown[] = [];
  const settledInside: boolean[] = [];
  const c = consume(q, async (d, ack) => {
    await ack(`acked ${d.payload}`);
    settledInside.push(d.settled);
    return "returned after the ack";
  }, { onError: (e) => errors.push(e), minPollMs: 5, maxPollMs: 50 });
  try {
    const ids = await Promise.all([1, 2, 3].map((n) => q.enqueue(n)));
    await waitFor(
      async () =>
        (await Promise.all(ids.map(({ id }) => q.get(id)))).every((m) =>
          m?.state === "done"
        ),
      "the three messages done",
    );
    for (const [i, { id }] of ids.entries()) {
      assert.equal((await q.get(id))?.result, `acked ${i + 1}`);
    }
    assert.deepEqual(settledInside, [true, true, true]);
    assert.deepEqual(errors, []);
  } finally {
    await c.stop();
    kv.close();
  }
});
