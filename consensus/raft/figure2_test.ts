// One test per rule of Figure 2 of the Raft paper ("In Search of an
// Understandable Consensus Algorithm", Ongaro & Ousterhout), and the Figure 8
// scenario. Most tests turn PreVote and CheckQuorum off to exercise the
// paper's base algorithm; the extensions have their own tests.
import assert from "node:assert/strict";
import { createRaft, type RaftNode, type RaftOptions } from "./core.ts";
import { TestCluster } from "./_network.ts";
import type { Entry, Message, Ready } from "./types.ts";

const base = { preVote: false, checkQuorum: false, random: () => 0 };

function node(id: string, peers: string[], extra: Partial<RaftOptions> = {}) {
  return createRaft({ ...base, ...extra, id, peers });
}

/** Takes a Ready and acknowledges it, as a driver would after persisting. */
function drain(n: RaftNode): Ready {
  const rd = n.ready();
  n.advance(rd);
  return rd;
}

function ent(index: number, term: number, data = `e${index}`): Entry {
  return { index, term, type: "normal", data };
}

/** A follower holding `entries` at `term`, as if restarted from storage. */
function follower(id: string, peers: string[], term: number, entries: Entry[]) {
  return createRaft({
    ...base,
    id,
    peers,
    storage: { hardState: { term, vote: "", commit: 0 }, entries },
  });
}

function app(
  to: string,
  term: number,
  index: number,
  logTerm: number,
  entries: Entry[],
  commit = 0,
): Message {
  return { type: "app", from: "1", to, term, index, logTerm, entries, commit };
}

const ids = ["1", "2", "3"];

// ---- Rules for all servers ---------------------------------------------

Deno.test("figure 2, all servers: when commitIndex > lastApplied the entries up to commitIndex are handed out to apply, in order, once", () => {
  const f = follower("2", ids, 1, []);
  f.step(app("2", 1, 0, 0, [ent(1, 1), ent(2, 1), ent(3, 1)], 2));
  const rd = drain(f);
  assert.deepEqual(rd.committed.map((e) => e.index), [1, 2]);
  assert.equal(f.log.applied, 2);
  f.step({ type: "heartbeat", from: "1", to: "2", term: 1, commit: 3 });
  assert.deepEqual(drain(f).committed.map((e) => e.index), [3]);
  assert.deepEqual(drain(f).committed, []);
});

Deno.test("figure 2, all servers: a message with a higher term makes a leader adopt the term and become a follower", () => {
  const c = new TestCluster(ids, base);
  c.get("1").campaign();
  c.stabilize();
  const l = c.get("1");
  assert.equal(l.role, "leader");
  l.step({ type: "appResp", from: "2", to: "1", term: 5, index: 0 });
  assert.equal(l.role, "follower");
  assert.equal(l.term, 5);
  assert.equal(l.vote, "");
});

// ---- Followers -------------------------------------------------------------

Deno.test("figure 2, followers: respond to RPCs from candidates and leaders", () => {
  const f = follower("2", ids, 1, [ent(1, 1)]);
  f.step({ type: "vote", from: "3", to: "2", term: 2, index: 1, logTerm: 1 });
  f.step(app("2", 2, 1, 1, [ent(2, 2)]));
  const out = drain(f).messages.map((m) => `${m.type}->${m.to}`);
  assert.deepEqual(out, ["voteResp->3", "appResp->1"]);
});

Deno.test("figure 2, followers: an election timeout without hearing from a leader or granting a vote makes a follower a candidate", () => {
  const f = node("1", ids);
  for (let i = 0; i < 9; i++) {
    f.tick();
    // Heartbeats from the leader keep resetting the timer.
    f.step({ type: "heartbeat", from: "2", to: "1", term: 1, commit: 0 });
  }
  assert.equal(f.role, "follower");
  for (let i = 0; i < 9; i++) f.tick();
  assert.equal(f.role, "follower");
  f.tick();
  assert.equal(f.role, "candidate");
  assert.equal(f.term, 2);
});

// ---- Candidates ------------------------------------------------------------

