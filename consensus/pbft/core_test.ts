import assert from "node:assert/strict";
import { clientRequest, TestCluster, testSecret } from "./_cluster.ts";
import { fakeAuth } from "./_sim.ts";
import {
  batchDigest,
  createPbft,
  macInput,
  requestSignInput,
  signInput,
} from "./core.ts";
import type {
  NewView,
  PbftMessage,
  PbftPayload,
  PrePrepare,
  ViewChange,
} from "./types.ts";

const req = (t: number, client = "c") => clientRequest(client, t);
const digests = (c: TestCluster, id: string) =>
  c.replica(id).executed.map((e) => `${e.seq}:${e.digest}`);

Deno.test("pbft core: a request commits through pre-prepare, prepare and commit on every replica", () => {
  const c = new TestCluster(4);
  assert.equal(c.get("1").f, 1);
  assert.equal(c.get("1").quorum, 3);
  c.get("1").request(req(1));
  c.processAll();
  const kinds = c.inflight.map((m) => m.payload.type);
  // Relayed to the backups, and pre-prepared.
  assert.equal(kinds.filter((k) => k === "pre-prepare").length, 3);
  c.stabilize();
  for (const id of c.ids) {
    assert.equal(c.replica(id).executed.length, 1, `replica ${id}`);
    assert.deepEqual(c.replica(id).executed[0].batch, [req(1)]);
  }
  assert.deepEqual(digests(c, "2"), digests(c, "1"));
});

Deno.test("pbft core: a commit needs 2f + 1 replicas; with two of four down nothing executes", () => {
  const c = new TestCluster(4);
  c.crash("3");
  c.crash("4");
  c.get("1").request(req(1));
  c.stabilize();
  assert.equal(c.replica("1").executed.length, 0);
  assert.equal(c.replica("2").executed.length, 0);
  // One replica silent (f = 1) is fine.
  c.restart("3");
  c.tickAll(5);
  assert.equal(c.replica("1").executed.length, 1);
  assert.equal(c.replica("3").executed.length, 1);
});

Deno.test("pbft core: requests that arrive while batches are in flight go out together in one batch", () => {
  const c = new TestCluster(4, { maxInflight: 1, maxBatch: 10 });
  c.get("1").request(req(1));
  c.processAll();
  for (let t = 2; t <= 6; t++) c.get("1").request(req(t));
  c.stabilize();
  const batches = c.replica("2").executed.map((e) => e.batch.length);
  assert.deepEqual(batches, [1, 5]);
});

Deno.test("pbft core: a message with a wrong MAC, or claiming another sender, is dropped and counted", () => {
  const c = new TestCluster(4);
  const pp: PrePrepare = {
    type: "pre-prepare",
    view: 0,
    seq: 1,
    digest: batchDigest(fakeAuth("1", testSecret), [req(1)]),
    batch: [req(1)],
  };
  // Replica 4 forges the primary's pre-prepare: it can only MAC with its own keys.
  const forger = fakeAuth("4", testSecret);
  const forged: PbftMessage = {
    from: "1",
    to: "2",
    payload: pp,
    mac: forger.mac("2", macInput("1", "2", pp)),
  };
  c.get("2").step(forged);
  assert.equal(c.get("2").rejected, 1);
  c.processAll();
  assert.equal(c.inflight.length, 0, "no prepare for a forged pre-prepare");
  // The same payload with a valid MAC from 4: not the primary, ignored.
  c.get("2").step({
    from: "4",
    to: "2",
    payload: pp,
    mac: forger.mac("2", macInput("4", "2", pp)),
  });
  c.processAll();
  assert.equal(c.inflight.length, 0);
});

Deno.test("pbft core: a pre-prepare whose batch does not match its digest is rejected", () => {
  const c = new TestCluster(4);
  const auth = fakeAuth("1", testSecret);
  const pp: PrePrepare = {
    type: "pre-prepare",
    view: 0,
    seq: 1,
    digest: batchDigest(auth, [req(1)]),
    batch: [req(2)],
  };
  c.get("2").step({
    from: "1",
    to: "2",
    payload: pp,
    mac: auth.mac("2", macInput("1", "2", pp)),
  });
  assert.equal(c.get("2").rejected, 1);
});

