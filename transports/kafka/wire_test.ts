import assert from "node:assert/strict";
import { createEnvelope, envelopeSchema } from "../../core/envelope.ts";
import { TransportError } from "../../core/transport.ts";
import {
  checkGroup,
  checkTopic,
  deadLetterHeaders,
  decodeDeadLetter,
  decodeRecord,
  encodeRecord,
  type FetchedRecord,
  H,
} from "./wire.ts";

const enc = new TextEncoder();

function fetched(
  r: { key: string | null; value: string; headers: Record<string, string> },
  offset = "5",
): FetchedRecord {
  return {
    key: r.key === null ? null : enc.encode(r.key),
    value: enc.encode(r.value),
    headers: Object.fromEntries(
      Object.entries(r.headers).map(([k, v]) => [k, enc.encode(v)]),
    ),
    timestamp: 1_700_000_000_000,
    partition: 2,
    offset,
  };
}

Deno.test("kafka wire: an envelope survives encode and decode with its key", () => {
  const e = createEnvelope({
    type: "command",
    topic: "orders",
    source: "node-1",
    payload: { n: 1, s: "é" },
    headers: { trace: "t1" },
    destination: ["a"],
    correlationId: "c1",
    replyTo: "replies",
    ttlMs: 5000,
  });
  const r = encodeRecord(e, "customer-7");
  assert.equal(r.key, "customer-7");
  assert.equal(r.value, '{"n":1,"s":"é"}');
  const d = decodeRecord(fetched(r), "orders", "plexus.orders");
  assert.deepEqual(d.envelope, e);
  assert.equal(d.key, "customer-7");
  assert.equal(d.attempt, 1);
  assert.deepEqual(d.errors, []);
});

Deno.test("kafka wire: a bare console-produced value becomes an event with defaults", () => {
  const d = decodeRecord(
    fetched({ key: null, value: "plain text", headers: {} }),
    "orders",
    "plexus.orders",
  );
  assert.equal(d.envelope.payload, "plain text");
  assert.equal(d.envelope.type, "event");
  assert.equal(d.envelope.source, "kafka");
  assert.equal(d.envelope.id, "plexus.orders-2-5");
  assert.equal(d.envelope.timestamp, 1_700_000_000_000);
  assert.equal(d.key, undefined);
  const j = decodeRecord(
    fetched({ key: "k", value: '{"a":[1]}', headers: { [H.type]: "command" } }),
    "orders",
    "plexus.orders",
  );
  assert.deepEqual(j.envelope.payload, { a: [1] });
  assert.equal(j.envelope.type, "command");
});

Deno.test("kafka wire: a record with a malformed plexus header or bad UTF-8 is refused with the reason", () => {
  assert.throws(
    () =>
      decodeRecord(
        fetched({ key: null, value: "1", headers: { [H.delivery]: "{nope" } }),
        "t",
        "plexus.t",
      ),
    /plexus-delivery' is not JSON/,
  );
  assert.throws(
    () =>
      decodeRecord(
        fetched({ key: null, value: "1", headers: { [H.type]: "shout" } }),
        "t",
        "plexus.t",
      ),
    /not an envelope: type/,
  );
  assert.throws(
    () =>
      decodeRecord(
        {
          ...fetched({ key: null, value: "", headers: {} }),
          value: new Uint8Array([0xff, 0xfe]),
        },
        "t",
        "plexus.t",
      ),
    /value is not UTF-8/,
  );
});

Deno.test("kafka wire: a dead-lettered garbage record keeps its raw value, reason and history", () => {
  const raw = fetched({
    key: null,
    value: "garbage",
    headers: {
      [H.type]: "shout",
      ...deadLetterHeaders({
        reason: "bad_message: no",
        attempts: 2,
        errors: [{ at: 1, attempt: 1, error: "boom" }],
        group: "g",
        deadAt: 42,
        origin: "plexus.t/0/1",
      }),
    },
  });
  const l = decodeDeadLetter(raw, "t", "plexus._dlq.t");
  assert.equal(l.reason, "bad_message: no");
  assert.equal(l.attempts, 2);
  assert.equal(l.group, "g");
  assert.equal(l.deadAt, 42);
  assert.deepEqual(l.errors, [{ at: 1, attempt: 1, error: "boom" }]);
  assert.deepEqual((l.envelope.payload as { value: string }).value, "garbage");
});

Deno.test("kafka wire: topics and groups Kafka cannot name are refused as invalid_argument naming them", () => {
  checkTopic("orders.created-v2_x");
  for (const bad of ["orders created", "a..b", "ordres/é", "_internal", ""]) {
    assert.throws(
      () => checkTopic(bad),
      (e) =>
        e instanceof TransportError && e.code === "invalid_argument" &&
        (bad === "" || e.message.includes(bad)),
      bad,
    );
  }
  assert.throws(() => checkTopic("x".repeat(240)), /too long/);
  checkGroup("billing-1");
  assert.throws(() => checkGroup("a.b"), /group 'a.b'/);
});

Deno.test("kafka wire: the hand-checked common envelope equals what the schema makes, and odd ones still meet the schema", () => {
  const base = createEnvelope({
    type: "event",
    topic: "t",
    source: "s",
    payload: [1, "two"],
  });
  const variants = [
    base,
    { ...base, priority: 0, headers: { a: "b" } },
    {
      ...base,
      delivery: { ...base.delivery, persistent: true, maxAttempts: 1000 },
    },
    { ...base, ttlMs: 10, correlationId: "c" },
  ];
  for (const e of variants) {
    const d = decodeRecord(fetched(encodeRecord(e)), "t", "plexus.t").envelope;
    assert.deepEqual(d, envelopeSchema.parse(e));
  }
  const r = encodeRecord(base);
  for (
    const [name, bad, why] of [
      [H.priority, "10", /priority/],
      [H.timestamp, "-1", /timestamp/],
      [H.delivery, '{"maxAttempts":0}', /delivery/],
      [H.headers, '{"a":1}', /headers/],
      [H.id, "", /id/],
    ] as const
  ) {
    assert.throws(
      () =>
        decodeRecord(
          fetched({ ...r, headers: { ...r.headers, [name]: bad } }),
          "t",
          "plexus.t",
        ),
      why,
    );
  }
});

Deno.test("kafka wire: a record over the limit is refused, counting its value and member headers; one Plexus published at the limit passes", () => {
  const e = createEnvelope({
    type: "event",
    topic: "orders",
    source: "s",
    payload: "é".repeat(100),
    headers: { trace: "t1" },
  });
  const exact = new TextEncoder().encode(JSON.stringify(e)).length;
  const r = fetched(encodeRecord(e, "a-long-key-that-is-not-counted"));
  assert.equal(
    decodeRecord(r, "orders", "plexus.orders", exact).envelope.id,
    e.id,
  );
  assert.throws(
    () => decodeRecord(r, "orders", "plexus.orders", 200),
    /^Error: record plexus\.orders\/2@5 is \d+ bytes; the limit is 200 bytes$/,
  );
  // Headers that are not envelope members (a retry's history) do not count.
  const retried = {
    ...r,
    headers: {
      ...r.headers,
      [H.errors]: enc.encode(JSON.stringify(["x".repeat(5000)])),
    },
  };
  assert.equal(
    decodeRecord(retried, "orders", "plexus.orders", exact).envelope.id,
    e.id,
  );
});
