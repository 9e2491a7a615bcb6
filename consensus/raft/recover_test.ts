import assert from "node:assert/strict";
import { join } from "node:path";
import { createRaft } from "./core.ts";
import { FileStorage } from "./file_storage.ts";
import { raftCommand, recoverQuorum } from "./recover.ts";
import type { Entry, Ready } from "./types.ts";

const ready = (entries: Entry[], commit: number, term: number): Ready => ({
  entries,
  hardState: { term, vote: "n2", commit },
  messages: [],
  committed: [],
  readStates: [],
});

async function lostCluster(): Promise<string> {
  const dataDir = await Deno.makeTempDir();
  const log = await FileStorage.open(join(dataDir, "raft"));
  await log.saveVoters(["n1", "n2", "n3"]);
  await log.save(ready(
    [
      { term: 1, index: 1, type: "normal", data: "" },
      { term: 1, index: 2, type: "normal", data: "a" },
      { term: 3, index: 3, type: "normal", data: "b" }, // never committed
    ],
    2,
    3,
  ));
  log.close();
  await Deno.mkdir(join(dataDir, "raft"), { recursive: true });
  await Deno.writeTextFile(join(dataDir, "raft", "node-id"), "n1\n");
  return dataDir;
}

Deno.test("raft recover: the survivor's log gets the new voters at a higher term and everything in it commits", async () => {
  const dataDir = await lostCluster();
  try {
    const report = await recoverQuorum(dataDir, { members: ["n1"] });
    assert.deepEqual(report, {
      nodeId: "n1",
      previousVoters: ["n1", "n2", "n3"],
      voters: ["n1"],
      index: 4,
      term: 4,
      commitBefore: 2,
    });
    const log = await FileStorage.open(join(dataDir, "raft"));
    const node = createRaft({
      id: "n1",
      storage: log.state(),
      peers: log.voters(),
    });
    log.close();
    assert.deepEqual(node.voters(), ["n1"]);
    assert.equal(node.log.committed, 4);
    assert.equal(node.term, 4);
    // Alone in its configuration, it elects itself.
    for (let i = 0; i < 40 && node.role !== "leader"; i++) node.tick();
    assert.equal(node.role, "leader");
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("raft recover: members without this node, or a folder without a log, are refused", async () => {
  const dataDir = await lostCluster();
  const empty = await Deno.makeTempDir();
  try {
    await assert.rejects(
      recoverQuorum(dataDir, { members: ["n2"] }),
      /members \[n2\] must include this node 'n1'/,
    );
    await assert.rejects(
      recoverQuorum(empty, { members: ["n1"], nodeId: "n1" }),
      /no Raft log at/,
    );
    assert.equal(await raftCommand(["recover", "--data-dir", dataDir]), 2);
    assert.equal(await raftCommand(["bogus"]), 2);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
    await Deno.remove(empty, { recursive: true });
  }
});
