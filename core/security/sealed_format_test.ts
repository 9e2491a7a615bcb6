import assert from "node:assert/strict";
import {
  COUNTER_BYTES,
  decodeSealed,
  encodeSealedHead,
  inspectSealed,
  pathDigest,
  pathLengthOf,
  proofBytes,
  SEALED_FORMAT,
  type SealedWrap,
  writeSealedCounters,
  writeSealedProof,
} from "./sealed_format.ts";

const B64 = { alphabet: "base64url", omitPadding: true } as const;
const fill = (n: number, v: number) => new Uint8Array(n).fill(v);

/** A payload: `pathLength` digests for message `i` of `m`. */
function payload(
  opts: { i?: number; m?: number; wraps?: SealedWrap[]; n?: number } = {},
) {
  const i = opts.i ?? 2, m = opts.m ?? 3;
  const wraps = opts.wraps ??
    [{ r: "node:b", enc: fill(32, 1), k: fill(48, 2) }, {
      r: "agent:did:key:z6Mk",
      enc: fill(32, 3),
      k: fill(48, 4),
    }];
  const head = encodeSealedHead("node:a", "orders.created", fill(16, 9), wraps);
  const ct = new TextEncoder().encode("ciphertext bytes");
  const path = Array.from(
    { length: pathLengthOf(i, m) },
    (_, k) => fill(32, 0x40 + k),
  );
  const out = new Uint8Array(
    head.length + COUNTER_BYTES + ct.length + proofBytes(path.length),
  );
  out.set(head);
  const ctAt = writeSealedCounters(out, head.length, opts.n ?? 7, 5, ct.length);
  out.set(ct, ctAt);
  const end = writeSealedProof(
    out,
    ctAt + ct.length,
    fill(64, 0xee),
    fill(32, 0xdd),
    m,
    i,
    path,
  );
  assert.equal(end, out.length);
  return { bytes: out, ct, ctAt };
}

Deno.test("sealed format: what is written decodes to the same fields, views into the bytes", () => {
  const { bytes, ct, ctAt } = payload();
  const p = decodeSealed(bytes);
  assert.equal(bytes[0], SEALED_FORMAT);
  assert.equal(p.from, "node:a");
  assert.equal(p.topic, "orders.created");
  assert.deepEqual(p.session, fill(16, 9));
  assert.deepEqual(p.wraps.map((w) => w.r), ["node:b", "agent:did:key:z6Mk"]);
  assert.deepEqual(p.wraps[1].enc, fill(32, 3));
  assert.deepEqual(p.wraps[1].k, fill(48, 4));
  assert.equal(p.n, 7);
  assert.equal(p.block, 5);
  assert.equal(p.ctAt, ctAt);
  assert.deepEqual(p.bytes.subarray(p.ctAt, p.ctEnd), ct);
  assert.deepEqual(p.sig, fill(64, 0xee));
  assert.deepEqual(p.root, fill(32, 0xdd));
  assert.deepEqual([p.i, p.m, p.pathLength], [2, 3, 1]);
  assert.deepEqual(pathDigest(p, 0), fill(32, 0x40));
  assert.equal(pathDigest(p, 1), undefined);
  const summary = inspectSealed(bytes.toBase64(B64));
  assert.deepEqual(summary, {
    format: 3,
    from: "node:a",
    topic: "orders.created",
    session: fill(16, 9).toBase64(B64),
    recipients: ["node:b", "agent:did:key:z6Mk"],
    n: 7,
    block: 5,
    ciphertext: { offset: ctAt, length: ct.length },
    batch: { index: 2, size: 3 },
  });
});

Deno.test("sealed format: a payload starting with a known head's bytes shares its decoded head; any other head is decoded afresh", () => {
  const first = decodeSealed(payload({ n: 1 }).bytes);
  const next = decodeSealed(payload({ n: 2, i: 0 }).bytes, [first]);
  assert.equal(next.head, first.head);
  assert.equal(next.wraps, first.wraps);
  assert.deepEqual([next.n, next.i, next.pathLength], [2, 0, 2]);
  // One byte of a wrapped key differs: the head is read from this payload.
  const wraps = [{ r: "node:b", enc: fill(32, 1), k: fill(48, 2) }, {
    r: "agent:did:key:z6Mk",
    enc: fill(32, 3),
    k: fill(48, 4),
  }];
  wraps[1].k[47] = 5;
  const other = decodeSealed(payload({ wraps }).bytes, [first]);
  assert.notEqual(other.head, first.head);
  assert.equal(other.wraps[1].k[47], 5);
  assert.equal(first.wraps[1].k[47], 4);
  // A head cut short (a payload that ends inside it) is not taken as known.
  const { bytes } = payload();
  assert.throws(
    () => decodeSealed(bytes.subarray(0, first.wrapsEnd - 1), [first]),
    /truncated: a wrapped key needs 48/,
  );
  // Errors after the head read the same with a known head.
  assert.throws(
    () => decodeSealed(bytes.subarray(0, bytes.length - 1), [first]),
    /truncated: the path needs 32/,
  );
  // The decoded head is a copy: the payload's bytes may be reused.
  const own = decodeSealed(bytes);
  bytes.fill(0);
  assert.deepEqual(own.session, fill(16, 9));
  assert.deepEqual(own.wraps[0].enc, fill(32, 1));
});