Deno.test("figure 2, candidates: on conversion increment the term, vote for self, reset the timer and request votes from all others", () => {
  const c = node("1", ids, {
    storage: {
      hardState: { term: 3, vote: "", commit: 0 },
      entries: [ent(1, 2)],
    },
  });
  c.campaign();
  assert.equal(c.role, "candidate");
  assert.equal(c.term, 4);
  assert.equal(c.vote, "1");
  const rd = drain(c);
  assert.deepEqual(rd.hardState, { term: 4, vote: "1", commit: 0 });
  assert.deepEqual(
    rd.messages.map((m) => [m.type, m.to, m.term, m.index, m.logTerm]),
    [["vote", "2", 4, 1, 2], ["vote", "3", 4, 1, 2]],
  );
  for (let i = 0; i < 9; i++) c.tick();
  assert.equal(c.term, 4, "the election timer was reset on conversion");
});

Deno.test("figure 2, candidates: votes from a majority make the candidate leader", () => {
  const c = node("1", ["1", "2", "3", "4", "5"]);
  c.campaign();
  c.step({ type: "voteResp", from: "2", to: "1", term: 1 });
  assert.equal(c.role, "candidate", "2 of 5 is not a majority");
  c.step({ type: "voteResp", from: "3", to: "1", term: 1, reject: true });
  c.step({ type: "voteResp", from: "4", to: "1", term: 1 });
  assert.equal(c.role, "leader");
});

Deno.test("figure 2, candidates: an AppendEntries from the new leader of the same term makes the candidate a follower", () => {
  const c = node("1", ids);
  c.campaign();
  assert.equal(c.term, 1);
  c.step({ ...app("1", 1, 0, 0, []), from: "2" });
  assert.equal(c.role, "follower");
  assert.equal(c.lead, "2");
  assert.equal(c.term, 1);
});

Deno.test("figure 2, candidates: when the election timeout elapses a new election starts", () => {
  const c = node("1", ids);
  c.campaign();
  assert.equal(c.term, 1);
  drain(c);
  for (let i = 0; i < 10; i++) c.tick();
  assert.equal(c.role, "candidate");
  assert.equal(c.term, 2);
  assert.deepEqual(drain(c).messages.map((m) => [m.type, m.term]), [
    ["vote", 2],
    ["vote", 2],
  ]);
});

// ---- Leaders ---------------------------------------------------------------

Deno.test("figure 2, leaders: upon election send AppendEntries to each server, and heartbeats during idle periods", () => {
  const c = new TestCluster(ids, base);
  c.get("1").campaign();
  c.processAll();
  c.deliver();
  c.processAll();
  c.deliver();
  const l = c.get("1");
  assert.equal(l.role, "leader");
  const rd = drain(l);
  assert.deepEqual(rd.messages.map((m) => `${m.type}->${m.to}`), [
    "app->2",
    "app->3",
  ]);
  l.tick();
  assert.deepEqual(drain(l).messages.map((m) => `${m.type}->${m.to}`), [
    "heartbeat->2",
    "heartbeat->3",
  ]);
});

Deno.test("figure 2, leaders: a client command is appended to the leader's log and applied once committed", () => {
  const c = new TestCluster(ids, base);
  c.get("1").campaign();
  c.stabilize();
  assert.equal(c.get("1").propose("x=1"), true);
  assert.equal(c.get("1").log.lastIndex(), 2);
  assert.equal(c.get("1").log.entry(2).data, "x=1");
  assert.equal(c.get("1").log.committed, 1, "not committed before replication");
  c.stabilize();
  for (const id of ids) {
    assert.deepEqual(c.peers.get(id)!.applied.map((e) => e.data), ["", "x=1"]);
  }
});

Deno.test("figure 2, leaders: entries are sent from nextIndex; success advances nextIndex and matchIndex, an inconsistency backs nextIndex off and retries", () => {
  const c = new TestCluster(ids, base);
  // The new leader holds three entries of term 1; the followers only one.
  const stored = (entries: Entry[]) => ({
    hardState: { term: 1, vote: "", commit: 1 },
    entries,
  });
  c.peers.get("1")!.node = createRaft({
    ...base,
    id: "1",
    peers: ids,
    storage: stored([ent(1, 1), ent(2, 1), ent(3, 1)]),
  });
  for (const id of ["2", "3"]) {
    c.peers.get(id)!.node = createRaft({
      ...base,
      id,
      peers: ids,
      storage: stored([ent(1, 1)]),
    });
  }
  const l = c.get("1");
  l.campaign();
  c.stabilize();
  assert.equal(l.role, "leader");
  const rejects = c.delivered.filter((m) => m.type === "appResp" && m.reject);
  assert.deepEqual(
    rejects.map((m) => [m.from, m.index]),
    [["2", 3], ["3", 3]],
    "the first append (after index 3) is refused",
  );
  for (const id of ["2", "3"]) {
    assert.equal(l.progress(id)!.match, 4);
    assert.equal(l.progress(id)!.next, 5);
    assert.deepEqual(c.get(id).log.slice(1, 5).map((e) => e.term), [
      1,
      1,
      1,
      2,
    ]);
  }
  l.propose("a");
  c.stabilize();
  assert.equal(l.progress("2")!.match, 5);
  assert.equal(l.progress("2")!.next, 6);
});

