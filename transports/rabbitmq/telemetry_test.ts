import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import { createTestKernel } from "../../core/testing.ts";
import type { Delivery } from "../../core/transport.ts";
import {
  checkTelemetry,
  sample,
} from "../../tests/conformance/_telemetry_cases.ts";
import { waitFor } from "../../testing/conformance.ts";
import { adminPublish, RABBITMQADMIN } from "./_test_util.ts";
import rabbitmqPlugin from "./plugin.ts";
import type { RabbitmqTransport } from "./transport.ts";
import { keyedRoutingKey, partitionOf } from "./wire.ts";

const url = Deno.env.get("AMQP_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !url
  ? 'AMQP_URL is not set (run: eval "$(deno task services)")'
  : undefined;
if (skip && !required) console.log(`ignored: rabbitmq telemetry: ${skip}`);

const opts = {
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};

Deno.test({
  ...opts,
  name:
    "rabbitmq: a failing handler and a dead letter are logged and counted through the plugin's log and metrics",
  async fn() {
    assert.ok(!skip, skip);
    await using t = await createTestKernel([rabbitmqPlugin], {
      pluginConfig: {
        rabbitmq: { url, retryBaseMs: 10, groupExpiresMs: 600_000 },
      },
    });
    await checkTelemetry({
      transport: t.kernel.get<RabbitmqTransport>("transport:rabbitmq"),
      name: "rabbitmq",
      logs: t.logs,
      metrics: t.metrics,
    });
  },
});

Deno.test({
  ...opts,
  name:
    "rabbitmq: garbage published with rabbitmqadmin (bad JSON, missing fields, wrong types, non-UTF-8, oversize) is dead-lettered with a reason, counted, and never stalls the queue or a key's partition",
  async fn() {
    assert.ok(!skip, skip);
    await using t = await createTestKernel([rabbitmqPlugin], {
      pluginConfig: {
        rabbitmq: {
          url,
          maxMessageBytes: 100_000,
          partitions: 4,
          groupExpiresMs: 600_000,
        },
      },
    });
    const transport = t.kernel.get<RabbitmqTransport>("transport:rabbitmq");
    const topic = `garbage.t${crypto.randomUUID().slice(0, 8)}`;
    const got: Delivery[] = [];
    await transport.subscribe(topic, async (d) => {
      got.push(d);
      await d.ack();
    }, { group: "g" });
    // With rabbitmqadmin when the management plugin is there (the broker's
    // own tool), else a raw AMQP publish with the client.
    const raw = async (
      exchange: string,
      routingKey: string,
      body: Uint8Array | string,
      headers: Record<string, string> = {},
    ) => {
      if (RABBITMQADMIN) {
        assert.ok(await adminPublish(exchange, routingKey, body, headers));
        return;
      }
      const { Buffer } = await import("node:buffer");
      const ch = await transport.connection.acquire();
      await ch.confirmSelect();
      await ch.basicPublish(
        { exchange, routingKey, headers, durable: true },
        Buffer.from(body),
      );
      await ch.close();
    };
    const good = (n: number) =>
      createEnvelope({ type: "event", topic, source: "raw", payload: { n } });
    const garbage: [string, Uint8Array | string][] = [
      ["bad JSON", '{"id": "x", "type": '],
      ["missing fields", JSON.stringify({ payload: 1 })],
      [
        "wrong types",
        JSON.stringify({ ...good(0), timestamp: "yesterday", priority: "hi" }),
      ],
      ["non-UTF-8", new Uint8Array([0x7b, 0xff, 0xfe, 0x22, 0x7d])],
      [
        "oversize",
        JSON.stringify({ ...good(0), payload: "x".repeat(100_001) }),
      ],
    ];
    const keyed = keyedRoutingKey(topic, partitionOf("k1", 4));
    const expected: string[] = [];
    for (const [, body] of garbage) {
      // Each bad message is followed by a good one, on the topic and on a key's partition.
      await raw("plexus", topic, body);
      await raw("plexus.keyed", keyed, body, { "Plexus-Key": "k1" });
      const e1 = good(1);
      const e2 = good(2);
      await transport.publish(topic, e1);
      await transport.publish(topic, e2, { key: "k1" });
      expected.push(e1.id, e2.id);
    }
    await waitFor(
      `the ${expected.length} good messages`,
      () => got.length >= expected.length,
      10_000,
    );
    assert.deepEqual(
      got.map((d) => d.envelope.id).sort(),
      [...expected].sort(),
    );
    const bad = garbage.length * 2;
    await waitFor(
      `${bad} bad messages counted`,
      () =>
        sample(t.metrics, "plexus_transport_dead_lettered_total", {
          transport: "rabbitmq",
          topic,
          reason: "bad_message",
        }) === bad,
      10_000,
    );
    const letters = await transport.deadLetters!(topic);
    assert.equal(letters.length, bad);
    const reasons = letters.map((l) => l.reason);
    for (
      const pattern of [
        /^bad_message: .* is not JSON/,
        /^bad_message: .* is not an envelope: id: /,
        /^bad_message: .* is not an envelope: timestamp: /,
        /^bad_message: .* is not UTF-8/,
        /^bad_message: .* is \d+ bytes; the limit is 100000 bytes/,
      ]
    ) {
      assert.equal(
        reasons.filter((r) => pattern.test(r)).length,
        2,
        `${pattern} in ${JSON.stringify(reasons)}`,
      );
    }
    assert.ok(letters.every((l) => l.group === "g" && l.attempts === 1));
    assert.match(
      String((letters[0].envelope.payload as { data: string }).data),
      /"type": $/,
      "the bad bytes are kept in the dead letter",
    );
    const logged = t.logs.filter((r) =>
      r.msg === "message dead-lettered" && r.topic === topic
    );
    assert.equal(logged.length, bad);
    assert.ok(
      t.metrics.render().includes(
        `plexus_transport_dead_lettered_total{reason="bad_message",topic="${topic}",transport="rabbitmq"} ${bad}`,
      ),
      "/metrics shows the count",
    );
  },
});
