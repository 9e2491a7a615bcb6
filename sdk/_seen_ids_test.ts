import assert from "node:assert/strict";
import { SeenIds } from "./_seen_ids.ts";

Deno.test("seen ids: the least recently seen id is forgotten first, past the size", () => {
  const seen = new SeenIds(3);
  for (const id of ["a", "b", "c"]) seen.add(id);
  seen.add("a"); // a is now the most recent
  seen.add("d"); // forgets b
  assert.deepEqual(
    ["a", "b", "c", "d"].map((id) => seen.has(id)),
    [true, false, true, true],
  );
  seen.add("e"); // forgets c
  seen.add("f"); // forgets a
  assert.deepEqual(
    ["a", "c", "d", "e", "f"].map((id) => seen.has(id)),
    [false, false, true, true, true],
  );
  assert.equal(seen.size, 3);
});

Deno.test("seen ids: many ids through a small memory keep exactly the last ones", () => {
  const seen = new SeenIds(100);
  for (let i = 0; i < 10_000; i++) seen.add(`m-${i}`);
  assert.equal(seen.size, 100);
  assert.equal(seen.has("m-9899"), false);
  for (let i = 9900; i < 10_000; i++) assert.ok(seen.has(`m-${i}`));
});

Deno.test("seen ids: an id seen again and again is neither forgotten nor crowds out the others", () => {
  const seen = new SeenIds(4);
  for (const id of ["a", "b", "c"]) seen.add(id);
  for (let i = 0; i < 20_000; i++) seen.add("d");
  assert.deepEqual(
    ["a", "b", "c", "d"].map((id) => seen.has(id)),
    [true, true, true, true],
  );
  seen.add("e"); // forgets a, the least recent
  assert.deepEqual(
    ["a", "b", "e"].map((id) => seen.has(id)),
    [false, true, true],
  );
});

Deno.test("seen ids: a size below 1 is refused", () => {
  assert.throws(() => new SeenIds(0), /at least 1, got 0/);
});
