import assert from "node:assert/strict";
import { join } from "node:path";
import { ManualClock } from "../clock.ts";
import { consume } from "./consumer.ts";
import { queueKeys } from "./keys.ts";
import {
  type Delivery,
  DurableQueue,
  LeaseLostError,
  UnstorableResultError,
} from "./queue.ts";
import { openStore } from "./store.ts";
import { countCommits } from "./_count_commits.ts";

async function setup(name = "jobs") {
  const kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(1_000_000);
  const q = new DurableQueue<string>(kv, name, { clock });
  return { kv, clock, q, [Symbol.dispose]: () => kv.close() };
}

const payloads = (ds: Delivery<string>[]) => ds.map((d) => d.payload);

Deno.test("queue: enqueue, claim, ack keeps the result and counts states", async () => {
  using t = await setup();
  const { id } = await t.q.enqueue("a");
  assert.equal((await t.q.get(id))?.state, "ready");
  const [d] = await t.q.claim(5, 1000, "w1");
  assert.equal(d.id, id);
  assert.equal(d.attempts, 1);
  assert.deepEqual((await t.q.stats()).inflight, 1);
  assert.equal((await t.q.get(id))?.consumer, "w1");
  await d.ack({ ok: 1 });
  const done = await t.q.get(id);
  assert.equal(done?.state, "done");
  assert.deepEqual(done?.result, { ok: 1 });
  assert.deepEqual(await t.q.stats(), {
    ready: 0,
    delayed: 0,
    inflight: 0,
    dead: 0,
    oldestReadyAgeMs: 0,
  });
  assert.deepEqual(await t.q.claim(5, 1000), []);
  await assert.rejects(d.ack(), /already settled/);
});

Deno.test("queue: strict priority among due messages, FIFO within a priority", async () => {
  using t = await setup();
  for (
    const [p, v] of [[1, "low-1"], [9, "top-1"], [4, "mid-1"], [9, "top-2"], [
      1,
      "low-2",
    ], [4, "mid-2"]] as const
  ) {
    await t.q.enqueue(v, { priority: p });
  }
  assert.deepEqual(payloads(await t.q.claim(3, 1000)), [
    "top-1",
    "top-2",
    "mid-1",
  ]);
  await t.q.enqueue("top-3", { priority: 9 });
  assert.deepEqual(payloads(await t.q.claim(10, 1000)), [
    "top-3",
    "mid-2",
    "low-1",
    "low-2",
  ]);
});

Deno.test("queue: a delayed message is not claimable until due and a sweep promotes it", async () => {
  using t = await setup();
  const { id } = await t.q.enqueue("later", { delayMs: 5000 });
  assert.equal((await t.q.get(id))?.state, "delayed");
  await t.clock.advance(4999);
  assert.deepEqual(await t.q.sweep(), { expired: 0, promoted: 0 });
  assert.deepEqual(await t.q.claim(1, 1000), []);
  await t.clock.advance(1);
  assert.deepEqual(await t.q.sweep(), { expired: 0, promoted: 1 });
  assert.deepEqual(payloads(await t.q.claim(1, 1000)), ["later"]);
});

Deno.test("queue: an idempotency key deduplicates within its window only", async () => {
  using t = await setup();
  const a = await t.q.enqueue("x", {
    idempotencyKey: "order-7",
    idempotencyWindowMs: 10_000,
  });
  const b = await t.q.enqueue("x again", {
    idempotencyKey: "order-7",
    idempotencyWindowMs: 10_000,
  });
  assert.deepEqual(b, { id: a.id, deduplicated: true });
  assert.equal((await t.q.stats()).ready, 1);
  await t.clock.advance(10_000);
  const c = await t.q.enqueue("x later", {
    idempotencyKey: "order-7",
    idempotencyWindowMs: 10_000,
  });
  assert.equal(c.deduplicated, false);
  assert.notEqual(c.id, a.id);
  // Concurrent enqueues with one key make exactly one message.
  const racing = await Promise.all(
    Array.from(
      { length: 8 },
      () => t.q.enqueue("r", { idempotencyKey: "race" }),
    ),
  );
  assert.equal(new Set(racing.map((r) => r.id)).size, 1);
  assert.equal(racing.filter((r) => !r.deduplicated).length, 1);
});

