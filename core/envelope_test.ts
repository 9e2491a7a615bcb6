import assert from "node:assert/strict";
import { createEnvelope, envelopeSchema } from "./envelope.ts";

Deno.test("envelope: defaults fill id, timestamp, priority, headers and delivery", () => {
  const e = createEnvelope({
    type: "event",
    topic: "agent.a1.heartbeat",
    source: "n1",
    payload: { up: true },
  });
  assert.match(e.id, /^[0-9a-f-]{36}$/);
  assert.ok(e.timestamp > 0);
  assert.equal(e.priority, 4);
  assert.deepEqual(e.headers, {});
  assert.deepEqual(e.delivery, {
    guarantee: "at-least-once",
    maxAttempts: 3,
    backoff: "exponential",
    timeoutMs: 30_000,
    persistent: false,
  });
});

Deno.test("envelope: out-of-range priority, unknown type and non-string headers are refused", () => {
  const base = {
    id: "1",
    type: "event",
    topic: "t",
    source: "s",
    timestamp: 1,
    payload: null,
  };
  assert.ok(envelopeSchema.safeParse(base).success);
  for (
    const bad of [
      { ...base, priority: 10 },
      { ...base, type: "gossip" },
      { ...base, headers: { a: 1 } },
      { ...base, delivery: { maxAttempts: 0 } },
      { ...base, topic: "" },
    ]
  ) {
    assert.equal(
      envelopeSchema.safeParse(bad).success,
      false,
      JSON.stringify(bad),
    );
  }
});
