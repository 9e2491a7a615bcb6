/**
 * The window mode's packed storage (segments): enqueues packed into a few
 * values, claims of ranges that never overlap, acks marked in the
 * segment's state, messages moved out to their own records when they
 * leave the happy path, and finished segments deleted after retention.
 */
import assert from "node:assert/strict";
import { ManualClock } from "../clock.ts";
import { queueKeys } from "./keys.ts";
import { type Delivery, DurableQueue, QueueCommitError } from "./queue.ts";
import { segmentOf, type SegState } from "./queue_segments.ts";

const K = queueKeys("s");

async function count(kv: Deno.Kv, prefix: Deno.KvKey): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix })) n++;
  return n;
}

/** A windowed queue holding `n` stored (flushed) messages 0..n-1. */
async function packed(
  kv: Deno.Kv,
  n: number,
  options: { clock?: ManualClock; payload?: (i: number) => unknown } = {},
) {
  const q = new DurableQueue<unknown>(kv, "s", {
    commit: { windowMs: 60_000 },
    clock: options.clock,
  });
  const ids: string[] = [];
  for (let i = 0; i < n; i += 100) {
    const part = await Promise.all(
      Array.from(
        { length: Math.min(100, n - i) },
        (_, k) => q.enqueue(options.payload?.(i + k) ?? i + k),
      ),
    );
    ids.push(...part.map((e) => e.id));
    await q.flush();
  }
  return { q, ids };
}

async function segState(kv: Deno.Kv, id: string): Promise<SegState | null> {
  return (await kv.get<SegState>(K.segState(segmentOf(id)!))).value;
}

Deno.test("queue segments: a windowed commit stores its ready messages as a few values, claimed in order", async () => {
  using kv = await Deno.openKv(":memory:");
  const kib = "x".repeat(1024);
  const { q, ids } = await packed(kv, 250, { payload: (i) => ({ i, kib }) });
  // No record per message: 1 KiB messages, at most 60 KiB a segment.
  assert.equal(await count(kv, K.msgs), 0);
  const segs = await count(kv, [...K.all, "seg"]);
  assert.ok(segs >= 5 && segs <= 8, `${segs} segments`);
  for await (const e of kv.list<unknown[]>({ prefix: [...K.all, "seg"] })) {
    assert.ok(
      (await kv.get(e.key)).value !== null && e.value.length <= 100,
    );
  }
  assert.ok(ids.every((id) => segmentOf(id) !== undefined));
  assert.equal((await q.stats()).ready, 250);
  assert.equal((await q.get(ids[7]))?.state, "ready");
  const got: number[] = [];
  for (;;) {
    const ds = await q.claim(40, 60_000);
    if (ds.length === 0) break;
    got.push(...ds.map((d) => (d.payload as { i: number }).i));
    assert.deepEqual(await q.ackAll(ds), ds.map(() => undefined));
  }
  assert.deepEqual(got, Array.from({ length: 250 }, (_, i) => i));
  await q.flush();
  const { oldestReadyAgeMs: _, ...counts } = await q.stats();
  assert.deepEqual(counts, { ready: 0, delayed: 0, inflight: 0, dead: 0 });
  assert.equal(await count(kv, K.msgs), 0, "acked packed: no records");
  await q.close();
});

Deno.test("queue segments: two claimers racing on one segment each take different messages, all of them once", async () => {
  using kv = await Deno.openKv(":memory:");
  const { q, ids } = await packed(kv, 100);
  assert.equal(new Set(ids.map(segmentOf)).size, 1);
  // Two queue objects, as two processes would have.
  const other = new DurableQueue<unknown>(kv, "s");
  const seen: string[] = [];
  const leases = new Map<string, string>();
  const claimer = async (qq: DurableQueue<unknown>) => {
    for (;;) {
      const ds = await qq.claim(7, 60_000);
      if (ds.length === 0) return;
      for (const d of ds) {
        seen.push(d.id);
        leases.set(d.id, d.message.leaseId!);
      }
    }
  };
  await Promise.all([claimer(q), claimer(other), claimer(q), claimer(other)]);
  assert.equal(seen.length, 100, "each claimed once");
  assert.deepEqual([...seen].sort(), [...ids].sort());
  // Every message is in flight under the lease its one holder was given.
  const st = (await segState(kv, ids[0]))!;
  for (const [i, id] of ids.entries()) {
    const l = st.leases.filter((x) => x.pos.includes(i));
    assert.equal(l.length, 1, `position ${i} in one lease`);
    assert.equal(l[0].id, leases.get(id));
  }
  assert.equal((await q.stats()).inflight, 100);
  await q.close();
});

