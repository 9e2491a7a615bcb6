import assert from "node:assert/strict";
import { generateAgentKey } from "./keys.ts";
import { hopSignedBytes, signHop, verifyHop } from "./sage.ts";

Deno.test("sage: a hop signature binds request id, hop and content", async () => {
  const key = await generateAgentKey();
  const seed = Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" });
  const pub = Uint8Array.fromBase64(key.publicKey, { alphabet: "base64url" });
  const hop = { requestId: "r1", hop: 1, content: "plan" };
  const sig = await signHop(seed, hop);
  assert.equal(await verifyHop(pub, hop, sig), true);
  assert.equal(await verifyHop(pub, { ...hop, requestId: "r2" }, sig), false);
  assert.equal(await verifyHop(pub, { ...hop, hop: 2 }, sig), false);
  assert.equal(await verifyHop(pub, { ...hop, content: "plan!" }, sig), false);
  const other = await generateAgentKey();
  const otherPub = Uint8Array.fromBase64(other.publicKey, {
    alphabet: "base64url",
  });
  assert.equal(await verifyHop(otherPub, hop, sig), false);
  assert.equal(await verifyHop(pub, hop, sig.slice(0, -2)), false);
  await assert.rejects(hopSignedBytes({ ...hop, hop: -1 }), RangeError);
});