Deno.test("pbft core: a pre-prepare's MAC covers its digest, so a batch swapped under it fails the digest check", () => {
  const c = new TestCluster(4);
  c.get("1").request(req(1));
  c.processAll();
  const pp = c.inflight.find((m) =>
    m.to === "2" && m.payload.type === "pre-prepare"
  )!;
  c.inflight = [];
  const swapped = { ...pp.payload as PrePrepare, batch: [req(2)] };
  assert.equal(
    macInput("1", "2", swapped),
    macInput("1", "2", pp.payload),
    "the batch is outside the MAC",
  );
  c.get("2").step({ ...pp, payload: swapped });
  assert.equal(c.get("2").rejected, 1);
  c.processAll();
  assert.equal(c.inflight.length, 0, "no prepare for the swapped batch");
  c.get("2").step(pp);
  c.processAll();
  assert.deepEqual(c.inflight.map((m) => m.payload.type), [
    "prepare",
    "prepare",
    "prepare",
  ]);
});

Deno.test("pbft core: a replica answers another's client with its result's digest, whole only when asked again, and a result that does not hash to its digest is dropped", () => {
  const c = new TestCluster(4);
  const auth = fakeAuth("2", testSecret);
  const result = JSON.stringify([{ ok: true, value: "v".repeat(1024) }]);
  c.get("2").reply("1", "1/x", 1, result);
  c.get("2").reply("1", "1/x", 2, result, { full: true });
  // Nothing to persist first: the answer goes out as an early message.
  const rd = c.get("2").ready();
  assert.deepEqual([rd.early.length, rd.messages.length], [1, 0]);
  const m = rd.early[0];
  c.inflight.push(m);
  assert.deepEqual(m.payload, {
    type: "reply",
    view: 0,
    results: [
      { client: "1/x", t: 1, digest: auth.digest(result) },
      { client: "1/x", t: 2, digest: auth.digest(result), result },
    ],
  });
  c.deliver();
  assert.deepEqual(
    c.get("1").ready().replies.map((r) => [r.t, r.digest, r.result]),
    [[1, auth.digest(result), undefined], [2, auth.digest(result), result]],
  );
  // Replica 2 (Byzantine) sends a result under another result's digest.
  const lie: PbftPayload = {
    type: "reply",
    view: 0,
    results: [{
      client: "1/x",
      t: 3,
      digest: auth.digest(result),
      result: '[{"ok":false}]',
    }],
  };
  c.get("1").step({
    from: "2",
    to: "1",
    payload: lie,
    mac: auth.mac("1", macInput("2", "1", lie)),
  });
  assert.equal(c.get("1").rejected, 1);
  assert.deepEqual(c.get("1").ready().replies, []);
  // Its own replica's result reaches the proxy whole.
  c.get("1").reply("1", "1/x", 4, result);
  assert.deepEqual(c.get("1").ready().replies, [{
    client: "1/x",
    t: 4,
    digest: auth.digest(result),
    result,
    view: 0,
    from: "1",
  }]);
});

Deno.test("pbft core: a batch that prepares and commits within one Ready is flagged to apply only after it persists; one prepared earlier is not", () => {
  const c = new TestCluster(4);
  c.get("1").request(req(1));
  // Replica 2 gets the pre-prepare and everyone's commits, but the
  // prepares to it wait.
  const held = (m: PbftMessage) => m.to === "2" && m.payload.type === "prepare";
  for (let i = 0; i < 20; i++) {
    c.processAll();
    c.deliver((m) => !held(m));
  }
  const three = c.replica("3").executed;
  assert.equal(three.length, 1);
  assert.equal(three[0].afterPersist, undefined, "3 prepared a Ready before");
  assert.equal(c.replica("2").executed.length, 0);
  c.deliver();
  const rd = c.get("2").ready();
  assert.deepEqual(
    rd.persist.map((r) => r.k),
    ["p", "exec"],
    "prepared and committed at once",
  );
  assert.equal(rd.executed[0].afterPersist, true);
});

Deno.test("pbft core: a backup relays a client's retry without taking it as waiting (after a state transfer it could be stale), a first request it does take", () => {
  const c = new TestCluster(4);
  c.get("2").request(req(1), { retry: true });
  assert.equal(c.get("2").status().pending, 0);
  c.processAll();
  assert.deepEqual(
    c.inflight.filter((m) => m.from === "2").map((m) => m.payload.type),
    ["request", "request", "request"],
  );
  // Ticking past the view-change timeout: nothing waits, no view change.
  c.tickAll(30, ["2"]);
  assert.equal(c.get("2").status().changing, false);
  c.get("3").request(req(2));
  assert.equal(c.get("3").status().pending, 1);
  // The primary takes a retry as waiting: it orders it (at worst a no-op).
  c.get("1").request(req(3), { retry: true });
  c.stabilize();
  assert(c.replica("4").executed.some((e) => e.batch.some((r) => r.t === 3)));
});

