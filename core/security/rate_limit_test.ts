import assert from "node:assert/strict";
import { openStore } from "../state/store.ts";
import { join } from "node:path";
import { ManualClock } from "../clock.ts";
import { rateLimitKey } from "../state/keys.ts";
import {
  createRateLimiter,
  MAX_RATE_LIMIT_ID_BYTES,
  type RateLimitDecision,
  type RateLimiterOptions,
  type RateLimitKv,
} from "./rate_limit.ts";
import { mulberry32 } from "../random.ts";

const T0 = 1_700_000_000_000;

/** A KV wrapper that counts reads and commits and records each `expireIn`. */
function counting(kv: Deno.Kv) {
  const counts = { gets: 0, commits: 0, expireIns: [] as number[] };
  const wrapped: RateLimitKv = {
    get: ((
      key: Deno.KvKey,
      options?: { consistency?: Deno.KvConsistencyLevel },
    ) => {
      counts.gets++;
      return kv.get(key, options);
    }) as Deno.Kv["get"],
    atomic: () => {
      const op = kv.atomic();
      const set = op.set.bind(op);
      op.set = (key, value, options) => {
        if (options?.expireIn !== undefined) {
          counts.expireIns.push(options.expireIn);
        }
        return set(key, value, options);
      };
      const commit = op.commit.bind(op);
      op.commit = () => {
        counts.commits++;
        return commit();
      };
      return op;
    },
  };
  return { kv: wrapped, counts };
}

async function withKv(fn: (kv: Deno.Kv) => Promise<void>) {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(kv);
  } finally {
    kv.close();
  }
}

