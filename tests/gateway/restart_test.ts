/**
 * A real `plexus` process restarted under an agent: SIGTERM (graceful),
 * then a new process on the same data dir and KV file. The agent resumes
 * with its token, and nothing sent before or during the restart is lost.
 */
import assert from "node:assert/strict";
import { poll, startPlexus, writeConfig } from "../integration/_process.ts";
import { connect, json, newAgentKey } from "./_raw_client.ts";

Deno.test("gateway restart: the node is stopped with SIGTERM and started again on the same KV; the agent resumes and gets every message", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-restart-" });
  const config = await writeConfig(dir, {
    pluginConfig: { gateway: { heartbeatMs: 5000 } },
  });
  const args = ["--config", config];
  const p1 = await startPlexus({ dir, args });
  let p2: Awaited<ReturnType<typeof startPlexus>> | undefined;
  try {
    const agent = await newAgentKey();
    const enrol = await p1.api("/api/v1/agents", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        agentId: agent.id,
        publicKey: agent.publicKey,
        roles: ["agent"],
      }),
    }, "operator");
    assert.equal(enrol.status, 201);
    await enrol.body?.cancel();
    const ws1 = `${p1.url.replace("http", "ws")}/ws/agent`;
    const s1 = await connect(ws1, agent);
    await s1.sub("policies");
    const send = async (
      p: typeof p1,
      message: unknown,
      priority: number,
    ) => {
      const res = await p.api(`/api/v1/agents/${agent.id}/send`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ channel: "policies", message, priority }),
      }, "operator");
      assert.equal(res.status, 200);
      return await res.json() as { message_id: string; status: string };
    };
    const before = await send(p1, "before", 2);
    assert.equal(before.status, "sent");
    // Received but not acked when the node goes down.
    assert.equal((await s1.message("policies")).header.id, before.message_id);

    p1.signal("SIGTERM");
    assert.equal((await p1.exit()).code, 0);
    assert.equal((await s1.socket.closed).code, 1001);

    p2 = await startPlexus({ dir, args });
    const during = await send(p2, "during", 9);
    assert.equal(during.status, "queued");
    const ws2 = `${p2.url.replace("http", "ws")}/ws/agent`;
    const s2 = await connect(ws2, agent, { resume: s1.ready.resume });
    assert.equal(s2.ready.sessionExpiresAt, s1.ready.sessionExpiresAt);
    await s2.sub("policies");
    const first = await s2.message("policies");
    const second = await s2.message("policies");
    assert.deepEqual(
      [first.header.id, second.header.id],
      [during.message_id, before.message_id],
      "priority order",
    );
    assert.deepEqual([json(first), json(second)], ["during", "before"]);
    assert.equal(second.header.att, 2);
    s2.ack(first);
    s2.ack(second);
    // The node settles both queue messages: the agent's queue depth reaches 0.
    const depth = `plexus_gateway_queue_depth{agent="${agent.id}"}`;
    await poll(
      async () =>
        (await (await p2!.fetch("/metrics")).text()).split("\n")
          .includes(`${depth} 0`),
      "the queue to empty",
      5000,
    );
    // The first token was spent by the resumption.
    await assert.rejects(connect(ws2, agent, { resume: s1.ready.resume }));
    const status = await (await p2.api(`/api/v1/agents/${agent.id}/status`))
      .json();
    assert.equal(status.connected, true);
    // Exactly once after the acks: a fresh session gets nothing more.
    s2.close();
    await s2.socket.closed;
    const s3 = await connect(ws2, agent, { resume: s2.ready.resume });
    await s3.sub("policies");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(s3.received.filter((r) => r.header.type === "msg").length, 0);
    s3.close();
  } finally {
    await p2?.close();
    await p1.close();
  }
});
