import assert from "node:assert/strict";
import { MemoryStorage } from "./storage.ts";
import type { Entry } from "./types.ts";

function ent(index: number, term: number): Entry {
  return { index, term, type: "normal", data: `e${index}` };
}

const empty = { entries: [], messages: [], committed: [], readStates: [] };

Deno.test("raft storage: saving entries truncates the stored log where they start", () => {
  const s = new MemoryStorage();
  s.save({ ...empty, entries: [ent(1, 1), ent(2, 1), ent(3, 1)] });
  s.save({ ...empty, entries: [ent(2, 2)] });
  assert.deepEqual(s.entries.map((e) => [e.index, e.term]), [[1, 1], [2, 2]]);
});

Deno.test("raft storage: a received snapshot replaces the whole log", () => {
  const s = new MemoryStorage();
  s.save({ ...empty, entries: [ent(1, 1), ent(2, 1)] });
  s.save({
    ...empty,
    snapshot: { index: 5, term: 2, voters: ["1"], data: "x" },
    hardState: { term: 2, vote: "", commit: 5 },
  });
  assert.deepEqual(s.entries, []);
  assert.equal(s.state().snapshot?.index, 5);
  assert.deepEqual(s.state().hardState, { term: 2, vote: "", commit: 5 });
});

Deno.test("raft storage: compaction keeps only the entries after the snapshot, and state() is a copy", () => {
  const s = new MemoryStorage();
  s.save({ ...empty, entries: [ent(1, 1), ent(2, 1), ent(3, 1)] });
  s.compact({ index: 2, term: 1, voters: ["1"], data: "" });
  const st = s.state();
  assert.deepEqual(st.entries.map((e) => e.index), [3]);
  st.entries.pop();
  assert.equal(s.entries.length, 1);
});
