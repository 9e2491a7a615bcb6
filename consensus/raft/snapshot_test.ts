import assert from "node:assert/strict";
import { createRaft } from "./core.ts";
import { TestCluster } from "./_network.ts";
import type { Entry, Snapshot } from "./types.ts";

const ids = ["1", "2", "3"];

/** Compacts `id`'s log at its applied index, as a driver would. */
function compact(c: TestCluster, id: string): Snapshot {
  const p = c.peers.get(id)!;
  const data = JSON.stringify(p.applied.map((e) => e.data));
  const snap = p.node.compact(p.node.log.applied, data);
  p.storage.compact(snap);
  return snap;
}

function ent(index: number, term: number, data = `e${index}`): Entry {
  return { index, term, type: "normal", data };
}

Deno.test("raft: compaction folds applied entries into a snapshot in memory and in storage", () => {
  const c = new TestCluster(ids);
  c.get("1").campaign();
  c.stabilize();
  for (const d of ["a", "b", "c"]) c.get("1").propose(d);
  c.stabilize();
  const snap = compact(c, "1");
  assert.deepEqual(
    { index: snap.index, term: snap.term, voters: snap.voters },
    { index: 4, term: 1, voters: ids },
  );
  assert.equal(c.get("1").log.firstIndex(), 5);
  assert.equal(c.peers.get("1")!.storage.entries.length, 0);
  assert.throws(
    () => c.get("1").compact(9, ""),
    /Cannot snapshot at 9: applied 4/,
  );
});

Deno.test("raft: InstallSnapshot: a follower behind the leader's snapshot gets it, discards its whole log (Figure 13 rule 7) and continues", () => {
  const c = new TestCluster(ids);
  c.get("1").campaign();
  c.stabilize();
  c.isolate("3");
  for (const d of ["a", "b", "c", "d"]) c.get("1").propose(d);
  c.stabilize();
  const snap = compact(c, "1");
  // Give 3 a conflicting uncommitted tail it must drop.
  const p3 = c.peers.get("3")!;
  p3.node.log.append([ent(2, 1, "stray")]);
  c.heal();
  c.get("1").propose("e");
  c.stabilize();
  const n3 = c.get("3");
  assert.equal(n3.log.snapIndex, snap.index);
  assert.deepEqual(n3.snapshot(), snap);
  assert.equal(p3.storage.snapshot?.index, snap.index);
  assert.deepEqual(p3.storage.entries.map((e) => e.data), ["e"]);
  assert.equal(n3.log.committed, 6);
  assert.equal(
    c.delivered.filter((m) => m.type === "snap" && m.to === "3").length,
    1,
  );
  // The driver got the snapshot to apply, then the entry after it.
  assert.deepEqual(p3.applied.map((e) => e.data), ["", "e"]);
});

Deno.test("raft: Figure 13 rule 6: a snapshot whose last entry the follower holds keeps the entries after it", () => {
  const f = createRaft({
    id: "2",
    peers: ids,
    storage: {
      hardState: { term: 1, vote: "", commit: 1 },
      entries: [ent(1, 1), ent(2, 1), ent(3, 1)],
    },
  });
  f.step({
    type: "snap",
    from: "1",
    to: "2",
    term: 1,
    snapshot: { index: 2, term: 1, voters: ids, data: "{}" },
  });
  assert.equal(f.log.lastIndex(), 3);
  assert.equal(f.log.committed, 2);
  const rd = f.ready();
  assert.equal(rd.snapshot, undefined, "nothing to install");
  assert.deepEqual(rd.messages.map((m) => [m.type, m.index]), [["appResp", 3]]);
});

Deno.test("raft: a snapshot at or below the commit index is ignored", () => {
  const f = createRaft({
    id: "2",
    peers: ids,
    storage: {
      hardState: { term: 1, vote: "", commit: 3 },
      entries: [ent(1, 1), ent(2, 1), ent(3, 1)],
    },
  });
  f.step({
    type: "snap",
    from: "1",
    to: "2",
    term: 1,
    snapshot: { index: 2, term: 1, voters: ids, data: "{}" },
  });
  assert.equal(f.log.snapIndex, 0);
  assert.deepEqual(f.ready().messages.map((m) => m.index), [3]);
});

Deno.test("raft: a lost snapshot is sent again after the next heartbeat round", () => {
  const c = new TestCluster(ids);
  c.get("1").campaign();
  c.stabilize();
  c.isolate("3");
  c.get("1").propose("a");
  c.stabilize();
  compact(c, "1");
  c.heal();
  c.tick("1");
  // Drop the first snapshot on the way.
  for (let i = 0; i < 5; i++) {
    c.processAll();
    c.inflight = c.inflight.filter((m) => m.type !== "snap");
    c.deliver();
  }
  assert.equal(c.get("1").progress("3")!.state, "snapshot");
  assert.equal(c.get("3").log.lastIndex(), 1);
  c.tick("1");
  c.stabilize();
  assert.equal(c.get("3").log.snapIndex, 2);
  assert.equal(c.get("1").progress("3")!.match, 2);
});

Deno.test("raft: a node restarts from a compacted storage with its snapshot and the entries after it", () => {
  const c = new TestCluster(ids);
  c.get("1").campaign();
  c.stabilize();
  c.get("1").propose("a");
  c.stabilize();
  compact(c, "2");
  c.get("1").propose("b");
  c.stabilize();
  c.crash("2");
  c.restart("2", ids);
  const n = c.get("2");
  assert.equal(n.log.snapIndex, 2);
  assert.equal(n.log.lastIndex(), 3);
  assert.equal(n.log.applied, 2);
  c.stabilize();
  assert.deepEqual(c.peers.get("2")!.applied.map((e) => e.data), [
    "",
    "a",
    "b",
  ]);
});

Deno.test("raft: reportSnapshot and reportUnreachable move a follower's progress back to probing", () => {
  const c = new TestCluster(ids);
  c.get("1").campaign();
  c.stabilize();
  c.isolate("3");
  c.get("1").propose("a");
  c.stabilize();
  compact(c, "1");
  c.heal();
  c.tick("1");
  for (let i = 0; i < 6; i++) {
    c.processAll();
    c.inflight = c.inflight.filter((m) => m.type !== "snap");
    c.deliver();
  }
  const l = c.get("1");
  assert.equal(l.progress("3")!.state, "snapshot");
  l.reportSnapshot("3", true);
  assert.equal(l.progress("3")!.state, "probe");
  assert.equal(
    l.progress("3")!.next,
    2,
    "probe from the match, not past the failed snapshot",
  );
  c.stabilize();
  l.tick();
  c.stabilize();
  assert.equal(c.get("3").log.snapIndex, 2);
  assert.equal(l.progress("2")!.state, "replicate");
  l.reportUnreachable("2");
  assert.equal(l.progress("2")!.state, "probe");
});