Deno.test("queue segments: acking part of a segment marks those done and leaves the rest where they are", async () => {
  using kv = await Deno.openKv(":memory:");
  const { q, ids } = await packed(kv, 20);
  const ds = await q.claim(10, 60_000, "c1");
  assert.deepEqual(ds.map((d) => d.id), ids.slice(0, 10));
  assert.deepEqual(
    await q.ackAll(ds.slice(0, 4)),
    [0, 1, 2, 3].map(() => undefined),
  );
  await q.flush();
  const states = await Promise.all(
    ids.map(async (id) => (await q.get(id))?.state),
  );
  assert.deepEqual(states, [
    ...Array(4).fill("done"),
    ...Array(6).fill("inflight"),
    ...Array(10).fill("ready"),
  ]);
  const held = await q.get(ids[5]);
  assert.equal(held?.consumer, "c1");
  assert.equal(held?.attempts, 1);
  assert.equal(held?.leaseId, ds[5].message.leaseId);
  const { oldestReadyAgeMs: _, ...counts } = await q.stats();
  assert.deepEqual(counts, { ready: 10, delayed: 0, inflight: 6, dead: 0 });
  const st = (await segState(kv, ids[0]))!;
  assert.deepEqual(st.done, [0, 1, 2, 3]);
  assert.deepEqual(st.leases.map((l) => l.pos), [[4, 5, 6, 7, 8, 9]]);
  // A second ack of a settled delivery is refused, nothing changes.
  await assert.rejects(ds[0].ack(), /already settled/);
  assert.equal(await count(kv, K.msgs), 0);
  await q.close();
});

Deno.test("queue segments: nak, term, inProgress, an ack with a result and cancel move a message out to its own record", async () => {
  using kv = await Deno.openKv(":memory:");
  const { q, ids } = await packed(kv, 8);
  const ds = await q.claim(6, 60_000, "c");
  const by = (i: number) => ds[i] as Delivery<unknown>;
  await by(0).nak(0, "again");
  await by(1).term("bad input");
  await by(2).inProgress(120_000);
  await by(3).ack({ answer: 42 });
  assert.equal((await q.cancel(ids[4], "stop")).outcome, "cancelled");
  assert.equal((await q.cancel(ids[7], "not wanted")).outcome, "cancelled");
  await q.flush();
  const rec = async (i: number) =>
    (await kv.get<{ state: string; result?: unknown; errors: unknown[] }>(
      K.msg(ids[i]),
    )).value;
  assert.equal((await rec(0))?.state, "ready");
  assert.equal((await rec(0))?.errors.length, 1);
  assert.equal((await rec(1))?.state, "dead");
  assert.equal((await rec(2))?.state, "inflight");
  assert.deepEqual((await rec(3))?.result, { answer: 42 });
  assert.equal((await rec(4))?.state, "cancelled");
  assert.equal((await rec(7))?.state, "cancelled", "a ready one too");
  // The cancelled in-flight message's holder settles as a no-op.
  await by(4).ack();
  assert.equal((await q.get(ids[4]))?.state, "cancelled");
  // The extended one acks through its record.
  await by(2).ack();
  await q.flush();
  assert.equal((await q.get(ids[2]))?.state, "done");
  const st = (await segState(kv, ids[0]))!;
  assert.deepEqual([...st.out].sort(), [0, 1, 2, 3, 4, 7]);
  assert.deepEqual(st.leases.map((l) => l.pos), [[5]]);
  // The naked one is claimed again (attempt 2), the cancelled ready one never.
  const again = await q.claim(10, 60_000);
  assert.deepEqual(again.map((d) => d.id), [ids[6], ids[0]]);
  assert.equal(again[1].attempts, 2);
  const { oldestReadyAgeMs: _, ...counts } = await q.stats();
  assert.deepEqual(counts, { ready: 0, delayed: 0, inflight: 3, dead: 1 });
  await q.close();
});

Deno.test("queue segments: an expired packed lease is swept back to ready as records; its holder's ack fails", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(1_000_000);
  const { q, ids } = await packed(kv, 5, { clock });
  const ds = await q.claim(3, 1_000, "slow");
  await clock.advance(2_000);
  assert.deepEqual(await q.sweep(), { expired: 3, promoted: 0 });
  for (const i of [0, 1, 2]) {
    const r = (await kv.get<{ state: string; errors: { error: string }[] }>(
      K.msg(ids[i]),
    )).value;
    assert.equal(r?.state, "ready");
    assert.match(r!.errors[0].error, /lease expired \(held by slow\)/);
  }
  // The old holder lost its lease: its acks (acknowledged early, window
  // mode) fail instead of clobbering, and flush() reports them.
  await q.ackAll(ds);
  const err = await q.flush().then(() => null, (e) => e);
  assert.ok(err instanceof QueueCommitError, String(err));
  assert.deepEqual([...err.failedAcks].sort(), ids.slice(0, 3).sort());
  assert.equal((err.cause as Error).name, "LeaseLostError");
  const next = await q.claim(10, 60_000, "fast");
  assert.deepEqual(next.map((d) => d.id), [ids[3], ids[4], ...ids.slice(0, 3)]);
  assert.equal((await q.stats()).inflight, 5);
  // No lease index entry of the expired claim is left.
  assert.equal(await count(kv, K.inflightPrefix), 3 + 1);
  await q.close();
});

