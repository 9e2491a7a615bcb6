import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import { checkTelemetry } from "../../tests/conformance/_telemetry_cases.ts";
import kafka from "./plugin.ts";

const brokers = Deno.env.get("KAFKA_BROKERS");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = brokers
  ? undefined
  : 'KAFKA_BROKERS is not set (run: eval "$(deno task services)")';
if (skip && !required) console.log(`ignored: kafka telemetry: ${skip}`);

Deno.test({
  name:
    "kafka: a failing handler and a dead letter are logged and counted through the plugin's log and metrics",
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.ok(!skip, skip);
    await using t = await createTestKernel([kafka], {
      pluginConfig: {
        kafka: {
          brokers,
          sessionTimeoutMs: 6000,
          heartbeatIntervalMs: 300,
          fetchMaxWaitMs: 200,
          retryBaseMs: 20,
          closeTimeoutMs: 2000,
        },
      },
      startTimeoutMs: 30_000,
    });
    await checkTelemetry({
      transport: t.kernel.get("transport:kafka"),
      name: "kafka",
      logs: t.logs,
      metrics: t.metrics,
      timeoutMs: 30_000,
    });
  },
});
