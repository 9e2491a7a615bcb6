// Scripted scenarios on the simulated KV. With latency fixed at 1 ms per leg
// and no jitter, a lone node reads at t=0 (reply at 2), commits at 2 (applied
// at 3, reply at 4) and renews at 200, 400, ...; each test's timeline below
// follows from that, so the bounds are exact.
import assert from "node:assert/strict";
import type { LeaderChange } from "../consensus.ts";
import { electionEpochKey, electionKey } from "./keys.ts";
import {
  type ElectionRecord,
  type EpochRecord,
  type LeaseDurations,
  LeaseElector,
  validateLeaseDurations,
} from "./lease_elector.ts";
import { guardedAtomic, NotLeaderError } from "./fence.ts";
import {
  Sim,
  SimClock,
  SimKv,
  type SimKvClient,
  type SimLinkFaults,
} from "../../testing/sim_kv.ts";

const D: LeaseDurations = {
  leaseMs: 1_500,
  renewDeadlineMs: 1_000,
  retryPeriodMs: 200,
};
const NAME = "t";

interface TestNode {
  id: string;
  clock: SimClock;
  link: SimKvClient;
  elector: LeaseElector;
  changes: (LeaderChange & { at: number })[];
}

function world() {
  const sim = new Sim();
  const kv = new SimKv(sim);
  const join = (
    id: string,
    options: {
      rate?: number;
      faults?: SimLinkFaults;
      durations?: Partial<LeaseDurations>;
    } = {},
  ): TestNode => {
    const clock = new SimClock(sim, { rate: options.rate });
    const link = kv.client(clock, options.faults ?? {});
    let n = 0;
    const elector = new LeaseElector({
      kv: link,
      clock,
      nodeId: id,
      name: NAME,
      ...D,
      ...options.durations,
      random: () => 0,
      newNonce: () => `${id}-${++n}`,
    });
    const changes: TestNode["changes"] = [];
    elector.onLeaderChange((c) => changes.push({ ...c, at: sim.now }));
    elector.start();
    return { id, clock, link, elector, changes };
  };
  /** Runs until `pred` holds; resolves the time, or null at `limit`. */
  const when = async (pred: () => boolean, limit: number) =>
    await sim.run(limit, { stopWhen: pred }) ? sim.now : null;
  const record = () => kv.get<ElectionRecord>(electionKey(NAME));
  const fence = () => kv.get<EpochRecord>(electionEpochKey(NAME));
  /** Writes a lease held by a node that will never renew it. */
  const ghost = (epoch: number, leaseMs = D.leaseMs) =>
    kv.apply([], [
      {
        type: "set",
        key: electionKey(NAME),
        value: {
          holder: "ghost",
          nonce: "g",
          epoch,
          leaseMs,
          acquiredAt: 0,
          renewedAt: 0,
        },
      },
      {
        type: "set",
        key: electionEpochKey(NAME),
        value: { epoch, holder: "ghost", nonce: "g" },
      },
    ]);
  return { sim, kv, join, when, record, fence, ghost };
}

Deno.test("elector: a lone node acquires an absent lease at once with epoch 1", async () => {
  const w = world();
  const a = w.join("a");
  assert.equal(await w.when(() => a.elector.isLeader(), 100), 4);
  assert.equal(a.elector.leader(), "a");
  assert.equal(a.elector.epoch(), 1);
  const rec = w.record().value!;
  assert.equal(rec.holder, "a");
  assert.equal(rec.epoch, 1);
  assert.equal(rec.leaseMs, D.leaseMs);
  // The fencing record is written in the same commit, with the same nonce.
  assert.deepEqual(w.fence().value, {
    epoch: 1,
    holder: "a",
    nonce: rec.nonce,
  });
  assert.equal(w.fence().versionstamp, w.record().versionstamp);
  assert.deepEqual(a.changes, [{ leader: "a", epoch: 1, at: 4 }]);
  // Renewals change the lease record but never the fencing record.
  const fenceVs = w.fence().versionstamp;
  await w.sim.run(1_000);
  assert.equal(w.fence().versionstamp, fenceVs);
  assert.notEqual(w.record().versionstamp, fenceVs);
  assert.equal(w.record().value!.epoch, 1);
});

Deno.test("elector: a candidate waits a full leaseMs of an unchanged record on its own clock", async () => {
  const w = world();
  w.ghost(4);
  const b = w.join("b");
  // First read returns at 2; it wakes when that lease runs out (1502).
  assert.equal(await w.when(() => b.elector.isLeader(), 5_000), 1_506);
  assert.deepEqual(b.changes.map(({ leader, epoch }) => ({ leader, epoch })), [
    { leader: "ghost", epoch: 4 },
    { leader: "b", epoch: 5 },
  ]);
  assert.deepEqual(w.fence().value, {
    epoch: 5,
    holder: "b",
    nonce: w.record().value!.nonce,
  });
});

