import assert from "node:assert/strict";
import { createEnvelope, envelopeSchema } from "../../core/envelope.ts";
import { TransportError } from "../../core/transport.ts";
import { partitionOf as redisPartitionOf } from "../redis-streams/wire.ts";
import { natsConfig } from "./plugin.ts";
import { loadNatsDriver } from "./transport.ts";
import {
  checkTopic,
  consumerOf,
  deadLetterHeaders,
  decodeBody,
  decodeDeadLetter,
  dlqSubject,
  encodeBody,
  H,
  partitionOf,
  partitionSubject,
  streamOf,
  subjectOf,
} from "./wire.ts";

Deno.test("nats wire: subjects, streams and consumer names", () => {
  assert.equal(subjectOf("plexus.", "orders.created"), "plexus.orders.created");
  assert.equal(
    partitionSubject("plexus.", "orders.created", 3),
    "plexus.orders.created.~3",
  );
  assert.equal(dlqSubject("plexus.", "orders"), "plexus._dlq.orders");
  assert.equal(streamOf("plexus.", "orders.created"), "PLEXUS_orders");
  assert.equal(streamOf("plexus.", "orders"), "PLEXUS_orders");
  // Characters stream names refuse are replaced, and a hash keeps them apart.
  const a = streamOf("plexus.", "a/b.x");
  const b = streamOf("plexus.", "a_b.x");
  assert.match(a, /^PLEXUS_a_b_[0-9a-z]+$/);
  assert.equal(b, "PLEXUS_a_b");
  assert.notEqual(consumerOf("g", "t.a"), consumerOf("g", "t.b"));
  assert.match(consumerOf("billing team", "t"), /^billing_team_[0-9a-z]+$/);
  // The same partition as redis-streams, so one producer rule serves both.
  for (const key of ["customer-7", "é", ""]) {
    assert.equal(partitionOf(key, 8), redisPartitionOf(key, 8));
  }
});

Deno.test("nats wire: topics the layout reserves are refused", () => {
  checkTopic("orders.created");
  for (const bad of ["_dlq.x", "orders.~3", "a..b", "a b", "a.*"]) {
    assert.throws(
      () => checkTopic(bad),
      (e) => e instanceof TransportError && e.code === "invalid_argument",
      bad,
    );
  }
});

Deno.test("nats wire: the body is the envelope's JSON; garbage is refused saying why", () => {
  const e = createEnvelope({
    type: "event",
    topic: "t",
    source: "s",
    payload: { n: 1 },
  });
  const body = encodeBody(e);
  assert.deepEqual(decodeBody(body, 1e6, "m"), e);
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.throws(
    () => decodeBody(body, body.length - 1, "m 1"),
    /m 1 is \d+ bytes; the limit is/,
  );
  assert.throws(() => decodeBody(enc("{"), 1e6, "m"), /is not JSON/);
  assert.throws(
    () => decodeBody(new Uint8Array([0xff]), 1e6, "m"),
    /not UTF-8/,
  );
  assert.throws(
    () => decodeBody(enc(JSON.stringify({ ...e, type: "shout" })), 1e6, "m"),
    /not an envelope: type/,
  );
  assert.throws(() => decodeBody(enc("[]"), 1e6, "m"), /not an envelope/);
  // What the hand check passes on goes through the schema, as the schema says.
  const { priority: _, ...noPriority } = e;
  assert.equal(
    decodeBody(enc(JSON.stringify(noPriority)), 1e6, "m").priority,
    4,
  );
  const extra = JSON.stringify({ ...e, extra: 1 });
  const viaSchema = envelopeSchema.safeParse(JSON.parse(extra));
  if (viaSchema.success) {
    assert.deepEqual(decodeBody(enc(extra), 1e6, "m"), viaSchema.data);
  } else {assert.throws(() =>
      decodeBody(enc(extra), 1e6, "m"), /not an envelope/);}
  assert.throws(
    () =>
      decodeBody(enc(JSON.stringify({ ...e, headers: { a: 1 } })), 1e6, "m"),
    /not an envelope: headers/,
  );
});

Deno.test("nats wire: a dead letter round-trips through its headers, a bad body kept as text or base64", () => {
  const e = createEnvelope({
    type: "event",
    topic: "t",
    source: "s",
    payload: 1,
  });
  const headers = deadLetterHeaders({
    topic: "t",
    group: "g",
    reason: "boom\r\nline two",
    attempts: 3,
    errors: [{ at: 1, attempt: 1, error: "x".repeat(2000) }],
    deadAt: 42,
    origin: "PLEXUS_t:7",
  });
  assert.equal(headers[H.reason], "boom line two", "one header line");
  const get = (n: string) => headers[n];
  const l = decodeDeadLetter(encodeBody(e), get, "t", 99);
  assert.deepEqual(l.envelope, e);
  assert.equal(l.group, "g");
  assert.equal(l.attempts, 3);
  assert.equal(l.deadAt, 42);
  assert.equal(l.errors[0].error.length, 500, "long errors are cut");
  const bad = decodeDeadLetter(new Uint8Array([0xff, 0x00]), get, "t", 99);
  assert.equal(bad.envelope.id, "PLEXUS_t:7");
  assert.deepEqual(bad.envelope.payload, { data: "base64:/wA=" });
});

Deno.test("nats plugin: the config fills defaults and refuses unknown or malformed fields", () => {
  const c = natsConfig.parse({});
  assert.equal(c.mode, "jetstream");
  assert.equal(c.prefix, "plexus.");
  assert.equal(c.partitions, 8);
  assert.equal(
    natsConfig.parse({ servers: "nats://a:4222,nats://b:4222" }).servers,
    "nats://a:4222,nats://b:4222",
  );
  assert.equal(natsConfig.safeParse({ servers: "a:4222" }).success, false);
  assert.equal(natsConfig.safeParse({ prefix: "no dot" }).success, false);
  assert.equal(natsConfig.safeParse({ mode: "push" }).success, false);
  assert.equal(natsConfig.safeParse({ partitons: 3 }).success, false);
  assert.deepEqual(natsConfig.parse({ startFrom: { sequence: 5 } }).startFrom, {
    sequence: 5,
  });
  assert.ok(
    natsConfig.safeParse({ startFrom: { time: "2026-01-01T00:00:00Z" } })
      .success,
  );
  assert.equal(
    natsConfig.safeParse({ startFrom: { sequence: 0 } }).success,
    false,
  );
  assert.equal(
    natsConfig.safeParse({ startFrom: { time: "yesterday" } }).success,
    false,
  );
});

Deno.test("nats transport: a missing client library fails with the install hint", async () => {
  await assert.rejects(
    () =>
      loadNatsDriver(() =>
        Promise.reject(new TypeError("Relative import path not prefixed"))
      ),
    (e) =>
      e instanceof TransportError && e.code === "unavailable" &&
      /deno add npm:@nats-io\/transport-node@3\.4\.0 npm:@nats-io\/jetstream@3\.4\.0/
        .test(e.message),
  );
});
