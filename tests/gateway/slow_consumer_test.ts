/**
 * A slow consumer: an agent that stops reading while the node has plenty
 * to push is closed with 4008 (it sees the code once it reads again), and
 * every durable message it was sent without acking is delivered again
 * after it reconnects.
 */
import assert from "node:assert/strict";
import {
  connect,
  handshake,
  json,
  newAgentKey,
  TcpFrameSocket,
} from "./_raw_client.ts";
import { startTestNode, until } from "./_node.ts";

Deno.test("gateway: a reader that stalls is closed with 4008; nothing durable is lost", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-slow-" });
  const n = await startTestNode({
    dir,
    gateway: { sendBufferBytes: 64 * 1024, maxInFlight: 1000 },
  });
  try {
    const a = await newAgentKey();
    await n.enrol(a);
    const total = 120;
    const body = "s".repeat(100 * 1024);
    const ids = new Set<string>();
    for (let i = 0; i < total; i++) {
      const r = await n.gateway.send(a.id, "policies", { i, body });
      assert.equal(r.status, "queued");
      ids.add(r.messageId);
    }
    const tcp = await TcpFrameSocket.open(n.ws);
    const s = await handshake(tcp, a);
    tcp.pause();
    s.send({ type: "sub", ch: `backend.${a.id}.policies` });
    await until(
      async () =>
        await n.metric("plexus_gateway_closes_total", { code: "4008" }) === 1,
      "the node to close the slow consumer",
      10_000,
    );
    await until(
      async () => (await n.gateway.status(a.id))?.connected === false,
      "presence to say disconnected (the client has not read the close yet)",
    );
    tcp.resume();
    const c = await tcp.closed;
    assert.equal(c.code, 4008);
    assert.match(c.reason, /slow consumer/);
    // Reconnect and read everything: each message at least once, none lost.
    const s2 = await connect(n.ws, a);
    await s2.sub("policies");
    const got = new Set<string>();
    while (got.size < total) {
      const m = await s2.message("policies", 10_000);
      assert.equal((json(m) as { body: string }).body.length, body.length);
      got.add(m.header.id);
      s2.ack(m);
    }
    assert.deepEqual([...got].sort(), [...ids].sort());
    s2.close();
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
