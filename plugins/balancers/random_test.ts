import assert from "node:assert/strict";
import { countPicks, maxDeviation, nodes } from "./_test_util.ts";
import { createRandom } from "./random.ts";
import { seededRandom } from "./strategy.ts";

Deno.test("random: spreads calls uniformly (each within 5 % of its share)", () => {
  const counts = countPicks(
    createRandom({ random: seededRandom(3) }),
    nodes(5),
    50_000,
  );
  assert.equal(counts.size, 5);
  const dev = maxDeviation(counts, () => 10_000);
  assert.ok(dev < 0.05, `deviation ${dev}`);
});

Deno.test("random: the same seed replays the same picks", () => {
  const c = nodes(10);
  const run = (seed: number) => {
    const b = createRandom({ random: seededRandom(seed) });
    return Array.from({ length: 50 }, () => b.pick(c)!.id);
  };
  assert.deepEqual(run(5), run(5));
  assert.notDeepEqual(run(5), run(6));
});

Deno.test("random: an empty list gives undefined, a single candidate itself", () => {
  const b = createRandom();
  assert.equal(b.pick([]), undefined);
  assert.equal(b.pick([{ id: "only" }])!.id, "only");
});
