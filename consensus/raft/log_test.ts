import assert from "node:assert/strict";
import { RaftLog } from "./log.ts";
import type { Entry } from "./types.ts";

function ent(index: number, term: number): Entry {
  return { index, term, type: "normal", data: `e${index}` };
}

function logOf(...terms: number[]): RaftLog {
  const log = new RaftLog();
  log.append(terms.map((t, k) => ent(k + 1, t)));
  return log;
}

Deno.test("raft log: term() is undefined below the snapshot and beyond the end", () => {
  const log = logOf(1, 1, 2);
  log.applied = 2;
  log.committed = 2;
  log.compact(2);
  assert.equal(log.term(1), undefined);
  assert.equal(log.term(2), 1);
  assert.equal(log.term(3), 2);
  assert.equal(log.term(4), undefined);
  assert.equal(log.firstIndex(), 3);
});

Deno.test("raft log: the election restriction compares last terms, then lengths", () => {
  const log = logOf(1, 2);
  assert.equal(log.isUpToDate(1, 3), true);
  assert.equal(log.isUpToDate(5, 1), false);
  assert.equal(log.isUpToDate(2, 2), true);
  assert.equal(log.isUpToDate(1, 2), false);
});

Deno.test("raft log: appending over uncommitted entries truncates them and marks them unstable again", () => {
  const log = logOf(1, 1, 1);
  log.stabled = 3;
  log.committed = 1;
  log.append([ent(2, 2)]);
  assert.equal(log.lastIndex(), 2);
  assert.equal(log.stabled, 1);
  assert.deepEqual(log.unstableEntries().map((e) => e.term), [2]);
});

Deno.test("raft log: truncating a committed entry is refused", () => {
  const log = logOf(1, 1);
  log.committed = 2;
  assert.throws(
    () => log.append([ent(2, 2)]),
    /Cannot truncate committed entries: append after 1, committed 2/,
  );
});

Deno.test("raft log: findConflictByTerm finds the last index whose term is at most the given term", () => {
  const log = logOf(1, 1, 2, 2, 4);
  assert.equal(log.findConflictByTerm(5, 3), 4);
  assert.equal(log.findConflictByTerm(5, 1), 2);
  assert.equal(log.findConflictByTerm(9, 4), 5);
  assert.equal(log.findConflictByTerm(5, 0), 0);
});

Deno.test("raft log: entriesFrom keeps to the byte budget but always returns one entry", () => {
  const log = logOf(1, 1, 1, 1);
  assert.equal(log.entriesFrom(1, 1).length, 1);
  assert.equal(log.entriesFrom(1, 60).length, 2);
  assert.equal(log.entriesFrom(3, 1 << 20).length, 2);
});

Deno.test("raft log: commitTo never moves backwards nor past the last entry", () => {
  const log = logOf(1, 1);
  log.commitTo(2);
  log.commitTo(1);
  assert.equal(log.committed, 2);
  assert.throws(() => log.commitTo(3), /Cannot commit 3: the last index is 2/);
});

Deno.test("raft log: nextCommitted hands out committed entries after the applied index", () => {
  const log = logOf(1, 1, 1);
  log.commitTo(3);
  log.applied = 1;
  assert.deepEqual(log.nextCommitted().map((e) => e.index), [2, 3]);
  log.restore({ index: 10, term: 3, voters: ["1"], data: "" });
  assert.deepEqual(log.nextCommitted(), []);
  assert.equal(log.committed, 10);
  assert.equal(log.lastIndex(), 10);
});
