import assert from "node:assert/strict";
import { createPromptCache, normalisePrompt } from "./cache.ts";

Deno.test("prompt cache: fresh within the TTL, stale after, gone past the max staleness", async () => {
  using kv = await Deno.openKv(":memory:");
  let now = 1_000_000;
  const cache = createPromptCache(kv, {
    ttlMs: 100,
    maxStaleMs: 50,
    now: () => now,
  });
  const key = await cache.key({ prompt: "Hi", metadata: {} }, []);
  assert.equal(await cache.get(key), undefined);
  assert.equal(await cache.put(key, { response: "hello", agent: "a" }), true);
  assert.deepEqual(await cache.get(key), {
    response: "hello",
    agent: "a",
    storedAt: 1_000_000,
    ageMs: 0,
    state: "fresh",
  });
  now += 101;
  assert.equal((await cache.get(key))?.state, "stale");
  now += 50;
  assert.equal(await cache.get(key), undefined);
  assert.equal(
    await cache.put(key, { response: "x".repeat(20_001), agent: "a" }),
    false,
  );
});

Deno.test("prompt cache: the key is the normalised prompt, the scenario and the chosen metadata values", async () => {
  using kv = await Deno.openKv(":memory:");
  const cache = createPromptCache(kv, { ttlMs: 100, maxStaleMs: 0 });
  const k = (
    prompt: string,
    scenario?: string,
    metadata = {},
    fields: string[] = [],
  ) => cache.key({ prompt, scenario, metadata }, fields);
  assert.equal(normalisePrompt(" Book\ta  ROOM\n"), "book a room");
  // Non-ASCII goes through NFC (ASCII skips it): a decomposed é is the composed one.
  assert.equal(normalisePrompt("Cafe\u0301  BAR"), "caf\u00e9 bar");
  assert.equal(await k("Cafe\u0301"), await k("caf\u00e9"));
  assert.equal(await k("Book a room"), await k("  book a\nROOM "));
  assert.equal(
    cache.keyOf({ prompt: "Book a ROOM", metadata: {} }, []),
    await k("book a room"),
  );
  assert.notEqual(await k("Book a room"), await k("Book a room", "hotel"));
  assert.equal(
    await k("x", undefined, { userId: "u1", t: 1 }),
    await k("x", undefined, { userId: "u2", t: 2 }),
  );
  assert.notEqual(
    await k("x", undefined, { userId: "u1" }, ["userId"]),
    await k("x", undefined, { userId: "u2" }, ["userId"]),
  );
  assert.equal(
    await k("x", undefined, { a: 1, b: 2 }, ["a", "b"]),
    await k("x", undefined, { b: 2, a: 1 }, ["b", "a", "a"]),
  );
  assert.match(await k("x"), /^[0-9a-f]{64}$/);
});

/** `kv` whose commits are counted (and fail while `failing`). */
function countingKv(kv: Deno.Kv) {
  const state = { commits: 0, failing: false };
  return {
    state,
    kv: {
      get: <T>(key: Deno.KvKey) => kv.get<T>(key),
      atomic() {
        const op = kv.atomic();
        const commit = op.commit.bind(op);
        op.commit = () => {
          state.commits++;
          return state.failing
            ? Promise.reject(new Error("disk full"))
            : commit();
        };
        return op;
      },
    },
  };
}

Deno.test("prompt cache: concurrent puts share group commits, bounded in size, each resolved once stored", async () => {
  using kv = await Deno.openKv(":memory:");
  const c = countingKv(kv);
  const cache = createPromptCache(c.kv, { ttlMs: 60_000, maxStaleMs: 0 });
  const small = await Promise.all(
    Array.from(
      { length: 40 },
      (_, i) => cache.put(`k${i}`, { response: `answer ${i}`, agent: "a" }),
    ),
  );
  assert.deepEqual(small, Array(40).fill(true));
  assert.equal(c.state.commits, 1, "40 small answers in one commit");
  for (let i = 0; i < 40; i++) {
    assert.equal((await cache.get(`k${i}`))?.response, `answer ${i}`);
  }
  // 30 answers of 19,000 "é" (38 KB each as UTF-8): 13 a commit.
  c.state.commits = 0;
  const big = await Promise.all(
    Array.from(
      { length: 30 },
      (_, i) =>
        cache.put(`b${i}`, { response: "é".repeat(19_000), agent: "a" }),
    ),
  );
  assert.deepEqual(big, Array(30).fill(true));
  assert.equal(c.state.commits, 3);
  assert.equal((await cache.get("b29"))?.response.length, 19_000);
});

