/**
 * Deno KV caps one atomic commit (1000 mutations, 819,200 bytes of keys and
 * values, 80 KiB of keys): commits whose size grows with the number or size
 * of messages must split, or stay under it by construction.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  DurableQueue,
  MAX_CONSUMER_CHARS,
  MAX_MESSAGE_BYTES,
} from "./queue.ts";
import { consume } from "./consumer.ts";
import { queueKeys } from "./keys.ts";
import { openStore } from "./store.ts";
import { ManualClock } from "../clock.ts";
import { countCommits } from "./_count_commits.ts";

/** A KV file in a fresh temp dir, removed on dispose. */
async function tempStore(): Promise<
  { kv: Deno.Kv; path: string; [Symbol.asyncDispose](): Promise<void> }
> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-queue-limits-" });
  const path = join(dir, "q.kv");
  const kv = await openStore(path);
  return {
    kv,
    path,
    async [Symbol.asyncDispose]() {
      kv.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const KIB16 = "x".repeat(16 * 1024);

Deno.test("queue limits: one claim of 800 messages of 16 KiB claims them all, in order, without a too-large commit", async () => {
  await using t = await tempStore();
  const c = countCommits(t.kv);
  // The counting proxy hides the local store: take its batch size.
  const q = new DurableQueue<string>(c.kv, "big", { maxBatch: 100 });
  for (let i = 0; i < 800; i += 40) {
    await q.enqueueMany(
      Array.from({ length: 40 }, (_, k) => ({ payload: `${i + k}:${KIB16}` })),
    );
  }
  let before = c.commits();
  const ds = await q.claim(800, 60_000);
  assert.equal(ds.length, 800);
  // ~13 MB of records: about 18 commits of at most 90 % of KV's 800 KiB.
  const claims = c.commits() - before;
  assert.ok(claims >= 16 && claims <= 26, `${claims} claim commits`);
  assert.deepEqual(
    ds.map((d) => Number(d.payload.split(":")[0])),
    Array.from({ length: 800 }, (_, i) => i),
  );
  const stats = await q.stats();
  assert.equal(stats.ready, 0);
  assert.equal(stats.inflight, 800);
  before = c.commits();
  const errs = await q.ackAll(ds);
  assert.deepEqual(errs.filter((e) => e !== undefined), []);
  const acks = c.commits() - before;
  assert.ok(acks >= 16 && acks <= 26, `${acks} ack commits`);
  assert.equal((await q.stats()).inflight, 0);
  const last = await t.kv.get<{ state: string }>(
    queueKeys("big").msg(ds[799].id),
  );
  assert.equal(last.value?.state, "done");
});

Deno.test("queue limits: enqueueMany of 200 messages of 16 KiB commits them in runs that fit, in order", async () => {
  await using t = await tempStore();
  const c = countCommits(t.kv);
  const q = new DurableQueue<string>(c.kv, "many", { maxBatch: 100 });
  const ids = await q.enqueueMany(
    Array.from({ length: 200 }, (_, i) => ({ payload: `${i}:${KIB16}` })),
  );
  assert.equal(ids.length, 200);
  // ~3.3 MB: 5 commits of at most 90 % of KV's 800 KiB (none refused).
  assert.ok(c.commits() >= 5 && c.commits() <= 6, `${c.commits()} commits`);
  const ds = await q.claim(200, 60_000);
  assert.deepEqual(
    ds.map((d) => Number(d.payload.split(":")[0])),
    Array.from({ length: 200 }, (_, i) => i),
  );
});

Deno.test("queue limits: enqueueMany with one message over KV's value limit writes nothing", async () => {
  await using t = await tempStore();
  const q = new DurableQueue<string>(t.kv, "many", { maxBatch: 100 });
  await assert.rejects(
    q.enqueueMany(
      Array.from({ length: 120 }, (_, i) => ({
        payload: i === 110 ? "y".repeat(70_000) : `m${i}`,
      })),
    ),
    (err: Error) =>
      err instanceof RangeError && /64 KiB value limit/.test(err.message),
  );
  assert.equal((await q.stats()).ready, 0);
});

Deno.test("queue limits: a group commit of 100 enqueues of 16 KiB is split before KV refuses it", async () => {
  await using t = await tempStore();
  const c = countCommits(t.kv);
  const q = new DurableQueue<string>(c.kv, "group");
  const done = await Promise.all(
    Array.from({ length: 100 }, (_, i) => q.enqueue(`${i}:${KIB16}`)),
  );
  assert.equal(done.length, 100);
  // 1.6 MB: 3 commits, each accepted (halving after refusals took 7 tries).
  assert.equal(c.commits(), 3);
  const ds = await q.claim(100, 60_000);
  assert.deepEqual(
    ds.map((d) => Number(d.payload.split(":")[0])),
    Array.from({ length: 100 }, (_, i) => i),
  );
});

Deno.test("queue limits: in the window mode, 100 acks of 16 KiB records share commits that fit", async () => {
  await using t = await tempStore();
  const c = countCommits(t.kv);
  const q = new DurableQueue<string>(c.kv, "window", {
    maxBatch: 100,
    commit: { windowMs: 50 },
  });
  // enqueueMany stores records (the window packs only single enqueues).
  await q.enqueueMany(
    Array.from({ length: 100 }, (_, i) => ({ payload: `${i}:${KIB16}` })),
  );
  const ds = await q.claim(100, 60_000);
  assert.equal(ds.length, 100);
  const before = c.commits();
  await Promise.all(ds.map((d) => d.ack()));
  await q.flush();
  // One group of 100 acks: 3 commits, not one refused and 100 singles.
  assert.ok(c.commits() - before <= 4, `${c.commits() - before} commits`);
  assert.equal((await q.stats()).inflight, 0);
  await q.close();
});

/** `kv` whose commits of more than `max.sets` sets fail as KV fails a too-large one. */
function refuseLarge(kv: Deno.Kv, max: { sets: number }): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          let sets = 0;
          const set = op.set.bind(op);
          op.set = (...args) => {
            sets++;
            return set(...args);
          };
          const commit = op.commit.bind(op);
          op.commit = () => {
            if (sets > max.sets) {
              return Promise.reject(
                new TypeError(
                  "Total mutation size too large (max 819200 bytes)",
                ),
              );
            }
            return commit();
          };
          return op;
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

Deno.test("queue limits: a claim commit KV refuses as too large is retried smaller and claims all, in order", async () => {
  await using t = await tempStore();
  const q = new DurableQueue<string>(t.kv, "refused", { maxBatch: 100 });
  await q.enqueueMany(
    Array.from({ length: 30 }, (_, i) => ({ payload: `m${i}` })),
  );
  // Each claimed record takes 2 sets: at most 4 records a commit.
  const strict = new DurableQueue<string>(
    refuseLarge(t.kv, { sets: 9 }),
    "refused",
    {
      maxBatch: 100,
    },
  );
  const ds = await strict.claim(30, 60_000);
  assert.deepEqual(
    ds.map((d) => d.payload),
    Array.from({ length: 30 }, (_, i) => `m${i}`),
  );
  assert.equal((await q.stats()).inflight, 30);
});

Deno.test("queue limits: packed messages claimed over several commits keep their order and leases", async () => {
  await using t = await tempStore();
  const q = new DurableQueue<string>(t.kv, "packed", {
    maxBatch: 100,
    commit: { windowMs: 1000 },
  });
  // 6 segments of 5 messages, one ready index entry each.
  for (let s = 0; s < 6; s++) {
    await Promise.all(
      Array.from({ length: 5 }, (_, i) => q.enqueue(`m${s * 5 + i}`)),
    );
    await q.flush();
  }
  await q.close();
  // A segment's claim writes 3 values (entry, state, lease index entry).
  const max = { sets: 6 };
  const strict = new DurableQueue<string>(refuseLarge(t.kv, max), "packed", {
    maxBatch: 100,
  });
  const ds = await strict.claim(30, 60_000);
  assert.deepEqual(
    ds.map((d) => d.payload),
    Array.from({ length: 30 }, (_, i) => `m${i}`),
  );
  assert.ok(ds.every((d) => d.id.includes("~")), "stored packed");
  assert.equal((await strict.stats()).inflight, 30);
  assert.deepEqual(await strict.claim(1, 60_000), []);
  // Acks of 6 segments: refused whole, then halved down to what lands.
  max.sets = 3;
  const errs = await strict.ackAll(ds);
  assert.deepEqual(errs.filter((e) => e !== undefined), []);
  assert.equal((await strict.stats()).inflight, 0);
});

Deno.test("queue limits: a packed ack of 100 segments with large states commits in parts that fit", async () => {
  const kv = await openStore(":memory:");
  try {
    const w = new DurableQueue<string>(kv, "states", {
      maxGroup: 16,
      commit: { windowMs: 1000 },
    });
    for (let s = 0; s < 100; s++) {
      await Promise.all(
        Array.from({ length: 16 }, (_, i) => w.enqueue(`${s}.${i}`)),
      );
      await w.flush();
    }
    await w.close();
    // One claim per message, each a lease of its own in its segment's
    // state: 16 leases named by a long (two-byte) consumer name, ~9.5 KB
    // a state.
    const q = new DurableQueue<string>(kv, "states");
    const firsts = [];
    for (let k = 0; k < 1600; k++) {
      const [d] = await q.claim(1, 60_000, `consumer-${k}-${"ü".repeat(240)}`);
      if (d.payload.endsWith(".0")) firsts.push(d);
    }
    assert.equal(firsts.length, 100);
    assert.ok(firsts.every((d) => d.id.includes("~")), "stored packed");
    // One ack per segment: 100 states of ~9.5 KB, over 800 KiB in one commit.
    const errs = await q.ackAll(firsts);
    assert.deepEqual(errs.filter((e) => e !== undefined), []);
    assert.equal((await q.stats()).inflight, 1500);
    assert.equal((await q.get(firsts[99].id))?.state, "done");
  } finally {
    kv.close();
  }
});

Deno.test("queue limits: an enqueueMany commit KV refuses as too large is retried in halves, in order", async () => {
  await using t = await tempStore();
  // A record takes 1 set (its ready index entry 1 per commit): 8 a commit.
  const q = new DurableQueue<string>(refuseLarge(t.kv, { sets: 9 }), "halves", {
    maxBatch: 100,
  });
  const ids = await q.enqueueMany(
    Array.from({ length: 30 }, (_, i) => ({ payload: `m${i}` })),
  );
  assert.equal(ids.length, 30);
  const ds = await q.claim(30, 60_000);
  assert.deepEqual(
    ds.map((d) => d.payload),
    Array.from({ length: 30 }, (_, i) => `m${i}`),
  );
});

Deno.test("queue limits: 100 messages with 1,500-character ids enqueue and claim in commits within KV's 80 KiB of keys", async () => {
  await using t = await tempStore();
  const q = new DurableQueue<string>(t.kv, "long-ids", { maxBatch: 100 });
  const id = (i: number) =>
    `${String(i).padStart(4, "0")}-${"k".repeat(1_495)}`;
  await q.enqueueMany(
    Array.from({ length: 100 }, (_, i) => ({
      payload: `m${i}`,
      options: { id: id(i) },
    })),
  );
  const ds = await q.claim(100, 60_000);
  assert.deepEqual(
    ds.map((d) => d.id),
    Array.from({ length: 100 }, (_, i) => id(i)),
  );
  const errs = await q.ackAll(ds);
  assert.deepEqual(errs.filter((e) => e !== undefined), []);
  assert.equal((await q.stats()).inflight, 0);
});

Deno.test("queue limits: on a denokv server (KV Connect) too, one claim of 200 messages of 16 KiB claims them all", async () => {
  const url = Deno.env.get("DENO_KV_URL");
  if (!url) return; // no server: the local cases above stand
  const kv = await openStore(url);
  const name = `limits-${crypto.randomUUID().slice(0, 8)}`;
  try {
    // 10 checks a commit here, but up to 100 ids: 10 entries of 10.
    const q = new DurableQueue<string>(kv, name);
    await q.enqueueMany(
      Array.from({ length: 200 }, (_, i) => ({ payload: `${i}:${KIB16}` })),
    );
    const ds = await q.claim(200, 60_000);
    assert.deepEqual(
      ds.map((d) => Number(d.payload.split(":")[0])),
      Array.from({ length: 200 }, (_, i) => i),
    );
    const errs = await q.ackAll(ds);
    assert.deepEqual(errs.filter((e) => e !== undefined), []);
  } finally {
    // A remote store outlives the test.
    const keys = [];
    for await (const e of kv.list({ prefix: ["queue", name] })) {
      keys.push(e.key);
    }
    for (let i = 0; i < keys.length; i += 10) {
      const op = kv.atomic();
      for (const k of keys.slice(i, i + 10)) op.delete(k);
      await op.commit();
    }
    kv.close();
  }
});

Deno.test("queue limits: two handles claiming 400 messages of 16 KiB at once share none and miss none", async () => {
  await using t = await tempStore();
  const q = new DurableQueue<string>(t.kv, "race", { maxBatch: 100 });
  for (let i = 0; i < 400; i += 40) {
    await q.enqueueMany(
      Array.from({ length: 40 }, (_, k) => ({ payload: `${i + k}:${KIB16}` })),
    );
  }
  const other = await openStore(t.path);
  try {
    const q2 = new DurableQueue<string>(other, "race", { maxBatch: 100 });
    const got: number[] = [];
    // Each keeps claiming until the queue is empty.
    await Promise.all([q, q2].map(async (h) => {
      for (;;) {
        const ds = await h.claim(400, 60_000);
        if (ds.length === 0 && (await h.stats()).ready === 0) return;
        got.push(...ds.map((d) => Number(d.payload.split(":")[0])));
      }
    }));
    assert.equal(got.length, 400);
    assert.deepEqual(
      [...got].sort((a, b) => a - b),
      Array.from({ length: 400 }, (_, i) => i),
    );
  } finally {
    other.close();
  }
});

Deno.test("queue limits: a segment whose state is full of long-named leases takes no more claims until some end, and no claim throws", async () => {
  const kv = await openStore(":memory:");
  try {
    const w = new DurableQueue<string>(kv, "full", {
      maxGroup: 200,
      commit: { windowMs: 1000 },
    });
    await Promise.all(
      Array.from({ length: 200 }, (_, i) => w.enqueue(`m${i}`)),
    );
    await w.close();
    const q = new DurableQueue<string>(kv, "full");
    // A lease a claim, each ~600 bytes (a 256-character two-byte name): 200
    // would be ~120 KB, over a value.
    const held = [];
    for (let k = 0; k < 200; k++) {
      const ds = await q.claim(1, 60_000, `c${k}-${"ü".repeat(250)}`);
      if (ds.length === 0) break;
      held.push(...ds);
    }
    assert.ok(held.length > 50 && held.length < 200, `${held.length} held`);
    assert.equal((await q.stats()).ready, 200 - held.length);
    // Leases that end leave room: the rest is claimed, in order.
    await q.ackAll(held);
    const rest = await q.claim(200, 60_000, "short");
    assert.deepEqual(
      [...held, ...rest].map((d) => d.payload),
      Array.from({ length: 200 }, (_, i) => `m${i}`),
    );
  } finally {
    kv.close();
  }
});

Deno.test("queue limits: long errors and dead-letter reasons are cut so a large message's record still fits one KV value", async () => {
  await using t = await tempStore();
  const q = new DurableQueue<string>(t.kv, "errors");
  const { id } = await q.enqueue("p".repeat(50_000), { maxAttempts: 5 });
  for (let k = 0; k < 3; k++) {
    const [d] = await q.claim(1, 60_000);
    // Before: the record outgrew 64 KiB and the nak threw a RangeError.
    await d.nak(0, `attempt ${k}: ${"e".repeat(10_000)}`);
  }
  const m = (await q.get(id))!;
  assert.equal(m.state, "ready");
  assert.ok(m.errors.length >= 1 && m.errors.length <= 3);
  const last = m.errors.at(-1)!.error;
  assert.match(last, /^attempt 2: e+… \(8011 more characters\)$/);
  const [d] = await q.claim(1, 60_000);
  await d.term("r".repeat(100_000));
  const dead = (await q.get(id))!;
  assert.equal(dead.state, "dead");
  assert.equal(dead.deadReason!.length < 2_100, true);
});

Deno.test("queue limits: a long cancel reason is cut, so a large message can still be cancelled", async () => {
  await using t = await tempStore();
  const q = new DurableQueue<string>(t.kv, "cancel");
  const { id } = await q.enqueue("p".repeat(60_000));
  const out = await q.cancel(id, "r".repeat(20_000));
  assert.equal(out.outcome, "cancelled");
  assert.ok((await q.get(id))!.cancelReason!.length < 2_100);
});

Deno.test("queue limits: with maxGroup 1000, a sweep returns an expired packed lease of 600 tiny messages to ready", async () => {
  const kv = await openStore(":memory:");
  try {
    const clock = new ManualClock(1_000_000);
    const w = new DurableQueue<number>(kv, "tiny", {
      maxGroup: 1000,
      commit: { windowMs: 1000 },
      clock,
    });
    await Promise.all(Array.from({ length: 600 }, (_, i) => w.enqueue(i)));
    await w.close();
    const q = new DurableQueue<number>(kv, "tiny", { clock });
    const ds = await q.claim(600, 1000);
    assert.equal(ds.length, 600);
    // Segments hold 200 messages at most: an expired lease's move to
    // ready is 4 mutations a message (before: 277 of them, over KV's 1000,
    // and every sweep threw "Too many mutations").
    assert.ok(ds.every((d) => Number(d.id.split("~")[1]) < 200));
    await clock.advance(2000);
    assert.deepEqual(await q.sweep(), { expired: 600, promoted: 0 });
    // Back in the order the sweep found the leases (each segment's in order).
    const again = await q.claim(600, 1000);
    assert.deepEqual(
      again.map((d) => d.payload).sort((a, b) => a - b),
      Array.from({ length: 600 }, (_, i) => i),
    );
  } finally {
    kv.close();
  }
});

/**
 * Writes segment `n` of `count` messages to queue `q` the way a node before
 * the 200-message limit stored it: one value holding them all, and either
 * one ready index entry listing them (written by the same commit) or, when
 * `lease` is given, a state whose one lease holds every position (claimed
 * from memory before its commit) with that lease's index entry.
 */
async function oldSegment(kv: Deno.Kv, q: string, o: {
  n: number;
  count: number;
  now: number;
  maxAttempts?: number;
  lease?: { until: number; consumer: string };
}): Promise<string[]> {
  const keys = queueKeys(q);
  const seg = `01900000-0000-7000-8000-${String(o.n).padStart(12, "0")}`;
  const msgs = Array.from({ length: o.count }, (_, i) => ({
    id: `${seg}~${i}`,
    queue: q,
    priority: 4,
    payload: o.n * 1000 + i,
    state: "ready",
    attempts: 0,
    maxAttempts: o.maxAttempts ?? 3,
    backoff: { baseMs: 1000, maxMs: 60_000 },
    enqueuedAt: o.now,
    availableAt: o.now,
    errors: [],
  }));
  const ids = msgs.map((m) => m.id);
  const op = kv.atomic().set(keys.seg(seg), msgs);
  if (o.lease) {
    const lease = {
      id: crypto.randomUUID(),
      ...o.lease,
      pos: ids.map((_, i) => i),
    };
    op.set(keys.segState(seg), {
      n: o.count,
      leases: [lease],
      done: [],
      out: [],
    })
      .set(keys.inflight(lease.until, `${seg}/${lease.id}`), {
        seg,
        lease: lease.id,
      })
      .sum(keys.count("inflight"), BigInt(o.count));
  } else {
    op.set(keys.ready(4, kv.commitVersionstamp()), ids)
      .sum(keys.count("ready"), BigInt(o.count));
  }
  assert.ok((await op.commit()).ok);
  return ids;
}

Deno.test("queue limits: segments of 280 messages stored by older nodes are swept, claimed, naked and acked without a commit past KV's limits, nothing lost", async () => {
  const kv = await openStore(":memory:");
  try {
    const clock = new ManualClock(1_000_000);
    // Older nodes packed up to ~300 small messages (60 KiB) a segment. One
    // held by a lease of an older node, all 280 positions; one ready.
    const held = await oldSegment(kv, "old", {
      n: 1,
      count: 280,
      now: clock.now(),
      lease: { until: clock.now() + 1000, consumer: "old-node" },
    });
    const ready = await oldSegment(kv, "old", {
      n: 2,
      count: 280,
      now: clock.now(),
    });
    const q = new DurableQueue<number>(kv, "old", { clock });
    await clock.advance(2000);
    // Before: the sweep's one commit of 1,120 mutations threw.
    assert.deepEqual(await q.sweep(), { expired: 280, promoted: 0 });
    assert.equal((await q.get(held[279]))!.state, "ready");
    // Claimed in commits that fit, the ready segment first (it was ready
    // before the sweep); its packed messages then all naked at once.
    const packed = await q.claim(280, 60_000, "c1");
    assert.deepEqual(packed.map((d) => d.id), ready);
    const records = await q.claim(280, 60_000, "c1");
    assert.deepEqual(records.map((d) => d.id), held);
    await Promise.all(packed.map((d) => d.nak(0, "again")));
    await q.ackAll(records);
    const again = await q.claim(280, 60_000, "c2");
    assert.deepEqual(again.map((d) => d.id), ready);
    assert.deepEqual(await q.ackAll(again), again.map(() => undefined));
    assert.deepEqual(await q.stats(), {
      ready: 0,
      delayed: 0,
      inflight: 0,
      dead: 0,
      oldestReadyAgeMs: 0,
    });
    for (const id of [...held, ...ready]) {
      assert.equal((await q.get(id))?.state, "done", id);
    }
  } finally {
    kv.close();
  }
});

Deno.test("queue limits: an expired packed lease of 200 messages on their last attempt goes to the DLQ, split over commits that fit", async () => {
  const kv = await openStore(":memory:");
  try {
    const clock = new ManualClock(1_000_000);
    const ids = await oldSegment(kv, "last", {
      n: 1,
      count: 200,
      now: clock.now(),
      maxAttempts: 1,
      lease: { until: clock.now() + 1000, consumer: "n1" },
    });
    const q = new DurableQueue<number>(kv, "last", { clock });
    await clock.advance(2000);
    // 5 mutations a message to the DLQ: 1,000 and more in one commit before.
    assert.deepEqual(await q.sweep(), { expired: 200, promoted: 0 });
    const dead = await q.dlq({ limit: 1000 });
    assert.deepEqual(dead.map((m) => m.id).sort(), [...ids].sort());
    assert.equal((await q.stats()).dead, 200);
    assert.equal((await q.stats()).inflight, 0);
  } finally {
    kv.close();
  }
});

Deno.test("queue limits: a consumer name over 256 characters is refused by claim and consume, with the length and the limit", async () => {
  const kv = await openStore(":memory:");
  try {
    const q = new DurableQueue<string>(kv, "names");
    await q.enqueue("m");
    const long = "n".repeat(MAX_CONSUMER_CHARS + 1);
    await assert.rejects(
      q.claim(1, 1000, long),
      (err: unknown) =>
        err instanceof RangeError &&
        /consumer name is 257 characters, over the limit of 256/.test(
          err.message,
        ),
    );
    await assert.rejects(q.claim(1, 1000, ""), RangeError);
    assert.throws(
      () => consume(q, () => Promise.resolve(), { consumer: long }),
      /consumer name is 257 characters/,
    );
    assert.equal((await q.stats()).ready, 1, "nothing was claimed");
    const [d] = await q.claim(1, 1000, "n".repeat(MAX_CONSUMER_CHARS));
    assert.equal(d.message.consumer!.length, MAX_CONSUMER_CHARS);
  } finally {
    kv.close();
  }
});

Deno.test("queue limits: the largest message an enqueue takes is claimed again and again under a 256-character two-byte consumer name, naked, dead-lettered and cancelled with long reasons", async () => {
  await using t = await tempStore();
  const q = new DurableQueue<string>(t.kv, "largest");
  // The largest payload taken: one more byte is refused at enqueue.
  let size = MAX_MESSAGE_BYTES;
  let id = "";
  for (; !id; size -= 4) {
    id = await q.enqueue("p".repeat(size)).then((e) => e.id, (err) => {
      assert.match(err.message, /over the limit of 64512/);
      return "";
    });
  }
  assert.ok(size > MAX_MESSAGE_BYTES - 600, `${size}`);
  await assert.rejects(q.enqueue("p".repeat(MAX_MESSAGE_BYTES)), RangeError);
  const name = "ü".repeat(MAX_CONSUMER_CHARS);
  // Before: a message of 65,200 bytes was taken, and its second claim (and
  // every one after) threw 'Value too large'.
  for (let k = 0; k < 2; k++) {
    const [d] = await q.claim(1, 60_000, name);
    assert.equal(d.id, id);
    await d.nak(0, "é".repeat(5_000));
  }
  const [d] = await q.claim(1, 60_000, name);
  await d.term("ø".repeat(5_000));
  const dead = (await q.get(id))!;
  assert.equal(dead.state, "dead");
  // Cut to the room left in the record.
  assert.match(dead.deadReason!, /^ø*… \(\d+ more characters\)$/);
  const other = (await q.enqueue("p".repeat(size))).id;
  const [held] = await q.claim(1, 60_000, name);
  assert.equal(held.id, other);
  const out = await q.cancel(other, "ø".repeat(5_000));
  assert.equal(out.outcome, "cancelled");
  assert.equal((await q.get(other))!.state, "cancelled");
});