Deno.test("pbft core: checkpoints every K become stable with 2f + 1, and every 4th rewrites the records without what lies below it", () => {
  const c = new TestCluster(4, {
    checkpointInterval: 2,
    window: 4,
    maxBatch: 1,
  });
  for (let t = 1; t <= 5; t++) c.get("1").request(req(t));
  c.stabilize();
  for (const id of c.ids) {
    const s = c.get(id).status();
    assert.equal(s.executed, 5, `replica ${id}`);
    assert.equal(s.stable, 4, `replica ${id}`);
  }
  // Appended: the stable checkpoint with its proof and state.
  let recs = c.replica("2").records;
  const stable = recs.findLast((r) => r.k === "stable");
  assert.ok(stable?.k === "stable" && stable.seq === 4);
  assert.ok(stable.proof.length >= 3);
  assert.equal(stable.data, c.replica("2").state.split("5:")[0]);
  // The 4th checkpoint (8) rewrote the file: nothing at or below it but it;
  // the later ones (10, 12) were appended.
  for (let t = 6; t <= 13; t++) c.get("1").request(req(t));
  c.stabilize();
  assert.equal(c.get("2").status().stable, 12);
  recs = c.replica("2").records;
  assert.equal(recs[0].k, "view");
  assert.deepEqual(
    recs.filter((r) => r.k === "stable").map((r) => "seq" in r && r.seq),
    [8, 10, 12],
  );
  assert.ok(
    recs.every((r) => !("seq" in r) || r.k === "stable" || r.seq > 8),
    JSON.stringify(recs.map((r) => r.k)),
  );
  // Either way a restart rebuilds the same state.
  c.restart("2");
  c.process("2");
  assert.equal(c.get("2").status().executed, 13);
  assert.equal(c.replica("2").state, c.replica("1").state);
});

Deno.test("pbft core: the primary proposes nothing above the high water mark until a checkpoint is stable", () => {
  const c = new TestCluster(4, {
    checkpointInterval: 2,
    window: 2,
    maxBatch: 1,
    maxInflight: 10,
  });
  // Checkpoints are lost: the window cannot move past 2.
  for (let t = 1; t <= 4; t++) c.get("1").request(req(t));
  for (let i = 0; i < 50; i++) {
    c.processAll();
    c.drop((m) => m.payload.type === "checkpoint");
    c.deliver();
  }
  assert.equal(c.get("2").status().executed, 2);
  assert.equal(c.get("2").status().stable, 0);
  // Checkpoints get through: the rest follows.
  c.tickAll(6);
  assert.equal(c.get("2").status().executed, 4);
});

Deno.test("pbft core: a silent primary is replaced and what was prepared keeps its sequence number", () => {
  const c = new TestCluster(4, { viewChangeTicks: 4, retransmitTicks: 2 });
  c.get("1").request(req(1));
  // Everyone prepares seq 1, but the commits are lost.
  c.processAll();
  c.deliver();
  c.processAll();
  c.deliver((m) => m.payload.type !== "commit");
  c.processAll();
  c.drop((m) => m.payload.type === "commit");
  c.crash("1");
  for (const id of ["2", "3", "4"]) {
    assert.equal(c.replica(id).executed.length, 0);
    c.get(id).request(req(2));
  }
  c.tickAll(12, ["2", "3", "4"]);
  for (const id of ["2", "3", "4"]) {
    const s = c.get(id).status();
    assert.equal(s.view, 1, `replica ${id}`);
    assert.equal(s.primary, "2");
    assert.deepEqual(
      c.replica(id).executed.map((e) => e.batch.map((r) => r.t)),
      [[1], [2]],
      `replica ${id}`,
    );
  }
});

