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
  assert.equal(await k("Book a room"), await k("  book a\nROOM "));
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
