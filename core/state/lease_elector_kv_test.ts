// The elector on a real Deno KV with short durations. Real time is noisy on a
// shared machine, so these tests wait with generous limits and assert only
// what holds however slow the machine is.
import assert from "node:assert/strict";
import type { LeaderChange } from "../consensus.ts";
import { electionKey } from "./keys.ts";
import { type ElectionKv, LeaseElector } from "./lease_elector.ts";
import { guardedAtomic } from "./fence.ts";

const FAST = {
  leaseMs: 300,
  renewDeadlineMs: 200,
  retryPeriodMs: 50,
  opTimeoutMs: 1_000,
};
// For tests that hold a fence token across awaits: a stalled event loop on a
// busy machine must not end the term under them.
const STEADY = { ...FAST, leaseMs: 3_000, renewDeadlineMs: 2_000 };

async function waitFor(
  what: string,
  pred: () => boolean | Promise<boolean>,
  limitMs = 10_000,
): Promise<void> {
  const until = performance.now() + limitMs;
  while (!(await pred())) {
    if (performance.now() > until) {
      throw new Error(`timed out after ${limitMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

function cluster(
  kv: ElectionKv,
  ids: string[],
  durations: typeof FAST = FAST,
  name = "real",
) {
  const changes = new Map<string, LeaderChange[]>();
  const electors = ids.map((id) => {
    const e = new LeaseElector({ kv, nodeId: id, name, ...durations });
    const seen: LeaderChange[] = [];
    changes.set(id, seen);
    e.onLeaderChange((c) => seen.push(c));
    return e;
  });
  let most = 0;
  const sampler = setInterval(() => {
    most = Math.max(most, electors.filter((e) => e.isLeader()).length);
  }, 2);
  for (const e of electors) e.start();
  return {
    electors,
    changes,
    /** Most electors ever seen leading at once. */
    mostLeaders: () => most,
    leaders: () => electors.filter((e) => e.isLeader()),
    async stop() {
      clearInterval(sampler);
      await Promise.all(electors.map((e) => e.stop()));
    },
  };
}

Deno.test("elector on Deno KV: three electors elect exactly one leader that all of them see", async () => {
  await using kv = await Deno.openKv(":memory:");
  const c = cluster(kv, ["a", "b", "c"]);
  try {
    await waitFor(
      "one leader seen by all",
      () => {
        const [leader, ...more] = c.leaders();
        return leader !== undefined && more.length === 0 &&
          c.electors.every((e) =>
            e.leader() === leader.nodeId && e.epoch() === leader.epoch()
          );
      },
    );
    // Let several lease periods pass; belief never overlaps.
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(c.mostLeaders(), 1);
    const rec = (await kv.get<{ holder: string }>(electionKey("real"))).value;
    assert.ok(c.electors.some((e) => e.nodeId === rec?.holder));
  } finally {
    await c.stop();
  }
});

Deno.test("elector on Deno KV: when the leader stops, another takes over with epoch + 1 and the old token is fenced off", async () => {
  await using kv = await Deno.openKv(":memory:");
  const c = cluster(kv, ["a", "b", "c"], STEADY);
  try {
    await waitFor("a leader", () => c.leaders().length === 1);
    const old = c.leaders()[0];
    const token = old.fence();
    const epoch = token.epoch;
    assert.ok(
      (await guardedAtomic(kv, token).set(["res"], "old").commit()).ok,
    );
    await old.stop();
    assert.equal(old.isLeader(), false);
    // The lease was released (or already taken), not left to expire.
    const rec = (await kv.get<{ holder: string }>(electionKey("real"))).value;
    assert.notEqual(rec?.holder, old.nodeId);
    await waitFor(
      "another leader",
      () => c.electors.some((e) => e !== old && e.isLeader()),
    );
    const others = c.electors.filter((e) => e !== old);
    // The first term anyone began after the stop is epoch + 1.
    const firstNewTerm = others
      .flatMap((e) => c.changes.get(e.nodeId)!)
      .filter((ch) => ch.leader !== null && ch.leader !== old.nodeId)
      .map((ch) => ch.epoch)
      .sort((x, y) => x - y)[0];
    assert.equal(firstNewTerm, epoch + 1);
    const res = await guardedAtomic(kv, token).set(["res"], "stale").commit();
    assert.equal(res.ok, false);
    assert.equal((await kv.get(["res"])).value, "old");
    assert.equal(c.mostLeaders(), 1);
  } finally {
    await c.stop();
  }
});

Deno.test("elector on Deno KV: a fence token stays valid across renewals", async () => {
  await using kv = await Deno.openKv(":memory:");
  const c = cluster(kv, ["a"], STEADY);
  try {
    await waitFor("a leader", () => c.leaders().length === 1);
    const token = c.electors[0].fence();
    const before = (await kv.get(electionKey("real"))).versionstamp;
    await waitFor(
      "a renewal",
      async () => (await kv.get(electionKey("real"))).versionstamp !== before,
    );
    const res = await guardedAtomic(kv, token).set(["res"], 1).commit();
    assert.equal(res.ok, true);
  } finally {
    await c.stop();
  }
});

Deno.test("elector on Deno KV: 'database is locked' is retried, not taken for an unknown outcome", async () => {
  await using kv = await Deno.openKv(":memory:");
  let locked = 2;
  const flaky: ElectionKv = {
    getMany: (keys, options) => kv.getMany(keys, options),
    atomic() {
      const op = kv.atomic();
      const commit = op.commit.bind(op);
      op.commit = () =>
        locked-- > 0
          ? Promise.reject(new TypeError("database is locked"))
          : commit();
      return op;
    },
  };
  const errors: string[] = [];
  const e = new LeaseElector({
    kv: flaky,
    nodeId: "a",
    name: "locked",
    ...FAST,
    opTimeoutMs: 5_000,
    onError: (_err, during) => errors.push(during),
  });
  e.start();
  try {
    await waitFor("a leader", () => e.isLeader());
    assert.equal(e.epoch(), 1);
    assert.ok(locked < 0, "the locked commits were attempted");
    assert.deepEqual(errors, []);
  } finally {
    await e.stop();
  }
});