Deno.test("figure 2, leaders: commitIndex advances to N only when a majority matches N and log[N] is of the current term", () => {
  // A leader of term 3 whose log holds an entry of term 2 at index 2.
  const l = node("1", ["1", "2", "3", "4", "5"], {
    storage: {
      hardState: { term: 2, vote: "", commit: 1 },
      entries: [ent(1, 1), ent(2, 2)],
    },
  });
  l.campaign();
  for (const v of ["2", "3"]) {
    l.step({ type: "voteResp", from: v, to: "1", term: 3 });
  }
  assert.equal(l.role, "leader");
  // Followers 2 and 3 already hold index 2 but not the no-op at 3.
  l.step({ type: "appResp", from: "2", to: "1", term: 3, index: 2 });
  l.step({ type: "appResp", from: "3", to: "1", term: 3, index: 2 });
  assert.equal(
    l.log.committed,
    1,
    "an old-term entry is not committed by counting replicas",
  );
  l.step({ type: "appResp", from: "2", to: "1", term: 3, index: 3 });
  assert.equal(l.log.committed, 1, "2 of 5 is not a majority");
  l.step({ type: "appResp", from: "3", to: "1", term: 3, index: 3 });
  assert.equal(
    l.log.committed,
    3,
    "the current-term entry commits, and every entry before it",
  );
});

// ---- RequestVote receiver ----------------------------------------------------

Deno.test("figure 2, RequestVote receiver rule 1: reply false if term < currentTerm", () => {
  const f = follower("2", ids, 5, []);
  f.step({ type: "vote", from: "3", to: "2", term: 4, index: 0, logTerm: 0 });
  const [resp] = drain(f).messages;
  // Without PreVote/CheckQuorum a stale vote request is ignored; the
  // candidate learns the term from any other message. With them on the
  // follower still never grants it:
  assert.equal(resp, undefined);
  assert.equal(f.vote, "");
  const g = createRaft({
    id: "2",
    peers: ids,
    storage: { hardState: { term: 5, vote: "", commit: 0 }, entries: [] },
  });
  g.step({
    type: "preVote",
    from: "3",
    to: "2",
    term: 4,
    index: 0,
    logTerm: 0,
  });
  assert.deepEqual(drain(g).messages.map((m) => [m.type, m.term, m.reject]), [[
    "preVoteResp",
    5,
    true,
  ]]);
});

Deno.test("figure 2, RequestVote receiver rule 2: grant only if not voted for another and the candidate's log is at least as up to date", () => {
  const votes = (f: RaftNode) =>
    drain(f).messages.map((m) => `${m.to}:${m.reject ? "no" : "yes"}`);
  // Up to date, no vote yet: granted, and granted again to the same candidate.
  const f = follower("2", ids, 1, [ent(1, 1)]);
  f.step({ type: "vote", from: "1", to: "2", term: 2, index: 1, logTerm: 1 });
  f.step({ type: "vote", from: "1", to: "2", term: 2, index: 1, logTerm: 1 });
  assert.deepEqual(votes(f), ["1:yes", "1:yes"]);
  assert.equal(f.vote, "1");
  // Already voted for 1 in this term: 3 is refused.
  f.step({ type: "vote", from: "3", to: "2", term: 2, index: 5, logTerm: 2 });
  assert.deepEqual(votes(f), ["3:no"]);
  // A candidate whose last term is lower, or equal with a shorter log, loses.
  const g = follower("2", ids, 2, [ent(1, 1), ent(2, 2)]);
  g.step({ type: "vote", from: "1", to: "2", term: 3, index: 5, logTerm: 1 });
  g.step({ type: "vote", from: "3", to: "2", term: 4, index: 1, logTerm: 2 });
  assert.deepEqual(votes(g), ["1:no", "3:no"]);
  g.step({ type: "vote", from: "3", to: "2", term: 5, index: 2, logTerm: 2 });
  assert.deepEqual(votes(g), ["3:yes"]);
});