/** Two KV handles on one temp file: two "nodes" sharing one store. */
async function withTwoNodes(fn: (a: Deno.Kv, b: Deno.Kv) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "plexus-rl-" });
  const path = join(dir, "shared.kv");
  // As nodes open it: the store retries "database is locked" between handles.
  const a = await openStore(path);
  const b = await openStore(path);
  try {
    await fn(a, b);
  } finally {
    a.close();
    b.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function pick(d: RateLimitDecision) {
  return {
    allowed: d.allowed,
    retryAfterMs: d.retryAfterMs,
    remaining: d.remaining,
    resetMs: d.resetMs,
  };
}

Deno.test("rate limit: a burst is admitted back to back, the next is refused with the right retryAfter, and one is admitted again after the emission interval", async () => {
  await withKv(async (kv) => {
    const clock = new ManualClock(T0);
    // T = 100 ms, 5 back to back.
    const limiter = createRateLimiter(kv, {
      scope: "ip",
      rate: 10,
      periodMs: 1000,
      burst: 5,
      clock,
    });
    for (let i = 1; i <= 5; i++) {
      const d = await limiter.check("a");
      assert.deepEqual(pick(d), {
        allowed: true,
        retryAfterMs: 0,
        remaining: 5 - i,
        resetMs: 100 * i,
      });
      assert.equal(d.limit, 5);
    }
    assert.deepEqual(pick(await limiter.check("a")), {
      allowed: false,
      retryAfterMs: 100,
      remaining: 0,
      resetMs: 500,
    });
    await clock.advance(99);
    assert.deepEqual(pick(await limiter.check("a")), {
      allowed: false,
      retryAfterMs: 1,
      remaining: 0,
      resetMs: 401,
    });
    await clock.advance(1);
    assert.deepEqual(pick(await limiter.check("a")), {
      allowed: true,
      retryAfterMs: 0,
      remaining: 0,
      resetMs: 500,
    });
    assert.equal((await limiter.check("a")).allowed, false);
    // After a long idle time the full burst is back, no more.
    await clock.advance(10_000);
    const d = await limiter.check("a");
    assert.deepEqual(pick(d), {
      allowed: true,
      retryAfterMs: 0,
      remaining: 4,
      resetMs: 100,
    });
    assert.deepEqual(limiter.stats(), {
      admitted: 7,
      refusedLocally: 3,
      refusedShared: 0,
      refusedContended: 0,
      conflicts: 0,
    });
  });
});

Deno.test("rate limit: a cost above 1 spends that many emission intervals", async () => {
  await withKv(async (kv) => {
    const clock = new ManualClock(T0);
    const limiter = createRateLimiter(kv, {
      scope: "ip",
      rate: 10,
      periodMs: 1000,
      burst: 5,
      clock,
      localPreLimit: false,
    });
    assert.deepEqual(pick(await limiter.check("a", 3)), {
      allowed: true,
      retryAfterMs: 0,
      remaining: 2,
      resetMs: 300,
    });
    // 3 more would need 600 ms of tolerance; 500 is there.
    assert.deepEqual(pick(await limiter.check("a", 3)), {
      allowed: false,
      retryAfterMs: 100,
      remaining: 2,
      resetMs: 300,
    });
    assert.deepEqual(pick(await limiter.check("a", 2)), {
      allowed: true,
      retryAfterMs: 0,
      remaining: 0,
      resetMs: 500,
    });
    await clock.advance(200);
    assert.equal((await limiter.check("a", 2)).allowed, true);
    assert.equal((await limiter.check("a", 1)).allowed, false);
    // The whole burst at once is allowed once it is all there.
    await clock.advance(500);
    assert.deepEqual(pick(await limiter.check("a", 5)), {
      allowed: true,
      retryAfterMs: 0,
      remaining: 0,
      resetMs: 500,
    });
    for (const cost of [0, -1, 1.5, 6, NaN]) {
      await assert.rejects(limiter.check("a", cost), RangeError);
    }
  });
});

Deno.test("rate limit: a period that does not divide evenly still admits exactly the burst", async () => {
  await withKv(async (kv) => {
    const clock = new ManualClock(T0 + 0.123);
    // T = 333.333 ms (rounded to the microsecond).
    const limiter = createRateLimiter(kv, {
      scope: "ip",
      rate: 3,
      periodMs: 1000,
      burst: 300,
      clock,
      localPreLimit: false,
    });
    assert.equal(limiter.policy.emissionIntervalMs, 333.333);
    let admitted = 0;
    for (let i = 0; i < 301; i++) {
      if ((await limiter.check("a")).allowed) admitted++;
    }
    assert.equal(admitted, 300);
    const refused = await limiter.check("a");
    assert.equal(refused.retryAfterMs, 334); // 333.333 rounded up
    await clock.advance(333.332);
    assert.equal((await limiter.check("a")).allowed, false);
    await clock.advance(0.001);
    assert.equal((await limiter.check("a")).allowed, true);
  });
});

Deno.test("rate limit: state is {tat} at rateLimitKey(scope, id), with expireIn only past the point it matters", async () => {
  await withKv(async (raw) => {
    const clock = new ManualClock(T0);
    const { kv, counts } = counting(raw);
    const limiter = createRateLimiter(kv, {
      scope: "principal",
      rate: 60,
      periodMs: 60_000,
      burst: 10,
      clock,
      gcSlackMs: 5_000,
    });
    await limiter.check("alice", 4);
    const entry = await raw.get<{ tat: number }>(
      rateLimitKey("principal", "alice"),
    );
    assert.deepEqual(entry.value, { tat: T0 + 4_000 });
    assert.deepEqual(counts.expireIns, [4_000 + 5_000]);
    // Another id and another scope have their own budgets.
    const other = createRateLimiter(kv, {
      scope: "ip",
      rate: 60,
      periodMs: 60_000,
      burst: 10,
      clock,
    });
    assert.equal((await other.check("alice", 10)).allowed, true);
    assert.equal((await limiter.check("bob", 10)).allowed, true);
    assert.equal((await limiter.check("alice", 6)).allowed, true);
    assert.equal((await limiter.check("alice", 1)).allowed, false);
  });
});

Deno.test("rate limit: two nodes on one KV file share one budget: a burst split across them admits exactly the burst", async () => {
  await withTwoNodes(async (kvA, kvB) => {
    const clock = new ManualClock(T0);
    const options: RateLimiterOptions = {
      scope: "ip",
      rate: 10,
      periodMs: 10_000,
      burst: 10,
      clock,
    };
    const nodes = [
      createRateLimiter(kvA, options),
      createRateLimiter(kvB, options),
    ];
    let admitted = 0;
    for (let i = 0; i < 30; i++) {
      if ((await nodes[i % 2].check("10.0.0.1")).allowed) admitted++;
    }
    assert.equal(admitted, 10);
    // One emission interval later, exactly one more, from either node.
    await clock.advance(1_000);
    const next = [
      await nodes[1].check("10.0.0.1"),
      await nodes[0].check("10.0.0.1"),
    ];
    assert.deepEqual(next.map((d) => d.allowed), [true, false]);
  });
});

Deno.test("rate limit: concurrent checks from two nodes never over-admit", async () => {
  for (const localPreLimit of [false, true]) {
    await withTwoNodes(async (kvA, kvB) => {
      const clock = new ManualClock(T0);
      const options: RateLimiterOptions = {
        scope: "ip",
        rate: 25,
        periodMs: 60_000,
        burst: 25,
        clock,
        localPreLimit,
      };
      // Two limiters per handle: contention inside a process and across.
      const nodes = [kvA, kvA, kvB, kvB].map((kv) =>
        createRateLimiter(kv, options)
      );
      const results = await Promise.all(
        Array.from(
          { length: 240 },
          (_, i) => nodes[i % nodes.length].check("hot"),
        ),
      );
      const admitted = results.filter((d) => d.allowed).length;
      assert.equal(admitted, 25, `localPreLimit=${localPreLimit}`);
      const stats = nodes.map((n) => n.stats());
      assert.equal(stats.reduce((s, x) => s + x.admitted, 0), 25);
      assert.equal(stats.reduce((s, x) => s + x.refusedContended, 0), 0);
      // Two commits racing on one key is what the CAS is for.
      assert.ok(stats.reduce((s, x) => s + x.conflicts, 0) > 0);
    });
  }
});

Deno.test("rate limit: the local pre-limit refuses a clearly-over request without touching KV", async () => {
  await withKv(async (raw) => {
    const clock = new ManualClock(T0);
    const { kv, counts } = counting(raw);
    const limiter = createRateLimiter(kv, {
      scope: "ip",
      rate: 3,
      periodMs: 3_000,
      burst: 3,
      clock,
    });
    for (let i = 0; i < 3; i++) {
      assert.equal((await limiter.check("a")).allowed, true);
    }
    assert.deepEqual({ gets: counts.gets, commits: counts.commits }, {
      gets: 3,
      commits: 3,
    });
    for (let i = 0; i < 50; i++) {
      const d = await limiter.check("a");
      assert.deepEqual(pick(d), {
        allowed: false,
        retryAfterMs: 1_000,
        remaining: 0,
        resetMs: 3_000,
      });
    }
    assert.deepEqual({ gets: counts.gets, commits: counts.commits }, {
      gets: 3,
      commits: 3,
    });
    assert.equal(limiter.stats().refusedLocally, 50);
    // Once the interval passed, the request goes to KV again.
    await clock.advance(1_000);
    assert.equal((await limiter.check("a")).allowed, true);
    assert.deepEqual({ gets: counts.gets, commits: counts.commits }, {
      gets: 4,
      commits: 4,
    });

    // Turned off, every check reads KV (and a refusal commits nothing).
    const { kv: kv2, counts: counts2 } = counting(raw);
    const plain = createRateLimiter(kv2, {
      scope: "ip2",
      rate: 3,
      periodMs: 3_000,
      burst: 3,
      clock,
      localPreLimit: false,
    });
    for (let i = 0; i < 5; i++) await plain.check("a");
    assert.deepEqual({ gets: counts2.gets, commits: counts2.commits }, {
      gets: 5,
      commits: 3,
    });
  });
});

Deno.test("rate limit: a node learns from a shared refusal, so the next one stays local", async () => {
  await withTwoNodes(async (kvA, rawB) => {
    const clock = new ManualClock(T0);
    const { kv: kvB, counts } = counting(rawB);
    const options: RateLimiterOptions = {
      scope: "ip",
      rate: 2,
      periodMs: 2_000,
      burst: 2,
      clock,
    };
    const a = createRateLimiter(kvA, options);
    const b = createRateLimiter(kvB, options);
    await a.check("x");
    await a.check("x");
    // B has never seen x: it asks KV, which refuses; nothing is written.
    assert.equal((await b.check("x")).allowed, false);
    assert.deepEqual({ gets: counts.gets, commits: counts.commits }, {
      gets: 1,
      commits: 0,
    });
    const d = await b.check("x");
    assert.equal(d.allowed, false);
    assert.equal(d.retryAfterMs, 1_000);
    assert.equal(counts.gets, 1);
    assert.deepEqual(
      [b.stats().refusedShared, b.stats().refusedLocally],
      [1, 1],
    );
  });
});

Deno.test("rate limit: concurrent checks of one id in one process queue up: no CAS conflicts, the overflow refused locally", async () => {
  await withKv(async (raw) => {
    const clock = new ManualClock(T0);
    const { kv, counts } = counting(raw);
    const limiter = createRateLimiter(kv, {
      scope: "ip",
      rate: 3,
      periodMs: 3_000,
      burst: 3,
      clock,
    });
    const results = await Promise.all(
      Array.from({ length: 20 }, () => limiter.check("a")),
    );
    assert.deepEqual(
      results.map((d) => d.allowed),
      [true, true, true, ...Array(17).fill(false)],
    );
    assert.deepEqual({ gets: counts.gets, commits: counts.commits }, {
      gets: 3,
      commits: 3,
    });
    assert.equal(limiter.stats().conflicts, 0);
  });
});

Deno.test("rate limit: the local pre-limit remembers a bounded number of ids, least recently used dropped first", async () => {
  await withKv(async (raw) => {
    const clock = new ManualClock(T0);
    const { kv, counts } = counting(raw);
    const limiter = createRateLimiter(kv, {
      scope: "ip",
      rate: 1,
      periodMs: 60_000,
      burst: 1,
      clock,
      localPreLimit: { maxIds: 2 },
    });
    await limiter.check("a");
    await limiter.check("b");
    // A local refusal makes a the most recently used, so c pushes b out.
    assert.equal((await limiter.check("a")).allowed, false);
    await limiter.check("c");
    const gets = counts.gets;
    for (const id of ["a", "c"]) {
      assert.equal((await limiter.check(id)).allowed, false);
    }
    assert.equal(counts.gets, gets);
    assert.equal((await limiter.check("b")).allowed, false);
    assert.equal(counts.gets, gets + 1);
    assert.equal(limiter.stats().refusedShared, 1);
  });
});

/** Reference GCRA on integer microseconds, one shared state. */
function model(emissionUs: number, burst: number) {
  const tats = new Map<string, number>();
  return (id: string, nowUs: number, cost: number) => {
    const base = Math.max(tats.get(id) ?? nowUs, nowUs);
    const next = base + cost * emissionUs;
    if (next - nowUs > burst * emissionUs) {
      return {
        allowed: false,
        retryAfterUs: next - nowUs - burst * emissionUs,
      };
    }
    tats.set(id, next);
    return {
      allowed: true,
      remaining: Math.floor((burst * emissionUs - (next - nowUs)) / emissionUs),
      resetMs: Math.ceil((next - nowUs) / 1000),
    };
  };
}

Deno.test("rate limit: local pre-limits on several nodes never admit beyond the shared limit (seeded random walk against a reference GCRA)", async () => {
  await withTwoNodes(async (kvA, kvB) => {
    const clock = new ManualClock(T0);
    const options: RateLimiterOptions = {
      scope: "ip",
      rate: 5,
      periodMs: 1_000,
      burst: 4,
      clock,
    };
    const nodes = [
      createRateLimiter(kvA, options),
      createRateLimiter(kvB, options),
      createRateLimiter(kvB, { ...options, localPreLimit: { maxIds: 1 } }),
    ];
    const reference = model(200_000, 4);
    const random = mulberry32(42);
    let admitted = 0;
    for (let step = 0; step < 600; step++) {
      if (random() < 0.3) await clock.advance(Math.floor(random() * 250));
      const id = ["x", "y", "z"][Math.floor(random() * 3)];
      const cost = random() < 0.8 ? 1 : 2;
      const node = nodes[Math.floor(random() * nodes.length)];
      const got = await node.check(id, cost);
      const want = reference(id, Math.round(clock.now() * 1000), cost);
      assert.equal(got.allowed, want.allowed, `step ${step}`);
      if (want.allowed) {
        admitted++;
        assert.equal(got.remaining, want.remaining, `step ${step}`);
        assert.equal(got.resetMs, want.resetMs, `step ${step}`);
      } else {
        // A local refusal may know less than KV, never more.
        assert.ok(
          got.retryAfterMs <= Math.ceil(want.retryAfterUs! / 1000),
          `step ${step}`,
        );
        assert.ok(got.retryAfterMs > 0);
      }
    }
    const stats = nodes.map((n) => n.stats());
    assert.equal(stats.reduce((s, x) => s + x.admitted, 0), admitted);
    // The walk exercised both kinds of refusal.
    assert.ok(stats.reduce((s, x) => s + x.refusedLocally, 0) > 0);
    assert.ok(stats.reduce((s, x) => s + x.refusedShared, 0) > 0);
  });
});

Deno.test("rate limit: a CAS that keeps losing is refused (fail closed) after maxAttempts, not admitted", async () => {
  await withKv(async (raw) => {
    const clock = new ManualClock(T0);
    let gets = 0;
    const losing: RateLimitKv = {
      get: ((key: Deno.KvKey) => {
        gets++;
        return raw.get(key);
      }) as Deno.Kv["get"],
      atomic: () => {
        const op = raw.atomic();
        op.commit = () => Promise.resolve({ ok: false as const });
        return op;
      },
    };
    const limiter = createRateLimiter(losing, {
      scope: "ip",
      rate: 10,
      periodMs: 1000,
      burst: 5,
      clock,
      maxAttempts: 3,
    });
    const d = await limiter.check("a");
    assert.deepEqual(pick(d), {
      allowed: false,
      retryAfterMs: 100,
      remaining: 0,
      resetMs: 100,
    });
    assert.equal(gets, 3);
    assert.deepEqual(limiter.stats(), {
      admitted: 0,
      refusedLocally: 0,
      refusedShared: 0,
      refusedContended: 1,
      conflicts: 3,
    });
  });
});

Deno.test("rate limit: a KV error reaches the caller and does not block the next check for the id", async () => {
  await withKv(async (raw) => {
    const clock = new ManualClock(T0);
    const broken: RateLimitKv = {
      get: () => Promise.reject(new Error("connection refused")),
      atomic: raw.atomic.bind(raw),
    };
    const failing = createRateLimiter(broken, {
      scope: "ip",
      rate: 10,
      periodMs: 1000,
      clock,
    });
    await assert.rejects(failing.check("a"), /connection refused/);
    await assert.rejects(failing.check("a"), /connection refused/);
  });
});

Deno.test("rate limit: bad options and ids are refused with clear errors", async () => {
  await withKv(async (kv) => {
    const base: RateLimiterOptions = { scope: "ip", rate: 10, periodMs: 1000 };
    const bad: [Partial<RateLimiterOptions>, RegExp][] = [
      [{ scope: "" }, /scope must be a string of 1-128 characters/],
      [{ scope: "x".repeat(129) }, /scope must be a string of 1-128/],
      [{ rate: 0 }, /rate must be an integer >= 1, got 0/],
      [{ rate: 2.5 }, /rate must be an integer >= 1, got 2.5/],
      [{ periodMs: 0 }, /periodMs must be a finite number > 0, got 0/],
      [{ periodMs: Infinity }, /periodMs must be a finite number > 0/],
      [{ burst: 0 }, /burst must be an integer >= 1, got 0/],
      [{ rate: 10_000, periodMs: 1 }, /more than one request per microsecond/],
      [{ burst: 2 ** 40, periodMs: 60_000 }, /too long/],
      [{ maxAttempts: 0 }, /maxAttempts must be an integer >= 1/],
      [{ gcSlackMs: -1 }, /gcSlackMs must be a finite number >= 0/],
      [{ localPreLimit: { maxIds: 0 } }, /localPreLimit.maxIds must be/],
    ];
    for (const [patch, message] of bad) {
      assert.throws(
        () => createRateLimiter(kv, { ...base, ...patch }),
        (err: Error) => err instanceof RangeError && message.test(err.message),
        JSON.stringify(patch),
      );
    }
    assert.throws(
      () =>
        createRateLimiter(kv, {
          ...base,
          localPreLimit: "yes" as unknown as boolean,
        }),
      TypeError,
    );
    const limiter = createRateLimiter(kv, base);
    assert.equal(limiter.policy.burst, 10); // defaults to rate
    await assert.rejects(limiter.check(""), TypeError);
    await assert.rejects(limiter.check(42 as unknown as string), TypeError);
    await assert.rejects(
      limiter.check("é".repeat(MAX_RATE_LIMIT_ID_BYTES / 2 + 1)),
      /id is 1026 bytes; at most 1024/,
    );
    assert.equal(
      (await limiter.check("é".repeat(MAX_RATE_LIMIT_ID_BYTES / 2))).allowed,
      true,
    );
  });
});