Deno.test("queue: an expired lease returns the message to ready and the old holder's ack fails", async () => {
  using t = await setup();
  await t.q.enqueue("job");
  const [first] = await t.q.claim(1, 1000, "w1");
  await t.clock.advance(999);
  assert.deepEqual(await t.q.sweep(), { expired: 0, promoted: 0 });
  await t.clock.advance(2);
  assert.deepEqual(await t.q.sweep(), { expired: 1, promoted: 0 });
  const msg = await t.q.get(first.id);
  assert.equal(msg?.state, "ready");
  assert.match(msg!.errors[0].error, /lease expired \(held by w1\)/);
  const [second] = await t.q.claim(1, 1000, "w2");
  assert.equal(second.attempts, 2);
  await assert.rejects(first.ack(), LeaseLostError);
  await second.ack();
  assert.equal((await t.q.get(first.id))?.state, "done");
});

Deno.test("queue: inProgress extends the lease past its first deadline", async () => {
  using t = await setup();
  await t.q.enqueue("long");
  const [d] = await t.q.claim(1, 1000);
  await t.clock.advance(800);
  await d.inProgress(1000);
  await t.clock.advance(900);
  assert.deepEqual(await t.q.sweep(), { expired: 0, promoted: 0 });
  await d.ack();
  assert.equal((await t.q.stats()).inflight, 0);
});

Deno.test("queue: nak with a delay waits that long; without one it backs off exponentially", async () => {
  using t = await setup();
  const { id } = await t.q.enqueue("flaky", {
    maxAttempts: 5,
    backoff: { baseMs: 100, maxMs: 250 },
  });
  let [d] = await t.q.claim(1, 1000);
  await d.nak(2000, "busy");
  assert.equal((await t.q.get(id))?.availableAt, t.clock.now() + 2000);
  await t.clock.advance(2000);
  await t.q.sweep();
  const seen: number[] = [];
  for (let i = 0; i < 3; i++) {
    [d] = await t.q.claim(1, 1000);
    const before = t.clock.now();
    await d.nak(undefined, `fail ${d.attempts}`);
    seen.push((await t.q.get(id))!.availableAt - before);
    await t.clock.advance(1000);
    await t.q.sweep();
  }
  assert.deepEqual(
    seen,
    [200, 250, 250],
    "attempts 2..4: 100*2^1, then capped at 250",
  );
  [d] = await t.q.claim(1, 1000);
  await d.nak(0, "again");
  assert.equal(
    (await t.q.get(id))?.state,
    "dead",
    "the 5th attempt was the last",
  );
});

Deno.test("queue: nak(0) makes the message ready at once", async () => {
  using t = await setup();
  await t.q.enqueue("now");
  const [d] = await t.q.claim(1, 1000);
  await d.nak(0);
  assert.equal((await t.q.claim(1, 1000))[0].attempts, 2);
});

Deno.test("queue: after max attempts the message is dead-lettered with its error history", async () => {
  using t = await setup();
  const { id } = await t.q.enqueue("poison", { maxAttempts: 3 });
  for (let i = 1; i <= 3; i++) {
    const [d] = await t.q.claim(1, 1000, `w${i}`);
    await d.nak(0, `boom ${i}`);
  }
  const dead = await t.q.get(id);
  assert.equal(dead?.state, "dead");
  assert.equal(dead?.deadReason, "max attempts (3) reached");
  assert.deepEqual(dead?.errors.map((e) => [e.attempt, e.error, e.consumer]), [
    [1, "boom 1", "w1"],
    [2, "boom 2", "w2"],
    [3, "boom 3", "w3"],
  ]);
  assert.deepEqual((await t.q.dlq()).map((m) => m.id), [id]);
  assert.equal((await t.q.stats()).dead, 1);
});

