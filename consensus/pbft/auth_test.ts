import assert from "node:assert/strict";
import { ed25519 } from "@noble/curves/ed25519.js";
import { createPbftAuth } from "./auth.ts";

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
