import assert from "node:assert/strict";
import { createNodeEvents, type NodeEvent } from "./events.ts";
import {
  membershipTransition,
  startMembershipEvents,
} from "./membership_events.ts";
import type { NodeRecord } from "./state/registry.ts";

const thresholds = { suspectAfterMs: 5_000, downAfterMs: 15_000 };

function record(id: string, heartbeatAt: number, startedAt = 1): NodeRecord {
  return {
    id,
    address: `http://${id}`,
    version: "0",
    load: { inflight: 0, rss: 0 },
    heartbeatAt,
    startedAt,
  };
}

Deno.test("membership: transitions — a crash is node.left, the same process back is node.joined; clean leaves, restarts and old records are silent", () => {
  const up = { status: "up", startedAt: 1 } as const;
  const down = { status: "down", startedAt: 1 } as const;
  const r = { startedAt: 1 };
  assert.deepEqual(membershipTransition(up, r, "down")?.emit, "node.left");
  assert.equal(membershipTransition(up, r, "suspect"), null);
  assert.equal(membershipTransition(down, r, "down"), null);
  assert.equal(membershipTransition(down, r, "suspect"), null);
  assert.equal(membershipTransition(down, r, "up")?.emit, "node.joined");
  // Clean leave: the node said node.left itself.
  const left = membershipTransition(up, { startedAt: 1, leftAt: 9 }, "down");
  assert.deepEqual(left, { next: down });
  // A new process announced itself with node.joined.
  assert.deepEqual(membershipTransition(down, { startedAt: 2 }, "up"), {
    next: { status: "up", startedAt: 2 },
  });
  assert.deepEqual(membershipTransition(up, { startedAt: 2 }, "up"), {
    next: { status: "up", startedAt: 2 },
  });
  // First sight records without an event.
  assert.deepEqual(membershipTransition(undefined, r, "down"), { next: down });
  assert.deepEqual(membershipTransition(undefined, r, "up"), { next: up });
});

Deno.test("membership: two leaders looking at once announce a crash exactly once; only the leader looks", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    let now = 100_000;
    const clock = {
      now: () => now,
      mono: () => now,
      sleep: () => Promise.resolve(),
    };
    let records = [record("a", now), record("b", now), record("c", now)];
    const seen: NodeEvent[] = [];
    const watchers = ["a", "b", "c"].map((id) => {
      const events = createNodeEvents(id);
      events.listen((e) => seen.push(e));
      return startMembershipEvents(kv, {
        registry: {
          nodeId: id,
          thresholds,
          nodes: () => Promise.resolve(records),
        },
        events,
        // a and b both believe they lead (a split moment); c does not.
        isLeader: () => id !== "c",
        clock: clock as never,
        everyMs: 3_600_000,
      });
    });
    await Promise.all(watchers.map((w) => w.tick()));
    assert.equal(seen.length, 0);
    // b stops heartbeating: down after 15 s.
    now += 20_000;
    records = [record("a", now), records[1], record("c", now)];
    await Promise.all(watchers.map((w) => w.tick()));
    await Promise.all(watchers.map((w) => w.tick()));
    assert.deepEqual(
      seen.map((e) => [e.type, e.data]),
      [["node.left", { nodeId: "b", reason: "down" }]],
    );
    // b answers again (same process): joined once.
    now += 1_000;
    records = [record("a", now), record("b", now), record("c", now)];
    await Promise.all(watchers.map((w) => w.tick()));
    assert.deepEqual(seen.map((e) => e.type), ["node.left", "node.joined"]);
    assert.deepEqual(seen[1].data, { nodeId: "b", address: "http://b" });
    for (const w of watchers) w.stop();
  } finally {
    kv.close();
  }
});

Deno.test("membership: with no consensus plugin the smallest up id leads", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    let now = 100_000;
    const clock = {
      now: () => now,
      mono: () => now,
      sleep: () => Promise.resolve(),
    };
    let records = [record("a", now), record("b", now)];
    const by: string[] = [];
    const watchers = ["a", "b"].map((id) => {
      const events = createNodeEvents(id);
      events.listen((e) =>
        by.push(`${e.node}:${e.type}:${(e.data as { nodeId: string }).nodeId}`)
      );
      return startMembershipEvents(kv, {
        registry: {
          nodeId: id,
          thresholds,
          nodes: () => Promise.resolve(records),
        },
        events,
        isLeader: () => undefined,
        clock: clock as never,
        everyMs: 3_600_000,
      });
    });
    await Promise.all(watchers.map((w) => w.tick()));
    // a (the leader) crashes: b, now the smallest up id, announces it.
    now += 20_000;
    records = [records[0], record("b", now)];
    await Promise.all(watchers.map((w) => w.tick()));
    assert.deepEqual(by, ["b:node.left:a"]);
    for (const w of watchers) w.stop();
  } finally {
    kv.close();
  }
});