Deno.test("pbft core: a replica that fell behind fetches the state of a stable checkpoint and ignores a lying one", () => {
  const c = new TestCluster(4, {
    checkpointInterval: 2,
    window: 4,
    maxBatch: 1,
  });
  c.crash("4");
  for (let t = 1; t <= 4; t++) c.get("1").request(req(t));
  c.stabilize();
  assert.equal(c.get("1").status().stable, 4);
  c.restart("4");
  for (let t = 5; t <= 6; t++) c.get("1").request(req(t));
  // Hold back the state replica 4 asks for.
  const held: PbftMessage[] = [];
  for (let i = 0; i < 50; i++) {
    c.processAll();
    held.push(
      ...c.inflight.filter((m) => m.to === "4" && m.payload.type === "state"),
    );
    c.drop((m) => m.to === "4" && m.payload.type === "state");
    c.deliver();
  }
  assert.ok(held.length > 0, "replica 4 fetched the state");
  assert.equal(c.get("4").status().fetching, true);
  assert.equal(c.get("4").status().executed, 0);
  // A lie first: replica 3 answers with other data under the real proof.
  const liar = fakeAuth("3", testSecret);
  const lie = { ...held[0].payload, data: "1:x;" } as PbftPayload;
  const before = c.get("4").rejected;
  c.get("4").step({
    from: "3",
    to: "4",
    payload: lie,
    mac: liar.mac("4", macInput("3", "4", lie)),
  });
  assert.equal(c.get("4").rejected, before + 1);
  assert.equal(c.get("4").status().executed, 0);
  for (const m of held) c.get("4").step(m);
  c.stabilize();
  const s = c.get("4").status();
  assert.equal(s.fetching, false);
  assert.equal(s.executed, 6);
  assert.equal(s.stable, 6);
  assert.equal(c.replica("4").state, c.replica("1").state);
});

Deno.test("pbft core: a restarted replica keeps its view and re-executes what it had executed", () => {
  const c = new TestCluster(4);
  for (let t = 1; t <= 3; t++) c.get("1").request(req(t));
  c.stabilize();
  const before = digests(c, "3");
  c.crash("3");
  c.restart("3");
  c.process("3");
  assert.deepEqual(digests(c, "3").slice(before.length), before);
  assert.equal(c.get("3").status().executed, c.get("1").status().executed);
});

Deno.test("pbft core: replicas must be 3f + 1 distinct ids including this one", () => {
  const auth = fakeAuth("1", testSecret);
  assert.throws(
    () => createPbft({ id: "9", replicas: ["1", "2", "3", "4"], auth }),
    /'9': not in replicas/,
  );
  assert.throws(
    () => createPbft({ id: "1", replicas: ["1", "1", "3", "4"], auth }),
    /repeat an id/,
  );
});

Deno.test("pbft core: a replica restarted views behind is handed the NEW-VIEW it missed and takes part again", () => {
  const c = new TestCluster(7, { viewChangeTicks: 4, retransmitTicks: 2 });
  assert.equal(c.get("1").f, 2);
  c.crash("1");
  c.crash("7");
  for (const id of ["2", "3", "4", "5", "6"]) c.get(id).request(req(1));
  c.tickAll(12, ["2", "3", "4", "5", "6"]);
  assert.equal(c.get("2").status().view, 1);
  assert.equal(c.replica("2").executed.length, 1);
  // 1 comes back from its records (view 0), 7 with an empty disk.
  c.restart("1");
  c.replica("7").records = [];
  c.restart("7");
  assert.equal(c.get("1").status().view, 0);
  assert.equal(c.get("7").status().view, 0);
  // A request they wait on times them out of view 0; the others answer with view 1's NEW-VIEW.
  c.get("1").request(req(2));
  c.get("7").request(req(2));
  c.tickAll(12);
  for (const id of c.ids) {
    const s = c.get(id).status();
    assert.equal(s.view, 1, `replica ${id}`);
    assert.equal(s.changing, false, `replica ${id}`);
  }
  assert.deepEqual(
    c.replica("7").executed.map((e) => e.batch.map((r) => r.t)),
    [[1], [2]],
  );
});

Deno.test("pbft core: a stable checkpoint learned while behind survives a restart before its state arrives", () => {
  const c = new TestCluster(4, {
    checkpointInterval: 2,
    window: 4,
    maxBatch: 1,
  });
  c.crash("4");
  for (let t = 1; t <= 4; t++) c.get("1").request(req(t));
  c.stabilize();
  c.restart("4");
  for (let t = 5; t <= 6; t++) c.get("1").request(req(t));
  // Replica 4 learns that 6 is stable, but every state answer is lost.
  for (let i = 0; i < 30; i++) {
    c.processAll();
    c.drop((m) => m.to === "4" && m.payload.type === "state");
    c.deliver();
  }
  assert.equal(c.get("4").status().stable, 6);
  assert.equal(c.get("4").status().fetching, true);
  c.crash("4");
  c.restart("4");
  c.process("4");
  // The window did not fall back: it still stands at 6 and fetches.
  const s = c.get("4").status();
  assert.equal(s.stable, 6);
  assert.equal(s.fetching, true);
  c.stabilize();
  c.tickAll(6);
  assert.equal(c.get("4").status().executed, 6);
  assert.equal(c.replica("4").state, c.replica("1").state);
});