Deno.test("elector: a fast clock takes over sooner in global time, exactly a lease of its own time", async () => {
  const w = world();
  w.ghost(1);
  const b = w.join("b", { rate: 2 });
  // mono = 2 × t. Seen at mono 4, it wakes at mono 1504 (t=752) when the
  // lease runs out: half the global time a rate-1 clock needs (1506).
  assert.equal(await w.when(() => b.elector.isLeader(), 5_000), 756);
  assert.equal(b.elector.epoch(), 2);
});

Deno.test("elector: a candidate honours a longer leaseMs written in the record", async () => {
  const w = world();
  w.ghost(1, 3_000);
  const b = w.join("b");
  assert.equal(await w.when(() => b.elector.isLeader(), 10_000), 3_004);
});

Deno.test("elector: a cut-off leader stops at its last renew start + renewDeadlineMs, before a takeover", async () => {
  const w = world();
  const a = w.join("a");
  const b = w.join("b");
  await w.sim.run(420);
  assert.ok(a.elector.isLeader());
  assert.equal(b.elector.leader(), "a");
  const token = a.elector.fence();
  const lastChange = w.record().versionstamp;
  a.link.faults.partitioned = true; // the renew at 400 (applied at 401) is the last
  await w.sim.run(1_399.5);
  assert.ok(a.elector.isLeader());
  await w.sim.run(1_400);
  assert.equal(a.elector.isLeader(), false);
  assert.deepEqual(a.changes.at(-1), { leader: null, epoch: 1, at: 1_400 });
  assert.throws(() => a.elector.fence(), NotLeaderError);
  assert.equal(w.record().versionstamp, lastChange);
  // b saw that version by its poll at 600 at the latest, waits a full lease,
  // then takes over at its next poll.
  const tookOver = await w.when(() => b.elector.isLeader(), 5_000);
  assert.ok(
    tookOver! >= 401 + D.leaseMs && tookOver! <= 602 + D.leaseMs + 202,
    `takeover at ${tookOver}`,
  );
  assert.equal(b.elector.epoch(), 2);
  // The deposed leader's token no longer commits; the new leader's does.
  const healthy = w.kv.client(new SimClock(w.sim));
  const stale = guardedAtomic(healthy, token).set(["resource"], 1).commit();
  const fresh = b.elector.guard(healthy.atomic()).set(["resource"], 2).commit();
  await w.sim.run(w.sim.now + 10);
  assert.deepEqual(await stale, { ok: false });
  assert.equal((await fresh).ok, true);
  assert.equal(w.kv.get(["resource"]).value, 2);
});

Deno.test("elector: the renew deadline counts from the renew's start, not its reply", async () => {
  const w = world();
  const a = w.join("a", {
    faults: {
      latencyMs: (op, leg) => op === "commit" && leg === "reply" ? 150 : 1,
    },
  });
  assert.equal(await w.when(() => a.elector.isLeader(), 1_000), 153);
  await w.sim.run(560); // the renew sent at 400 answered at 551
  a.link.faults.partitioned = true;
  await w.sim.run(1_399.5);
  assert.ok(a.elector.isLeader());
  await w.sim.run(1_400);
  assert.equal(a.elector.isLeader(), false);
});

Deno.test("elector: an acquisition that applied but lost its reply is recognised by its nonce", async () => {
  const w = world();
  let commits = 0;
  const a = w.join("a", {
    faults: {
      commitFault: () => ++commits === 1 ? "applied-then-error" : "none",
    },
  });
  // Error at 4, re-read returns at 6 and finds a's nonce.
  assert.equal(await w.when(() => a.elector.isLeader(), 1_000), 6);
  assert.equal(a.elector.epoch(), 1);
  assert.equal(w.kv.commits, 1);
  // The deadline still counts from the commit's start (2).
  a.link.faults.partitioned = true;
  await w.sim.run(1_001.5);
  assert.ok(a.elector.isLeader());
  await w.sim.run(1_002);
  assert.equal(a.elector.isLeader(), false);
});

Deno.test("elector: an acquisition lost with an error does not count and is retried", async () => {
  const w = world();
  let commits = 0;
  const a = w.join("a", {
    faults: {
      commitFault: () => ++commits === 1 ? "lost-with-error" : "none",
    },
  });
  await w.sim.run(100);
  assert.equal(a.elector.isLeader(), false);
  assert.equal(w.record().value, null);
  assert.equal(await w.when(() => a.elector.isLeader(), 1_000), 204);
  assert.equal(a.elector.epoch(), 1);
});

