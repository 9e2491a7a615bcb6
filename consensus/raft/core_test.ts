import assert from "node:assert/strict";
import { createRaft } from "./core.ts";
import { TestCluster } from "./_network.ts";
import { MemoryStorage } from "./storage.ts";

const ids = ["1", "2", "3"];

function elected(options = {}): TestCluster {
  const c = new TestCluster(ids, options);
  c.get("1").campaign();
  c.stabilize();
  assert.equal(c.get("1").role, "leader");
  return c;
}

// ---- elections ---------------------------------------------------------

Deno.test("raft: a new leader appends a no-op entry of its term and commits it", () => {
  const c = elected();
  const l = c.get("1");
  assert.deepEqual(l.log.entry(1), {
    term: 1,
    index: 1,
    type: "normal",
    data: "",
  });
  assert.equal(l.log.committed, 1);
  for (const id of ids) assert.equal(c.peers.get(id)!.applied.length, 1);
});

Deno.test("raft: election timeouts are drawn from [electionTick, 2·electionTick) with the injected randomness", () => {
  const at = (r: number) => {
    const n = createRaft({ id: "1", peers: ids, random: () => r });
    let ticks = 0;
    while (n.role === "follower") {
      n.tick();
      ticks++;
    }
    return ticks;
  };
  assert.equal(at(0), 10);
  assert.equal(at(0.5), 15);
  assert.equal(at(0.999), 19);
});

Deno.test("raft: PreVote: a node cut off from the cluster does not raise its term, so it cannot disrupt the leader when it returns", () => {
  const c = elected();
  c.isolate("3");
  for (let i = 0; i < 100; i++) {
    c.tick("3");
    c.stabilize();
  }
  assert.equal(c.get("3").role, "preCandidate");
  assert.equal(c.get("3").term, 1);
  c.heal();
  c.tick("1");
  c.stabilize();
  assert.equal(c.get("1").role, "leader");
  assert.equal(c.get("1").term, 1);
  assert.equal(c.get("3").role, "follower");
});

Deno.test("raft: without PreVote the same isolated node raises its term and deposes the leader", () => {
  const c = elected({ preVote: false });
  c.isolate("3");
  for (let i = 0; i < 30; i++) {
    c.tick("3");
    c.stabilize();
  }
  assert.ok(c.get("3").term > 1);
  c.heal();
  c.tick("1");
  c.stabilize();
  assert.notEqual(c.get("1").term, 1);
});

Deno.test("raft: CheckQuorum: a leader that hears from no quorum for an election timeout steps down", () => {
  const c = elected();
  c.isolate("1");
  // The first check may still count the replies of the last round; the
  // second one cannot.
  for (let i = 0; i < 20; i++) {
    c.tick("1");
    c.stabilize();
  }
  assert.equal(c.get("1").role, "follower");
  assert.equal(c.get("1").lead, "");
  assert.equal(c.get("1").term, 1, "stepping down does not change the term");
});

Deno.test("raft: CheckQuorum: a follower that recently heard from its leader ignores a higher-term vote request", () => {
  const c = elected();
  const f = c.get("2");
  f.step({ type: "vote", from: "3", to: "2", term: 9, index: 1, logTerm: 1 });
  assert.equal(f.term, 1);
  assert.equal(f.vote, "1", "still its vote of term 1");
  assert.deepEqual(f.ready().messages, []);
});

Deno.test("raft: a leader that can send but not receive steps down, the others elect a new leader, and it follows that one once healed", () => {
  const c = elected();
  c.cut.add("2->1");
  c.cut.add("3->1");
  for (let i = 0; i < 20; i++) {
    c.tick("1");
    c.stabilize();
  }
  assert.equal(c.get("1").role, "follower");
  // 3 must also see its leader go quiet, or it keeps honouring the lease;
  // its clock runs ahead of 2's so they do not campaign in lockstep.
  c.tick("3", 5);
  for (let i = 0; i < 30 && !c.leader(); i++) {
    c.tick("2");
    c.tick("3");
    c.stabilize();
  }
  const next = c.leader()!;
  assert.notEqual(next.id, "1");
  assert.equal(next.term, 2);
  c.heal();
  c.tick(next.id);
  c.stabilize();
  assert.equal(c.get("1").lead, next.id);
  assert.equal(c.get("1").term, 2);
});

