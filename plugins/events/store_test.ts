import assert from "node:assert/strict";
import { createEventStore, type NewEvent, type StoredEvent } from "./store.ts";

const ev = (i: number, stream = "task", at = 1000 + i): NewEvent => ({
  stream,
  id: `e${i}`,
  type: `${stream}.x`,
  version: 1,
  at,
  node: "n1",
  seq: i,
  data: { i },
});

async function readAll(
  store: ReturnType<typeof createEventStore>,
  after = "",
  pageBatches = 3,
): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  for (;;) {
    const page = await store.read({ after }, { pageBatches });
    out.push(...page.events);
    if (page.next === after) return out;
    after = page.next;
  }
}

Deno.test("event store: appends in one turn share a commit, offsets follow append order across streams", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createEventStore(kv);
  const offsets = await Promise.all(
    Array.from(
      { length: 50 },
      (_, i) => store.append(ev(i, i % 3 ? "task" : "agent")),
    ),
  );
  // One commit: every offset starts with the same versionstamp.
  assert.equal(new Set(offsets.map((o) => o.slice(0, 20))).size, 1);
  const all = await readAll(store);
  assert.equal(all.length, 50);
  assert.deepEqual(all.map((e) => e.offset), offsets);
  assert.deepEqual(all.map((e) => e.id), offsets.map((_, i) => `e${i}`));
  assert.deepEqual(await store.counts(), { agent: 17, task: 33 });
  await store.close();
  kv.close();
});

Deno.test("event store: replay after an offset returns exactly the events after it, in order, page by page", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createEventStore(kv);
  const offsets: string[] = [];
  for (let i = 0; i < 40; i++) {
    // Separate commits, several streams.
    offsets.push(await store.append(ev(i, ["task", "agent", "node"][i % 3])));
  }
  const all = await readAll(store, "", 2);
  assert.deepEqual(all.map((e) => e.id), offsets.map((_, i) => `e${i}`));
  for (const k of [0, 7, 20, 39]) {
    const after = await readAll(store, offsets[k], 2);
    assert.deepEqual(
      after.map((e) => e.offset),
      offsets.slice(k + 1),
      `after ${k}`,
    );
  }
  // Only some streams.
  const agent =
    (await store.read({ after: "" }, { streams: ["agent"] })).events;
  assert.deepEqual(
    agent.map((e) => e.id),
    offsets.map((_, i) => `e${i}`).filter((_, i) => i % 3 === 1),
  );
  await store.close();
  kv.close();
});

Deno.test("event store: replay from a time starts at the first commit at or after it", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createEventStore(kv);
  for (let i = 0; i < 10; i++) await store.append(ev(i, "task", 100 * i));
  const page = await store.read({ time: 450 });
  assert.deepEqual(page.events.map((e) => e.id), [
    "e5",
    "e6",
    "e7",
    "e8",
    "e9",
  ]);
  assert.deepEqual((await store.read({ time: 10_000 })).events, []);
  await store.close();
  kv.close();
});

Deno.test("event store: retention drops whole oldest batches by count and by age, and the counts follow", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createEventStore(kv);
  const now = Date.now();
  for (let i = 0; i < 30; i++) {
    await store.append(ev(i, "task", i < 10 ? now - 60_000 : now));
  }
  for (let i = 0; i < 5; i++) await store.append(ev(100 + i, "agent", now));
  assert.deepEqual(await store.trim({ maxAgeMs: 30_000 }), {
    batches: 10,
    events: 10,
  });
  assert.deepEqual(
    (await readAll(store)).filter((e) => e.stream === "task").map((e) =>
      e.id
    )[0],
    "e10",
  );
  assert.deepEqual(await store.trim({ maxCount: 15 }), {
    batches: 5,
    events: 5,
  });
  assert.deepEqual(await store.counts(), { task: 15, agent: 5 });
  const left = await readAll(store);
  assert.equal(left.length, 20);
  assert.equal(left.filter((e) => e.stream === "task")[0].id, "e15");
  assert.deepEqual(await store.trim({ maxCount: 15, maxAgeMs: 30_000 }), {
    batches: 0,
    events: 0,
  });
  await store.close();
  kv.close();
});

Deno.test("event store: an event over the size limit or with a bad stream is refused, naming it", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createEventStore(kv);
  await assert.rejects(
    store.append({ ...ev(1), data: "x".repeat(20_000) }),
    /event 'task.x' is 20\d\d\d bytes as JSON; the limit is 16384/,
  );
  await assert.rejects(
    store.append(ev(1, "Bad Stream")),
    /stream 'Bad Stream'/,
  );
  // Many large events still land, split over several commits.
  const big = await Promise.all(
    Array.from(
      { length: 20 },
      (_, i) => store.append({ ...ev(i), data: "y".repeat(10_000) }),
    ),
  );
  assert.ok(new Set(big.map((o) => o.slice(0, 20))).size >= 4);
  assert.equal((await readAll(store)).length, 20);
  await store.close();
  kv.close();
});

Deno.test("event store: a stream's first commit landing between a read's head and its listing is not skipped", async () => {
  const kv = await Deno.openKv(":memory:");
  const writer = createEventStore(kv);
  await writer.append(ev(0, "task"));
  // The reader's KV commits a new stream's first event right as the head is read.
  let injected = false;
  const racing = new Proxy(kv, {
    get(target, prop) {
      if (prop === "get") {
        return async (key: Deno.KvKey) => {
          const before = await target.get(key);
          if (!injected && key[0] === "events" && key[1] === "head") {
            injected = true;
            await writer.append(ev(1, "agent"));
            return await target.get(key);
          }
          return before;
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const reader = createEventStore(racing);
  const seen = await readAll(reader);
  assert.deepEqual(seen.map((e) => e.id), ["e0", "e1"]);
  await writer.close();
  await reader.close();
  kv.close();
});
