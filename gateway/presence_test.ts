import assert from "node:assert/strict";
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
