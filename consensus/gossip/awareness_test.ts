import assert from "node:assert/strict";
import { Awareness } from "./awareness.ts";

Deno.test("awareness: the score stays within [0, max - 1] and scales timeouts by score + 1", () => {
  const a = new Awareness(8);
  assert.equal(a.scale(500), 500);
  a.apply(100);
  assert.equal(a.score, 7);
  assert.equal(a.scale(1000), 8000);
  a.apply(-3);
  assert.equal(a.scale(1000), 5000);
  a.apply(-100);
  assert.equal(a.score, 0);
});

Deno.test("awareness: a max below 1 is rejected with the value seen", () => {
  assert.throws(() => new Awareness(0), /got 0/);
});