Deno.test("prompt cache: answers are stored as JSON bytes, those stored as objects are still read, and one over a KV value is not stored", async () => {
  using kv = await Deno.openKv(":memory:");
  const cache = createPromptCache(kv, { ttlMs: 60_000, maxStaleMs: 0 });
  assert.equal(
    await cache.put("k", { response: "é \u0000", agent: "a" }),
    true,
  );
  const raw = (await kv.get<Uint8Array>(["cache", "k"])).value!;
  assert.ok(raw instanceof Uint8Array);
  assert.deepEqual(
    { ...JSON.parse(new TextDecoder().decode(raw)), storedAt: 0 },
    { response: "é \u0000", agent: "a", storedAt: 0 },
  );
  await kv.set(["cache", "old"], {
    response: "older",
    agent: "b",
    storedAt: Date.now(),
  });
  await kv.set(["cache", "junk"], new Uint8Array([1, 2, 3]));
  const fresh = createPromptCache(kv, { ttlMs: 60_000, maxStaleMs: 0 });
  assert.equal((await fresh.get("k"))?.response, "é \u0000");
  assert.equal((await fresh.get("old"))?.agent, "b");
  assert.equal(await fresh.get("junk"), undefined);
  // 19,000 control characters: within the character limit, but 114 KB of
  // JSON (each escaped as \u00XX), over what one KV value holds.
  const escaped = { response: "\u0001".repeat(19_000), agent: "a" };
  assert.equal(cache.entry("e", escaped), undefined);
  assert.equal(await cache.put("e", escaped), false);
  assert.equal(await cache.get("e"), undefined);
});

Deno.test("prompt cache: a failed group commit rejects the puts of that group only", async () => {
  using kv = await Deno.openKv(":memory:");
  const c = countingKv(kv);
  const cache = createPromptCache(c.kv, { ttlMs: 60_000, maxStaleMs: 0 });
  c.state.failing = true;
  const failed = await Promise.allSettled([
    cache.put("x", { response: "x", agent: "a" }),
    cache.put("y", { response: "y", agent: "a" }),
  ]);
  assert.deepEqual(failed.map((r) => r.status), ["rejected", "rejected"]);
  assert.match(
    String((failed[0] as PromiseRejectedResult).reason),
    /disk full/,
  );
  c.state.failing = false;
  assert.equal(await cache.put("z", { response: "z", agent: "a" }), true);
  assert.equal(await cache.get("x"), undefined);
  assert.equal((await cache.get("z"))?.response, "z");
});

/** `kv` whose reads are counted. */
function readCountingKv(kv: Deno.Kv) {
  const state = { reads: 0 };
  return {
    state,
    kv: {
      get: <T>(key: Deno.KvKey) => {
        state.reads++;
        return kv.get<T>(key);
      },
      atomic: () => kv.atomic(),
    },
  };
}

Deno.test("prompt cache: a fresh answer is served from memory for localMs, then read again; another node's newer answer is seen after that", async () => {
  using kv = await Deno.openKv(":memory:");
  let now = 1_000_000;
  const a = readCountingKv(kv);
  const here = createPromptCache(a.kv, {
    ttlMs: 10_000,
    maxStaleMs: 60_000,
    localMs: 1000,
    now: () => now,
  });
  const there = createPromptCache(kv, {
    ttlMs: 10_000,
    maxStaleMs: 60_000,
    localMs: 1000,
    now: () => now,
  });
  assert.equal(await there.put("k", { response: "first", agent: "a" }), true);
  assert.equal((await here.get("k"))?.response, "first");
  assert.equal(a.state.reads, 1);
  // Another node stores a newer answer (a no-cache request there).
  now += 10;
  assert.equal(await there.put("k", { response: "second", agent: "b" }), true);
  const fromMemory = await here.get("k");
  assert.equal(fromMemory?.response, "first", "within localMs: the local copy");
  assert.equal(fromMemory?.ageMs, 10, "its age is still counted");
  assert.equal(a.state.reads, 1, "no KV read");
  now += 1000;
  assert.equal((await here.get("k"))?.response, "second", "seen after localMs");
  assert.equal(a.state.reads, 2);
  // An answer stored here is in memory at once (a no-cache request here).
  assert.equal(await here.put("k", { response: "third", agent: "a" }), true);
  assert.equal((await here.get("k"))?.response, "third");
  assert.equal(a.state.reads, 2);
});

