import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import type { Transport } from "../../core/transport.ts";
import {
  checkTelemetry,
  sample,
} from "../../tests/conformance/_telemetry_cases.ts";
import { waitFor } from "../../testing/conformance.ts";
import redisStreams from "./plugin.ts";

const url = Deno.env.get("REDIS_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
if (!url && !required) {
  console.log(
    'ignored: redis-streams telemetry: REDIS_URL is not set (run: eval "$(deno task services)")',
  );
}

const opts = {
  ignore: !url && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};

Deno.test({
  ...opts,
  name:
    "redis-streams: a failing handler and a dead letter are logged and counted through the plugin's log and metrics",
  async fn() {
    assert.ok(
      url,
      "REDIS_URL required (PLEXUS_REQUIRE_SERVICES=1) but not set",
    );
    const prefix = `plexus-tel-${crypto.randomUUID().slice(0, 8)}:`;
    await using t = await createTestKernel([redisStreams], {
      pluginConfig: {
        "redis-streams": { url, prefix, blockMs: 100, retryBaseMs: 10 },
      },
    });
    const transport = t.kernel.get<
      Transport & { redis: import("ioredis").Redis }
    >(
      "transport:redis-streams",
    );
    try {
      await checkTelemetry({
        transport,
        name: "redis-streams",
        logs: t.logs,
        metrics: t.metrics,
      });

      // An entry that is not an envelope, written by another tool.
      const topic = `telemetry.bad.${crypto.randomUUID().slice(0, 8)}`;
      await transport.subscribe(topic, (d) => d.ack(), { group: "tel" });
      const entry = await transport.redis.xadd(
        `${prefix}${topic}`,
        "*",
        "type",
        "not-a-type",
        "payload",
        "1",
      );
      await waitFor(
        "the bad message to be counted",
        () =>
          sample(t.metrics, "plexus_transport_dead_lettered_total", {
            transport: "redis-streams",
            topic,
            reason: "bad_message",
          }) === 1,
        10_000,
      );
      const logged = t.logs.find((r) =>
        r.msg === "message dead-lettered" && r.topic === topic
      );
      assert.equal(logged?.messageId, entry, "the stream entry id");
      assert.match(String(logged?.reason), /^bad_message: /);
    } finally {
      const keys = await transport.redis.keys(`${prefix}*`);
      if (keys.length) await transport.redis.del(...keys);
    }
  },
});
