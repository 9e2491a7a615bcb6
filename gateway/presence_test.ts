import assert from "node:assert/strict";
import { openStore } from "../core/state/store.ts";
import { createPresence, isLive, type PresenceRecord } from "./presence.ts";

const record = (over: Partial<PresenceRecord> = {}): PresenceRecord => ({
  agentId: "a1",
  connected: true,
  nodeId: "n1",
  address: "http://127.0.0.1:1",
  session: "s1",
  sid: "sid",
  connectedAt: 1000,
  lastSeen: 1000,
  channels: [],
  sessionExpires: 99_000,
  heartbeatMs: 1000,
  ...over,
});

Deno.test("presence: a connection writes only while the record is its own; release keeps last_seen", async () => {
  using kv = await Deno.openKv(":memory:");
  const p = createPresence(kv);
  assert.equal(await p.claim(record()), null);
  assert.equal(await p.update("a1", "s1", { channels: ["x"] }), true);
  const before = await p.claim(record({ session: "s2", nodeId: "n2" }));
  assert.deepEqual(before?.channels, ["x"]);
  // The replaced connection can no longer write, nor mark the agent gone.
  assert.equal(await p.update("a1", "s1", { lastSeen: 5 }), false);
  await p.release("a1", "s1", 7000);
  assert.equal((await p.get("a1"))?.connected, true);
  await p.release("a1", "s2", 7000);
  const after = await p.get("a1");
  assert.equal(after?.connected, false);
  assert.equal(after?.lastSeen, 7000);
  assert.equal(await p.update("nobody", "s1", {}), false);
  const all = [];
  for await (const r of p.list()) all.push(r.agentId);
  assert.deepEqual(all, ["a1"]);
  await p.remove("a1");
  assert.equal(await p.get("a1"), null);
});

Deno.test("presence: live means connected and heard from within three heartbeats", () => {
  assert.equal(isLive(record(), 3999), true);
  assert.equal(isLive(record(), 4001), false);
  assert.equal(isLive(record({ connected: false }), 1000), false);
  assert.equal(isLive(null, 0), false);
});

Deno.test("presence: snapshot re-lists only when someone connected, left or changed channels (on any node sharing the KV), or when older than maxAgeMs", async () => {
  const path = await Deno.makeTempFile({ suffix: ".kv" });
  try {
    // As nodes open it: the store retries "database is locked" between handles.
    using kv1 = await openStore(path);
    using kv2 = await openStore(path); // another node's handle
    const here = createPresence(kv1);
    const there = createPresence(kv2);
    const ids = (l: readonly PresenceRecord[]) => l.map((r) => r.agentId);
    await here.claim(record());
    const first = await here.snapshot(60_000);
    assert.deepEqual(ids(first), ["a1"]);
    // A heartbeat moves lastSeen only: the same list, not read again.
    assert.equal(await here.update("a1", "s1", { lastSeen: 2000 }), true);
    assert.equal(await here.snapshot(60_000), first);
    // A subscription on this node is seen at once.
    assert.equal(await here.update("a1", "s1", { channels: ["x"] }), true);
    const second = await here.snapshot(60_000);
    assert.notEqual(second, first);
    assert.deepEqual(second[0].channels, ["x"]);
    // So is an agent connecting through the other node, and one removed.
    await there.claim(record({ agentId: "a2", nodeId: "n2" }));
    assert.deepEqual(ids(await here.snapshot(60_000)), ["a1", "a2"]);
    await there.remove("a2");
    assert.deepEqual(ids(await here.snapshot(60_000)), ["a1"]);
    await there.release("a1", "s1", 3000);
    assert.equal((await here.snapshot(60_000))[0].connected, false);
    // Past maxAgeMs the list is read again even if nothing moved, so a
    // heartbeat's lastSeen shows.
    const third = await here.snapshot(60_000);
    await there.update("a1", "s1", { lastSeen: 9000 }); // lastSeen only
    assert.equal(await here.snapshot(60_000), third);
    assert.notEqual(await here.snapshot(0), third);
    // Concurrent callers share one read.
    const [a, b] = await Promise.all([here.snapshot(0), here.snapshot(0)]);
    assert.equal(a, b);
  } finally {
    await Deno.remove(path);
  }
});
