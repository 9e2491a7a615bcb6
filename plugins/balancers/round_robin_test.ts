import assert from "node:assert/strict";
import { countPicks, nodes } from "./_test_util.ts";
import { createRoundRobin } from "./round_robin.ts";

Deno.test("round-robin: picks candidates in order and wraps round", () => {
  const rr = createRoundRobin();
  const c = nodes(3);
  assert.deepEqual(
    Array.from({ length: 7 }, () => rr.pick(c)!.id),
    ["n0", "n1", "n2", "n0", "n1", "n2", "n0"],
  );
});

Deno.test("round-robin: spreads calls exactly evenly", () => {
  const counts = countPicks(createRoundRobin(), nodes(7), 7000);
  assert.deepEqual([...counts.values()], Array(7).fill(1000));
});

Deno.test("round-robin: keeps going when the candidate list shrinks or is empty", () => {
  const rr = createRoundRobin();
  assert.equal(rr.pick([]), undefined);
  const c = nodes(5);
  for (let i = 0; i < 4; i++) rr.pick(c);
  assert.equal(rr.pick(c.slice(0, 2))!.id, "n0");
  assert.equal(rr.pick(c.slice(0, 2))!.id, "n1");
});
