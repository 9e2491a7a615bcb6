import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import type { Delivery } from "../../core/transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import {
  adminPeek,
  adminPublish,
  RABBITMQADMIN,
  rabbitmqadmin,
} from "./_test_util.ts";
import { connectRabbitmq } from "./transport.ts";
import {
  dlqQueue,
  groupQueue,
  keyedRoutingKey,
  partitionOf,
  partitionQueue,
} from "./wire.ts";

const url = Deno.env.get("AMQP_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !url
  ? 'AMQP_URL is not set (run: eval "$(deno task services)")'
  : !RABBITMQADMIN
  ? "PLEXUS_RABBITMQADMIN (rabbitmqadmin with the management plugin, set up by deno task services) is not set"
  : undefined;
if (skip) console.log(`ignored: rabbitmq interop: ${skip}`);

// Without the management plugin there is no rabbitmqadmin: ignored even under
// PLEXUS_REQUIRE_SERVICES (the garbage test then publishes with the client).
const opts = {
  ignore: skip !== undefined && !(required && !url),
  sanitizeOps: false,
  sanitizeResources: false,
};

Deno.test({
  ...opts,
  name:
    "rabbitmq interop: envelopes published with rabbitmqadmin, on a key's partition and under a '>' pattern, are consumed with their key and topic",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectRabbitmq({ url, groupExpiresMs: 600_000 });
    try {
      const run = crypto.randomUUID().slice(0, 8);
      const got: Delivery[] = [];
      await t.subscribe(`interop.${run}.>`, async (d) => {
        got.push(d);
        await d.ack();
      }, { group: "interop" });
      const e = (id: string, topic: string) => ({
        id,
        type: "command",
        topic,
        source: "cli",
        timestamp: 1_700_000_000_000,
        payload: { n: 1, note: "é" },
      });
      const keyedTopic = `interop.${run}.orders`;
      assert.ok(
        await adminPublish(
          "plexus.keyed",
          keyedRoutingKey(keyedTopic, partitionOf("k1", 4)),
          JSON.stringify(e("cli-1", keyedTopic)),
          { "Plexus-Key": "k1" },
        ),
      );
      const deep = `interop.${run}.a.b`;
      assert.ok(
        await adminPublish("plexus", deep, JSON.stringify(e("cli-2", deep))),
      );
      // Not under the pattern: '>' needs at least one more segment.
      assert.equal(
        await adminPublish(
          "plexus",
          `interop.${run}`,
          JSON.stringify(e("cli-3", `interop.${run}`)),
        ),
        false,
        "a '>' pattern took its parent topic",
      );
      await waitFor("the tool's messages", () => got.length >= 2, 10_000);
      await new Promise((r) => setTimeout(r, 200));
      const byId = new Map(got.map((d) => [d.envelope.id, d]));
      assert.deepEqual([...byId.keys()].sort(), ["cli-1", "cli-2"]);
      const k = byId.get("cli-1")!;
      assert.equal(k.key, "k1");
      assert.equal(k.topic, keyedTopic);
      assert.deepEqual(k.envelope.payload, { n: 1, note: "é" });
      assert.equal(k.envelope.priority, 4, "defaults filled");
      assert.equal(byId.get("cli-2")!.topic, deep);
      assert.equal(byId.get("cli-2")!.key, undefined);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  ...opts,
  name:
    "rabbitmq interop: what the transport publishes, and a dead letter, read back with rabbitmqadmin in the documented layout; a terminated message leaves nothing in the group's queues",
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectRabbitmq({ url, groupExpiresMs: 600_000 });
    const tap = `interop.tap.${crypto.randomUUID().slice(0, 8)}`;
    try {
      const topic = `interop.out${crypto.randomUUID().slice(0, 8)}`;
      await rabbitmqadmin([
        "declare",
        "queue",
        `name=${tap}`,
        "durable=false",
        "auto_delete=false",
      ]);
      await rabbitmqadmin([
        "declare",
        "binding",
        "source=plexus",
        `destination=${tap}`,
        `routing_key=${topic}`,
      ]);
      const e = createEnvelope({
        type: "event",
        topic,
        source: "plexus-test",
        payload: { order: 7 },
      });
      await t.publish(topic, e);
      const [stored] = await adminPeek(tap, 1);
      assert.equal(stored.routing_key, topic);
      assert.equal(stored.exchange, "plexus");
      assert.deepEqual(JSON.parse(stored.payload), e);
      assert.equal(stored.properties.message_id, e.id);
      assert.equal(stored.properties.delivery_mode, 2, "persistent");

      await t.subscribe(topic, (d) => d.term("refused: no stock"), {
        group: "shop",
      });
      const poison = createEnvelope({
        type: "event",
        topic,
        source: "plexus-test",
        payload: "poison",
      });
      await t.publish(topic, poison, { key: "k9" });
      await waitFor("the dead letter", async () => {
        const l = await t.deadLetters!(topic);
        return l.length > 0;
      }, 10_000);
      const [dead] = await adminPeek(dlqQueue("plexus", topic), 10);
      const h = dead.properties.headers!;
      assert.equal(JSON.parse(dead.payload).id, poison.id);
      assert.equal(dead.exchange, "plexus.dlx");
      assert.equal(dead.routing_key, topic);
      assert.equal(h["Plexus-Dlq-Reason"], "refused: no stock");
      assert.equal(h["Plexus-Dlq-Group"], "shop");
      assert.equal(h["Plexus-Dlq-Attempts"], "1");
      assert.equal(h["Plexus-Dlq-Topic"], topic);
      assert.equal(h["Plexus-Key"], "k9");
      assert.equal(h["Plexus-Dlq-Errors"], "[]");
      assert.equal(h["Plexus-Dlq-Truncated"], undefined);
      const main = groupQueue("plexus", "shop", topic);
      const partition = partitionQueue(main, partitionOf("k9", 4));
      assert.equal(h["Plexus-Dlq-Origin"], partition);
      const queues = JSON.parse(
        await rabbitmqadmin(["list", "queues", "name", "messages"]),
      ) as { name: string; messages?: number }[];
      for (const q of [main, partition]) {
        assert.equal(
          queues.find((x) => x.name === q)?.messages ?? 0,
          0,
          `${q} still holds the message`,
        );
      }
    } finally {
      await rabbitmqadmin(["delete", "queue", `name=${tap}`]).catch(() => {});
      await t.close();
    }
  },
});