Deno.test("queue: a lease that expires on the last attempt dead-letters the message", async () => {
  using t = await setup();
  const { id } = await t.q.enqueue("hangs", { maxAttempts: 1 });
  await t.q.claim(1, 1000, "w1");
  await t.clock.advance(1001);
  assert.deepEqual(await t.q.sweep(), { expired: 1, promoted: 0 });
  const dead = await t.q.get(id);
  assert.equal(dead?.state, "dead");
  assert.match(dead!.errors.at(-1)!.error, /lease expired/);
});

Deno.test("queue: term dead-letters at once; DLQ replay and purge", async () => {
  using t = await setup();
  const a = await t.q.enqueue("bad input", { maxAttempts: 10 });
  const b = await t.q.enqueue("also bad", { maxAttempts: 10 });
  for (const d of await t.q.claim(2, 1000)) await d.term("cannot parse");
  // Same deadAt: DLQ order falls back to id.
  const expected = [[a.id, "cannot parse"], [b.id, "cannot parse"]].sort();
  assert.deepEqual(
    (await t.q.dlq()).map((m) => [m.id, m.deadReason]),
    expected,
  );
  assert.equal(await t.q.replay(a.id), true);
  assert.equal(await t.q.replay(a.id), false, "not dead any more");
  const [again] = await t.q.claim(1, 1000);
  assert.equal(again.id, a.id);
  assert.equal(again.attempts, 1, "replay resets the attempt budget");
  assert.equal(await t.q.purge(), 1);
  assert.equal(await t.q.get(b.id), null);
  assert.deepEqual(await t.q.stats(), {
    ready: 0,
    delayed: 0,
    inflight: 1,
    dead: 0,
    oldestReadyAgeMs: 0,
  });
});

Deno.test("queue: stats report depth and the oldest ready age", async () => {
  using t = await setup();
  await t.q.enqueue("old", { priority: 1 });
  await t.clock.advance(500);
  await t.q.enqueue("new", { priority: 8 });
  await t.q.enqueue("later", { delayMs: 1000 });
  await t.clock.advance(250);
  assert.deepEqual(await t.q.stats(), {
    ready: 2,
    delayed: 1,
    inflight: 0,
    dead: 0,
    oldestReadyAgeMs: 750,
  });
});

