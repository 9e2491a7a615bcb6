import assert from "node:assert/strict";
import { createEnvelope, type Envelope } from "./envelope.ts";
import { mulberry32 } from "./random.ts";
import {
  assertFits,
  boundWithoutPayload,
  envelopeBytes,
  envelopeBytesBound,
  TransportError,
} from "./transport.ts";

// Strings whose JSON and UTF-8 sizes differ from their length: quotes and
// backslashes (escaped), control characters (`\u0001`), a lone surrogate
// (escaped as `\udc00`), 2-, 3- and 4-byte UTF-8.
const PIECES = ["a", '"', "\\", "\u0001", "\n", "\udc00", "é", "€", "😀", "x"];

function randomString(next: () => number, max: number): string {
  let s = "";
  const n = Math.floor(next() * max);
  for (let i = 0; i < n; i++) s += PIECES[Math.floor(next() * PIECES.length)];
  return s;
}

function randomEnvelope(next: () => number): Envelope {
  const kind = Math.floor(next() * 5);
  const payload = kind === 0
    ? randomString(next, 400)
    : kind === 1
    ? next() * 1e300 * (next() < 0.5 ? -1 : 1)
    : kind === 2
    ? null
    : kind === 3
    ? { text: randomString(next, 100), n: [1, 2.5, -3e-7] }
    : undefined;
  const e = createEnvelope({
    type: "event",
    topic: "orders.created",
    source: randomString(next, 20) || "s",
    payload,
    headers: { [randomString(next, 8) || "h"]: randomString(next, 60) },
  });
  if (next() < 0.3) e.correlationId = randomString(next, 30);
  if (next() < 0.3) e.destination = ["agent:a", randomString(next, 10)];
  return e;
}

Deno.test("assertFits: accepts at exactly envelopeBytes and refuses a byte less, whichever path it takes (seeded)", () => {
  const next = mulberry32(20261207);
  let bounded = 0;
  for (let i = 0; i < 2_000; i++) {
    const e = randomEnvelope(next);
    const exact = envelopeBytes(e);
    const bound = envelopeBytesBound(e);
    if (bound !== undefined) {
      bounded++;
      assert.ok(
        bound >= exact,
        `bound ${bound} < ${exact} for ${JSON.stringify(e)}`,
      );
    }
    const rest = boundWithoutPayload(e);
    assert.ok(rest !== undefined);
    assert.ok(
      rest >= envelopeBytes({ ...e, payload: undefined }),
      "the bound without payload is below the bytes without payload",
    );
    // Limits that put each path on the edge: the bound, the JSON's
    // 3-bytes-a-unit bound, and the exact size.
    for (const limit of [exact, bound ?? exact, JSON.stringify(e).length * 3]) {
      if (limit >= exact) assertFits(e, limit);
    }
    assert.throws(
      () => assertFits(e, exact - 1),
      (err) =>
        err instanceof TransportError && err.code === "too_large" &&
        JSON.stringify(err.data) ===
          JSON.stringify({ bytes: exact, limit: exact - 1 }),
    );
  }
  // Each piece alone at length: the payload's bound carries the envelope
  // (the rest's slack is small beside it).
  for (const piece of PIECES) {
    const e = createEnvelope({
      type: "event",
      topic: "t",
      source: "s",
      payload: piece.repeat(5_000),
    });
    // And in the fields around it.
    const around = createEnvelope({
      type: "event",
      topic: "t",
      source: piece.repeat(200),
      payload: null,
      headers: { h: piece.repeat(5_000) },
    });
    for (const x of [e, around]) {
      const exact = envelopeBytes(x);
      assert.ok(envelopeBytesBound(x)! >= exact, `bound below ${exact}`);
      assertFits(x, exact);
      assert.throws(() => assertFits(x, exact - 1), TransportError);
    }
  }
  assert.ok(bounded > 1_000, `only ${bounded} envelopes were bounded`);
});

Deno.test("envelopeBytesBound: undefined for what it does not count, and assertFits still exact there", () => {
  const base = createEnvelope({
    type: "event",
    topic: "t",
    source: "s",
    payload: null,
  });
  assert.equal(envelopeBytesBound({ ...base, payload: { a: 1 } }), undefined);
  assert.equal(envelopeBytesBound({ ...base, payload: [1] }), undefined);
  const dated = { ...base, headers: new Date(0) } as unknown as Envelope;
  assert.equal(envelopeBytesBound(dated), undefined);
  const object = { ...base, payload: { text: "é".repeat(100) } };
  assertFits(object, envelopeBytes(object));
  assert.throws(
    () => assertFits(object, envelopeBytes(object) - 1),
    TransportError,
  );
  // What JSON cannot serialise still throws as JSON.stringify does.
  assert.throws(
    () => assertFits({ ...base, payload: 1n }, 1_000_000),
    TypeError,
  );
});
