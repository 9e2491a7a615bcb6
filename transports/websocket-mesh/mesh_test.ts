import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import { waitFor } from "../../testing/conformance.ts";
import { type MeshTransport, startMesh } from "./mesh.ts";
import { openWebSocket } from "../../sdk/ws_client.ts";
import { rawUpgrade } from "../../tests/_raw_upgrade.ts";
import { checkTelemetry } from "../../tests/conformance/_telemetry_cases.ts";
import { createLogger, type LogRecord } from "../../core/observe/logger.ts";
import { createMetrics } from "../../core/observe/metrics.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

function event(topic: string, payload: unknown) {
  return createEnvelope({ type: "event", topic, source: "test", payload });
}

async function closeAll(...ts: MeshTransport[]) {
  await Promise.all(ts.map((t) => t.close()));
}

/** Opens a raw socket to `url` and resolves with the code it is closed with. */
function closeCodeAfter(url: string, send: (ws: WebSocket) => void) {
  const ws = openWebSocket(url) as unknown as WebSocket;
  const code = Promise.withResolvers<number>();
  ws.onopen = () => send(ws);
  ws.onclose = (e) => code.resolve(e.code);
  return code.promise;
}

Deno.test({
  ...opts,
  name: "mesh: a peer with the wrong secret is refused and gets nothing",
  async fn() {
    const a = await startMesh({ secret: "right" });
    const b = await startMesh({
      secret: "wrong",
      peers: [a.url],
      handshakeTimeoutMs: 1000,
    });
    try {
      const got: unknown[] = [];
      await b.subscribe("t", async (d) => {
        got.push(d.envelope.payload);
        await d.ack();
      });
      await a.publish("t", event("t", 1));
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(a.connectedPeers(), []);
      assert.deepEqual(b.connectedPeers(), []);
      assert.deepEqual(got, []);
    } finally {
      await closeAll(a, b);
    }
  },
});

Deno.test({
  ...opts,
  name:
    "mesh: an oversized or malformed frame closes that link only; the node keeps serving its peers",
  async fn() {
    const a = await startMesh({ secret: "s", maxMessageBytes: 1024 });
    const b = await startMesh({ secret: "s", peers: [a.url] });
    try {
      assert.equal(
        await closeCodeAfter(a.url, (ws) => ws.send("x".repeat(200 * 1024))),
        1009,
      );
      assert.equal(
        await closeCodeAfter(a.url, (ws) => ws.send("{not json")),
        1007,
      );
      assert.equal(
        await closeCodeAfter(
          a.url,
          (ws) => ws.send(JSON.stringify({ t: "msg", sids: [], topic: "t" })),
        ),
        1002,
      );
      const got: unknown[] = [];
      await a.subscribe("t", async (d) => {
        got.push(d.envelope.payload);
        await d.ack();
      });
      await b.publish("t", event("t", "still here"));
      await waitFor("the message", () => got.length === 1, 5000);
      assert.deepEqual(got, ["still here"]);
      assert.deepEqual(a.connectedPeers(), [b.nodeId]);
    } finally {
      await closeAll(a, b);
    }
  },
});

Deno.test({
  ...opts,
  name:
    "mesh: two nodes that dial each other keep exactly one link and deliver once",
  async fn() {
    const reserve = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = reserve.addr.port;
    reserve.close();
    const a = await startMesh({
      secret: "s",
      nodeId: "node-a",
      peers: [`ws://127.0.0.1:${port}/mesh`],
      reconnectMs: 50,
    });
    const b = await startMesh({
      secret: "s",
      nodeId: "node-b",
      port,
      peers: [a.url],
      reconnectMs: 50,
    });
    try {
      await waitFor(
        "the link",
        () =>
          a.connectedPeers().length === 1 && b.connectedPeers().length === 1,
        5000,
      );
      // Both dialers keep running: the pair must settle on one link, not flap.
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(a.connectedPeers(), ["node-b"]);
      assert.deepEqual(b.connectedPeers(), ["node-a"]);
      const got: string[] = [];
      await b.subscribe("t", async (d) => {
        got.push(d.envelope.id);
        await d.ack();
      }, { group: "g" });
      await b.subscribe("t", async (d) => {
        got.push(d.envelope.id);
        await d.ack();
      });
      for (let i = 0; i < 10; i++) await a.publish("t", event("t", i));
      await waitFor("20 deliveries", () => got.length >= 20, 5000);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(got.length, 20, "each message once per subscription");
      assert.equal(new Set(got).size, 10);
    } finally {
      await closeAll(a, b);
    }
  },
});

Deno.test({
  ...opts,
  name: "mesh: a dropped link is redialed and messages flow again",
  async fn() {
    const b = await startMesh({ secret: "s", nodeId: "node-b" });
    const port = Number(new URL(b.url).port);
    const a = await startMesh({
      secret: "s",
      nodeId: "node-a",
      peers: [b.url],
      reconnectMs: 50,
    });
    let b2: MeshTransport | undefined;
    try {
      assert.deepEqual(a.connectedPeers(), ["node-b"]);
      await b.close();
      await waitFor("link drop", () => a.connectedPeers().length === 0, 5000);
      b2 = await startMesh({ secret: "s", nodeId: "node-b", port });
      await waitFor(
        "redial",
        () => a.connectedPeers().length === 1,
        5000,
      );
      const got: unknown[] = [];
      await b2.subscribe("t", async (d) => {
        got.push(d.envelope.payload);
        await d.ack();
      });
      await a.publish("t", event("t", "after"));
      await waitFor("delivery after the redial", () => got.length === 1, 5000);
    } finally {
      await closeAll(a, ...(b2 ? [b2] : []));
    }
  },
});

Deno.test({
  ...opts,
  name: "mesh: a bad topic is refused with invalid_argument",
  async fn() {
    const a = await startMesh({});
    try {
      await assert.rejects(
        () => a.publish("a..b", event("a.b", 1)),
        (e: Error & { code?: string }) => e.code === "invalid_argument",
      );
      await assert.rejects(
        () => a.subscribe("a.*", () => Promise.resolve()),
        (e: Error & { code?: string }) => e.code === "invalid_argument",
      );
    } finally {
      await a.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "mesh: its own listener refuses an upgrade from a browser page on another origin (403) and links peers, which send none",
  async fn() {
    const a = await startMesh({ secret: "s" });
    try {
      const foreign = await rawUpgrade(a.url, {
        origin: "https://evil.example",
      });
      assert.equal(foreign.status, 403);
      assert.equal(JSON.parse(foreign.body).error.code, "forbidden");
      assert.equal((await rawUpgrade(a.url)).status, 101);
    } finally {
      await closeAll(a);
    }
  },
});

Deno.test({
  ...opts,
  name: "mesh: a failing handler and a dead letter are logged and counted",
  async fn() {
    const logs: LogRecord[] = [];
    const metrics = createMetrics("plexus_");
    const a = await startMesh({
      secret: "s",
      retryBaseMs: 10,
      log: createLogger({ sinks: [(r) => logs.push(r)] }),
      metrics,
    });
    try {
      await checkTelemetry({
        transport: a,
        name: "websocket-mesh",
        logs,
        metrics,
        timeoutMs: 5000,
      });
    } finally {
      await closeAll(a);
    }
  },
});