/** `payload` from `from` to `to`, MACed with `from`'s stand-in key. */
function msg(from: string, to: string, payload: PbftPayload): PbftMessage {
  const auth = fakeAuth(from, testSecret);
  return { from, to, payload, mac: auth.mac(to, macInput(from, to, payload)) };
}

/** Client c's request 1 with its op changed and its signature kept. */
const altered = () => ({ ...req(1), op: "op-altered" });
/** A request in client c's name signed by replica 4's key. */
const madeUp = () => ({
  ...req(9),
  sig: fakeAuth("4", testSecret).sign(
    requestSignInput(req(9), fakeAuth("4", testSecret).digest(req(9).op)),
  ),
});

Deno.test("pbft core: a request whose signature is not its client's is refused at the door", () => {
  const c = new TestCluster(4);
  for (const bad of [altered(), madeUp(), { ...req(1), client: "d" }]) {
    assert.throws(
      () => c.get("2").request(bad),
      (e: Error) =>
        e instanceof TypeError &&
        e.message.includes(`request ${bad.client}/${bad.t}`),
    );
  }
  assert.equal(c.get("2").status().pending, 0);
});

Deno.test("pbft core: a relayed request that is not authentic is dropped and counted, the authentic ones in the relay are kept", () => {
  const c = new TestCluster(4);
  c.get("2").step(
    msg("4", "2", { type: "request", requests: [altered(), madeUp(), req(2)] }),
  );
  assert.equal(c.get("2").rejected, 2);
  assert.equal(c.get("2").status().pending, 1);
});

Deno.test("pbft core: backups refuse to prepare a pre-prepare whose batch holds a request no client signed", () => {
  for (const bad of [altered(), madeUp()]) {
    const c = new TestCluster(4);
    const batch = [req(2), bad];
    const pp: PrePrepare = {
      type: "pre-prepare",
      view: 0,
      seq: 1,
      digest: batchDigest(fakeAuth("1", testSecret), batch),
      batch,
    };
    for (const id of ["2", "3", "4"]) c.get(id).step(msg("1", id, pp));
    for (const id of ["2", "3", "4"]) {
      assert.equal(c.get(id).rejected, 1, `replica ${id}`);
    }
    c.processAll();
    assert.deepEqual(
      c.inflight.filter((m) => m.payload.type === "prepare"),
      [],
      "no prepare",
    );
    c.stabilize();
    for (const id of c.ids) assert.equal(c.replica(id).executed.length, 0);
  }
});

Deno.test("pbft core: a new view does not take a batch with a request no client signed, even when the view changes claim it prepared", () => {
  // Two view changes (f + 1, one Byzantine) claim a batch with a made-up
  // request prepared at 1 and hold its digest in Q; the third has nothing
  // there. Rules A1/A2 pick it; replica 4 does not hold it, fetches it from
  // the holders, and refuses the made-up batch it is handed: it stays
  // between views (no pre-prepare, nothing executed).
  const batch = [madeUp()];
  const digest = batchDigest(fakeAuth("1", testSecret), batch);
  const vc = (replica: string, claims: boolean): ViewChange => {
    const body: ViewChange = {
      type: "view-change",
      view: 1,
      replica,
      stable: { seq: 0, digest: "", proof: [] },
      prepared: claims ? [{ seq: 1, view: 0, digest }] : [],
      prePrepared: claims ? [{ seq: 1, view: 0, digest }] : [],
      sig: "",
    };
    return {
      ...body,
      sig: fakeAuth(replica, testSecret).sign(signInput(body)),
    };
  };
  const vcs = [vc("3", true), vc("2", true), vc("1", false)];
  const nvBody: NewView = {
    type: "new-view",
    view: 1,
    replica: "2",
    viewChanges: vcs,
    sig: "",
  };
  const nv = {
    ...nvBody,
    sig: fakeAuth("2", testSecret).sign(signInput(nvBody)),
  };
  const answer = msg("3", "4", { type: "batch", seq: 1, digest, batch });
  for (const trust of [false, true]) {
    const k = new TestCluster(4, { unsafeTrustRequests: trust });
    k.get("4").step(msg("2", "4", nv));
    k.processAll();
    // It asks the holders (3 and 2) for the batch it lacks.
    assert.deepEqual(
      k.inflight.filter((m) => m.payload.type === "fetch-batch").map((m) =>
        m.to
      ).sort(),
      ["2", "3"],
    );
    const before = k.get("4").rejected;
    k.get("4").step(answer);
    k.processAll();
    const s = k.get("4").status();
    if (!trust) {
      assert.equal(k.get("4").rejected, before + 1);
      assert.deepEqual([s.view, s.changing], [1, true]);
      assert.equal(
        k.inflight.filter((m) => m.payload.type === "prepare").length,
        0,
      );
    } else {
      // The build that trusts requests takes it and enters the view.
      assert.deepEqual([s.view, s.changing], [1, false]);
    }
  }
  // A batch that does not hash to the digest is refused by any build.
  const k = new TestCluster(4, { unsafeTrustRequests: true });
  k.get("4").step(msg("2", "4", nv));
  const before = k.get("4").rejected;
  k.get("4").step(
    msg("3", "4", { type: "batch", seq: 1, digest, batch: [req(5)] }),
  );
  assert.equal(k.get("4").rejected, before + 1);
  assert.equal(k.get("4").status().changing, true);
});

