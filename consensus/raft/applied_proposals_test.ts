import assert from "node:assert/strict";
import { AppliedProposals } from "./applied_proposals.ts";

Deno.test("applied proposals: a copy of an applied proposal is refused, in any order and after a snapshot", () => {
  const t = new AppliedProposals();
  assert.equal(t.admit("n1/aa/2"), true);
  assert.equal(t.admit("n1/aa/1"), true);
  assert.equal(t.admit("n1/aa/2"), false);
  assert.equal(t.admit("n1/aa/1"), false);
  assert.equal(t.admit("n1/bb/1"), true); // another life of n1
  assert.equal(t.admit("n2/aa/1"), true);
  const copy = new AppliedProposals();
  copy.restore(JSON.parse(JSON.stringify(t.toJSON())));
  for (const id of ["n1/aa/1", "n1/aa/2", "n1/bb/1", "n2/aa/1"]) {
    assert.equal(copy.admit(id), false, id);
  }
  assert.equal(copy.admit("n1/aa/3"), true);
  // Ids of another shape are each their own session.
  assert.equal(copy.admit("plain"), true);
  assert.equal(copy.admit("plain"), false);
});

Deno.test("applied proposals: in-order ids cost one watermark per session", () => {
  const t = new AppliedProposals({ perSession: 4 });
  for (let i = 1; i <= 1000; i++) assert.equal(t.admit(`s/${i}`), true);
  assert.deepEqual(t.toJSON(), [["s", 1000, []]]);
});

Deno.test("applied proposals: a session past its bound moves its watermark over the oldest gap, and a proposal still missing below it is never applied", () => {
  const t = new AppliedProposals({ perSession: 3 });
  assert.equal(t.admit("s/1"), true);
  // 2 is lost (or late); 3..5 are applied and kept above the watermark.
  for (const i of [3, 4, 5]) assert.equal(t.admit(`s/${i}`), true);
  assert.deepEqual(t.toJSON(), [["s", 1, [3, 4, 5]]]);
  assert.equal(t.admit("s/6"), true);
  // The watermark passed the gap: 2 would now be refused, not applied late.
  assert.deepEqual(t.toJSON(), [["s", 6, []]]);
  assert.equal(t.admit("s/2"), false);
  assert.equal(t.admit("s/7"), true);
});

Deno.test("applied proposals: the session that applied least recently is forgotten first", () => {
  const t = new AppliedProposals({ sessions: 2 });
  t.admit("a/1");
  t.admit("b/1");
  t.admit("a/2");
  t.admit("c/1");
  assert.deepEqual(t.toJSON().map(([s]) => s), ["a", "c"]);
  assert.equal(t.size, 2);
});