// ---- AppendEntries receiver ----------------------------------------------------

Deno.test("figure 2, AppendEntries receiver rule 1: reply false if term < currentTerm", () => {
  // With CheckQuorum (the default) the refusal carries the newer term, so a
  // leader cut off by a one-way partition learns it; the paper's base
  // algorithm may simply ignore the stale request.
  const f = createRaft({
    id: "2",
    peers: ids,
    storage: {
      hardState: { term: 3, vote: "", commit: 0 },
      entries: [ent(1, 1)],
    },
  });
  f.step(app("2", 2, 1, 1, [ent(2, 2)]));
  const [resp] = drain(f).messages;
  assert.equal(resp.type, "appResp");
  assert.equal(resp.to, "1");
  assert.equal(resp.term, 3, "the stale leader learns the newer term");
  assert.equal(f.log.lastIndex(), 1, "nothing appended");
  assert.equal(f.lead, "");
  const g = follower("2", ids, 3, [ent(1, 1)]);
  g.step(app("2", 2, 1, 1, [ent(2, 2)]));
  assert.equal(g.log.lastIndex(), 1);
  assert.equal(g.term, 3);
});

Deno.test("figure 2, AppendEntries receiver rule 2: reply false if the log has no entry at prevLogIndex with prevLogTerm", () => {
  const f = follower("2", ids, 3, [ent(1, 1), ent(2, 2)]);
  f.step(app("2", 3, 2, 3, [ent(3, 3)]));
  f.step(app("2", 3, 5, 3, [ent(6, 3)]));
  const resps = drain(f).messages;
  assert.deepEqual(resps.map((m) => [m.reject, m.index]), [[true, 2], [
    true,
    5,
  ]]);
  assert.equal(f.log.lastIndex(), 2);
});

Deno.test("figure 2, AppendEntries receiver rule 3: a conflicting entry and all that follow it are deleted", () => {
  const f = follower("2", ids, 2, [
    ent(1, 1),
    ent(2, 1, "old2"),
    ent(3, 1, "old3"),
  ]);
  f.step(app("2", 2, 1, 1, [ent(2, 2, "new2")]));
  assert.equal(f.log.lastIndex(), 2);
  assert.equal(f.log.entry(2).data, "new2");
  const rd = drain(f);
  assert.deepEqual(
    rd.entries.map((e) => e.data),
    ["new2"],
    "the driver rewrites from index 2",
  );
});

Deno.test("figure 2, AppendEntries receiver rule 4: new entries not already in the log are appended (duplicates change nothing)", () => {
  const f = follower("2", ids, 1, [ent(1, 1), ent(2, 1)]);
  drain(f);
  f.step(app("2", 1, 0, 0, [ent(1, 1), ent(2, 1), ent(3, 1)]));
  assert.deepEqual(drain(f).entries.map((e) => e.index), [3]);
  // A delayed duplicate of an older append does not truncate anything.
  f.step(app("2", 1, 0, 0, [ent(1, 1)]));
  assert.equal(f.log.lastIndex(), 3);
  assert.deepEqual(drain(f).entries, []);
});

Deno.test("figure 2, AppendEntries receiver rule 5: commitIndex becomes min(leaderCommit, index of last new entry)", () => {
  const f = follower("2", ids, 1, []);
  f.step(app("2", 1, 0, 0, [ent(1, 1), ent(2, 1)], 5));
  assert.equal(f.log.committed, 2);
  f.step(app("2", 1, 2, 1, [ent(3, 1)], 2));
  assert.equal(f.log.committed, 2);
  f.step(app("2", 1, 3, 1, [], 3));
  assert.equal(f.log.committed, 3);
});

// ---- Figure 8 --------------------------------------------------------------

const five = ["1", "2", "3", "4", "5"];

/**
 * Figure 8 (a)–(c), with this implementation's no-op entries: S1 leads term
 * 2 and puts index 2 only on S2; S5 leads term 3 with a different index 2
 * it sends nowhere; S1 leads term 4 and copies its term-2 entry to S3 and S4
 * (so S1–S4 hold it) before anything of term 4 reaches them.
 */
