/**
 * Leader election with real processes: kv-lease over a shared KV file and
 * over denokv, with the leader SIGKILLed, and SIGSTOPped past its lease.
 */
import assert from "node:assert/strict";
import type { PlexusProcess } from "../integration/_process.ts";
import {
  type Cluster,
  eventually,
  KV_TARGETS,
  startCluster,
} from "./_cluster.ts";

const LEASE = { leaseMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 200 };
/** Bound from the elector: one poll to see the last renewal, one to take over, 20 % jitter. */
const FAILOVER_BOUND_MS = LEASE.leaseMs + 2.4 * LEASE.retryPeriodMs;
/** Slack for observing over HTTP and for a busy 2-core machine. */
const OBSERVE_SLACK_MS = 1500;

interface View {
  nodeId: string;
  leader: string | null;
  epoch: number;
  consensus: string;
}

async function view(node: PlexusProcess): Promise<View> {
  return await (await node.api("/api/v1/cluster", {
    signal: AbortSignal.timeout(5000),
  })).json();
}

/**
 * Finds the leader, waits for one of its fenced writes, and SIGSTOPs it at a
 * moment it does not hold the KV file's write lock. A process stopped inside
 * a SQLite write transaction blocks every writer on that file until it
 * resumes (SQLite waits; it does not fail), which would stall the whole
 * cluster: a property of sharing one file, not of the elector. So a probe
 * write of our own must get through; if it blocks, the leader is resumed and
 * the whole step starts again (it may have lost its term meanwhile).
 */
async function stopLeaderOutsideWriteLock(
  c: Cluster,
): Promise<{ first: View; old: PlexusProcess; tries: number }> {
  for (let tries = 1; tries <= 20; tries++) {
    const first = await agreedLeader(c.nodes);
    const old = c.nodes.find((n) => nodeId(c, n) === first.leader)!;
    const since = old.records.length;
    await old.waitForLog(
      (r) =>
        r.msg === "fenced write committed" && r.epoch === first.epoch &&
        old.records.indexOf(r) >= since,
      "a fenced write by the leader",
    );
    old.signal("SIGSTOP");
    const probe = c.kv.set(["test", "probe"], tries);
    const free = await Promise.race([
      probe.then(() => true),
      new Promise((r) => setTimeout(() => r(false), 1000)),
    ]);
    if (free) return { first, old, tries };
    old.signal("SIGCONT");
    await probe;
  }
  throw new Error(
    "could not stop the leader outside a write transaction in 20 tries",
  );
}

/** Waits until every given node reports the same leader; returns it. */
function agreedLeader(
  nodes: PlexusProcess[],
  pred: (v: View) => boolean = () => true,
) {
  return eventually(
    () => Promise.all(nodes.map(view)),
    (vs) =>
      vs[0].leader !== null &&
      vs.every((v) =>
        v.leader === vs[0].leader && v.epoch === vs[0].epoch && pred(v)
      ),
    "the nodes to agree on a leader",
  ).then((vs) => vs[0]);
}

function start(
  target: (typeof KV_TARGETS)[number],
  extra: string[] = [],
): Promise<Cluster | null> {
  return startCluster(target, {
    nodes: 3,
    args: ["--consensus", "kv-lease", ...extra],
    config: {
      pluginConfig: { "kv-lease": LEASE },
      // fenced_writer uses the consensus contract and the raw KV: in-process.
      pluginTrust: { "fenced-writer": "trusted" },
    },
  });
}

for (const target of KV_TARGETS) {
  Deno.test(`lease (${target.name}): the leader SIGKILLed → another leads within lease + retry with epoch + 1`, async () => {
    await using c = await start(target);
    if (!c) return;
    const first = await agreedLeader(c.nodes);
    assert.equal(first.consensus, "kv-lease");
    const victim = c.nodes.find((n) => n.url && first.leader === nodeId(c, n))!;
    const survivors = c.nodes.filter((n) => n !== victim);
    const killedAt = performance.now();
    victim.signal("SIGKILL");
    const next = await agreedLeader(
      survivors,
      (v) => v.leader !== first.leader,
    );
    const failoverMs = performance.now() - killedAt;
    assert.equal(
      next.epoch,
      first.epoch + 1,
      "epoch + 1: the fencing token moved on exactly once",
    );
    assert.notEqual(next.leader, first.leader);
    console.log(
      `  failover ${
        Math.round(failoverMs)
      } ms (bound ${FAILOVER_BOUND_MS} ms + ${OBSERVE_SLACK_MS} ms to observe)`,
    );
    assert.ok(
      failoverMs <= FAILOVER_BOUND_MS + OBSERVE_SLACK_MS,
      `failover took ${Math.round(failoverMs)} ms`,
    );
  });

  Deno.test(`lease (${target.name}): a leader SIGSTOPped past its lease has its next fenced write rejected after SIGCONT`, async () => {
    await using c = await start(target, [
      "--plugin",
      "./tests/fixtures/fenced_writer.ts",
    ]);
    if (!c) return;
    const { first, old, tries } = await stopLeaderOutsideWriteLock(c);
    if (tries > 1) {
      console.log(`  stopped outside a write lock after ${tries} tries`);
    }
    const survivors = c.nodes.filter((n) => n !== old);
    try {
      const next = await agreedLeader(
        survivors,
        (v) => v.leader !== first.leader,
      );
      assert.equal(next.epoch, first.epoch + 1);
      const successor = c.nodes.find((n) => nodeId(c, n) === next.leader)!;
      await successor.waitForLog(
        (r) => r.msg === "fenced write committed" && r.epoch === next.epoch,
        "a fenced write by the new leader",
      );
    } finally {
      old.signal("SIGCONT");
    }
    const rejected = await old.waitForLog(
      (r) => r.msg === "fenced write rejected" && r.epoch === first.epoch,
      "the old leader's fenced write to be rejected",
    );
    // Nothing the old leader wrote with its stale token after the takeover committed.
    const writes: { node: string; epoch: number; n: number }[] = [];
    for await (
      const e of c.kv.list<{ node: string; epoch: number; n: number }>({
        prefix: ["test", "fenced"],
      })
    ) {
      writes.push(e.value);
    }
    const firstNew = writes.findIndex((w) => w.epoch === first.epoch + 1);
    assert.ok(firstNew > 0, "both terms wrote");
    const staleAfter = writes.slice(firstNew).filter((w) =>
      w.epoch < first.epoch + 1
    );
    assert.deepEqual(
      staleAfter,
      [],
      "no stale-epoch write committed after the new term began",
    );
    assert.ok(
      !writes.some((w) =>
        w.node === first.leader && w.epoch === first.epoch &&
        w.n >= (rejected.n as number)
      ),
      "the rejected write is not in KV",
    );
  });
}

function nodeId(c: Cluster, n: PlexusProcess): string {
  return `n${c.nodes.indexOf(n) + 1}`;
}
