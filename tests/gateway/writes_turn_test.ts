/**
 * A producer that awaits one broadcast or send after another (each await a
 * KV read or a microtask, the thread busy in between) has its frames
 * written as it goes: Deno writes a WebSocket frame in a task that runs
 * only when JavaScript gives the event loop a turn, which broadcast() and
 * send() wait for once it is 5 ms overdue (gateway.ts, `writesTurn`).
 */
import assert from "node:assert/strict";
import type { AgentGateway } from "../../gateway/gateway.ts";
import { connect, newAgentKey } from "./_raw_client.ts";
import { startTestNode } from "./_node.ts";

/** Keeps the thread busy for `ms` (a producer doing work between messages). */
function busy(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* work */ }
}

Deno.test("gateway: a loop of awaited broadcasts and sends, busy between them, has each message reach the agent before the loop ends, in order, once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-turn-" });
  const n = await startTestNode({
    dir,
    gateway: {
      channels: { alerts: { subscribe: ["agent"], durable: false } },
    },
  });
  try {
    const key = await newAgentKey();
    await n.enrol(key);
    const s = await connect(n.ws, key, { batch: 2 });
    assert.equal((await s.sub("alerts")).header.type, "ok");
    const gw = n.handle.kernel.get<AgentGateway>("gateway:agents");
    const alerts = () =>
      s.received.filter((r) =>
        r.header.type === "msg" && r.header.ch.endsWith(".alerts")
      );
    const total = 30;
    // While the loop runs nothing else gives the event loop a turn: the
    // agent's records can only arrive through broadcast()'s and send()'s
    // own turns, taken at least every 5 ms or so (a write, then the test
    // client's read, each needing one). Without those turns the agent had
    // 5 of the 30 by the loop's end; with them it lags the loop by a few
    // windows at most (20-29 of 30 seen here under load).
    for (let i = 0; i < total; i++) {
      const sent = i % 2 === 0
        ? gw.broadcast("alerts", { i })
        : gw.send(key.id, "alerts", { i });
      busy(3); // the KV read each one waits for completes meanwhile
      await sent;
    }
    const during = alerts().length;
    assert.ok(
      during >= total / 2,
      `${during} of ${total} messages reached the agent during the loop`,
    );
    // Then all of them (message() takes them in order, from the first).
    for (let i = 0; i < total; i++) await s.message("alerts");
    const got = alerts().map((r) =>
      JSON.parse(new TextDecoder().decode(r.body)).i
    );
    assert.deepEqual(got, Array.from({ length: total }, (_, i) => i));
    s.close();
  } finally {
    await n.shutdown();
  }
});
