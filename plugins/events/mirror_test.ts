import assert from "node:assert/strict";
import { z } from "zod";
import { createTestKernel } from "../../core/testing.ts";
import { transportPlugin } from "../../core/transport_plugin.ts";
import type { Transport } from "../../core/transport.ts";
import type { Envelope } from "../../core/envelope.ts";
import {
  MemoryBroker,
  memoryTransport,
} from "../../testing/memory_transport.ts";
import events, { type EventBus, type StoredEvent } from "./mod.ts";

/** A memory transport that says it is durable, on `broker`. */
function durableMemory(broker: MemoryBroker) {
  return transportPlugin({
    name: "mem",
    config: z.strictObject({}),
    connect: () => {
      const t = memoryTransport({ broker, maxMessageBytes: 64 * 1024 });
      return Promise.resolve(
        Object.assign(Object.create(t), {
          caps: { ...t.caps, durable: true },
        }) as Transport,
      );
    },
  });
}

Deno.test("events mirror: with a durable transport loaded, every stored event is published on {prefix}.{type}, keyed by stream, in offset order", async () => {
  const broker = new MemoryBroker();
  await using t = await createTestKernel([durableMemory(broker), events], {
    pluginConfig: { events: { mirror: { checkMs: 20 } } },
  });
  const outside = memoryTransport({ broker, maxMessageBytes: 64 * 1024 });
  const got: Envelope[] = [];
  // The memory transport has no wildcards: one subscription per type.
  for (const topic of ["events.custom.n0", "events.custom.n1"]) {
    await outside.subscribe(topic, (d) => {
      got.push(d.envelope);
      return d.ack();
    });
  }
  const bus = t.kernel.get<EventBus>("events:bus");
  const offsets: string[] = [];
  for (let i = 0; i < 20; i++) {
    offsets.push(await bus.publish(`custom.n${i % 2}`, { i }));
  }
  const t0 = Date.now();
  while (got.length < 20 && Date.now() - t0 < 10_000) {
    await new Promise((r) => setTimeout(r, 10));
  }
  await outside.close();
  // Each topic in offset order; together, every event once.
  for (const [k, topic] of ["events.custom.n0", "events.custom.n1"].entries()) {
    assert.deepEqual(
      got.filter((m) => m.topic === topic).map((m) =>
        m.headers["x-event-offset"]
      ),
      offsets.filter((_, i) => i % 2 === k),
    );
  }
  assert.equal(got.length, 20);
  const m3 = got.find((m) => m.headers["x-event-offset"] === offsets[3])!;
  const e = m3.payload as StoredEvent;
  assert.deepEqual([e.type, e.data, m3.id, m3.type], [
    "custom.n1",
    { i: 3 },
    e.id,
    "event",
  ]);
});

Deno.test("events mirror: without a durable transport nothing is mirrored and nothing fails", async () => {
  await using t = await createTestKernel([events], {
    pluginConfig: { events: { mirror: { checkMs: 20 } } },
  });
  const bus = t.kernel.get<EventBus>("events:bus");
  await bus.publish("custom.x", {});
  const metrics = await (await t.request("/metrics")).text();
  assert.match(metrics, /plexus_events_mirror_active 0/);
});
