import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import {
  checkGarbage,
  checkTelemetry,
} from "../../tests/conformance/_telemetry_cases.ts";
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
    await checkGarbage({
      transport,
      name: "nats",
      logs: t.logs,
      metrics: t.metrics,
      write: async (topic, body, keyed) => {
        const subject = subjectOf("plexus.", topic);
        if (!keyed) return await raw(subject, body);
        // Half on the key's partition, half on the plain subject.
        const partition = partitionSubject(
          "plexus.",
          topic,
          partitionOf(keyed.key, 4),
        );
        await raw(keyed.index % 2 ? partition : subject, body, {
          "Plexus-Key": keyed.key,
        });
      },
      messageId: /^PLEXUS_garbage:\d+$/,
    });
  },
});