Deno.test("queue segments: the segment stays readable after its last settle and a sweep deletes it after retention", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(1_000_000);
  const q = new DurableQueue<number>(kv, "s", {
    commit: { windowMs: 60_000 },
    clock,
    doneRetentionMs: 10_000,
  });
  const ids = (await Promise.all([1, 2, 3].map((i) => q.enqueue(i)))).map((
    e,
  ) => e.id);
  await q.flush();
  const ds = await q.claim(3, 60_000);
  await q.ackAll(ds.slice(0, 2));
  await q.flush();
  assert.equal(await count(kv, K.segDonePrefix), 0);
  await q.ackAll(ds.slice(2));
  await q.flush();
  assert.equal(await count(kv, K.segDonePrefix), 1, "listed once finished");
  assert.equal(await count(kv, K.inflightPrefix), 0);
  assert.deepEqual(
    (await Promise.all(ids.map((id) => q.get(id)))).map((m) => m?.state),
    ["done", "done", "done"],
  );
  await q.sweep();
  assert.equal(await count(kv, [...K.all, "seg"]), 1, "kept for retention");
  await clock.advance(10_001);
  await q.sweep();
  assert.equal(await count(kv, [...K.all, "seg"]), 0);
  assert.equal(await count(kv, [...K.all, "segstate"]), 0);
  assert.equal(await count(kv, K.segDonePrefix), 0);
  assert.equal(await q.get(ids[0]), null);
  await q.close();
});

Deno.test("queue segments: an id of the packed form cannot be chosen", async () => {
  using kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<number>(kv, "s");
  await assert.rejects(
    q.enqueue(1, { id: "0190a0b0-c0d0-7e00-8000-000000000001~3" }),
    /reserved form of a packed message id/,
  );
});

Deno.test("queue segments: an enqueue that waited for room never joins a segment already stored", async () => {
  using kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<string>(kv, "s", {
    commit: { windowMs: 60_000, maxBuffered: 2 },
  });
  const a = await q.enqueue("a");
  const b = await q.enqueue("b");
  // The buffer is full: c waits for room, which the flush's commit makes.
  const c = q.enqueue("c");
  await q.flush();
  const { id } = await c;
  await q.flush();
  assert.notEqual(segmentOf(id), segmentOf(a.id));
  assert.equal(segmentOf(a.id), segmentOf(b.id));
  assert.deepEqual(
    (await Promise.all([a.id, b.id, id].map((x) => q.get(x)))).map((m) =>
      m?.payload
    ),
    ["a", "b", "c"],
  );
  assert.deepEqual(
    (await q.claim(5, 60_000)).map((d) => d.payload),
    ["a", "b", "c"],
  );
  await q.close();
});

