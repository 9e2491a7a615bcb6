import assert from "node:assert/strict";
import { Inflights, Progress } from "./progress.ts";

Deno.test("raft progress: a probing follower gets one append until it answers", () => {
  const pr = new Progress(5, 4);
  assert.equal(pr.isPaused(), false);
  pr.sent(7);
  assert.equal(pr.isPaused(), true);
  pr.maybeUpdate(7);
  assert.equal(pr.isPaused(), false);
});

Deno.test("raft progress: replicating pipelines appends up to the inflight limit and frees them on ack", () => {
  const pr = new Progress(1, 2);
  pr.maybeUpdate(3);
  pr.becomeReplicate();
  pr.sent(5);
  pr.sent(8);
  assert.equal(pr.next, 9);
  assert.equal(pr.isPaused(), true);
  pr.maybeUpdate(5);
  pr.inflights.freeLE(5);
  assert.equal(pr.isPaused(), false);
});

Deno.test("raft progress: a rejection backs next off to the hint, and a stale rejection is ignored", () => {
  const pr = new Progress(10, 4);
  assert.equal(pr.maybeDecrTo(9, 4), true);
  assert.equal(pr.next, 5);
  assert.equal(pr.maybeDecrTo(9, 2), false, "stale: next-1 is no longer 9");
  const rep = new Progress(1, 4);
  rep.maybeUpdate(6);
  rep.becomeReplicate();
  rep.sent(9);
  assert.equal(rep.maybeDecrTo(5, 0), false, "at or below the match");
  assert.equal(rep.maybeDecrTo(8, 0), true);
  assert.equal(rep.next, 7);
});

Deno.test("raft progress: after a snapshot the follower is probed from just past it", () => {
  const pr = new Progress(1, 4);
  pr.becomeSnapshot(20);
  assert.equal(pr.isPaused(), true);
  pr.becomeProbe();
  assert.equal(pr.next, 21);
  assert.equal(pr.state, "probe");
});

Deno.test("raft progress: inflights free in order and in bulk", () => {
  const w = new Inflights(3);
  w.add(2);
  w.add(4);
  w.add(6);
  assert.equal(w.full(), true);
  w.freeLE(4);
  assert.equal(w.count, 1);
  w.freeFirst();
  assert.equal(w.count, 0);
});