Deno.test("sealed format: a batch number up to 2^53 - 1 round-trips; ids may be UTF-8", () => {
  const big = Number.MAX_SAFE_INTEGER;
  const wraps = [{ r: "agent:café", enc: fill(32, 1), k: fill(48, 2) }];
  const p = decodeSealed(payload({ n: big, wraps }).bytes);
  assert.equal(p.n, big);
  assert.equal(p.wraps[0].r, "agent:café");
});

Deno.test("sealed format: the path length of each leaf is the digests it meets on the way up", () => {
  const cases: [number, number, number][] = [
    [0, 1, 0],
    [0, 2, 1],
    [0, 3, 2],
    [2, 3, 1],
    [63, 64, 6],
    [64, 65, 1],
    [4095, 4096, 12],
  ];
  for (const [i, m, want] of cases) {
    assert.equal(pathLengthOf(i, m), want, `${i} of ${m}`);
  }
});

Deno.test("sealed format: a payload that does not decode is a RangeError saying what is wrong", () => {
  const { bytes } = payload();
  const p = decodeSealed(bytes);
  const edit = (f: (b: Uint8Array) => Uint8Array | void) => {
    const b = bytes.slice();
    return f(b) ?? b;
  };
  const cases: [Uint8Array, RegExp][] = [
    [edit((b) => void (b[0] = 2)), /^format 2, not 3$/],
    [edit((b) => b.subarray(0, b.length - 1)), /^truncated: the path needs 32/],
    [edit((b) => b.subarray(0, 5)), /^truncated: the sender id needs 6/],
    [
      edit((b) => {
        const out = new Uint8Array(b.length + 1);
        out.set(b);
        return out;
      }),
      /^1 bytes after the batch proof$/,
    ],
    [edit((b) => void (b[1] = 0)), /^sender id is 0 bytes/],
    [
      edit((b) => void (b[2] = 0xff)),
      /^the sender id is not UTF-8$/,
    ],
    [
      edit((b) => {
        b[p.sessionAt + 16] = 0;
        b[p.sessionAt + 17] = 0;
      }),
      /^0 recipients, not 1-1024$/,
    ],
    [
      edit((b) => void (b[p.wrapsEnd] = 0x00, b[p.wrapsEnd + 1] = 0x20)),
      /^the batch number is above 2\^53$/,
    ],
    [
      edit((b) => void (b[p.ctEnd + 96 + 3] = 3)),
      /^message 3 of a batch of 3$/,
    ],
    [
      edit((b) => void (b[p.ctEnd + 96 + 4] = 2)),
      /^message 2 of a batch of 3 has a path of 2 digests, not 1$/,
    ],
  ];
  for (const [b, want] of cases) {
    assert.throws(() => decodeSealed(b), (err: Error) => {
      assert.ok(err instanceof RangeError, String(err));
      assert.match(err.message, want);
      return true;
    });
  }
  assert.throws(() => inspectSealed({ v: "2" }), /base64url string/);
});

Deno.test("sealed format: the writer refuses ids, topics and wraps it cannot encode", () => {
  const wrap = { r: "node:b", enc: fill(32, 1), k: fill(48, 2) };
  const s = fill(16, 0);
  assert.throws(
    () => encodeSealedHead("x".repeat(256), "t", s, [wrap]),
    /sender id '.*' is not 1-255 bytes/,
  );
  assert.throws(
    () => encodeSealedHead("node:a", "t", s, []),
    /0 recipients, not 1-1024/,
  );
  assert.throws(
    () => encodeSealedHead("node:a", "t", fill(8, 0), [wrap]),
    /session id is 8 bytes, not 16/,
  );
  assert.throws(
    () => encodeSealedHead("node:a", "t", s, [{ ...wrap, enc: fill(31, 0) }]),
    /the wrap of 'node:b' has a wrong enc or key size/,
  );
});
