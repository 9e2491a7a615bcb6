/**
 * What every transport must report when a handler fails or a message is
 * dead-lettered (transports/_telemetry.ts), checked against a running
 * transport, its log records and its metrics registry.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import type { LogRecord } from "../../core/observe/logger.ts";
import type { MetricsRegistry } from "../../core/observe/metrics.ts";
import type { Transport } from "../../core/transport.ts";
import { waitFor } from "../../testing/conformance.ts";

/** Where the transport under test reports. */
export interface TelemetryTarget {
  transport: Transport;
  /** The transport's name in labels and logs. */
  name: string;
  logs: LogRecord[];
  metrics: MetricsRegistry;
  /** Longest wait for a retry and a dead letter. @default {20000} */
  timeoutMs?: number;
}

/** The value of one series, read from the Prometheus text. */
export function sample(
  metrics: MetricsRegistry,
  name: string,
  labels: Record<string, string>,
): number {
  const want = Object.entries(labels).sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}="${v}"`).join(",");
  const line = metrics.render().split("\n").find((l) =>
    l.startsWith(`${name}{${want}} `)
  );
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

/**
 * A handler that throws on every attempt: each failure is logged (warn:
 * topic, message id, attempt, error) and counted, and the dead letter after
 * `maxAttempts` is logged and counted with reason `max_attempts`. A handler
 * that naks and then terms is not a failure; its dead letter has reason
 * `term`.
 */
export async function checkTelemetry(target: TelemetryTarget): Promise<void> {
  const { transport, name, logs, metrics } = target;
  const timeoutMs = target.timeoutMs ?? 20_000;
  const run = crypto.randomUUID().slice(0, 8);

  const failing = `telemetry.fail.${run}`;
  await transport.subscribe(failing, (d) => {
    throw new Error(`boom ${d.attempts}`);
  }, { group: "tel" });
  const e = createEnvelope({
    type: "event",
    topic: failing,
    source: "test",
    payload: 1,
    delivery: { maxAttempts: 2, backoff: "none" },
  });
  await transport.publish(failing, e);
  const dead = { transport: name, topic: failing, reason: "max_attempts" };
  await waitFor(
    "the dead letter to be counted",
    () => sample(metrics, "plexus_transport_dead_lettered_total", dead) === 1,
    timeoutMs,
  );
  assert.equal(
    sample(metrics, "plexus_transport_handler_failures_total", {
      transport: name,
      topic: failing,
    }),
    2,
    "both failed attempts counted",
  );
  const failures = logs.filter((r) =>
    r.msg === "transport handler failed" && r.topic === failing
  );
  assert.deepEqual(
    failures.map((r) => ({
      level: r.level,
      transport: r.transport,
      messageId: r.messageId,
      attempt: r.attempt,
      error: (r.error as { message?: string })?.message,
    })),
    [1, 2].map((attempt) => ({
      level: "warn",
      transport: name,
      messageId: e.id,
      attempt,
      error: `boom ${attempt}`,
    })),
  );
  const deadLog = logs.find((r) =>
    r.msg === "message dead-lettered" && r.topic === failing
  );
  assert.equal(deadLog?.level, "warn");
  assert.equal(deadLog?.messageId, e.id);
  assert.equal(deadLog?.reason, "max attempts (2) reached");
  assert.equal(deadLog?.attempts, 2);

  const refused = `telemetry.term.${run}`;
  await transport.subscribe(refused, async (d) => {
    if (d.attempts === 1) await d.nak(10, "later");
    else await d.term("bad input");
  }, { group: "tel" });
  const t = createEnvelope({
    type: "event",
    topic: refused,
    source: "test",
    payload: 2,
  });
  await transport.publish(refused, t);
  await waitFor(
    "the term to be counted",
    () =>
      sample(metrics, "plexus_transport_dead_lettered_total", {
        transport: name,
        topic: refused,
        reason: "term",
      }) === 1,
    timeoutMs,
  );
  assert.equal(
    sample(metrics, "plexus_transport_handler_failures_total", {
      transport: name,
      topic: refused,
    }),
    0,
    "a nak or a term is the handler's decision, not a failure",
  );
  assert.equal(
    logs.find((r) => r.msg === "message dead-lettered" && r.topic === refused)
      ?.reason,
    "bad input",
  );
}