// ---- the persistence contract ----------------------------------------------

Deno.test("raft: persistence: a vote leaves only in the Ready that carries the vote to persist", () => {
  const f = createRaft({ id: "2", peers: ids, random: () => 0 });
  f.step({ type: "vote", from: "1", to: "2", term: 1, index: 0, logTerm: 0 });
  const rd = f.ready();
  assert.deepEqual(rd.hardState, { term: 1, vote: "1", commit: 0 });
  assert.deepEqual(rd.messages.map((m) => m.type), ["voteResp"]);
});

Deno.test("raft: persistence: an append is acknowledged in the Ready that carries the entries", () => {
  const f = createRaft({ id: "2", peers: ids, random: () => 0 });
  f.step({
    type: "app",
    from: "1",
    to: "2",
    term: 1,
    index: 0,
    logTerm: 0,
    commit: 0,
    entries: [{ term: 1, index: 1, type: "normal", data: "x" }],
  });
  const rd = f.ready();
  assert.deepEqual(rd.entries.map((e) => e.data), ["x"]);
  assert.deepEqual(rd.messages.map((m) => [m.type, m.index]), [["appResp", 1]]);
});

Deno.test("raft: persistence: a crash before the Ready is persisted loses the vote, and nothing depending on it was sent", () => {
  const storage = new MemoryStorage();
  const f = createRaft({ id: "2", peers: ids, random: () => 0 });
  f.step({ type: "vote", from: "1", to: "2", term: 1, index: 0, logTerm: 0 });
  // Crash: the Ready is never taken.
  const again = createRaft({
    id: "2",
    peers: ids,
    random: () => 0,
    storage: storage.state(),
  });
  assert.equal(again.vote, "");
  again.step({
    type: "vote",
    from: "3",
    to: "2",
    term: 1,
    index: 0,
    logTerm: 0,
  });
  const rd = again.ready();
  assert.equal(
    rd.messages[0].reject,
    undefined,
    "free to vote for 3: 1 never got a grant",
  );
});

Deno.test("raft: a restarted node keeps its term, vote, log and commit index", () => {
  const c = elected();
  c.get("1").propose("a");
  c.stabilize();
  const before = c.get("2").status();
  c.crash("2");
  c.restart("2", ids);
  const after = c.get("2").status();
  assert.equal(after.term, before.term);
  assert.equal(after.vote, before.vote);
  assert.equal(after.lastIndex, before.lastIndex);
  assert.equal(after.commit, before.commit);
  assert.equal(
    after.applied,
    0,
    "the state machine restarts empty and replays",
  );
  c.stabilize();
  assert.deepEqual(c.peers.get("2")!.applied.map((e) => e.data), ["", "a"]);
});

// ---- proposals -----------------------------------------------------------------

Deno.test("raft: a follower forwards a proposal to its leader, where it commits", () => {
  const c = elected();
  assert.equal(c.get("3").propose("from-3"), true);
  c.stabilize();
  assert.equal(c.get("1").log.entry(2).data, "from-3");
  assert.deepEqual(c.peers.get("3")!.applied.map((e) => e.data), [
    "",
    "from-3",
  ]);
});

Deno.test("raft: a proposal with no known leader is dropped and reported as such", () => {
  const f = createRaft({ id: "1", peers: ids, random: () => 0 });
  assert.equal(f.propose("x"), false);
  assert.deepEqual(f.ready().messages, []);
});

Deno.test("raft: batching: a lagging follower catches up in appends of at most maxSizePerMsg bytes", () => {
  const c = elected({ maxSizePerMsg: 150 });
  c.isolate("3");
  for (let i = 0; i < 6; i++) c.get("1").propose("x".repeat(40));
  c.stabilize();
  c.heal();
  c.delivered = [];
  c.tick("1");
  c.stabilize();
  const sizes = c.delivered
    .filter((m) => m.type === "app" && m.to === "3" && m.entries!.length > 0)
    .map((m) => m.entries!.length);
  // Each entry counts its data plus 24 bytes: two fit in 150, three do not.
  assert.deepEqual(sizes, [2, 2, 2]);
  assert.equal(c.get("3").log.lastIndex(), 7);
});