Deno.test("elector: an unknown acquisition outcome is not taken for a win when another node won", async () => {
  const w = world();
  const a = w.join("a", {
    faults: { commitFault: () => "lost-with-error" },
  });
  const b = w.join("b");
  // Both read an absent lease at 1; a's commit vanishes, b's applies at 3;
  // a's re-read (4 to 6) finds b's nonce, not its own.
  await w.sim.run(100);
  assert.equal(a.elector.isLeader(), false);
  assert.equal(a.elector.leader(), "b");
  assert.ok(b.elector.isLeader());
});

Deno.test("elector: a renew that applied but lost its reply still extends the lease", async () => {
  const w = world();
  let renews = 0;
  const a = w.join("a", {
    faults: {
      commitFault: (m) =>
        m.length === 1 && ++renews === 1 ? "applied-then-error" : "none",
    },
  });
  await w.sim.run(210); // renew at 200: error at 202, re-read finds its nonce at 204
  a.link.faults.partitioned = true;
  await w.sim.run(1_199.5);
  assert.ok(a.elector.isLeader());
  await w.sim.run(1_200);
  assert.equal(a.elector.isLeader(), false);
});

Deno.test("elector: an earlier renew that applied late is adopted without extending the lease", async () => {
  const w = world();
  let commits = 0, reads = 0;
  const a = w.join("a", {
    faults: {
      // Renew A (2nd commit, at 200) arrives at 401, after its 200 ms timeout.
      latencyMs: (op, leg) =>
        op === "commit" && leg === "request" && ++commits === 2 ? 201 : 1,
      // The re-read after A's timeout fails, so A's fate stays unknown.
      readFails: () => ++reads === 2,
    },
  });
  // Renew B at 402 fails its check (A applied at 401); the read finds A's
  // nonce, not B's: B must not extend the deadline (still 2 + 1000).
  await w.sim.run(410);
  assert.ok(a.elector.isLeader());
  a.link.faults.partitioned = true;
  await w.sim.run(1_001.5);
  assert.ok(a.elector.isLeader());
  await w.sim.run(1_002);
  assert.equal(a.elector.isLeader(), false);
});

Deno.test("elector: stop() steps down before releasing, so the next node takes over without a lease wait", async () => {
  const w = world();
  const a = w.join("a");
  const b = w.join("b");
  await w.sim.run(500);
  assert.ok(a.elector.isLeader());
  let leaderAtRelease: boolean | undefined;
  w.kv.onCommit = (mutations) => {
    if (mutations.some((m) => m.type === "delete")) {
      leaderAtRelease = a.elector.isLeader();
    }
  };
  const stopped = a.elector.stop();
  await w.sim.run(510);
  await stopped;
  assert.equal(leaderAtRelease, false);
  assert.equal(w.record().value, null);
  assert.deepEqual(a.changes.at(-1), { leader: null, epoch: 1, at: 500 });
  // b polls at 600 and finds the record gone; the epoch continues from the fence.
  assert.equal(await w.when(() => b.elector.isLeader(), 5_000), 604);
  assert.equal(b.elector.epoch(), 2);
  assert.equal(w.fence().value!.epoch, 2);
});

Deno.test("elector: an acquisition that lands while stopping is released, never led", async () => {
  const w = world();
  const a = w.join("a", {
    faults: {
      latencyMs: (op, leg) => op === "commit" && leg === "reply" ? 50 : 1,
    },
  });
  let stopped: Promise<void> | undefined;
  w.sim.at(2.5, () => void (stopped = a.elector.stop())); // commit in flight
  await w.sim.run(3);
  assert.equal(w.record().value?.holder, "a"); // it did apply
  await w.sim.run(200);
  await stopped;
  assert.deepEqual(a.changes, []);
  assert.equal(a.elector.isLeader(), false);
  assert.equal(w.record().value, null);
});

Deno.test("elector: stop() ends leadership at once and gives up releasing when its signal aborts", async () => {
  const w = world();
  const a = w.join("a");
  await w.sim.run(450);
  a.link.faults.partitioned = true;
  const abort = new AbortController();
  let done = false;
  // At 610 the renew sent at 600 is in flight (it will time out at 800).
  w.sim.at(
    160,
    () => void a.elector.stop(abort.signal).then(() => done = true),
  );
  await w.sim.run(610);
  assert.equal(a.elector.isLeader(), false);
  assert.deepEqual(a.changes.at(-1), { leader: null, epoch: 1, at: 610 });
  w.sim.at(490, () => abort.abort());
  await w.sim.run(1_099);
  assert.equal(done, false, "still trying to release");
  await w.sim.run(1_100);
  assert.equal(done, true);
  assert.equal(w.record().value?.holder, "a", "left to expire");
});

