import assert from "node:assert/strict";
import { createPresence } from "../../gateway/presence.ts";
import { createNodeEvents, type NodeEvent } from "../../core/events.ts";

Deno.test("presence: a claim emits agent.connected, its own release agent.disconnected, a stale release nothing", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const events = createNodeEvents("n1");
    const seen: NodeEvent[] = [];
    events.listen((e) => seen.push(e));
    const p = createPresence(kv, events);
    const rec = {
      agentId: "a1",
      connected: true,
      nodeId: "n1",
      address: "http://n1",
      session: "s1",
      sid: "x",
      connectedAt: 0,
      lastSeen: 0,
      channels: ["c"],
      sessionExpires: 1,
      heartbeatMs: 1000,
    };
    await p.claim(rec);
    await p.claim({ ...rec, session: "s2" });
    await p.release("a1", "s1", 5); // replaced: not its record any more
    await p.release("a1", "s2", 6);
    assert.deepEqual(seen.map((e) => [e.type, e.data]), [
      ["agent.connected", { agentId: "a1", session: "s1", channels: ["c"] }],
      ["agent.connected", { agentId: "a1", session: "s2", channels: ["c"] }],
      ["agent.disconnected", { agentId: "a1", session: "s2" }],
    ]);
  } finally {
    kv.close();
  }
});
