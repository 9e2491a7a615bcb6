import assert from "node:assert/strict";
import { digestKey, DigestSet } from "./sealed_digests.ts";

function digest(fill: number, last = 0): Uint8Array {
  const d = new Uint8Array(32).fill(fill);
  d[31] = last;
  return d;
}

Deno.test("sealed digests: a digest sharing another's key is not taken for it", () => {
  const known = new DigestSet(64);
  const a = digest(9, 1);
  const b = digest(9, 2); // same first 30 bits, other bytes
  assert.equal(digestKey(a), digestKey(b));
  known.add(a);
  assert.equal(known.has(a), true);
  assert.equal(known.has(b), false);
  // The newer one replaces the older under the shared key: never both
  // answered from one slot.
  known.add(b);
  assert.equal(known.has(b), true);
  assert.equal(known.has(a), false);
});

Deno.test("sealed digests: a digest is copied when added, so a view into a reused buffer does not change what is kept", () => {
  const known = new DigestSet(64);
  const buffer = new Uint8Array(64).fill(3);
  const view = buffer.subarray(16, 48);
  known.add(view);
  buffer.fill(4);
  assert.equal(known.has(new Uint8Array(32).fill(3)), true);
  assert.equal(known.has(view), false);
});

Deno.test("sealed digests: the newest max/2 are kept, older ones go a generation at a time", () => {
  const known = new DigestSet(8);
  const ds = Array.from({ length: 13 }, (_, i) => digest(i + 1, i));
  for (const d of ds) known.add(d);
  // Generations of 4: [8..11] full, then [12] started; [0..7] dropped.
  assert.deepEqual(ds.map((d) => known.has(d)), [
    ...Array(8).fill(false),
    ...Array(5).fill(true),
  ]);
  // Adding one already kept takes no slot.
  known.add(ds[12]);
  known.add(digest(100));
  known.add(digest(101));
  known.add(digest(102));
  assert.equal(known.has(ds[8]), true);
});
