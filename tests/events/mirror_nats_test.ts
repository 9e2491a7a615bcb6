/**
 * The event mirror against a real broker: NATS JetStream (NATS_URL).
 */
import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import type { Envelope } from "../../core/envelope.ts";
import nats from "../../transports/nats/mod.ts";
import { connectNats } from "../../transports/nats/transport.ts";
import { streamPrefix } from "../../transports/nats/wire.ts";
import { jetstreamManager } from "@nats-io/jetstream";
import events, {
  type EventBus,
  type StoredEvent,
} from "../../plugins/events/mod.ts";

const url = Deno.env.get("NATS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
if (!url) {
  console.log(
    'ignored: events mirror on NATS: NATS_URL is not set (run: eval "$(deno task services)")',
  );
}

Deno.test({
  name:
    "events mirror (NATS JetStream): every stored event reaches the broker once per id, each type in offset order",
  ignore: !url && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.ok(url, "NATS_URL is required (PLEXUS_REQUIRE_SERVICES=1)");
    // A fresh prefix: streams of their own, removed at the end.
    const prefix = `evmirror${crypto.randomUUID().slice(0, 8)}.`;
    await using t = await createTestKernel([nats, events], {
      pluginConfig: {
        nats: { servers: url, prefix, storage: "memory" },
        events: { mirror: { checkMs: 20 } },
      },
    });
    const bus = t.kernel.get<EventBus>("events:bus");
    const offsets: string[] = [];
    for (let i = 0; i < 30; i++) {
      offsets.push(await bus.publish(`custom.m${i % 3}`, { i }));
    }
    const reader = await connectNats({
      servers: url,
      prefix,
      startFrom: "all",
    });
    try {
      const got = new Map<string, Envelope[]>();
      const subs = [];
      for (let k = 0; k < 3; k++) {
        const topic = `events.custom.m${k}`;
        got.set(topic, []);
        subs.push(
          await reader.subscribe(topic, async (d) => {
            got.get(topic)!.push(d.envelope);
            await d.ack();
          }, { group: "test" }),
        );
      }
      const t0 = Date.now();
      const count = () => [...got.values()].reduce((n, l) => n + l.length, 0);
      while (count() < 30 && Date.now() - t0 < 20_000) {
        await new Promise((r) => setTimeout(r, 20));
      }
      for (const [k, topic] of [...got.keys()].entries()) {
        const list = got.get(topic)!;
        // At least once: dedupe by envelope id, then exactly the events, in order.
        const unique = [...new Map(list.map((m) => [m.id, m])).values()];
        assert.deepEqual(
          unique.map((m) => m.headers["x-event-offset"]),
          offsets.filter((_, i) => i % 3 === k),
          topic,
        );
        const e = unique[0].payload as StoredEvent;
        assert.equal(e.type, `custom.m${k}`);
        assert.equal(unique[0].id, e.id);
      }
      for (const s of subs) await s.close();
    } finally {
      const jsm = await jetstreamManager(reader.nc);
      for await (const s of jsm.streams.list()) {
        if (s.config.name.startsWith(streamPrefix(prefix))) {
          await jsm.streams.delete(s.config.name);
        }
      }
      await reader.close();
    }
  },
});
