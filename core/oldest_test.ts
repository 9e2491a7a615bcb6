import assert from "node:assert/strict";
import { deleteOldest } from "./oldest.ts";
import { mulberry32 } from "./random.ts";

Deno.test("deleteOldest: evicts what a fresh iterator would, through sets, moves, deletes and clears (seeded)", () => {
  const r = mulberry32(7);
  const fast = new Map<number, number>();
  const slow = new Map<number, number>();
  for (let step = 0; step < 200_000; step++) {
    const x = r();
    const k = Math.floor(r() * 3000);
    if (x < 0.5) {
      fast.set(k, step);
      slow.set(k, step);
    } else if (x < 0.7) {
      // LRU: used again, moved to the end.
      if (fast.has(k)) {
        fast.delete(k);
        fast.set(k, step);
        slow.delete(k);
        slow.set(k, step);
      }
    } else if (x < 0.8) {
      fast.delete(k);
      slow.delete(k);
    } else if (x < 0.99999) {
      const oldest = slow.keys().next();
      const want = oldest.done ? undefined : slow.get(oldest.value);
      if (!oldest.done) slow.delete(oldest.value);
      assert.equal(deleteOldest(fast), want, `step ${step}`);
    } else {
      fast.clear();
      slow.clear();
    }
    if (step % 997 === 0) assert.deepEqual([...fast], [...slow]);
  }
  assert.deepEqual([...fast], [...slow]);
});

Deno.test("deleteOldest: an empty map gives undefined, and new entries are evicted after", () => {
  const m = new Map<string, number>();
  assert.equal(deleteOldest(m), undefined);
  m.set("a", 1);
  m.set("b", 2);
  assert.equal(deleteOldest(m), 1);
  assert.equal(deleteOldest(m), 2);
  assert.equal(deleteOldest(m), undefined);
  m.set("c", 3);
  assert.equal(deleteOldest(m), 3);
});

Deno.test("deleteOldest: a full map evicting on every insert keeps the newest entries", () => {
  // (What it costs: bench/_map_eviction.ts.)
  const m = new Map<number, number>();
  for (let i = 0; i < 10_000; i++) m.set(i, i);
  for (let i = 10_000; i < 60_000; i++) {
    m.set(i, i);
    assert.equal(deleteOldest(m), i - 10_000);
  }
  assert.equal(m.size, 10_000);
  assert.equal(m.keys().next().value, 50_000);
});

Deno.test("deleteOldest: sets too, and a map and a set keep cursors of their own", () => {
  const s = new Set(["a", "b", "c"]);
  const m = new Map([["a", 1], ["b", 2]]);
  assert.equal(deleteOldest(s), "a");
  assert.equal(deleteOldest(m), 1);
  s.delete("b");
  s.add("b"); // used again: now the newest
  assert.equal(deleteOldest(s), "c");
  assert.equal(deleteOldest(s), "b");
  assert.equal(deleteOldest(s), undefined);
  assert.equal(deleteOldest(m), 2);
});
