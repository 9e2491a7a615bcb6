import assert from "node:assert/strict";
import { z } from "zod";
import { createTestKernel } from "./testing.ts";
import { transportPlugin } from "./transport_plugin.ts";
import { createEnvelope } from "./envelope.ts";
import type { Transport } from "./transport.ts";
import {
  ROUTED_TRANSPORT,
  transportRoutingPlugin,
} from "./transport_routing_plugin.ts";
import type { RoutedTransport } from "./transport_routing.ts";
import {
  MemoryBroker,
  memoryTransport,
  stopBroker,
} from "../testing/memory_transport.ts";

/** A durable-declaring memory transport plugin named `name` on `broker`. */
function memoryPlugin(name: string, broker: MemoryBroker) {
  return transportPlugin({
    name,
    config: z.strictObject({}),
    connect: () => {
      const t = memoryTransport({ broker });
      return Promise.resolve(
        Object.assign(Object.create(t), {
          caps: { ...t.caps, durable: true },
        }) as Transport,
      );
    },
  });
}

Deno.test("transport-routing plugin: provides transport:routed over the named transports and serves GET /api/v1/transports and an admin-only POST /api/v1/transports/bridge", async () => {
  const a = new MemoryBroker();
  const b = new MemoryBroker();
  await using t = await createTestKernel([
    memoryPlugin("a", a),
    memoryPlugin("b", b),
    transportRoutingPlugin({
      rules: [{
        pattern: "orders.>",
        transport: "a",
        delivery: "exactly-once",
      }],
      default: "b",
      dedupWindowMs: 60_000,
    }, ["a", "b"]),
  ]);
  try {
    const routed = t.kernel.get<RoutedTransport>(ROUTED_TRANSPORT);
    assert.equal(routed.route("orders.x").transport, "a");
    const handled: string[] = [];
    let got!: () => void;
    const once = new Promise<void>((r) => (got = r));
    await routed.subscribe("orders.x", (d) => {
      handled.push(d.envelope.id);
      got();
      return Promise.resolve();
    }, { group: "ship" });
    const m = createEnvelope({
      type: "event",
      topic: "orders.x",
      source: "t",
      payload: 1,
    });
    await routed.publish("orders.x", m);
    await once;
    assert.deepEqual(handled, [m.id]);

    const info = await (await t.api("/api/v1/transports", {}, "viewer")).json();
    assert.deepEqual(info.transports.map((x: { name: string }) => x.name), [
      "a",
      "b",
    ]);
    assert.equal(info.rules[0].pattern, "orders.>");

    const body = JSON.stringify({ family: "orders.>", to: "b" });
    const post = {
      method: "POST",
      body,
      headers: { "content-type": "application/json" },
    };
    const refused = await t.api("/api/v1/transports/bridge", post, "operator");
    assert.equal(refused.status, 403);
    await refused.body?.cancel();
    const started = await t.api("/api/v1/transports/bridge", post, "admin");
    assert.equal(started.status, 201);
    assert.deepEqual(await started.json(), {
      family: "orders.>",
      from: "a",
      to: "b",
      drains: [{ topic: "orders.x", group: "ship" }],
      moved: 0,
    });
    assert.equal(routed.route("orders.x").transport, "b");

    const unknown = await t.api("/api/v1/transports/bridge", {
      ...post,
      body: JSON.stringify({ family: "orders.>", to: "c" }),
    }, "admin");
    assert.equal(unknown.status, 400);
    assert.match((await unknown.json()).error.message, /unknown transport 'c'/);
  } finally {
    stopBroker(a);
    stopBroker(b);
  }
});

Deno.test("transport-routing plugin: a guarantee its transport cannot give fails the start with a ConfigError naming rule, transport and capability", async () => {
  const broker = new MemoryBroker();
  await assert.rejects(
    () =>
      createTestKernel([
        transportPlugin({
          name: "m",
          config: z.strictObject({}),
          connect: () => Promise.resolve(memoryTransport({ broker })),
        }),
        transportRoutingPlugin({
          rules: [{
            pattern: "a.>",
            transport: "m",
            delivery: "at-least-once",
          }],
          dedupWindowMs: 60_000,
        }, ["m"]),
      ]),
    (err: Error) =>
      err.cause instanceof Error && err.cause.name === "ConfigError" &&
      /routing\.rules\[0\] \('a\.>' → m\): delivery 'at-least-once' on transport 'm' needs durable/
        .test(err.cause.message),
  );
  stopBroker(broker);
});
