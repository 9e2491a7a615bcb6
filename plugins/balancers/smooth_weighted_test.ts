import assert from "node:assert/strict";
import { countPicks } from "./_test_util.ts";
import { createSmoothWeighted } from "./smooth_weighted.ts";

const abc = [
  { id: "a", weight: 5 },
  { id: "b", weight: 1 },
  { id: "c", weight: 1 },
];

Deno.test("smooth-weighted: weights 5, 1, 1 give nginx's sequence a a b a c a a", () => {
  const b = createSmoothWeighted();
  const seq = Array.from({ length: 14 }, () => b.pick(abc)!.id).join(" ");
  assert.equal(seq, "a a b a c a a a a b a c a a");
});

Deno.test("smooth-weighted: shares calls exactly in proportion to weight", () => {
  const nodes = [
    { id: "x", weight: 3 },
    { id: "y", weight: 2 },
    { id: "z", weight: 0.5 },
  ];
  const counts = countPicks(createSmoothWeighted(), nodes, 5500);
  assert.deepEqual(Object.fromEntries(counts), { x: 3000, y: 2000, z: 500 });
});

Deno.test("smooth-weighted: a failure cuts the endpoint's share, which then recovers", () => {
  const b = createSmoothWeighted();
  const nodes = [{ id: "a", weight: 4 }, { id: "b", weight: 4 }];
  for (let i = 0; i < 8; i++) b.pick(nodes);
  b.report("a", { ok: false, latencyMs: 1 });
  const next = Array.from({ length: 4 }, () => b.pick(nodes)!.id);
  assert.ok(
    next.filter((id) => id === "a").length < 2,
    `a failed but was picked in ${next}`,
  );
  const later = countPicks(b, nodes, 800);
  assert.ok(Math.abs(later.get("a")! - 400) <= 10, `a got ${later.get("a")}`);
});

Deno.test("smooth-weighted: a changed weight takes effect, a bad one is refused", () => {
  const b = createSmoothWeighted();
  countPicks(b, abc, 7);
  const equal = abc.map((c) => ({ id: c.id, weight: 1 }));
  assert.deepEqual([...countPicks(b, equal, 30).values()], [10, 10, 10]);
  assert.throws(
    () => b.pick([{ id: "a", weight: -1 }, { id: "b" }]),
    /candidate 'a' has weight -1/,
  );
});