Deno.test("queue segments: a mixed workload on two queue objects ends with every message finished, none acked twice", async () => {
  using kv = await Deno.openKv(":memory:");
  // A windowed producer and consumer, and a sync one (another process's
  // view), racing on the same segments with every verb, cancels and sweeps.
  const wq = new DurableQueue<number>(kv, "s", { commit: { windowMs: 5 } });
  const sq = new DurableQueue<number>(kv, "s");
  let seed = 7;
  const rnd = () =>
    (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const ids: string[] = [];
  const acks = new Map<string, number>();
  let stop = false;
  const handle = async (q: DurableQueue<number>, d: Delivery<number>) => {
    const x = rnd();
    let acked = true;
    try {
      if (x < 0.65) await d.ack();
      else if (x < 0.7) await d.inProgress(500).then(() => d.ack());
      else if (x < 0.75) await d.ack({ r: d.payload });
      else {
        acked = false;
        if (x < 0.82) await d.nak(0);
        else if (x < 0.85) await d.term("bad");
        else if (x < 0.9) await q.cancel(d.id, "c");
        // else its lease expires
      }
      // The sync object's acks tell their outcome at once.
      if (acked && q === sq) acks.set(d.id, (acks.get(d.id) ?? 0) + 1);
    } catch (err) {
      // A lease lost to a sweep, or an ack after inProgress found the
      // message cancelled (the holder settled as a no-op then).
      if ((err as Error).name !== "LeaseLostError") {
        assert.match((err as Error).message, /already settled/);
        assert.equal((await q.get(d.id))?.state, "cancelled");
      }
    }
  };
  const consumer = async (q: DurableQueue<number>) => {
    while (!stop) {
      const ds = await q.claim(1 + Math.floor(rnd() * 30), 150);
      if (ds.length) await Promise.all(ds.map((d) => handle(q, d)));
      else await q.waitForWork(5);
    }
  };
  const background = [
    consumer(wq),
    consumer(sq),
    consumer(wq),
    consumer(sq),
    (async () => {
      while (!stop) {
        if (ids.length) {
          await sq.cancel(ids[Math.floor(rnd() * ids.length)], "r");
        }
        await new Promise((r) => setTimeout(r, 5));
      }
    })(),
    (async () => {
      while (!stop) {
        await sq.sweep();
        await new Promise((r) => setTimeout(r, 20));
      }
    })(),
  ];
  for (let i = 0; i < 600; i += 50) {
    const r = await Promise.all(
      Array.from(
        { length: 50 },
        (_, k) => wq.enqueue(i + k, { maxAttempts: 5 }),
      ),
    );
    ids.push(...r.map((e) => e.id));
  }
  try {
    for (;;) {
      await new Promise((r) => setTimeout(r, 50));
      const st = await sq.stats();
      if (st.ready + st.inflight + st.delayed === 0) break;
    }
  } finally {
    stop = true;
    await Promise.all(background);
  }
  await wq.close();
  const states = await Promise.all(
    ids.map(async (id) => (await sq.get(id))?.state),
  );
  const unfinished = ids.filter((_, i) =>
    !["done", "dead", "cancelled"].includes(states[i]!)
  );
  assert.deepEqual(unfinished, []);
  assert.ok(states.filter((s) => s === "done").length > 300);
  assert.deepEqual([...acks].filter(([, n]) => n > 1), [], "acked twice");
  const { oldestReadyAgeMs: _, dead, ...counts } = await sq.stats();
  assert.deepEqual(counts, { ready: 0, delayed: 0, inflight: 0 });
  assert.equal(dead, states.filter((s) => s === "dead").length);
});

Deno.test("queue segments: messages claimed (and acked) from memory are stored in their segment, under their lease", async () => {
  using kv = await Deno.openKv(":memory:");
  const q = new DurableQueue<string>(kv, "s", {
    commit: { windowMs: 60_000 },
  });
  const ids = (await Promise.all(["a", "b", "c"].map((p) => q.enqueue(p))))
    .map((e) => e.id);
  const ds = await q.claim(2, 60_000, "early");
  assert.deepEqual(ds.map((d) => d.payload), ["a", "b"]);
  await ds[0].ack(); // before the commit: stored done
  await q.flush();
  assert.equal(await count(kv, K.msgs), 0, "no record of their own");
  const got = await Promise.all(ids.map((id) => q.get(id)));
  assert.deepEqual(got.map((m) => m?.state), ["done", "inflight", "ready"]);
  assert.equal(got[1]?.consumer, "early");
  assert.equal(got[1]?.leaseId, ds[1].message.leaseId);
  const { oldestReadyAgeMs: _, ...counts } = await q.stats();
  assert.deepEqual(counts, { ready: 1, delayed: 0, inflight: 1, dead: 0 });
  // The one still held settles through its segment like a stored claim.
  await ds[1].nak(0, "again");
  assert.equal(
    (await kv.get<{ state: string }>(K.msg(ids[1]))).value?.state,
    "ready",
  );
  assert.deepEqual((await segState(kv, ids[0]))?.out, [1]);
  assert.deepEqual(
    (await q.claim(5, 60_000)).map((d) => d.payload),
    ["c", "b"],
  );
  await q.close();
});

Deno.test("queue segments: a claim keeps the segments it found in the cache while it reads their states", async () => {
  using raw = await Deno.openKv(":memory:");
  // While the claim reads the segments' states, 128 newer segments are
  // stored (and cached): the ones the claim found cached are dropped.
  let during: (() => Promise<void>) | undefined;
  const kv = new Proxy(raw, {
    get(target, prop) {
      if (prop === "getMany") {
        return async (keys: Deno.KvKey[]) => {
          const hook = keys.some((k) => k[2] === "segstate")
            ? during
            : undefined;
          during = undefined;
          if (hook) await hook();
          return await target.getMany(keys);
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const q = new DurableQueue<number>(kv, "s", {
    commit: { windowMs: 60_000 },
  });
  await q.enqueue(0);
  await q.flush();
  during = async () => {
    for (let i = 1; i <= 128; i++) {
      await q.enqueue(i);
      await q.flush();
    }
  };
  const ds = await q.claim(1, 60_000);
  assert.deepEqual(ds.map((d) => d.payload), [0]);
  assert.equal((await q.stats()).ready, 128);
  await q.close();
});
