/**
 * The queue's opt-in group commit with a loss window (`commit: { windowMs }`):
 * early acknowledgement, the window's deadline, flush on close,
 * back-pressure, and failed commits reaching their callers.
 */
import assert from "node:assert/strict";
import { queueKeys } from "./keys.ts";
import { DurableQueue, QueueCommitError } from "./queue.ts";
import { segmentOf, type SegState } from "./queue_segments.ts";

/** A promise with its settle functions outside. */
function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * `kv` whose atomic commits first await `hook()` (which may throw, failing
 * the commit as KV would).
 */
function hookedKv(kv: Deno.Kv, hook: () => Promise<void>): Deno.Kv {
  const wrapOp = (o: Deno.AtomicOperation): Deno.AtomicOperation => {
    const p: Deno.AtomicOperation = new Proxy(o, {
      get(target, prop) {
        if (prop === "commit") {
          return async () => {
            await hook();
            return await target.commit();
          };
        }
        const v = Reflect.get(target, prop, target);
        if (typeof v !== "function") return v;
        return (...args: unknown[]) => {
          const r = v.apply(target, args);
          return r === target ? p : r;
        };
      },
    });
    return p;
  };
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") return () => wrapOp(target.atomic());
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

Deno.test("queue window: enqueue resolves before its commit, which starts within windowMs", async () => {
  using kv = await Deno.openKv(":memory:");
  const commits: number[] = [];
  const q = new DurableQueue<string>(
    hookedKv(kv, () => {
      commits.push(performance.now());
      return Promise.resolve();
    }),
    "w",
    { commit: { windowMs: 50 } },
  );
  const t0 = performance.now();
  const ids = await Promise.all(["a", "b", "c"].map((p) => q.enqueue(p)));
  // Acknowledged, not yet stored: the group waits for its window.
  assert.equal(commits.length, 0);
  assert.equal(await q.get(ids[0].id), null);
  const plain = new DurableQueue<string>(kv, "w");
  for (;;) {
    if ((await plain.get(ids[2].id)) !== null) break;
    await q.waitForWork(5);
  }
  // One commit for the three, started no sooner than the window allows
  // batching and no later than the window (plus scheduling slack).
  assert.equal(commits.length, 1);
  assert.ok(commits[0] - t0 >= 45, `committed after ${commits[0] - t0} ms`);
  assert.ok(
    commits[0] - t0 < 50 + 1000,
    `committed after ${commits[0] - t0} ms`,
  );
  assert.deepEqual(
    (await Promise.all(ids.map((i) => plain.get(i.id)))).map((m) => m?.payload),
    ["a", "b", "c"],
  );
  await q.close();
});

Deno.test("queue window: close() commits what waits, then refuses enqueues and acks", async () => {
  using kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<number>(kv, "w", {
    commit: { windowMs: 60_000 },
    maxGroup: 40,
  });
  // Fewer than a commit's worth: all acknowledged early, none stored yet.
  const ids = await Promise.all(
    Array.from({ length: 30 }, (_, i) => q.enqueue(i)),
  );
  const plain = new DurableQueue<number>(kv, "w");
  assert.equal(await plain.get(ids[0].id), null);
  await q.close();
  const stored = await Promise.all(ids.map((i) => plain.get(i.id)));
  assert.deepEqual(
    stored.map((m) => m?.payload),
    Array.from({ length: 30 }, (_, i) => i),
  );
  assert.equal((await plain.stats()).ready, 30);
  await assert.rejects(q.enqueue(1), /'w': the queue is closed/);
  // Claims still work after close; acks are refused.
  const [d] = await q.claim(1, 10_000);
  assert.equal(d.payload, 0);
  await assert.rejects(d.ack(), /'w': the queue is closed/);
});

Deno.test("queue window: a window timer due while flush() commits does not start a second commit round beside it", async () => {
  using kv = await Deno.openKv(":memory:");
  const gate = deferred();
  let active = 0;
  let most = 0;
  let hooks = 0;
  let c: Promise<{ id: string }> | undefined;
  // deno-lint-ignore prefer-const
  let q: DurableQueue<string>;
  const hooked = hookedKv(kv, async () => {
    const n = ++hooks;
    most = Math.max(most, ++active);
    try {
      if (n === 1) await gate.promise; // the full group's round, held
      if (n === 2) {
        // flush()'s round for B: C joins while it runs, and the window
        // timer set for B when the first round ended comes due.
        c = q.enqueue("c");
        await new Promise((r) => setTimeout(r, 150));
      }
    } finally {
      active--;
    }
  });
  q = new DurableQueue<string>(hooked, "w", {
    commit: { windowMs: 100 },
    maxGroup: 2,
  });
  // A full group commits at once; B, acknowledged early, waits for the next.
  const a = await Promise.all([q.enqueue("a1"), q.enqueue("a2")]);
  while (hooks < 1) await new Promise((r) => setTimeout(r, 5));
  const flushed = q.flush();
  const b = await q.enqueue("b");
  gate.resolve();
  await flushed;
  const cId = await c!;
  await q.flush();
  assert.equal(most, 1, "two commit rounds ran at once");
  const plain = new DurableQueue<string>(kv, "w");
  const want = [[a[0].id, "a1"], [a[1].id, "a2"], [b.id, "b"], [cId.id, "c"]];
  for (const [id, v] of want) {
    assert.equal((await plain.get(id))?.payload, v);
  }
  await q.close();
});

Deno.test("queue window: a full buffer blocks the next call until a commit makes room", async () => {
  using kv = await Deno.openKv(":memory:");
  const gate = deferred();
  let commitsStarted = 0;
  const q = new DurableQueue<number>(
    hookedKv(kv, () => {
      commitsStarted++;
      return gate.promise;
    }),
    "w",
    { commit: { windowMs: 1, maxBuffered: 5 } },
  );
  await Promise.all([0, 1, 2, 3, 4].map((i) => q.enqueue(i)));
  let sixth = false;
  const p = q.enqueue(5).then(() => (sixth = true));
  // The first five are committing (held at the gate); the sixth waits.
  while (commitsStarted === 0) await q.waitForWork(2);
  await q.waitForWork(30);
  assert.equal(sixth, false, "the sixth call was accepted past maxBuffered");
  gate.resolve();
  await p;
  assert.equal(sixth, true);
  await q.close();
  assert.equal((await new DurableQueue(kv, "w").stats()).ready, 6);
});

Deno.test("queue window: a call beyond the next commit's worth waits for its own commit", async () => {
  using kv = await Deno.openKv(":memory:");
  const gate = deferred();
  const q = new DurableQueue<number>(
    hookedKv(kv, () => gate.promise),
    "w",
    { commit: { windowMs: 60_000 }, maxGroup: 4 },
  );
  const early = await Promise.all([0, 1, 2, 3].map((i) => q.enqueue(i)));
  assert.equal(early.length, 4);
  // The fifth would go into a later commit: not acknowledged before it.
  let fifth = false;
  const p = q.enqueue(4).then(() => (fifth = true));
  await q.waitForWork(30);
  assert.equal(
    fifth,
    false,
    "a call past the next commit was acknowledged early",
  );
  const t = performance.now();
  gate.resolve();
  await p;
  // Committed as soon as the commit ahead ended, not a window later.
  assert.ok(
    performance.now() - t < 10_000,
    "the waiting call sat out the window",
  );
  await q.close();
  assert.equal((await new DurableQueue(kv, "w").stats()).ready, 5);
});

Deno.test("queue window: a failed group commit reaches waiting callers and flush() reports acknowledged ones", async () => {
  using kv = await Deno.openKv(":memory:");
  const gate = deferred();
  let started = false;
  const q = new DurableQueue<number>(
    hookedKv(kv, async () => {
      started = true;
      await gate.promise;
      throw new Error("disk full");
    }),
    "w",
    { commit: { windowMs: 20 } },
  );
  // Acknowledged at once (nothing older waits).
  const early = await q.enqueue(1);
  while (!started) await q.waitForWork(5);
  // The commit under way is now older than the window: later calls wait
  // for their own commit rather than be acknowledged early.
  await q.waitForWork(40);
  const waiting = [q.enqueue(2), q.enqueue(3)];
  let settled = false;
  Promise.allSettled(waiting).then(() => (settled = true));
  await q.waitForWork(30);
  assert.equal(settled, false, "a call past the window was acknowledged");
  gate.resolve();
  for (const p of waiting) await assert.rejects(p, /disk full/);
  const err = await q.flush().then(() => null, (e) => e);
  assert.ok(err instanceof QueueCommitError, `flush threw ${err}`);
  assert.deepEqual(err.lostEnqueues, [early.id]);
  assert.match(err.message, /'w': 1 acknowledged enqueue\(s\) were not stored/);
  assert.match(err.message, /disk full/);
  // Reported once.
  await q.flush();
  await q.close();
});

Deno.test("queue window: a message over KV's value limit is refused at enqueue, not lost later", async () => {
  using kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<string>(kv, "w", { commit: { windowMs: 10 } });
  await assert.rejects(
    q.enqueue("x".repeat(70_000)),
    (e) => e instanceof RangeError && /64 KiB value limit/.test(e.message),
  );
  await q.close();
});

Deno.test("queue window: acks resolve early, land within the window, and cannot be repeated", async () => {
  using kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<number>(kv, "w", { commit: { windowMs: 30 } });
  await Promise.all([1, 2, 3].map((i) => q.enqueue(i)));
  await q.flush();
  const ds = await q.claim(3, 60_000, "c");
  assert.equal(ds.length, 3);
  assert.deepEqual(await q.ackAll(ds, [undefined, { r: 2 }]), [
    undefined,
    undefined,
    undefined,
  ]);
  // Not durable yet; the delivery counts as settled.
  assert.equal((await q.get(ds[0].id))?.state, "inflight");
  assert.equal(ds[0].settled, true);
  await assert.rejects(ds[0].ack(), /already settled/);
  await assert.rejects(ds[1].nak(), /already settled/);
  await q.flush();
  const after = await Promise.all(ds.map((d) => q.get(d.id)));
  assert.deepEqual(after.map((m) => m?.state), ["done", "done", "done"]);
  assert.deepEqual(after[1]?.result, { r: 2 });
  assert.equal((await q.stats()).inflight, 0);
  await q.close();
});

Deno.test("queue window: an acknowledged ack that does not land is reported, and the message comes back", async (t) => {
  for (const how of ["packed", "record"] as const) {
    await t.step(how, async () => {
      using kv = await Deno.openKv(":memory:");
      const q = new DurableQueue<number>(kv, "w", {
        commit: { windowMs: 60_000 },
      });
      // enqueueMany stores records; a windowed enqueue packs a segment.
      if (how === "record") await q.enqueueMany([{ payload: 2 }]);
      else await q.enqueue(2);
      await q.flush();
      const [d2] = await q.claim(1, 60_000, "c");
      const kv2 = new DurableQueue<number>(kv, "w");
      // Someone else takes the lease before the ack commits.
      const seg = segmentOf(d2.id);
      assert.equal(seg !== undefined, how === "packed");
      if (seg !== undefined) {
        const st = await kv.get<SegState>(queueKeys("w").segState(seg));
        const [l] = st.value!.leases;
        await kv.set(st.key, {
          ...st.value!,
          leases: [{ ...l, id: "someone-else" }],
        });
      } else {
        const stolen = await kv.get<{ state: string }>(
          queueKeys("w").msg(d2.id),
        );
        await kv.set(stolen.key, { ...stolen.value, lastOp: "someone-else" });
      }
      await d2.ack();
      const err = await q.flush().then(() => null, (e) => e);
      assert.ok(err instanceof QueueCommitError, `flush threw ${err}`);
      assert.deepEqual(err.failedAcks, [d2.id]);
      assert.equal((await kv2.get(d2.id))?.state, "inflight");
      await q.close();
    });
  }
});

Deno.test("queue window: bad options are refused with the value", () => {
  const kv = {} as Deno.Kv;
  assert.throws(
    () => new DurableQueue(kv, "w", { commit: { windowMs: 0 } }),
    /commit.windowMs must be an integer 1-60000, got 0/,
  );
  assert.throws(
    () =>
      new DurableQueue(kv, "w", { commit: { windowMs: 5, maxBuffered: 0 } }),
    /commit.maxBuffered must be a positive integer, got 0/,
  );
});

Deno.test("queue window: a message claimed and acked before its first commit is stored once, done", async () => {
  using kv = await Deno.openKv(":memory:");
  let commits = 0;
  const q = new DurableQueue<string>(
    hookedKv(kv, () => {
      commits++;
      return Promise.resolve();
    }),
    "w",
    { commit: { windowMs: 60_000 } },
  );
  await q.enqueue("low", { priority: 1 });
  await q.enqueue("high", { priority: 8 });
  await q.enqueue("low-2", { priority: 1 });
  // Claimed from memory: highest priority first, FIFO within.
  const ds = await q.claim(2, 30_000, "c");
  assert.deepEqual(ds.map((d) => d.payload), ["high", "low"]);
  assert.equal(ds[0].attempts, 1);
  assert.equal(commits, 0);
  assert.equal(await q.get(ds[0].id), null);
  await ds[0].ack({ ok: true });
  assert.equal(ds[0].settled, true);
  await q.flush();
  // One commit stored all three: one done, one in flight, one ready.
  assert.equal(commits, 1);
  const done = await q.get(ds[0].id);
  assert.equal(done?.state, "done");
  assert.deepEqual(done?.result, { ok: true });
  const held = await q.get(ds[1].id);
  assert.equal(held?.state, "inflight");
  assert.equal(held?.consumer, "c");
  const { oldestReadyAgeMs: _, ...counts } = await q.stats();
  assert.deepEqual(counts, { ready: 1, delayed: 0, inflight: 1, dead: 0 });
  // The stored in-flight one settles as usual: a nak makes it ready again.
  await ds[1].nak(0, "retry");
  assert.equal((await q.get(ds[1].id))?.state, "ready");
  // Naked, it queues again behind the one stored ready.
  assert.deepEqual(
    (await q.claim(5, 30_000)).map((d) => d.payload),
    ["low-2", "low"],
  );
  await q.close();
});

Deno.test("queue window: stored ready messages are claimed before those still in memory", async () => {
  using kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<string>(kv, "w", { commit: { windowMs: 60_000 } });
  await q.enqueue("stored");
  await q.flush();
  await q.enqueue("memory");
  const ds = await q.claim(5, 30_000);
  assert.deepEqual(ds.map((d) => d.payload), ["stored", "memory"]);
  await q.ackAll(ds);
  await q.close();
  assert.deepEqual(
    (await Promise.all(ds.map((d) => q.get(d.id)))).map((m) => m?.state),
    ["done", "done"],
  );
  assert.equal((await q.stats()).inflight, 0);
});

Deno.test("queue window: when the commit of a message claimed from memory fails, its holder's verbs fail with it", async () => {
  using kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<string>(
    hookedKv(kv, () => Promise.reject(new Error("disk full"))),
    "w",
    { commit: { windowMs: 60_000 } },
  );
  const { id } = await q.enqueue("x");
  const [d] = await q.claim(1, 30_000);
  const nak = d.nak(0);
  const err = await q.flush().then(() => null, (e) => e);
  assert.ok(err instanceof QueueCommitError);
  assert.deepEqual(err.lostEnqueues, [id]);
  await assert.rejects(nak, /disk full/);
  await q.close();
});
