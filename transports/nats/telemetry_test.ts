import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import { createTestKernel } from "../../core/testing.ts";
import type { Delivery } from "../../core/transport.ts";
import {
  checkTelemetry,
  sample,
} from "../../tests/conformance/_telemetry_cases.ts";
import { waitFor } from "../../testing/conformance.ts";
import { cliPublish, NATS_CLI } from "./_test_util.ts";
import natsPlugin from "./plugin.ts";
import type { NatsTransport } from "./transport.ts";
import { partitionOf, partitionSubject, subjectOf } from "./wire.ts";

const url = Deno.env.get("NATS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !url
  ? 'NATS_URL is not set (run: eval "$(deno task services)")'
  : undefined;
if (skip && !required) console.log(`ignored: nats telemetry: ${skip}`);

const opts = {
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};

Deno.test({
  ...opts,
  name:
    "nats: a failing handler and a dead letter are logged and counted through the plugin's log and metrics",
  async fn() {
    assert.ok(!skip, skip);
    await using t = await createTestKernel([natsPlugin], {
      pluginConfig: { nats: { servers: url, retryBaseMs: 10 } },
    });
    await checkTelemetry({
      transport: t.kernel.get<NatsTransport>("transport:nats"),
      name: "nats",
      logs: t.logs,
      metrics: t.metrics,
    });
  },
});

Deno.test({
  ...opts,
  name:
    "nats: garbage written by another client (bad JSON, missing fields, wrong types, non-UTF-8, oversize) is dead-lettered with a reason, counted, and never stalls the topic or a key's partition",
  async fn() {
    assert.ok(!skip, skip);
    await using t = await createTestKernel([natsPlugin], {
      pluginConfig: {
        nats: { servers: url, maxMessageBytes: 100_000, partitions: 4 },
      },
    });
    const transport = t.kernel.get<NatsTransport>("transport:nats");
    const topic = `garbage.t${crypto.randomUUID().slice(0, 8)}`;
    const got: Delivery[] = [];
    await transport.subscribe(topic, async (d) => {
      got.push(d);
      await d.ack();
    }, { group: "g" });
    // With the CLI when installed (the broker's own tool), else the raw client.
    const raw = async (
      subject: string,
      body: Uint8Array | string,
      headers: Record<string, string> = {},
    ) => {
      if (NATS_CLI) return await cliPublish(subject, body, headers);
      const { jetstream } = await import("@nats-io/jetstream");
      const { headers: mk } = await import("@nats-io/transport-node");
      const h = mk();
      for (const [k, v] of Object.entries(headers)) h.set(k, v);
      await jetstream(transport.nc).publish(subject, body, { headers: h });
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
    const subject = subjectOf("plexus.", topic);
    const keyed = partitionSubject("plexus.", topic, partitionOf("k1", 4));
    const expected: string[] = [];
    for (const [i, [, body]] of garbage.entries()) {
      // Each bad message is followed by a good one, on the topic and on a key's partition.
      await raw(subject, body);
      await raw(i % 2 ? keyed : subject, body, { "Plexus-Key": "k1" });
      const e1 = good(i + 1);
      const e2 = good(i + 100);
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
          transport: "nats",
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
    assert.match(String(logged[0].messageId), /^PLEXUS_garbage:\d+$/);
    const rendered = t.metrics.render();
    assert.ok(
      rendered.includes(
        `plexus_transport_dead_lettered_total{reason="bad_message",topic="${topic}",transport="nats"} ${bad}`,
      ),
      "/metrics shows the count",
    );
  },
});
