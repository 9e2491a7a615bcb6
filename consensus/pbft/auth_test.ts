import assert from "node:assert/strict";
import { ed25519 } from "@noble/curves/ed25519.js";
import { createPbftAuth, hmacSha256 } from "./auth.ts";

function three() {
  const keys = new Map(
    ["a", "b", "c"].map((id) => [id, ed25519.utils.randomSecretKey()]),
  );
  const publicKeys = new Map(
    [...keys].map(([id, k]) => [id, ed25519.getPublicKey(k)]),
  );
  const auth = (id: string) =>
    createPbftAuth({ id, privateKey: keys.get(id)!, publicKeys });
  return { a: auth("a"), b: auth("b"), c: auth("c") };
}

Deno.test("pbft auth: only the two ends of a link can make its MAC", () => {
  const { a, b, c } = three();
  const m = a.mac("b", "prepare 1");
  assert.equal(b.checkMac("a", "prepare 1", m), true);
  assert.equal(b.checkMac("a", "prepare 2", m), false);
  // c cannot compute a->b's key: its own MAC to b does not pass as a's.
  assert.equal(b.checkMac("a", "prepare 1", c.mac("b", "prepare 1")), false);
  // The key is per pair: a's MAC for c is not valid on the a->b link.
  assert.equal(b.checkMac("a", "prepare 1", a.mac("c", "prepare 1")), false);
  assert.equal(b.checkMac("zz", "prepare 1", m), false);
});

Deno.test("pbft auth: a signature verifies under its signer's key only", () => {
  const { a, b, c } = three();
  const sig = a.sign("view-change 3");
  assert.equal(c.verify("a", "view-change 3", sig), true);
  assert.equal(c.verify("b", "view-change 3", sig), false);
  assert.equal(c.verify("a", "view-change 4", sig), false);
  assert.equal(b.verify("a", "view-change 3", "not-base64!"), false);
  assert.equal(a.digest("x"), b.digest("x"));
  assert.notEqual(a.digest("x"), a.digest("y"));
});

Deno.test("pbft auth: a private key that does not match the member list is refused", () => {
  const k = ed25519.utils.randomSecretKey();
  const other = ed25519.utils.randomSecretKey();
  assert.throws(
    () =>
      createPbftAuth({
        id: "a",
        privateKey: k,
        publicKeys: new Map([["a", ed25519.getPublicKey(other)]]),
      }),
    /private key of replica 'a' does not match its public key/,
  );
});

Deno.test("pbft auth: the link MAC is HMAC-SHA256 (RFC 4231 test cases 1 and 2)", () => {
  const hex = (b64url: string) =>
    [...atob(b64url.replaceAll("-", "+").replaceAll("_", "/"))]
      .map((c) => c.charCodeAt(0).toString(16).padStart(2, "0")).join("");
  const one = hmacSha256(new Uint8Array(20).fill(0x0b));
  assert.equal(
    hex(one("Hi There")),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  );
  const two = hmacSha256(new TextEncoder().encode("Jefe"));
  // Twice: each MAC starts again from the keyed states.
  for (let i = 0; i < 2; i++) {
    assert.equal(
      hex(two("what do ya want for nothing?")),
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
  }
  assert.throws(() => hmacSha256(new Uint8Array(65)), /at most 64 bytes/);
});
