import assert from "node:assert/strict";
import { createLogger, type LogRecord } from "../core/observe/logger.ts";
import { createMetrics } from "../core/observe/metrics.ts";
import { deadLetterReason, transportTelemetry } from "./_telemetry.ts";

Deno.test("telemetry: dead-letter reasons map to three bounded labels; the text goes to the log", () => {
  assert.equal(deadLetterReason("max attempts (5) reached"), "max_attempts");
  assert.equal(deadLetterReason("bad_message: field 'x'"), "bad_message");
  assert.equal(deadLetterReason("customer 42 is blocked"), "term");

  const logs: LogRecord[] = [];
  const metrics = createMetrics("plexus_");
  const report = transportTelemetry("t", {
    metrics,
    log: createLogger({ sinks: [(r) => logs.push(r)] }),
  });
  for (let i = 0; i < 50; i++) {
    report.deadLettered({
      topic: "orders",
      messageId: `m${i}`,
      reason: `customer ${i} is blocked`,
      attempts: 1,
    });
  }
  const series = metrics.render().split("\n").filter((l) =>
    l.startsWith("plexus_transport_dead_lettered_total{")
  );
  assert.deepEqual(series, [
    'plexus_transport_dead_lettered_total{reason="term",topic="orders",transport="t"} 50',
  ]);
  assert.equal(logs.length, 50);
  assert.equal(logs[7].reason, "customer 7 is blocked");
  assert.equal(logs[7].level, "warn");
});

Deno.test("telemetry: without a log or metrics nothing is reported and nothing throws", () => {
  const report = transportTelemetry("t");
  report.handlerFailed({
    topic: "a",
    messageId: "m",
    attempt: 1,
    error: new Error("x"),
  });
  report.deadLettered({ topic: "a", messageId: "m", reason: "x", attempts: 1 });
});
