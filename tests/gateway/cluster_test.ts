/**
 * Two nodes sharing one KV file, over real HTTP and WebSockets: sends,
 * broadcasts, replacement and removal reach the node that holds the agent.
 */
import assert from "node:assert/strict";
import { createPresence } from "../../gateway/presence.ts";
import { connect, json, newAgentKey } from "./_raw_client.ts";
import { startTestNode, type TestNode, until } from "./_node.ts";

async function withCluster(
  gateway: Record<string, unknown>,
  fn: (a: TestNode, b: TestNode) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-cluster-" });
  const a = await startTestNode({ dir, name: "a", gateway });
  const b = await startTestNode({ dir, name: "b", gateway });
  try {
    await fn(a, b);
  } finally {
    await b.shutdown();
    await a.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("cluster: a send through node A reaches an agent connected to node B at once ('sent')", async () => {
  await withCluster({}, async (a, b) => {
    const agent = await newAgentKey();
    await a.enrol(agent);
    const s = await connect(b.ws, agent);
    assert.equal(s.ready.node, "b");
    await s.sub("policies");
    const r = await a.post(`/api/v1/agents/${agent.id}/send`, {
      channel: "policies",
      message: { via: "a" },
      priority: 8,
    });
    assert.equal(r.status, 200);
    assert.equal(r.body.status, "sent");
    const m = await s.message("policies");
    assert.equal(m.header.id, r.body.message_id);
    assert.equal(m.header.from, "node:b");
    assert.deepEqual(json(m), { via: "a" });
    s.ack(m);
    const status = await (await a.api(`/api/v1/agents/${agent.id}/status`))
      .json();
    assert.equal(status.connected, true);
    assert.deepEqual(status.channels, ["policies"]);
    // The wake was a signed node-to-node call, audited on B as node:a.
    const audit = await (await b.api("/api/v1/audit", {}, "admin")).json();
    assert.ok(
      audit.some((r: { principal?: string; path?: string }) =>
        r.principal === "node:a" && r.path === "/api/v1/gateway/wake"
      ),
      JSON.stringify(audit.slice(-3)),
    );
    // Nobody else may call the node-only routes.
    const forged = await a.post("/api/v1/gateway/wake", {
      items: [{ agentId: agent.id, messageId: "x" }],
    }, "admin");
    assert.equal(forged.status, 403);
    s.close();
  });
});

Deno.test("cluster: a broadcast through A reaches subscribed agents on both nodes; non-durable pushes cross nodes too", async () => {
  await withCluster({
    channels: {
      policies: { subscribe: ["agent"] },
      alerts: { subscribe: ["agent"], durable: false },
    },
  }, async (a, b) => {
    const [x, y, z] = await Promise.all([
      newAgentKey(),
      newAgentKey(),
      newAgentKey(),
    ]);
    for (const k of [x, y, z]) await a.enrol(k);
    const sx = await connect(a.ws, x);
    const sy = await connect(b.ws, y);
    const sz = await connect(b.ws, z);
    for (const s of [sx, sy]) {
      await s.sub("policies");
      await s.sub("alerts");
    }
    await sz.sub("alerts");
    const r = await a.post("/api/v1/agents/broadcast", {
      channel: "policies",
      message: "all",
    });
    assert.deepEqual(r.body.sent_to, [x.id, y.id].sort());
    assert.deepEqual([r.body.queued, r.body.failed], [[], []]);
    for (const s of [sx, sy]) {
      const m = await s.message("policies");
      assert.equal(m.header.id, r.body.message_id);
      s.ack(m);
    }
    const alert = await a.post("/api/v1/agents/broadcast", {
      channel: "alerts",
      message: "now",
    });
    assert.deepEqual(alert.body.sent_to, [x.id, y.id, z.id].sort());
    for (const s of [sx, sy, sz]) {
      assert.equal(json(await s.message("alerts")), "now");
    }
    const one = await a.post(`/api/v1/agents/${z.id}/send`, {
      channel: "alerts",
      message: "you",
    });
    assert.equal(one.body.status, "sent");
    assert.equal(json(await sz.message("alerts")), "you");
    for (const s of [sx, sy, sz]) s.close();
  });
});

Deno.test("cluster: connecting to A replaces the agent's connection on B (4409); DELETE through A closes it on B (4401)", async () => {
  await withCluster({}, async (a, b) => {
    const agent = await newAgentKey();
    await a.enrol(agent);
    const onB = await connect(b.ws, agent);
    const onA = await connect(a.ws, agent, { resume: onB.ready.resume });
    assert.equal((await onB.socket.closed).code, 4409);
    await onA.ping();
    const status = await b.gateway.status(agent.id);
    assert.equal(status?.connected, true);
    const onB2 = await connect(b.ws, agent);
    assert.equal((await onA.socket.closed).code, 4409);
    const del = await a.api(`/api/v1/agents/${agent.id}`, {
      method: "DELETE",
    });
    assert.equal(del.status, 204);
    assert.deepEqual(await onB2.socket.closed, {
      code: 4401,
      reason: "agent removed",
    });
  });
});

Deno.test("cluster: a replaced connection whose node missed the call notices on its next heartbeat (4409)", async () => {
  await withCluster({ heartbeatMs: 150 }, async (a, _b) => {
    const agent = await newAgentKey();
    await a.enrol(agent);
    const s = await connect(a.ws, agent);
    // Another node took the agent over without reaching A.
    const presence = createPresence(a.handle.kernel.get("state:kv"));
    const rec = await presence.get(agent.id);
    await presence.claim({ ...rec!, nodeId: "elsewhere", session: "other" });
    assert.equal((await s.socket.closed).code, 4409);
    assert.equal((await presence.get(agent.id))?.session, "other");
  });
});

Deno.test("cluster: while its node is down an agent's messages queue; they arrive when it reconnects to the other node", async () => {
  await withCluster({}, async (a, b) => {
    const agent = await newAgentKey();
    await a.enrol(agent);
    const s = await connect(b.ws, agent);
    await s.sub("policies");
    await b.shutdown();
    assert.equal((await s.socket.closed).code, 1001);
    await until(
      async () => (await a.gateway.status(agent.id))?.connected === false,
      "B's agent to show disconnected",
    );
    const r = await a.post(`/api/v1/agents/${agent.id}/send`, {
      channel: "policies",
      message: "while down",
    });
    assert.equal(r.body.status, "queued");
    const s2 = await connect(a.ws, agent, { resume: s.ready.resume });
    await s2.sub("policies");
    const m = await s2.message("policies");
    assert.equal(m.header.id, r.body.message_id);
    s2.ack(m);
    s2.close();
  });
});
