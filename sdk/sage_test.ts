import assert from "node:assert/strict";
import { generateAgentKey } from "./keys.ts";
import {
  decodeHopProof,
  encodeHopProof,
  hopBatch,
  hopLeaf,
  hopProofRoot,
  hopSignedBytes,
  SAGE_BATCH_MAX,
  signHop,
  verifyHop,
} from "./sage.ts";

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

Deno.test("sage: batch proofs round-trip, and hopBatch and decodeHopProof keep to 2..SAGE_BATCH_MAX answers", () => {
  const hops = Array.from({ length: 5 }, (_, i) => ({
    requestId: "r",
    hop: i,
    content: `a${i}`,
  }));
  const { root, proofs } = hopBatch(hops);
  for (const [i, proof] of proofs.entries()) {
    const p = decodeHopProof(proof)!;
    assert.equal(p.m, 5);
    assert.equal(p.i, i);
    assert.equal(encodeHopProof(p), proof);
    assert.equal(hopProofRoot(hops[i], p).toHex(), root.toHex());
  }
  assert.throws(() => hopBatch(hops.slice(0, 1)), RangeError);
  const tooMany = Array.from({ length: SAGE_BATCH_MAX + 1 }, () => hops[0]);
  assert.throws(() => hopBatch(tooMany), RangeError);
  const p = decodeHopProof(proofs[0])!;
  assert.equal(
    decodeHopProof(encodeHopProof({ ...p, m: SAGE_BATCH_MAX + 1 })),
    undefined,
  );
  assert.throws(() => hopLeaf({ ...hops[0], hop: -1 }), RangeError);
});
