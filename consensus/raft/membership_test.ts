import assert from "node:assert/strict";
import { TestCluster } from "./_network.ts";

const ids = ["1", "2", "3"];

function elected(): TestCluster {
  const c = new TestCluster(ids);
  c.get("1").campaign();
  c.stabilize();
  return c;
}

Deno.test("raft: a new leader refuses a membership change until it has committed an entry of its own term", () => {
  const c = new TestCluster(ids);
  const l = c.get("1");
  l.campaign();
  for (let i = 0; i < 4; i++) {
    c.processAll();
    c.deliver((m) => m.type !== "app");
  }
  assert.equal(l.role, "leader");
  assert.equal(l.log.committed, 0);
  assert.equal(l.proposeConfChange({ type: "add", node: "4" }), false);
  c.stabilize();
  assert.equal(l.proposeConfChange({ type: "add", node: "4" }), true);
});

Deno.test("raft: only one membership change at a time: a second is refused until the first commits", () => {
  const c = elected();
  c.add("4", []);
  c.add("5", []);
  const l = c.get("1");
  assert.equal(l.proposeConfChange({ type: "add", node: "4" }), true);
  assert.equal(l.proposeConfChange({ type: "add", node: "5" }), false);
  c.stabilize();
  assert.equal(l.proposeConfChange({ type: "add", node: "5" }), true);
  c.stabilize();
  assert.deepEqual(l.voters(), ["1", "2", "3", "4", "5"]);
  assert.deepEqual(c.get("5").voters(), ["1", "2", "3", "4", "5"]);
});

Deno.test("raft: invalid changes are refused: adding a voter twice, removing a stranger or the last voter", () => {
  const c = elected();
  const l = c.get("1");
  assert.equal(l.proposeConfChange({ type: "add", node: "2" }), false);
  assert.equal(l.proposeConfChange({ type: "remove", node: "9" }), false);
  const solo = new TestCluster(["1"]);
  solo.get("1").campaign();
  solo.stabilize();
  assert.equal(
    solo.get("1").proposeConfChange({ type: "remove", node: "1" }),
    false,
  );
});

Deno.test("raft: an added node catches up from the log, learns the configuration and counts in the quorum", () => {
  const c = elected();
  c.get("1").propose("a");
  c.stabilize();
  c.add("4", []);
  assert.equal(
    c.get("4").promotable(),
    false,
    "a joining node may not campaign",
  );
  c.get("1").proposeConfChange({ type: "add", node: "4" });
  c.stabilize();
  const n4 = c.get("4");
  assert.deepEqual(n4.voters(), ["1", "2", "3", "4"]);
  assert.equal(n4.promotable(), true);
  assert.deepEqual(c.peers.get("4")!.applied.map((e) => e.data), [
    "",
    "a",
    JSON.stringify({ type: "add", node: "4", voters: ["1", "2", "3", "4"] }),
  ]);
  // Four voters need three: with 3 and 4 cut off nothing commits.
  c.isolate("3");
  c.isolate("4");
  c.get("1").propose("b");
  c.stabilize();
  assert.equal(c.get("1").log.committed, 3);
  c.heal();
  c.tick("1");
  c.stabilize();
  assert.equal(c.get("1").log.committed, 4);
});

Deno.test("raft: a configuration takes effect when appended and reverts if its entry is truncated", () => {
  const c = elected();
  c.isolate("2");
  c.isolate("3");
  c.add("4", []);
  c.get("1").proposeConfChange({ type: "add", node: "4" });
  c.stabilize();
  assert.deepEqual(c.get("1").voters(), ["1", "2", "3", "4"]);
  assert.equal(c.get("1").log.committed, 1);
  // 2 becomes leader of term 2 with 3; 1's uncommitted change is replaced.
  c.heal();
  c.isolate("1");
  c.isolate("4");
  c.tick("3", 10); // 3 stops honouring 1's lease (and pre-campaigns)
  c.stabilize();
  c.get("2").campaign();
  c.stabilize();
  assert.equal(c.get("2").role, "leader");
  c.heal();
  c.isolate("4");
  c.tick("2");
  c.stabilize();
  assert.equal(c.get("1").log.term(2), 2);
  assert.deepEqual(c.get("1").voters(), ["1", "2", "3"]);
});

Deno.test("raft: a removed leader steps down once its removal commits, and the others elect a leader without it", () => {
  const c = elected();
  const l = c.get("1");
  assert.equal(l.proposeConfChange({ type: "remove", node: "1" }), true);
  assert.equal(
    l.propose("x"),
    false,
    "a leader on its way out takes no proposals",
  );
  c.stabilize();
  assert.equal(l.role, "follower");
  assert.equal(l.promotable(), false);
  for (const id of ["2", "3"]) {
    assert.deepEqual(c.get(id).voters(), ["2", "3"]);
    assert.equal(
      c.get(id).log.committed,
      2,
      `node ${id} learned the removal committed`,
    );
  }
  for (let i = 0; i < 30; i++) c.tick("1");
  c.stabilize();
  assert.equal(l.role, "follower", "a removed node never campaigns");
  c.tick("3", 10);
  c.stabilize();
  c.tick("2", 10);
  c.stabilize();
  assert.equal(c.get("2").role, "leader");
  assert.equal(c.get("2").propose("y"), true);
  c.stabilize();
  assert.equal(c.get("3").log.entry(c.get("3").log.lastIndex()).data, "y");
});
