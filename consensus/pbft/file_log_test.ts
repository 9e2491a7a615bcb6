import assert from "node:assert/strict";
import { join } from "node:path";
import { PbftFileLog } from "./file_log.ts";
import type { PbftRecord } from "./types.ts";

const view = (v: number): PbftRecord => ({
  k: "view",
  view: v,
  changing: false,
});

Deno.test("pbft file log: records come back in order; a torn last write is cut off", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const log = await PbftFileLog.open(dir, { sync: false });
    await log.save({ persist: [view(1), view(2)] });
    await log.save({ persist: [] }); // nothing written
    await log.save({ persist: [view(3)] });
    assert.equal(log.writes, 2);
    log.close();
    // Half of a third record, as a crash mid-write leaves it.
    const path = join(dir, "pbft.log");
    const good = (await Deno.stat(path)).size;
    await Deno.writeFile(path, new Uint8Array([0, 0, 0, 50, 1, 2, 3]), {
      append: true,
    });
    const again = await PbftFileLog.open(dir, { sync: false });
    assert.deepEqual(again.records().map((r) => r.k === "view" && r.view), [
      1,
      2,
      3,
    ]);
    assert.equal(again.truncatedBytes, 7);
    assert.equal((await Deno.stat(path)).size, good);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pbft file log: a compacting save replaces everything before it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const log = await PbftFileLog.open(dir, { sync: false });
    await log.save({ persist: [view(1), view(2), view(3)] });
    await log.save({ compact: [view(7)], persist: [view(8)] });
    await log.save({ persist: [view(9)] });
    log.close();
    const again = await PbftFileLog.open(dir, { sync: false });
    assert.deepEqual(again.records().map((r) => r.k === "view" && r.view), [
      7,
      8,
      9,
    ]);
    again.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