Deno.test("queue: bad input is refused with clear errors and stores nothing", async () => {
  using t = await setup();
  await assert.rejects(
    t.q.enqueue("x", { priority: 10 }),
    /priority must be an integer 0-9, got 10/,
  );
  await assert.rejects(
    t.q.enqueue("x", { delayMs: -1 }),
    /delayMs must be >= 0, got -1/,
  );
  await assert.rejects(
    t.q.enqueue("x", { maxAttempts: 0 }),
    /maxAttempts must be an integer 1-1000, got 0/,
  );
  await assert.rejects(t.q.enqueue("x".repeat(70_000)), (err: unknown) => {
    assert.ok(err instanceof RangeError);
    assert.match(err.message, /exceeds Deno KV's 64 KiB value limit/);
    return true;
  });
  const { id } = await t.q.enqueue("ok", { id: "fixed" });
  await assert.rejects(
    t.q.enqueue("dup", { id }),
    /message id 'fixed' already exists/,
  );
  await assert.rejects(t.q.claim(0, 1000), /n must be a positive integer/);
  assert.throws(
    () => new DurableQueue(t.kv, "bad name"),
    /name must be 1-64 letters/,
  );
  assert.deepEqual(await t.q.stats(), {
    ready: 1,
    delayed: 0,
    inflight: 0,
    dead: 0,
    oldestReadyAgeMs: 0,
  });
});

Deno.test("queue: two handles on one KV file claim concurrently and never share a message", async () => {
  const dir = await Deno.makeTempDir();
  const path = join(dir, "q.kv");
  const kv1 = await openStore(path);
  const kv2 = await openStore(path);
  try {
    const q1 = new DurableQueue<number>(kv1, "shared");
    const q2 = new DurableQueue<number>(kv2, "shared");
    for (let i = 0; i < 200; i++) await q1.enqueue(i);
    const got: number[][] = [[], []];
    await Promise.all([q1, q2].map(async (q, w) => {
      for (;;) {
        const ds = await q.claim(7, 60_000, `w${w}`);
        // Losing every race in a claim returns nothing while work remains.
        if (ds.length === 0) {
          if ((await q.stats()).ready === 0) break;
          continue;
        }
        for (const d of ds) {
          got[w].push(d.payload);
          await d.ack();
        }
        // Give the other handle a turn (on a loaded machine one handle's
        // ops can otherwise run back to back until the queue is empty).
        await new Promise((r) => setTimeout(r, 1));
      }
    }));
    const all = [...got[0], ...got[1]].sort((a, b) => a - b);
    assert.deepEqual(
      all,
      Array.from({ length: 200 }, (_, i) => i),
      "every message exactly once",
    );
    assert.ok(
      got[0].length > 0 && got[1].length > 0,
      `both handles got work: ${got[0].length}/${got[1].length}`,
    );
    assert.equal((await q2.stats()).inflight, 0);
  } finally {
    kv1.close();
    kv2.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("queue: enqueueMany and ackAll batch many messages per commit, counts stay right", async () => {
  using t = await setup();
  const ids = await t.q.enqueueMany(
    Array.from(
      { length: 25 },
      (_, i) => ({ payload: `m${i}`, options: { priority: i % 3 } }),
    ),
  );
  assert.equal(ids.length, 25);
  assert.equal((await t.q.stats()).ready, 25);
  const ds = await t.q.claim(25, 1000);
  assert.equal(ds.length, 25);
  assert.deepEqual(
    ds.slice(0, 3).map((d) => d.message.priority),
    [2, 2, 2],
    "priority order kept",
  );
  const errors = await t.q.ackAll(ds, ds.map((d) => d.payload.toUpperCase()));
  assert.deepEqual(errors, ds.map(() => undefined));
  assert.ok(ds.every((d) => d.settled));
  assert.equal((await t.q.get(ids[7]))?.result, "M7");
  assert.deepEqual(await t.q.stats(), {
    ready: 0,
    delayed: 0,
    inflight: 0,
    dead: 0,
    oldestReadyAgeMs: 0,
  });
  await assert.rejects(
    t.q.enqueueMany([{
      payload: "x",
      options: { idempotencyKey: "k" } as never,
    }]),
    /Cannot enqueueMany with an idempotency key/,
  );
});

Deno.test("queue: in a batched ack, only the message whose lease was taken back fails", async () => {
  using t = await setup();
  await t.q.enqueueMany([{ payload: "a" }, { payload: "b" }, { payload: "c" }]);
  const ds = await t.q.claim(3, 1000, "w1");
  await ds[2].inProgress(5000);
  await ds[0].inProgress(5000);
  await t.clock.advance(1001);
  assert.deepEqual(
    await t.q.sweep(),
    { expired: 1, promoted: 0 },
    "only b's lease expired",
  );
  const errors = await t.q.ackAll(ds);
  assert.equal(errors[0], undefined);
  assert.ok(errors[1] instanceof LeaseLostError);
  assert.equal(errors[2], undefined);
  assert.deepEqual(
    [
      (await t.q.get(ds[0].id))?.state,
      (await t.q.get(ds[1].id))?.state,
      (await t.q.get(ds[2].id))?.state,
    ],
    ["done", "ready", "done"],
  );
  assert.deepEqual(await t.q.stats(), {
    ready: 1,
    delayed: 0,
    inflight: 0,
    dead: 0,
    oldestReadyAgeMs: 0, // back to ready just now
  });
});

/** A string that serializes to about `n` bytes and does not compress. */
const bulky = (n: number, seed = 1) => {
  let x = seed;
  return Array.from({ length: n }, () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return String.fromCharCode(33 + (x % 90));
  }).join("");
};

Deno.test("queue: a result larger than one KV value is stored in chunks and read back whole (KV file)", async () => {
  const dir = await Deno.makeTempDir();
  const kv = await openStore(join(dir, "q.kv"));
  try {
    const q = new DurableQueue<string>(kv, "results");
    // The done record held the message plus its result: a 40 KiB payload
    // echoed back made it about 80 KiB.
    const payload = bulky(40 * 1024);
    const results = [
      payload,
      { rows: Array.from({ length: 5000 }, (_, i) => ({ i, v: `row-${i}` })) },
      new Uint8Array(300 * 1024).map((_, i) => i % 251),
      "small",
    ];
    const ids = await q.enqueueMany(results.map(() => ({ payload })));
    const ds = await q.claim(results.length, 60_000);
    assert.deepEqual(await q.ackAll(ds, results), results.map(() => undefined));
    for (const [i, id] of ids.entries()) {
      const m = await q.get(id);
      assert.equal(m?.state, "done");
      assert.deepEqual(m?.result, results[i]);
    }
    const raw = await kv.get<{ result?: unknown; resultRef?: object }>(
      queueKeys("results").msg(ids[2]),
    );
    assert.equal(raw.value?.result, undefined, "not inline");
    assert.equal(
      (raw.value?.resultRef as { chunks: number }).chunks,
      6,
      "300 KiB in 60 KiB chunks",
    );
    const chunks = [];
    for await (
      const e of kv.list({ prefix: queueKeys("results").result(ids[2]) })
    ) chunks.push(e.key);
    assert.equal(chunks.length, 6);
    // The same through a second handle, as another process would read it.
    const kv2 = await openStore(join(dir, "q.kv"));
    try {
      const q2 = new DurableQueue<string>(kv2, "results");
      assert.deepEqual((await q2.get(ids[1]))?.result, results[1]);
    } finally {
      kv2.close();
    }
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("queue: a result over maxResultBytes dead-letters only its message; the others in the batch are acked", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const q = new DurableQueue<string>(kv, "limits", {
      maxResultBytes: 100_000,
    });
    await q.enqueueMany(["big", "small", "fn", "fits"].map((payload) => ({
      payload,
    })));
    const ds = await q.claim(4, 60_000);
    assert.deepEqual(payloads(ds), ["big", "small", "fn", "fits"]);
    const errors = await q.ackAll(ds, [
      bulky(150_000),
      "ok",
      () => 1,
      bulky(90_000),
    ]);
    assert.ok(errors[0] instanceof UnstorableResultError);
    assert.match(
      errors[0].message,
      /Cannot ack message '.+' on 'limits': its result is 1500\d\d bytes, over the limit of 100000 bytes/,
    );
    assert.equal(errors[1], undefined);
    assert.ok(errors[2] instanceof UnstorableResultError);
    assert.match(
      errors[2].message,
      /its result cannot be stored \(.*could not be cloned/,
    );
    assert.equal(errors[3], undefined);
    const states = await Promise.all(ds.map((d) => q.get(d.id)));
    assert.deepEqual(states.map((m) => m?.state), [
      "dead",
      "done",
      "dead",
      "done",
    ]);
    assert.equal(states[0]?.errors.at(-1)?.error, errors[0].message);
    assert.equal(states[0]?.attempts, 1, "not retried");
    assert.equal(states[1]?.result, "ok");
    assert.ok(ds.every((d) => d.settled));
    const stored = [];
    for await (const e of kv.list({ prefix: queueKeys("limits").result() })) {
      stored.push(e.key[3]);
    }
    assert.deepEqual(
      new Set(stored),
      new Set([ds[3].id]),
      "only the acked result's chunks",
    );
    assert.deepEqual(await q.stats(), {
      ready: 0,
      delayed: 0,
      inflight: 0,
      dead: 2,
      oldestReadyAgeMs: 0,
    });
    await assert.rejects(
      (async () => {
        await q.enqueue("again");
        const [d] = await q.claim(1, 60_000);
        await d.ack(bulky(120_000));
      })(),
      UnstorableResultError,
    );
  } finally {
    kv.close();
  }
});

Deno.test("queue: in a batched ack, a delivery already settled fails alone", async () => {
  using t = await setup();
  await t.q.enqueueMany([{ payload: "a" }, { payload: "b" }, { payload: "c" }]);
  const ds = await t.q.claim(3, 1000, "w1");
  await ds[1].nak(0, "try later");
  const errors = await t.q.ackAll(ds, ["A", "B", "C"]);
  assert.equal(errors[0], undefined);
  assert.match(
    String(errors[1]),
    /Cannot ack message '.+': it is already settled/,
  );
  assert.equal(errors[2], undefined);
  assert.deepEqual(
    (await Promise.all(ds.map((d) => t.q.get(d.id)))).map((m) => m?.state),
    ["done", "ready", "done"],
  );
});

Deno.test("queue: a consumer acking a too-large result beside a small one fails only the large one", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const q = new DurableQueue<string>(kv, "mixed", {
      maxResultBytes: 100_000,
    });
    const ids = await q.enqueueMany(
      ["big", "s1", "s2", "s3"].map((payload) => ({ payload })),
    );
    // All four are claimed at once and finish in one turn: one ack batch.
    const c = consume(
      q,
      (d) => Promise.resolve(d.payload === "big" ? bulky(200_000) : d.payload),
      { concurrency: 4 },
    );
    try {
      for (;;) {
        const ms = await Promise.all(ids.map((id) => q.get(id)));
        if (ms.every((m) => m?.state === "done" || m?.state === "dead")) {
          assert.deepEqual(ms.map((m) => m?.state), [
            "dead",
            "done",
            "done",
            "done",
          ]);
          assert.deepEqual(ms.slice(1).map((m) => m?.result), [
            "s1",
            "s2",
            "s3",
          ]);
          assert.match(
            ms[0]!.errors.at(-1)!.error,
            /over the limit of 100000 bytes/,
          );
          assert.equal(ms[0]!.attempts, 1);
          break;
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      await c.stop();
    }
  } finally {
    kv.close();
  }
});

Deno.test("queue: chunks of a result whose ack lost its lease are deleted", async () => {
  using t = await setup();
  await t.q.enqueue("slow");
  const [d] = await t.q.claim(1, 1000, "w1");
  await t.clock.advance(1001);
  await t.q.sweep();
  await assert.rejects(d.ack(bulky(200_000)), LeaseLostError);
  const left = [];
  for await (const e of t.kv.list({ prefix: queueKeys("jobs").result() })) {
    left.push(e.key);
  }
  assert.deepEqual(left, []);
});

Deno.test("queue: concurrent enqueues share commits (group commit), each durable when it resolves, FIFO kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-queue-group-" });
  const file = join(dir, "q.kv");
  const kv = await openStore(file);
  try {
    const c = countCommits(kv);
    const q = new DurableQueue<string>(c.kv, "jobs");
    const ids = await Promise.all(
      Array.from({ length: 250 }, (_, i) => q.enqueue(`m${i}`)),
    );
    // 250 calls in one turn: groups of 100, 100 and 50.
    assert.equal(c.commits(), 3);
    assert.equal(new Set(ids.map((e) => e.id)).size, 250);
    // Another handle on the file sees every message the calls resolved for.
    const other = await openStore(file);
    try {
      const q2 = new DurableQueue<string>(other, "jobs");
      assert.equal((await q2.stats()).ready, 250);
      const ds = await q2.claim(250, 10_000);
      assert.deepEqual(
        ds.map((d) => d.payload),
        Array.from({ length: 250 }, (_, i) => `m${i}`),
      );
    } finally {
      other.close();
    }
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("queue: in a group commit, a message KV refuses fails alone and the others land", async () => {
  using t = await setup();
  const results = await Promise.allSettled(
    Array.from(
      { length: 20 },
      (_, i) => t.q.enqueue(i === 13 ? "x".repeat(70_000) : `m${i}`),
    ),
  );
  const failed = results.flatMap((r, i) => r.status === "rejected" ? [i] : []);
  assert.deepEqual(failed, [13]);
  const reason = (results[13] as PromiseRejectedResult).reason;
  assert.ok(reason instanceof RangeError);
  assert.match(reason.message, /exceeds Deno KV's 64 KiB value limit/);
  assert.equal((await t.q.stats()).ready, 19);
  const ds = await t.q.claim(19, 1000);
  assert.deepEqual(
    ds.map((d) => d.payload),
    Array.from({ length: 20 }, (_, i) => `m${i}`).filter((_, i) => i !== 13),
  );
});

Deno.test("queue: with maxGroup 1, or an idempotency key or id, each enqueue commits on its own", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const c = countCommits(kv);
    const q = new DurableQueue<string>(c.kv, "solo", { maxGroup: 1 });
    await Promise.all(Array.from({ length: 10 }, (_, i) => q.enqueue(`m${i}`)));
    assert.equal(c.commits(), 10);
    const grouped = new DurableQueue<string>(c.kv, "keyed");
    await Promise.all(
      Array.from(
        { length: 5 },
        (_, i) => grouped.enqueue(`k${i}`, { idempotencyKey: `k${i}` }),
      ),
    );
    assert.equal(c.commits(), 15);
    assert.throws(
      () => new DurableQueue(kv, "bad", { maxGroup: 0 }),
      /maxGroup must be a positive integer, got 0/,
    );
  } finally {
    kv.close();
  }
});

Deno.test("queue: on a local store, claims and acks of 100 messages take one commit each", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-queue-batch-" });
  const kv = await openStore(join(dir, "q.kv"));
  try {
    const q = new DurableQueue<number>(kv, "wide");
    await q.enqueueMany(
      Array.from({ length: 100 }, (_, i) => ({ payload: i })),
    );
    const ds = await q.claim(100, 10_000);
    assert.equal(ds.length, 100);
    // Records written by one commit share its versionstamp.
    const stamps = async () =>
      new Set(
        (await Promise.all(
          ds.map((d) => kv.get(queueKeys("wide").msg(d.message.id))),
        )).map((e) => e.versionstamp),
      ).size;
    assert.equal(await stamps(), 1);
    const errs = await q.ackAll(ds);
    assert.ok(errs.every((e) => e === undefined));
    assert.equal(await stamps(), 1);
    assert.equal((await q.stats()).inflight, 0);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("queue: fresh message ids are UUIDv7s whose order follows the time they were made", async () => {
  using t = await setup();
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const start = Date.now();
    ids.push((await t.q.enqueue(`m${i}`)).id);
    // The next id is made in a later millisecond.
    while (Date.now() === start) await new Promise((r) => setTimeout(r, 1));
  }
  for (const id of ids) {
    assert.match(
      id,
      /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
  }
  assert.deepEqual([...ids].sort(), ids);
  const ms = parseInt(ids[0].replace("-", "").slice(0, 12), 16);
  assert.ok(Math.abs(ms - Date.now()) < 60_000, `timestamp ${ms}`);
});
