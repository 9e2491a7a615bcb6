/**
 * `agent.health.changed` from a real node's gateway, with a raw WebSocket
 * agent following docs/protocol.md that stops answering pings: degraded
 * once a heartbeat is late, healthy when it speaks again, unhealthy before
 * the 4002 close when it stays silent. The rules' edges (request timeouts)
 * are in the tracker's own test.
 */
import assert from "node:assert/strict";
import type { NodeEvent, NodeEvents } from "../../core/events.ts";
import { connect, newAgentKey } from "../gateway/_raw_client.ts";
import { startTestNode } from "../gateway/_node.ts";

Deno.test("agent health (real node, raw agent): late heartbeats → degraded, a frame → healthy, silence → unhealthy, then closed 4002", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-health-" });
  // 2 s pings, health looked at every 0.5 s: degraded at ~3.5 s of silence,
  // unhealthy at ~4.5 s, closed at the 6 s ping tick (each with 0.5 s slack
  // for a loaded machine's late timers).
  const n = await startTestNode({ dir, gateway: { heartbeatMs: 2000 } });
  try {
    const a = await newAgentKey();
    await n.enrol(a, ["agent"]);
    const events = n.handle.kernel.get<NodeEvents>("events:local");
    const seen: NodeEvent[] = [];
    let degraded!: () => void;
    const wasDegraded = new Promise<void>((r) => (degraded = r));
    let unhealthy!: () => void;
    const wasUnhealthy = new Promise<void>((r) => (unhealthy = r));
    let gone!: () => void;
    const disconnected = new Promise<void>((r) => (gone = r));
    events.listen((e) => {
      if ((e.data as { agentId?: string }).agentId !== a.id) return;
      seen.push(e);
      const status = (e.data as { status?: string }).status;
      if (status === "degraded") degraded();
      if (status === "unhealthy") unhealthy();
      if (e.type === "agent.disconnected") gone();
    });
    const s = await connect(n.ws, a, { autoPong: false });
    await wasDegraded;
    // Any record counts as heard: the agent's own ping.
    s.send({ type: "ping", ch: "", id: "back" });
    await wasUnhealthy;
    assert.equal((await s.socket.closed).code, 4002);
    await disconnected;
    const health = seen.filter((e) => e.type === "agent.health.changed")
      .map((e) => e.data as { status: string; detail: string });
    assert.deepEqual(health.slice(0, 2).map((h) => h.status), [
      "degraded",
      "healthy",
    ]);
    assert.equal(health.at(-1)!.status, "unhealthy");
    assert.match(
      health[0].detail,
      /nothing heard for \d+ ms \(heartbeat 2000 ms\)/,
    );
    // Unhealthy is reported before the connection is dropped.
    const types = seen.map((e) => e.type);
    assert.ok(
      types.lastIndexOf("agent.health.changed") <
        types.indexOf("agent.disconnected"),
      types.join(", "),
    );
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
