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

Deno.test("presence: agent health — a timed-out request degrades, 3 in a row make it unhealthy even while pings are answered, an answer makes it healthy; events name the agent", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const events = createNodeEvents("n1");
    const seen: NodeEvent[] = [];
    events.listen((e) => seen.push(e));
    const h = createPresence(kv, events).health("a1", 1000);
    const t = Date.now();
    h.timedOut(t, "agent a1 did not answer on 'work' within 50 ms");
    h.heard(t + 100); // pongs keep coming: still degraded
    h.timedOut(t + 200, "x");
    h.timedOut(t + 300, "agent a1 did not answer on 'work' within 50 ms");
    h.heard(t + 400);
    assert.equal(h.status, "unhealthy");
    h.answered(t + 500);
    assert.equal(h.status, "healthy");
    // Silence is judged on checks: 1.5 intervals is not yet late.
    h.check(t + 2000);
    assert.equal(h.status, "healthy");
    h.check(t + 2001);
    assert.equal(h.status, "degraded");
    assert.deepEqual(
      seen.map((e) => [e.type, (e.data as { status: string }).status]),
      [
        ["agent.health.changed", "degraded"],
        ["agent.health.changed", "unhealthy"],
        ["agent.health.changed", "healthy"],
        ["agent.health.changed", "degraded"],
      ],
    );
    assert.deepEqual(seen[1].data, {
      agentId: "a1",
      status: "unhealthy",
      detail:
        "3 requests in a row timed out: agent a1 did not answer on 'work' within 50 ms",
    });
  } finally {
    kv.close();
  }
});
