import assert from "node:assert/strict";
import { electionKey, nodeKey } from "../../core/state/keys.ts";
import { createTestKernel } from "../../core/testing.ts";
import kvLease, { type KvLeaseConsensus, NotLeaderError } from "./mod.ts";

// A lone node acquires an absent lease at once, so a long lease costs no
// time here and keeps a busy machine's stalls from ending the term mid-test.
const FAST = {
  leaseMs: 3_000,
  renewDeadlineMs: 2_000,
  retryPeriodMs: 50,
  opTimeoutMs: 1_000,
};

async function waitFor(what: string, pred: () => boolean, limitMs = 10_000) {
  const until = performance.now() + limitMs;
  while (!pred()) {
    if (performance.now() > until) {
      throw new Error(`timed out after ${limitMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("kv-lease plugin: provides consensus:kv-lease and leads a one-node cluster", async () => {
  await using t = await createTestKernel([kvLease], {
    pluginConfig: { "kv-lease": FAST },
  });
  const api = t.kernel.get<KvLeaseConsensus>("consensus:kv-lease");
  assert.equal(t.kernel.get("consensus:*"), api);
  assert.equal(api.name, "kv-lease");
  assert.equal(api.election, "plexus");
  await waitFor("leadership", () => api.isLeader());
  assert.equal(api.leader(), "test-node");
  assert.equal(api.epoch(), 1);
  // The election lives at the global key, not under the plugin's prefix.
  const rec = await t.kv.get<{ holder: string; epoch: number }>(
    electionKey("plexus"),
  );
  assert.equal(rec.value?.holder, "test-node");
  // Fenced writes go through while leading.
  assert.equal((await api.guardedAtomic().set(["jobs"], 1).commit()).ok, true);
  assert.equal(
    (await api.guard(t.kv.atomic()).set(["jobs"], 2).commit()).ok,
    true,
  );
  const health = await (await t.request("/health")).json();
  assert.equal(health.services["kv-lease"].status, "up");
  assert.match(
    health.services["kv-lease"].detail,
    /leader of 'plexus', epoch 1/,
  );
  assert.match(
    t.metrics.render(),
    /plexus_kv_lease_is_leader\{election="plexus"\} 1/,
  );
  assert.ok(
    t.logs.some((r) => r.msg === "election leader changed"),
    "leader change logged",
  );
});

Deno.test("kv-lease plugin: members() reads the node registry with the configured thresholds", async () => {
  await using t = await createTestKernel([kvLease], {
    pluginConfig: {
      "kv-lease": { ...FAST, suspectAfterMs: 2_000, downAfterMs: 60_000 },
    },
  });
  const api = t.kernel.get<KvLeaseConsensus>("consensus:kv-lease");
  const now = Date.now();
  const rec = (id: string, heartbeatAt: number) => ({
    id,
    address: `http://${id}`,
    version: "0.1.0",
    load: 0,
    heartbeatAt,
    startedAt: now - 100_000,
  });
  await t.kv.set(nodeKey("a"), rec("a", now));
  await t.kv.set(nodeKey("b"), rec("b", now - 30_000));
  await t.kv.set(nodeKey("c"), rec("c", now - 90_000));
  const members = await api.members();
  assert.deepEqual(members.map((m) => [m.id, m.status]), [
    ["a", "up"],
    ["b", "suspect"],
    ["c", "down"],
  ]);
  assert.equal(members[1].lastSeen, now - 30_000);
});

Deno.test("kv-lease plugin: stopping the node releases the lease and ends leadership", async () => {
  const t = await createTestKernel([kvLease], {
    pluginConfig: { "kv-lease": FAST },
  });
  try {
    const api = t.kernel.get<KvLeaseConsensus>("consensus:kv-lease");
    await waitFor("leadership", () => api.isLeader());
    const changes: unknown[] = [];
    api.onLeaderChange((c) => changes.push(c));
    const epoch = api.epoch();
    assert.deepEqual(await t.kernel.stop(), []);
    assert.equal(api.isLeader(), false);
    assert.deepEqual(changes, [{ leader: null, epoch }]);
    assert.equal((await t.kv.get(electionKey("plexus"))).value, null);
    assert.throws(() => api.guardedAtomic(), NotLeaderError);
  } finally {
    await t.close();
  }
});

Deno.test("kv-lease plugin: bad durations are refused before setup, naming the values", async () => {
  await assert.rejects(
    createTestKernel([kvLease], {
      pluginConfig: {
        "kv-lease": { leaseMs: 300, renewDeadlineMs: 400, retryPeriodMs: 50 },
      },
    }),
    /plugin 'kv-lease' has invalid config: .*leaseMs \(300\) must be greater than renewDeadlineMs \(400\)/,
  );
  await assert.rejects(
    createTestKernel([kvLease], {
      pluginConfig: {
        "kv-lease": { suspectAfterMs: 9_000, downAfterMs: 5_000 },
      },
    }),
    /downAfterMs \(5000\) must be greater than suspectAfterMs \(9000\)/,
  );
  await assert.rejects(
    createTestKernel([kvLease], {
      pluginConfig: { "kv-lease": { leaseMs: "long" } },
    }),
    /plugin 'kv-lease' has invalid config: leaseMs/,
  );
});