Deno.test("pbft core: checkpoints come every K requests, not every K batches, and agree on every replica", () => {
  const c = new TestCluster(4, {
    checkpointInterval: 4,
    window: 16,
    maxBatch: 8,
    maxInflight: 1,
  });
  // Each round: one request goes out alone, the rest wait for it and leave
  // together. Batches of 1, 7 | 1, 1 | 1, 2: the 4th request is reached in
  // the 2nd batch, the next 4 in the 6th (every 4 batches would be 4 only).
  let t = 0;
  for (const rest of [7, 1, 2]) {
    c.get("1").request(req(++t));
    for (let i = 0; i < rest; i++) c.get("1").request(req(++t));
    c.stabilize();
  }
  for (const id of c.ids) {
    const r = c.replica(id);
    assert.deepEqual(
      r.executed.map((e) => e.batch.length),
      [1, 7, 1, 1, 1, 2],
      `replica ${id}`,
    );
    assert.deepEqual(
      r.executed.filter((e) => e.checkpoint).map((e) => e.seq),
      [2, 6],
      `replica ${id}`,
    );
    assert.equal(c.get(id).status().stable, 6, `replica ${id}`);
  }
  // A restarted replica counts the same from its stable checkpoint:
  // batches of 1, 2 | 1, 1 reach 4 at the 9th.
  c.restart("3");
  c.process("3");
  for (const rest of [2, 1]) {
    c.get("1").request(req(++t));
    for (let i = 0; i < rest; i++) c.get("1").request(req(++t));
    c.stabilize();
  }
  assert.deepEqual(
    c.replica("3").executed.slice(-4).map((e) => [e.seq, e.checkpoint]),
    [[7, false], [8, false], [9, true], [10, false]],
  );
  assert.equal(c.get("1").status().stable, 9);
  assert.equal(c.get("3").status().stable, 9);
});

Deno.test("pbft core: with batches that stay small, a checkpoint still comes every half window", () => {
  const c = new TestCluster(4, {
    checkpointInterval: 1000,
    window: 4,
    maxBatch: 1,
    maxInflight: 1,
  });
  for (let t = 1; t <= 6; t++) c.get("1").request(req(t));
  c.stabilize();
  assert.deepEqual(
    c.replica("2").executed.filter((e) => e.checkpoint).map((e) => e.seq),
    [2, 4, 6],
  );
  assert.equal(c.get("2").status().executed, 6);
  assert.equal(c.get("2").status().stable, 6);
});

Deno.test("pbft core: a client's request overtaken by its later one is still taken and executed once; one older than the window is not", () => {
  const c = new TestCluster(4);
  c.get("1").request(req(1));
  c.get("1").request(req(3));
  c.stabilize();
  // 2 arrives after 3 executed: still fresh, proposed and executed.
  assert.equal(c.get("1").request(req(2)), true);
  c.stabilize();
  assert.deepEqual(
    c.replica("4").executed.flatMap((e) => e.batch.map((r) => r.t)),
    [1, 3, 2],
  );
  // Again: already executed, not proposed twice.
  assert.equal(c.get("1").request(req(2)), false);
  c.stabilize();
  assert.equal(c.replica("4").executed.length, 3);
  // 40 executes; 20 is 20 below it (window 16): refused as done.
  c.get("1").request(req(40));
  c.stabilize();
  assert.equal(c.get("1").request(req(20)), false);
  assert.equal(c.get("1").request(req(30)), true);
});
