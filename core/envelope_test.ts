import assert from "node:assert/strict";
import {
  createEnvelope,
  envelopeSchema,
  parseEnvelope,
  safeParseEnvelope,
} from "./envelope.ts";
import { mulberry32 } from "./random.ts";

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

/** Inputs near every rule of the schema: valid ones, and each way to break one. */
function randomInput(r: () => number): unknown {
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const str = (n: number) => "x".repeat(n);
  const strings = [
    "",
    "a",
    str(128),
    str(129),
    str(256),
    str(257),
    str(512),
    str(513),
  ];
  const numbers = [
    0,
    -0,
    1,
    -1,
    1.5,
    9,
    10,
    1000,
    1001,
    2 ** 53 - 1,
    2 ** 53,
    NaN,
    Infinity,
    "1",
    null,
  ];
  const anything = [undefined, null, true, "s", 1, [], {}, ["a"], { a: 1 }];
  const maybe = (make: () => unknown, other: unknown[] = anything) => {
    const x = r();
    return x < 0.6 ? make() : x < 0.97 ? "<absent>" : pick(other);
  };
  const fields: Record<string, unknown> = {
    id: r() < 0.9 ? pick(["m-1", str(128)]) : pick(strings),
    type: r() < 0.9 ? pick(["event", "request", "notification"]) : pick([
      "Event",
      "",
      1,
    ]),
    topic: r() < 0.9 ? "orders.eu" : pick(strings),
    source: r() < 0.9 ? "node-1" : pick(strings),
    timestamp: r() < 0.85 ? 1_700_000_000_000 : pick(numbers),
    payload: r() < 0.97
      ? pick([{ a: [1] }, "text", 0, null, undefined])
      : "<absent>",
    destination: maybe(() =>
      pick([
        [],
        ["a", "b"],
        ["a"],
        [""],
        [str(256)],
        [str(257)],
        Array(1025).fill("a"),
        [1],
        // deno-lint-ignore no-sparse-arrays
        [, "a"],
      ])
    ),
    correlationId: maybe(() => pick(["c", "", str(128), str(129)])),
    replyTo: maybe(() => pick(["r", "", str(512), str(513)])),
    priority: maybe(() => r() < 0.8 ? pick([0, 4, 9]) : pick(numbers)),
    ttlMs: maybe(() => r() < 0.8 ? pick([1, 60_000]) : pick(numbers)),
    headers: maybe(() =>
      pick([
        {},
        { b: "1", a: "2", "10": "x", "2": "y" },
        { h: "" },
        { a: 1 },
        JSON.parse('{"__proto__":"x"}'),
        Object.create({ inherited: "1" }),
        new Map(),
      ])
    ),
    delivery: maybe(() => {
      const d: Record<string, unknown> = {};
      const set = (k: string, good: unknown[], bad: unknown[]) => {
        const x = r();
        if (x < 0.6) d[k] = pick(good);
        else if (x < 0.66) d[k] = pick(bad);
        else if (x < 0.9) d[k] = undefined;
      };
      set("guarantee", ["at-most-once", "exactly-once"], ["once", null]);
      set("maxAttempts", [1, 5, 1000], [0, 1001, 2.5, null]);
      set("backoff", ["none", "fixed"], ["linear", null]);
      set("timeoutMs", [1, 30_000], [0, -5, 1.5, null]);
      set("persistent", [true, false], [1, "true", null]);
      if (r() < 0.1) d.extra = 1;
      return d;
    }),
  };
  if (r() < 0.1) fields.extra = { any: "thing" };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== "<absent>") out[k] = v;
  const shape = r();
  if (shape < 0.03) return [out];
  if (shape < 0.06) return Object.assign(Object.create({ x: 1 }), out);
  if (shape < 0.08) return null;
  return out;
}

Deno.test("envelope: parseEnvelope and safeParseEnvelope give the schema's answer on every input (seeded)", () => {
  const r = mulberry32(20261207);
  let valid = 0;
  for (let n = 0; n < 20_000; n++) {
    const input = randomInput(r);
    const want = envelopeSchema.safeParse(input);
    const got = safeParseEnvelope(input);
    assert.equal(got.success, want.success, `case ${n}`);
    if (want.success) {
      valid++;
      assert.deepStrictEqual(got.data, want.data, `case ${n}`);
      // The same members in the same order, `undefined` ones included.
      assert.deepEqual(Object.keys(got.data!), Object.keys(want.data));
      assert.deepEqual(
        Object.keys(got.data!.delivery),
        Object.keys(want.data.delivery),
      );
      assert.deepEqual(
        Object.keys(got.data!.headers),
        Object.keys(want.data.headers),
      );
      assert.deepStrictEqual(parseEnvelope(input), want.data);
    } else {
      assert.deepEqual(got.error!.issues, want.error.issues, `case ${n}`);
      assert.throws(() => parseEnvelope(input));
    }
  }
  // Enough of both kinds were tried to mean something.
  assert.ok(valid > 2_000 && valid < 18_000, `${valid} valid`);
});

Deno.test("envelope: the hand check takes the envelopes transports decode (it is not the schema every time)", () => {
  const common = {
    id: "m-1",
    type: "event",
    topic: "orders.eu",
    source: "node-1",
    timestamp: 1_700_000_000_000,
    priority: 4,
    headers: { h: "1" },
    payload: { a: 1 },
    delivery: {
      guarantee: "at-least-once",
      maxAttempts: 3,
      backoff: "exponential",
      timeoutMs: 30_000,
      persistent: false,
    },
  };
  const parse = envelopeSchema.safeParse;
  let schemaCalls = 0;
  (envelopeSchema as { safeParse: unknown }).safeParse = (x: unknown) => {
    schemaCalls++;
    return parse.call(envelopeSchema, x);
  };
  try {
    const got = safeParseEnvelope(common);
    assert.ok(got.success);
    assert.notEqual(got.data.headers, common.headers);
    assert.equal(got.data.payload, common.payload);
    assert.equal(schemaCalls, 0);
    // Something unusual goes to the schema.
    safeParseEnvelope({ ...common, headers: { a: 1 } });
    assert.equal(schemaCalls, 1);
  } finally {
    (envelopeSchema as { safeParse: unknown }).safeParse = parse;
  }
});
