import assert from "node:assert/strict";
import { join } from "node:path";
import { createRaft } from "./core.ts";
import { crc32, FileStorage } from "./file_storage.ts";
import type { Entry, Ready } from "./types.ts";

const ent = (index: number, term: number, data = `e${index}`): Entry => ({
  index,
  term,
  type: "normal",
  data,
});
const ready = (p: Partial<Ready>): Ready => ({
  entries: [],
  messages: [],
  committed: [],
  readStates: [],
  ...p,
});

Deno.test("raft file storage: crc32 matches the IEEE check value", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
});

Deno.test("raft file storage: entries, truncation and hard state survive a reopen", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const s = await FileStorage.open(dir);
    await s.saveVoters(["a", "b", "c"]);
    await s.save(ready({
      entries: [ent(1, 1), ent(2, 1), ent(3, 1)],
      hardState: { term: 1, vote: "a", commit: 1 },
    }));
    // A new leader overwrites index 3 onwards.
    await s.save(ready({
      entries: [ent(3, 2, "x"), ent(4, 2)],
      hardState: { term: 2, vote: "b", commit: 3 },
    }));
    await s.save(ready({})); // nothing to persist: no record
    assert.equal(s.writes, 3);
    s.close();
    const again = await FileStorage.open(dir);
    const st = again.state();
    assert.deepEqual(st.hardState, { term: 2, vote: "b", commit: 3 });
    assert.deepEqual(st.entries.map((e) => [e.index, e.term, e.data]), [
      [1, 1, "e1"],
      [2, 1, "e2"],
      [3, 2, "x"],
      [4, 2, "e4"],
    ]);
    assert.deepEqual(again.voters(), ["a", "b", "c"]);
    assert.deepEqual(again.report, { records: 3, truncatedBytes: 0 });
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("raft file storage: a torn last record is cut off and the rest is kept", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const s = await FileStorage.open(dir);
    await s.save(
      ready({
        entries: [ent(1, 1)],
        hardState: { term: 1, vote: "a", commit: 0 },
      }),
    );
    const good = s.size;
    await s.save(
      ready({
        entries: [ent(2, 1)],
        hardState: { term: 1, vote: "a", commit: 2 },
      }),
    );
    s.close();
    // Crash mid-write: only half of the second record reached the disk.
    const path = join(dir, "raft.log");
    const bytes = await Deno.readFile(path);
    await Deno.writeFile(path, bytes.subarray(0, good + 11));
    const again = await FileStorage.open(dir);
    assert.deepEqual(again.report, { records: 1, truncatedBytes: 11 });
    assert.deepEqual(again.state().entries.map((e) => e.index), [1]);
    assert.equal(again.state().hardState.commit, 0);
    assert.equal((await Deno.stat(path)).size, good);
    // Appends continue after the good prefix.
    await again.save(ready({ entries: [ent(2, 1, "y")] }));
    again.close();
    const third = await FileStorage.open(dir);
    assert.deepEqual(third.state().entries.map((e) => e.data), ["e1", "y"]);
    third.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("raft file storage: a flipped bit fails the checksum and ends the log there", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const s = await FileStorage.open(dir);
    await s.save(ready({ entries: [ent(1, 1)] }));
    const first = s.size;
    await s.save(ready({ entries: [ent(2, 1)] }));
    s.close();
    const path = join(dir, "raft.log");
    const bytes = await Deno.readFile(path);
    bytes[first + 12] ^= 0x20;
    await Deno.writeFile(path, bytes);
    const again = await FileStorage.open(dir);
    assert.equal(again.report.records, 1);
    assert.deepEqual(again.state().entries.map((e) => e.index), [1]);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("raft file storage: compaction rewrites the file as snapshot plus later entries", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const s = await FileStorage.open(dir);
    await s.saveVoters(["a"]);
    for (let i = 1; i <= 50; i++) {
      await s.save(
        ready({
          entries: [ent(i, 1)],
          hardState: { term: 1, vote: "a", commit: i },
        }),
      );
    }
    const big = s.size;
    await s.compact({ index: 40, term: 1, voters: ["a"], data: "snap" });
    assert.ok(s.size < big / 3, `rewritten size ${s.size} vs ${big}`);
    s.close();
    const again = await FileStorage.open(dir);
    const st = again.state();
    assert.equal(st.snapshot?.data, "snap");
    assert.deepEqual(st.entries.map((e) => e.index), [
      41,
      42,
      43,
      44,
      45,
      46,
      47,
      48,
      49,
      50,
    ]);
    assert.equal(st.hardState.commit, 50);
    assert.deepEqual(again.voters(), ["a"]);
    // A core restarted from it has the same log.
    const node = createRaft({ id: "a", storage: st });
    assert.equal(node.log.lastIndex(), 50);
    assert.equal(node.term, 1);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
