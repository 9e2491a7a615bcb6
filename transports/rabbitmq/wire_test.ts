import assert from "node:assert/strict";
import { TransportError } from "../../core/transport.ts";
import {
  bindingOf,
  checkTopic,
  deadLetterHeaders,
  decodeDeadLetter,
  delayBucket,
  dlqQueue,
  groupQueue,
  keyedRoutingKey,
  topicOfKeyed,
} from "./wire.ts";

Deno.test("rabbitmq wire: '*' stays one word and '>' needs at least one (a bare '#' would match none)", () => {
  assert.equal(bindingOf("orders.*"), "orders.*");
  assert.equal(bindingOf("orders.>"), "orders.*.#");
  assert.equal(bindingOf(">"), "*.#");
  assert.equal(bindingOf("a.*.b.>"), "a.*.b.*.#");
});

Deno.test("rabbitmq wire: a keyed routing key carries its partition first and gives its topic back", () => {
  const rk = keyedRoutingKey("orders.created", 3);
  assert.equal(rk, "3.orders.created");
  assert.equal(topicOfKeyed(rk), "orders.created");
  assert.equal(keyedRoutingKey(bindingOf("orders.>"), 0), "0.orders.*.#");
});

Deno.test("rabbitmq wire: topics with a '#' segment, wildcards in a publish topic, or over 240 bytes are refused", () => {
  checkTopic("orders.>", true);
  for (
    const [topic, pattern, why] of [
      ["orders.#", true, /'#' is a topic exchange wildcard/],
      ["orders.*", false, /segment 2/],
      ["x".repeat(241), false, /241 bytes; the limit is 240/],
    ] as const
  ) {
    assert.throws(
      () => checkTopic(topic, pattern),
      (e) =>
        e instanceof TransportError && e.code === "invalid_argument" &&
        why.test(e.message),
    );
  }
});

Deno.test("rabbitmq wire: group queues differ when only the split between group and topic does", () => {
  const a = groupQueue("plexus", "g.a", "b");
  const b = groupQueue("plexus", "g", "a.b");
  assert.notEqual(a, b);
  assert.ok(a.startsWith("plexus.g.g.a.b."));
  assert.ok(
    groupQueue("plexus", "g".repeat(300), "t".repeat(240)).length < 255,
  );
  assert.ok(dlqQueue("plexus", "t".repeat(240)).length < 255);
  assert.equal(dlqQueue("plexus", "orders"), "plexus.dlq.orders");
});

Deno.test("rabbitmq wire: retry delays round up to two significant digits, never down", () => {
  assert.equal(delayBucket(0), 0);
  assert.equal(delayBucket(-5), 0);
  assert.equal(delayBucket(7.2), 8);
  assert.equal(delayBucket(300), 300);
  assert.equal(delayBucket(1234), 1300);
  assert.equal(delayBucket(999), 1000);
  for (const ms of [1, 55, 101, 4321, 99_999, 123_456]) {
    assert.ok(delayBucket(ms) >= ms, `${ms}`);
  }
  assert.equal(delayBucket(1e12), 7 * 24 * 3600 * 1000);
});

Deno.test("rabbitmq wire: a dead letter's headers read back, and a body that is not an envelope keeps its bytes", () => {
  const headers = deadLetterHeaders({
    topic: "orders.created",
    group: "billing",
    reason: "bad\r\ninput",
    attempts: 2,
    errors: [{ at: 1, attempt: 1, error: "x".repeat(900) }],
    deadAt: 1_700_000_000_000,
    origin: "plexus.g.billing.orders.created.abc",
  });
  assert.equal(headers["Plexus-Dlq-Reason"], "bad input");
  const l = decodeDeadLetter(
    new Uint8Array([0x7b, 0xff]),
    headers,
    "orders.*",
  );
  assert.equal(l.topic, "orders.created");
  assert.equal(l.group, "billing");
  assert.equal(l.attempts, 2);
  assert.equal(l.errors[0].error.length, 500);
  assert.equal(l.deadAt, 1_700_000_000_000);
  assert.deepEqual(l.envelope.payload, { data: "base64:e/8=" });
});