function figure8UpToC(): TestCluster {
  const c = new TestCluster(five, { ...base, maxSizePerMsg: 1 });
  c.get("2").campaign();
  c.stabilize();
  // (a) S1 leads term 2; its no-op (index 2) reaches only S2.
  c.get("1").campaign();
  c.processAll();
  c.deliver();
  c.processAll();
  c.deliver();
  assert.equal(c.get("1").role, "leader");
  assert.equal(c.get("1").term, 2);
  for (let i = 0; i < 10; i++) {
    c.processAll();
    c.deliver((m) => m.from !== "1" || m.to === "2");
  }
  c.inflight = [];
  assert.equal(c.get("2").log.term(2), 2);
  assert.equal(c.get("3").log.lastIndex(), 1);
  // (b) S1 crashes; S5 wins term 3 with S3, S4 and appends its own index 2.
  c.crash("1");
  c.get("5").campaign();
  c.processAll();
  c.deliver();
  c.processAll();
  c.deliver();
  assert.equal(c.get("5").role, "leader");
  assert.equal(c.get("5").term, 3);
  assert.equal(c.get("5").log.term(2), 3);
  c.processAll();
  c.crash("5");
  c.inflight = c.inflight.filter((m) => m.from !== "5");
  c.stabilize();
  // (c) S1 restarts and wins term 4 (S2, S3, S4); the term-2 entry reaches
  // S3 and S4 (S2 has it) but the term-4 no-op reaches nobody.
  c.restart("1", five);
  c.get("1").campaign(); // term 3: S3 and S4 already voted for S5
  c.stabilize();
  c.get("1").campaign(); // term 4
  c.processAll();
  c.deliver();
  c.processAll();
  c.deliver();
  assert.equal(c.get("1").role, "leader");
  assert.equal(c.get("1").term, 4);
  for (let i = 0; i < 20; i++) {
    c.processAll();
    // Entries of term 4 are lost on the way (as if sent in a later batch).
    c.inflight = c.inflight.map((m) =>
      m.entries ? { ...m, entries: m.entries.filter((e) => e.term !== 4) } : m
    );
    c.deliver();
  }
  c.inflight = [];
  for (const id of ["1", "3", "4"]) assert.equal(c.get(id).log.term(2), 2);
  return c;
}

Deno.test("figure 8: a leader does not commit an old-term entry on a majority, and a later leader may indeed overwrite it", () => {
  const c = figure8UpToC();
  const s1 = c.get("1");
  assert.ok(s1.progress("3")!.match >= 2 && s1.progress("4")!.match >= 2);
  assert.equal(
    s1.log.committed,
    1,
    "index 2 (term 2) is on S1, S2, S3, S4 but not committed",
  );
  // (d) S1 crashes; S5 restarts and wins with S2, S3, S4 (its last term 3 beats their 2).
  c.crash("1");
  c.restart("5", five);
  c.get("5").campaign(); // term 4: everyone already voted in term 4
  c.stabilize();
  c.get("5").campaign(); // term 5
  c.stabilize();
  assert.equal(c.get("5").role, "leader");
  for (const id of ["2", "3", "4", "5"]) {
    assert.equal(c.get(id).log.term(2), 3, `S${id} now holds S5's index 2`);
    const applied = c.peers.get(id)!.applied.find((e) => e.index === 2);
    assert.equal(applied?.term, 3, "nobody ever applied the overwritten entry");
  }
});

Deno.test("figure 8: once the leader's current-term entry is on a majority, the old entry is committed and S5 can no longer win", () => {
  const c = figure8UpToC();
  // (e) S1's term-4 no-op reaches S3 and S4.
  c.processAll();
  c.get("1").propose("x");
  c.processAll();
  c.deliver((m) => m.to !== "2" && m.to !== "5");
  for (let i = 0; i < 20; i++) {
    c.processAll();
    c.deliver((m) => m.to !== "2" && m.to !== "5");
  }
  assert.ok(c.get("1").log.committed >= 3);
  assert.equal(c.peers.get("1")!.applied.find((e) => e.index === 2)?.term, 2);
  c.crash("1");
  c.restart("5", five);
  for (let round = 0; round < 4; round++) {
    c.get("5").campaign();
    c.stabilize();
    assert.notEqual(c.get("5").role, "leader", `round ${round}`);
  }
  for (const id of ["3", "4"]) assert.equal(c.get(id).log.term(2), 2);
});