Deno.test("prompt cache: a local copy is never served past its freshness; stale answers come from KV", async () => {
  using kv = await Deno.openKv(":memory:");
  let now = 1_000_000;
  const c = readCountingKv(kv);
  const cache = createPromptCache(c.kv, {
    ttlMs: 100,
    maxStaleMs: 1000,
    localMs: 60_000,
    now: () => now,
  });
  assert.equal(await cache.put("k", { response: "x", agent: "a" }), true);
  now += 99;
  assert.equal((await cache.get("k"))?.state, "fresh");
  assert.equal(c.state.reads, 0);
  now += 2;
  assert.equal((await cache.get("k"))?.state, "stale");
  assert.equal(c.state.reads, 1);
  assert.equal((await cache.get("k"))?.state, "stale");
  assert.equal(c.state.reads, 2, "stale entries are not kept in memory");
  now += 1000;
  assert.equal(await cache.get("k"), undefined);
});

Deno.test("prompt cache: localMs 0 reads KV every time; memory is bounded", async () => {
  using kv = await Deno.openKv(":memory:");
  const c = readCountingKv(kv);
  const off = createPromptCache(c.kv, {
    ttlMs: 60_000,
    maxStaleMs: 0,
    localMs: 0,
  });
  await off.put("k", { response: "x", agent: "a" });
  await off.get("k");
  await off.get("k");
  assert.equal(c.state.reads, 2);
  assert.throws(
    () => createPromptCache(kv, { ttlMs: 1, maxStaleMs: 0, localMs: -1 }),
    /localMs must be 0-60000 ms, got -1/,
  );
  // 1,001 answers: the oldest is no longer in memory, the newest is.
  const d = readCountingKv(kv);
  const bounded = createPromptCache(d.kv, { ttlMs: 60_000, maxStaleMs: 0 });
  await Promise.all(
    Array.from(
      { length: 1001 },
      (_, i) => bounded.put(`n${i}`, { response: `r${i}`, agent: "a" }),
    ),
  );
  assert.equal((await bounded.get("n1000"))?.response, "r1000");
  assert.equal(d.state.reads, 0);
  assert.equal((await bounded.get("n0"))?.response, "r0");
  assert.equal(d.state.reads, 1);
});

Deno.test("prompt cache: keys remembered per raw request are the keys computed afresh", async () => {
  using kv = await Deno.openKv(":memory:");
  const fresh = () => createPromptCache(kv, { ttlMs: 100, maxStaleMs: 0 });
  const cache = fresh();
  const cases: [
    string,
    string | undefined,
    Record<string, unknown>,
    string[],
  ][] = [
    ["hello", undefined, {}, []],
    ['[["userId","u1"]]\nhello', "hotel", {}, []],
    ["hello", "hotel", { userId: "u1" }, ["userId"]],
    ["Hello ", "hotel", { userId: "u1" }, ["userId"]],
    ["hello", "hotel", { userId: "u2" }, ["userId"]],
    ["x".repeat(3000), undefined, {}, []],
  ];
  const once = await Promise.all(
    cases.map(([prompt, scenario, metadata, fields]) =>
      cache.key({ prompt, scenario, metadata }, fields)
    ),
  );
  // Asked again of the same cache (remembered) and of a new one (computed).
  for (const [i, [prompt, scenario, metadata, fields]] of cases.entries()) {
    const input = { prompt, scenario, metadata };
    assert.equal(await cache.key(input, fields), once[i]);
    assert.equal(await fresh().key(input, fields), once[i]);
  }
  // Same normalised prompt, same key; another user, another key.
  assert.equal(once[2], once[3]);
  assert.notEqual(once[2], once[4]);
  assert.notEqual(once[1], once[2]);
});
