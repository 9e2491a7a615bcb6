import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { merkleNode, sha256 } from "./sealed_sha256.ts";

const text = (s: string) => new TextEncoder().encode(s);
const native = (b: Uint8Array) =>
  new Uint8Array(createHash("sha256").update(b).digest()).toHex();

Deno.test("sha256: the FIPS 180-4 example vectors", () => {
  const vectors: [Uint8Array, string][] = [
    [
      text(""),
      "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ],
    [
      text("abc"),
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ],
    [
      text("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ],
    [
      text(
        "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
      ),
      "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
    ],
    [
      new Uint8Array(1_000_000).fill(0x61),
      "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    ],
  ];
  for (const [input, want] of vectors) {
    assert.deepEqual(sha256(input).toHex(), want);
  }
});

Deno.test("sha256: every length 0-300 and some larger agree with node:crypto", () => {
  const lengths = [...Array(301).keys(), 1000, 1200, 4096, 65_536];
  for (const n of lengths) {
    const input = crypto.getRandomValues(new Uint8Array(n));
    assert.deepEqual(sha256(input).toHex(), native(input), `length ${n}`);
  }
});

Deno.test("merkleNode: SHA-256 of 0x01, left and right; each digest a new array", () => {
  for (let i = 0; i < 200; i++) {
    const left = crypto.getRandomValues(new Uint8Array(32));
    const right = crypto.getRandomValues(new Uint8Array(32));
    const input = new Uint8Array(65);
    input[0] = 1;
    input.set(left, 1);
    input.set(right, 33);
    const d = merkleNode(left, right);
    assert.deepEqual(d.toHex(), native(input));
    // Not a view of a reused buffer: the next node leaves it alone.
    const copy = d.slice();
    merkleNode(right, left);
    assert.deepEqual(d, copy);
  }
});
