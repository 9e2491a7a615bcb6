import assert from "node:assert/strict";
import { maxDeviation, nodes } from "./_test_util.ts";
import { createConsistentHash, hash32 } from "./consistent_hash.ts";
import type { Candidate } from "./strategy.ts";
import { seededRandom } from "./strategy.ts";

const KEYS = Array.from({ length: 20_000 }, (_, i) => `user-${i}`);

function owners(candidates: Candidate[]): Map<string, string> {
  const ring = createConsistentHash();
  return new Map(KEYS.map((k) => [k, ring.locate(candidates, k)!.id]));
}

function tally(assignment: Map<string, string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const id of assignment.values()) {
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

Deno.test("consistent-hash: keys spread over the nodes (each within 20 % of its share)", () => {
  const counts = tally(owners(nodes(10)));
  assert.equal(counts.size, 10);
  const dev = maxDeviation(counts, () => KEYS.length / 10);
  assert.ok(dev < 0.2, `deviation ${dev}`);
});

Deno.test("consistent-hash: shares follow weights", () => {
  const counts = tally(owners([
    { id: "a", weight: 3 },
    { id: "b", weight: 1 },
    { id: "c", weight: 1 },
  ]));
  const dev = maxDeviation(
    counts,
    (id) => KEYS.length * (id === "a" ? 0.6 : 0.2),
  );
  assert.ok(dev < 0.15, `deviation ${dev}`);
});

Deno.test("consistent-hash: a node joining takes about 1/n of the keys, all from others to it", () => {
  const before = owners(nodes(10));
  const after = owners(nodes(11));
  let moved = 0;
  for (const [key, owner] of after) {
    if (owner !== before.get(key)) {
      moved++;
      assert.equal(owner, "n10", `key ${key} moved between old nodes`);
    }
  }
  const share = moved / KEYS.length;
  assert.ok(share > 0.5 / 11 && share < 1.5 / 11, `moved ${share}`);
});

Deno.test("consistent-hash: a node leaving moves only its own keys", () => {
  const all = nodes(10);
  const before = owners(all);
  const after = owners(all.filter((c) => c.id !== "n3"));
  let moved = 0;
  for (const [key, owner] of after) {
    if (owner !== before.get(key)) {
      moved++;
      assert.equal(
        before.get(key),
        "n3",
        `key ${key} moved off a staying node`,
      );
    }
  }
  const share = moved / KEYS.length;
  assert.ok(share > 0.5 / 10 && share < 1.5 / 10, `moved ${share}`);
});

Deno.test("consistent-hash: the ring does not depend on the order candidates are listed in", () => {
  const c = nodes(6);
  const ring = createConsistentHash();
  const reversed = [...c].reverse();
  for (const key of KEYS.slice(0, 2000)) {
    assert.equal(ring.locate(c, key)!.id, ring.locate(reversed, key)!.id);
  }
});

Deno.test("consistent-hash: bounded load never lets a node exceed ceil(c × load ÷ n), even for one hot key", () => {
  for (const factor of [1, 1.25, 2]) {
    const ring = createConsistentHash({ boundedLoad: factor });
    const c = nodes(8);
    const random = seededRandom(11);
    const held: string[] = [];
    for (let i = 0; i < 5000; i++) {
      // Mostly one hot key, some spread; calls finish at random.
      const key = random() < 0.7 ? "hot" : `k${i}`;
      const p = ring.pick(c, { key })!;
      held.push(p.id);
      const total = held.length;
      const bound = Math.ceil(factor * total / c.length);
      assert.ok(
        ring.inflight(p.id) <= bound,
        `factor ${factor}: ${p.id} holds ${
          ring.inflight(p.id)
        } of ${total}, bound ${bound}`,
      );
      if (random() < 0.4) {
        const done = held.splice(Math.floor(random() * held.length), 1)[0];
        ring.report(done, { ok: true, latencyMs: 1 });
      }
    }
  }
});

Deno.test("consistent-hash: under bounded load a key stays on its owner while the owner has room", () => {
  const ring = createConsistentHash({ boundedLoad: 1.25 });
  const c = nodes(4);
  const owner = ring.locate(c, "session-9")!.id;
  for (let i = 0; i < 20; i++) {
    const p = ring.pick(c, { key: "session-9" })!;
    assert.equal(p.id, owner);
    ring.report(p.id, { ok: true, latencyMs: 1 });
  }
  // Two calls held: the owner is at its bound ceil(1.25 × 3 / 4) = 1 for the third.
  ring.pick(c, { key: "session-9" });
  const spill = ring.pick(c, { key: "session-9" })!;
  assert.notEqual(spill.id, owner);
});

Deno.test("consistent-hash: without a key it falls back to round-robin", () => {
  const ring = createConsistentHash();
  const c = nodes(3);
  assert.deepEqual(
    Array.from({ length: 4 }, () => ring.pick(c)!.id),
    ["n0", "n1", "n2", "n0"],
  );
});

Deno.test("consistent-hash: options out of range are refused with the value seen", () => {
  assert.throws(
    () => createConsistentHash({ boundedLoad: 0.9 }),
    /boundedLoad must be a finite number ≥ 1, got 0.9/,
  );
  assert.throws(() => createConsistentHash({ vnodes: 0 }), /vnodes .* got 0/);
  assert.notEqual(hash32("a#1"), hash32("a#2"));
});
