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

/** A transport under test, and how another client writes raw bytes to it. */
export interface GarbageTarget extends Omit<TelemetryTarget, "timeoutMs"> {
  /**
   * Writes `body` as another client would (the broker's own tool where it is
   * installed): on `topic`'s plain subject or queue, or, with `keyed`, as a
   * message with key `k1` (on its partition) — `index` counts the bad bodies.
   */
  write(
    topic: string,
    body: Uint8Array | string,
    keyed?: { key: string; index: number },
  ): Promise<void>;
  /** What the dead-letter log names as the message id, when it has none. */
  messageId?: RegExp;
}

/**
 * Garbage written by another client — bad JSON, missing fields, wrong types,
 * non-UTF-8, oversize (the transport must be configured with
 * `maxMessageBytes: 100_000` and 4 partitions) — is dead-lettered with a
 * reason naming the fault, counted and logged, and never stalls the topic or
 * the key's partition: each bad message is followed by good ones, which
 * arrive.
 */
export async function checkGarbage(target: GarbageTarget): Promise<void> {
  const { transport, name, logs, metrics } = target;
  const topic = `garbage.t${crypto.randomUUID().slice(0, 8)}`;
  const got: string[] = [];
  await transport.subscribe(topic, async (d) => {
    got.push(d.envelope.id);
    await d.ack();
  }, { group: "g" });
  const good = (n: number) =>
    createEnvelope({ type: "event", topic, source: "raw", payload: { n } });
  const garbage: (Uint8Array | string)[] = [
    '{"id": "x", "type": ', // bad JSON
    JSON.stringify({ payload: 1 }), // missing fields
    JSON.stringify({ ...good(0), timestamp: "yesterday", priority: "hi" }),
    new Uint8Array([0x7b, 0xff, 0xfe, 0x22, 0x7d]), // not UTF-8
    JSON.stringify({ ...good(0), payload: "x".repeat(100_001) }), // oversize
  ];
  const expected: string[] = [];
  for (const [index, body] of garbage.entries()) {
    // Each bad message is followed by a good one, on the topic and on a key's partition.
    await target.write(topic, body);
    await target.write(topic, body, { key: "k1", index });
    const e1 = good(index + 1);
    const e2 = good(index + 100);
    await transport.publish(topic, e1);
    await transport.publish(topic, e2, { key: "k1" });
    expected.push(e1.id, e2.id);
  }
  await waitFor(
    `the ${expected.length} good messages`,
    () => got.length >= expected.length,
    10_000,
  );
  assert.deepEqual(got.sort(), expected.sort());
  const bad = garbage.length * 2;
  await waitFor(
    `${bad} bad messages counted`,
    () =>
      sample(metrics, "plexus_transport_dead_lettered_total", {
        transport: name,
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
  const logged = logs.filter((r) =>
    r.msg === "message dead-lettered" && r.topic === topic
  );
  assert.equal(logged.length, bad);
  if (target.messageId) {
    assert.match(String(logged[0].messageId), target.messageId);
  }
  assert.ok(
    metrics.render().includes(
      `plexus_transport_dead_lettered_total{reason="bad_message",topic="${topic}",transport="${name}"} ${bad}`,
    ),
    "/metrics shows the count",
  );
}
