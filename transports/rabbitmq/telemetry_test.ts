import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import {
  checkGarbage,
  checkTelemetry,
} from "../../tests/conformance/_telemetry_cases.ts";
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
    await checkGarbage({
      transport,
      name: "rabbitmq",
      logs: t.logs,
      metrics: t.metrics,
      write: (topic, body, keyed) =>
        keyed
          ? raw(
            "plexus.keyed",
            keyedRoutingKey(topic, partitionOf(keyed.key, 4)),
            body,
            { "Plexus-Key": keyed.key },
          )
          : raw("plexus", topic, body),
    });
  },
});