Deno.test("raft: flow control: a replicating follower has at most maxInflight appends in flight, pipelined without waiting", () => {
  const c = elected({ maxInflight: 3 });
  const l = c.get("1");
  c.processAll();
  for (let i = 0; i < 10; i++) l.propose(`p${i}`);
  c.process("1");
  const apps = c.inflight.filter((m) => m.type === "app" && m.to === "2");
  assert.equal(apps.length, 3, "three appends out before any acknowledgement");
  assert.equal(l.progress("2")!.inflights.count, 3);
  assert.equal(l.progress("2")!.isPaused(), true);
  c.stabilize();
  assert.equal(l.progress("2")!.match, 11);
});

// ---- ReadIndex ----------------------------------------------------------------

Deno.test("raft: ReadIndex is not answered before the new leader's no-op commits", () => {
  const c = new TestCluster(ids);
  const l = c.get("1");
  l.campaign();
  for (let i = 0; i < 4; i++) {
    c.processAll();
    c.deliver((m) => m.type !== "app");
  }
  assert.equal(l.role, "leader");
  assert.equal(l.log.committed, 0);
  assert.equal(l.readIndex("r1"), true);
  c.processAll();
  c.deliver((m) => m.type !== "app");
  c.processAll();
  assert.deepEqual(c.peers.get("1")!.readStates, []);
  c.stabilize();
  assert.deepEqual(c.peers.get("1")!.readStates, [{ index: 1, context: "r1" }]);
});

Deno.test("raft: ReadIndex from a follower is answered through the leader after a quorum confirms it still leads", () => {
  const c = elected();
  c.get("1").propose("a");
  c.stabilize();
  c.get("2").readIndex("r2");
  c.stabilize();
  assert.deepEqual(c.peers.get("2")!.readStates, [{ index: 2, context: "r2" }]);
  const hb = c.delivered.filter((m) =>
    m.type === "heartbeat" && m.context === "r2"
  );
  assert.equal(hb.length, 2);
});

Deno.test("raft: ReadIndex on a leader cut off from every follower is never answered", () => {
  const c = elected();
  c.isolate("1");
  c.get("1").readIndex("stale");
  for (let i = 0; i < 5; i++) {
    c.tick("1");
    c.stabilize();
  }
  assert.deepEqual(c.peers.get("1")!.readStates, []);
});

// ---- leader transfer --------------------------------------------------------

Deno.test("raft: leader transfer hands leadership to an up-to-date follower", () => {
  const c = elected();
  c.get("1").transferLeader("3");
  c.stabilize();
  assert.equal(c.get("3").role, "leader");
  assert.equal(c.get("3").term, 2);
  assert.equal(c.get("1").role, "follower");
});

Deno.test("raft: leader transfer first catches a lagging follower up, and proposals are refused meanwhile", () => {
  const c = elected();
  c.isolate("3");
  c.get("1").propose("a");
  c.get("1").propose("b");
  c.stabilize();
  c.heal();
  c.get("1").transferLeader("3");
  assert.equal(c.get("1").propose("during"), false);
  c.stabilize();
  assert.equal(c.get("3").role, "leader");
  assert.deepEqual(c.get("3").log.slice(2, 4).map((e) => e.data), ["a", "b"]);
});

Deno.test("raft: a follower forwards a transfer request to its leader", () => {
  const c = elected();
  c.get("2").transferLeader("2");
  c.stabilize();
  assert.equal(c.get("2").role, "leader");
});

Deno.test("raft: a transfer to an unreachable node is abandoned after an election timeout", () => {
  const c = elected();
  c.isolate("3");
  c.get("1").transferLeader("3");
  assert.equal(c.get("1").leadTransferee, "3");
  for (let i = 0; i < 10; i++) {
    c.tick("1");
    c.stabilize();
  }
  assert.equal(c.get("1").leadTransferee, "");
  assert.equal(c.get("1").propose("after"), true);
});