Deno.test("elector: a restarted process with the same node id waits a full lease like anyone else", async () => {
  const w = world();
  const a1 = w.join("a");
  await w.sim.run(500);
  assert.ok(a1.elector.isLeader());
  a1.clock.crash();
  const a2 = w.join("a"); // mono starts at 0 at t=500
  // a2 reads at 500 (seen at mono 2) and wakes at mono 1502 (t=2002).
  assert.equal(await w.when(() => a2.elector.isLeader(), 5_000), 2_006);
  assert.equal(a2.elector.epoch(), 2);
});

Deno.test("elector: a node that missed its deadline retakes its own term at once, with a new epoch", async () => {
  const w = world();
  const a = w.join("a");
  await w.sim.run(450);
  a.link.faults.partitioned = true;
  await w.sim.run(1_500);
  assert.equal(a.elector.isLeader(), false);
  a.link.faults.partitioned = false;
  // Requests sent while cut off time out within 200 ms; the next campaign
  // finds its own record and takes it without waiting a lease (which would
  // end no earlier than 1500 + 1500).
  const back = await w.when(() => a.elector.isLeader(), 5_000);
  assert.ok(back! <= 1_500 + 2 * 200 + 2 * 200 + 10, `back at ${back}`);
  assert.equal(a.elector.epoch(), 2);
  assert.deepEqual(a.changes.map(({ leader, epoch }) => ({ leader, epoch })), [
    { leader: "a", epoch: 1 },
    { leader: null, epoch: 1 },
    { leader: "a", epoch: 2 },
  ]);
});

Deno.test("elector: a paused leader's isLeader() turns false at its deadline while it is paused", async () => {
  const w = world();
  const a = w.join("a");
  await w.sim.run(450);
  a.clock.pause();
  await w.sim.run(1_399.5);
  assert.ok(a.elector.isLeader());
  await w.sim.run(1_400);
  assert.equal(a.elector.isLeader(), false);
  assert.throws(() => a.elector.guard(a.link.atomic()), NotLeaderError);
});

Deno.test("elector: two candidates racing for an absent lease produce one leader", async () => {
  const w = world();
  const nodes = ["a", "b", "c"].map((id) => w.join(id));
  await w.sim.run(1_000);
  assert.deepEqual(nodes.map((n) => n.elector.isLeader()), [
    true,
    false,
    false,
  ]);
  for (const n of nodes) assert.equal(n.elector.leader(), "a");
  assert.equal(w.fence().value!.epoch, 1);
});

Deno.test("elector: durations are validated with the values in the message", () => {
  const kv = {} as SimKvClient;
  assert.throws(
    () =>
      new LeaseElector({
        kv,
        nodeId: "a",
        leaseMs: 200,
        renewDeadlineMs: 200,
        retryPeriodMs: 50,
      }),
    {
      name: "RangeError",
      message:
        "Cannot use lease durations: leaseMs (200) must be greater than renewDeadlineMs (200)",
    },
  );
  assert.throws(
    () =>
      validateLeaseDurations({
        leaseMs: 300,
        renewDeadlineMs: 60,
        retryPeriodMs: 50,
      }),
    {
      name: "RangeError",
      message:
        "Cannot use lease durations: renewDeadlineMs (60) must be greater than 1.2 × retryPeriodMs (50), i.e. more than 60",
    },
  );
  assert.throws(
    () =>
      validateLeaseDurations({
        leaseMs: 300,
        renewDeadlineMs: 200,
        retryPeriodMs: -1,
      }),
    /retryPeriodMs must be a positive number of ms, got -1/,
  );
  assert.throws(
    () => new LeaseElector({ kv, nodeId: "a", opTimeoutMs: 0 }),
    /opTimeoutMs: expected a positive number of ms, got 0/,
  );
  assert.throws(() => new LeaseElector({ kv, nodeId: "" }), TypeError);
  // Kubernetes' defaults pass.
  const e = new LeaseElector({ kv, nodeId: "a" });
  assert.deepEqual(
    [e.leaseMs, e.renewDeadlineMs, e.retryPeriodMs, e.opTimeoutMs],
    [15_000, 10_000, 2_000, 2_000],
  );
});
