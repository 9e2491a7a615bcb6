import assert from "node:assert/strict";
import { ReadOnly } from "./read_only.ts";

Deno.test("raft read-only: a quorum ack for a later read also releases the earlier ones, in order", () => {
  const ro = new ReadOnly();
  ro.add(3, "1", "a");
  ro.add(4, "2", "b");
  ro.add(5, "3", "c");
  ro.recvAck("2", "b");
  const done = ro.advance("b");
  assert.deepEqual(done.map((r) => [r.context, r.index, r.from]), [
    ["a", 3, "1"],
    ["b", 4, "2"],
  ]);
  assert.equal(ro.lastPending(), "c");
});

Deno.test("raft read-only: acks for unknown contexts are ignored and a repeated context is queued once", () => {
  const ro = new ReadOnly();
  assert.equal(ro.recvAck("2", "nope"), undefined);
  ro.add(1, "1", "x");
  ro.add(9, "1", "x");
  assert.deepEqual(ro.advance("x").map((r) => r.index), [1]);
  assert.deepEqual(ro.advance("x"), []);
});

Deno.test("raft read-only: reset drops every pending read", () => {
  const ro = new ReadOnly();
  ro.add(1, "1", "x");
  ro.reset();
  assert.equal(ro.lastPending(), undefined);
  assert.deepEqual(ro.advance("x"), []);
});
