import assert from "node:assert/strict";
import {
  aeadOpen,
  aeadSeal,
  chacha20,
  deriveKeyPair,
  generateKeyPair,
  HpkeError,
  importPrivateKey,
  open,
  seal,
  setupBaseR,
  setupBaseS,
} from "./hpke.ts";

interface Vector {
  info: string;
  ikmE: string;
  pkEm: string;
  skEm: string;
  ikmR: string;
  pkRm: string;
  skRm: string;
  enc: string;
  encryptions: { seq: number; pt: string; aad: string; ct: string }[];
  exports: { exporter_context: string; L: number; exported_value: string }[];
}

const v: Vector = JSON.parse(
  await Deno.readTextFile(
    new URL("./testdata/rfc9180_a2_1.json", import.meta.url),
  ),
);
const hex = (s: string) => Uint8Array.fromHex(s);
const text = new TextEncoder();

Deno.test("hpke: DeriveKeyPair gives the RFC 9180 A.2.1 key pairs", async () => {
  const e = await deriveKeyPair(hex(v.ikmE));
  assert.equal(e.secretKey.toHex(), v.skEm);
  assert.equal(e.publicKey.toHex(), v.pkEm);
  const r = await deriveKeyPair(hex(v.ikmR));
  assert.equal(r.secretKey.toHex(), v.skRm);
  assert.equal(r.publicKey.toHex(), v.pkRm);
});

Deno.test("hpke: the sender's context with the vector's ephemeral key seals every A.2.1 ciphertext and export", async () => {
  // The key, base_nonce and exporter_secret of the vector are not exposed;
  // any of them wrong changes these ciphertexts and exported values.
  const ephemeral = await importPrivateKey(hex(v.skEm));
  const { enc, context } = await setupBaseS(hex(v.pkRm), hex(v.info), {
    ephemeral,
  });
  assert.equal(enc.toHex(), v.enc);
  const bySeq = new Map(v.encryptions.map((e) => [e.seq, e]));
  for (let seq = 0; seq <= 255; seq++) {
    const want = bySeq.get(seq);
    const aad = want ? hex(want.aad) : text.encode(`Count-${seq}`);
    const ct = context.seal(hex(v.encryptions[0].pt), aad);
    if (want) assert.equal(ct.toHex(), want.ct, `seq ${seq}`);
  }
  for (const x of v.exports) {
    assert.equal(
      context.export(hex(x.exporter_context), x.L).toHex(),
      x.exported_value,
    );
  }
});

Deno.test("hpke: the recipient's context opens the A.2.1 ciphertexts in order and exports the same values", async () => {
  const r = await importPrivateKey(hex(v.skRm));
  assert.equal(r.publicKey.toHex(), v.pkRm);
  const context = await setupBaseR(hex(v.enc), r, hex(v.info));
  const [c0, c1, c2] = v.encryptions;
  for (const c of [c0, c1, c2]) {
    assert.equal(context.open(hex(c.ct), hex(c.aad)).toHex(), c.pt);
  }
  // A ciphertext out of sequence does not open.
  assert.throws(() => context.open(hex(c0.ct), hex(c0.aad)), HpkeError);
  for (const x of v.exports) {
    assert.equal(
      context.export(hex(x.exporter_context), x.L).toHex(),
      x.exported_value,
    );
  }
});

Deno.test("hpke: single-shot open refuses a wrong key, info, aad, enc or a flipped bit", async () => {
  const r = await generateKeyPair();
  const other = await generateKeyPair();
  const info = text.encode("plexus test");
  const aad = text.encode("header");
  const pt = text.encode("secret order 42");
  const { enc, ct } = await seal(r.publicKey, info, aad, pt);
  assert.deepEqual(await open(r, enc, info, aad, ct), pt);
  await assert.rejects(() => open(other, enc, info, aad, ct), HpkeError);
  await assert.rejects(
    () => open(r, enc, text.encode("other"), aad, ct),
    HpkeError,
  );
  await assert.rejects(
    () => open(r, enc, info, text.encode("headeR"), ct),
    HpkeError,
  );
  await assert.rejects(
    () => open(r, other.publicKey, info, aad, ct),
    HpkeError,
  );
  const flipped = ct.slice();
  flipped[3] ^= 1;
  await assert.rejects(() => open(r, enc, info, aad, flipped), HpkeError);
});

Deno.test("hpke: a small-order public key is refused, not turned into an all-zero secret", async () => {
  const zero = new Uint8Array(32); // the identity point's u-coordinate
  await assert.rejects(
    () => seal(zero, new Uint8Array(), new Uint8Array(), new Uint8Array()),
    HpkeError,
  );
  await assert.rejects(
    () =>
      seal(
        new Uint8Array(31),
        new Uint8Array(),
        new Uint8Array(),
        new Uint8Array(),
      ),
    /32 bytes, got 31/,
  );
});

Deno.test("hpke: aeadOpen refuses a short or altered ciphertext", () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  const nonce = new Uint8Array(12);
  const ct = aeadSeal(key, nonce, text.encode("a"), text.encode("xyz"));
  assert.equal(ct.length, 3 + 16);
  assert.throws(() => aeadOpen(key, nonce, text.encode("b"), ct), HpkeError);
  assert.throws(
    () => aeadOpen(key, nonce, text.encode("a"), ct.subarray(0, 15)),
    HpkeError,
  );
});

Deno.test("hpke: chacha20 gives the RFC 8439 §2.4.2 ciphertext, and a later counter is the same key stream further on", () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  const nonce = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0x4a, 0, 0, 0, 0]);
  const plain = new TextEncoder().encode(
    "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
  );
  const ct = chacha20(key, nonce, 1, plain);
  assert.equal(
    ct.toHex(),
    "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b" +
      "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8" +
      "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736" +
      "5af90bbf74a35be6b40b8eedf2785e42874d",
  );
  // Block 2 on its own is bytes 64.. of the stream from block 1.
  assert.deepEqual(
    chacha20(key, nonce, 2, plain.subarray(64)),
    ct.subarray(64),
  );
  assert.deepEqual(chacha20(key, nonce, 1, ct), plain);
});
