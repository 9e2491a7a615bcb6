import assert from "node:assert/strict";
import { createPublicKey, verify } from "node:crypto";
import { generateAgentKey } from "../../sdk/keys.ts";
import { ed25519FromSeed } from "../../sdk/protocol/handshake.ts";
import {
  decodeHopProof,
  encodeHopProof,
  hopBatch,
  hopBatchBytes,
  hopSignedBytes,
  sageDigest,
  signHop,
  verifyHopProof,
} from "../../sdk/sage.ts";
import {
  checkHop,
  checkHopProof,
  HopChecker,
  hopDigest,
  hopKey,
} from "./hop_check.ts";
import { servedInProcess } from "./_served.ts";

const FIELDS = [
  { requestId: "r1", hop: 0, content: "Booked." },
  { requestId: '4f0c-é\u2028"q"', hop: 7, content: "ünïcødé 😀 \n\t\\" },
  { requestId: "", hop: 123456, content: "" },
];

async function agent() {
  const k = await generateAgentKey();
  return {
    seed: Uint8Array.fromBase64(k.privateKey, { alphabet: "base64url" }),
    key: hopKey(Uint8Array.fromBase64(k.publicKey, { alphabet: "base64url" })),
  };
}

Deno.test("hop check: the digest and signed bytes are the SDK's (what an agent signs verifies here)", async () => {
  const { seed, key } = await agent();
  for (const f of FIELDS) {
    assert.equal(hopDigest(f.content), await sageDigest(f.content));
    const signed = new TextDecoder().decode(await hopSignedBytes(f));
    assert.ok(signed.endsWith(hopDigest(f.content) + '"]'), signed);
    const got = checkHop(key, f, await signHop(seed, f));
    assert.deepEqual(got, { valid: true, digest: hopDigest(f.content) });
  }
});

Deno.test("hop check: another request, hop, answer or key fails; a malformed signature is false, not a throw", async () => {
  const { seed, key } = await agent();
  const other = await agent();
  const f = FIELDS[0];
  const sig = await signHop(seed, f);
  assert.equal(checkHop(key, { ...f, requestId: "r2" }, sig).valid, false);
  assert.equal(checkHop(key, { ...f, hop: 1 }, sig).valid, false);
  assert.equal(
    checkHop(key, { ...f, content: "Cancelled." }, sig).valid,
    false,
  );
  assert.equal(checkHop(other.key, f, sig).valid, false);
  const flipped = Uint8Array.fromBase64(sig, { alphabet: "base64url" });
  flipped[10] ^= 1;
  assert.equal(
    checkHop(key, f, flipped.toBase64({ alphabet: "base64url" })).valid,
    false,
  );
  for (const bad of ["", "!", "AAAA", sig.slice(0, 40)]) {
    assert.equal(checkHop(key, f, bad).valid, false, bad);
  }
  assert.equal(checkHop(key, { ...f, hop: -1 }, sig).valid, false);
  assert.throws(
    () => hopKey(new Uint8Array(33)),
    /32 bytes, the enrolled one is 33/,
  );
  assert.throws(
    () => hopKey(new Uint8Array(32).fill(7)),
    /not an Ed25519 public key/,
  );
});

Deno.test("hop check: servePrompts signs as signHop does, from a seed or a CryptoKey, and the node's check takes it", async () => {
  const k = await generateAgentKey();
  const seed = Uint8Array.fromBase64(k.privateKey, { alphabet: "base64url" });
  const key = hopKey(
    Uint8Array.fromBase64(k.publicKey, { alphabet: "base64url" }),
  );
  const { privateKey } = await ed25519FromSeed(seed);
  for (const signingKey of [seed, privateKey]) {
    const handler = await servedInProcess((hop) => `answer to ${hop.prompt}`, {
      key: signingKey,
    });
    for (const f of FIELDS) {
      const content = `answer to ${f.content}`;
      const answer = await handler({
        payload: {
          requestId: f.requestId,
          hop: f.hop,
          prompt: f.content,
          sage: true,
        },
      }) as { response: string; signature: string };
      assert.equal(answer.response, content);
      const fields = { ...f, content };
      assert.equal(answer.signature, await signHop(seed, fields));
      assert.equal(checkHop(key, fields, answer.signature).valid, true);
    }
  }
});

Deno.test("hop check: a small-order key, with which node:crypto verifies a forged signature, is refused", () => {
  // The all-zero encoding is a point of order 4: with it, the all-zero
  // signature verifies for any message.
  const zero = new Uint8Array(32);
  const taken = createPublicKey({
    key: {
      kty: "OKP",
      crv: "Ed25519",
      x: zero.toBase64({ alphabet: "base64url", omitPadding: true }),
    },
    format: "jwk",
  });
  const signed = new TextEncoder().encode("any message");
  assert.equal(verify(null, signed, taken, new Uint8Array(64)), true);
  assert.throws(() => hopKey(zero), TypeError);
  assert.throws(() => hopKey(zero), /small-order/);
});

Deno.test("hop check: HopChecker's synchronous and WebCrypto paths take a good signature and refuse bad ones alike", async () => {
  const { seed, key } = await agent();
  const other = await agent();
  for (const asyncAt of [Infinity, 0]) {
    const checks = new HopChecker(asyncAt);
    for (const f of FIELDS) {
      const sig = await signHop(seed, f);
      assert.deepEqual(await checks.check(key, f, sig), {
        valid: true,
        digest: hopDigest(f.content),
      });
      const flipped = Uint8Array.fromBase64(sig, { alphabet: "base64url" });
      flipped[10] ^= 1;
      for (
        const [k, g, s] of [
          [key, { ...f, content: f.content + "!" }, sig],
          [key, { ...f, hop: f.hop + 1 }, sig],
          [key, { ...f, requestId: f.requestId + "x" }, sig],
          [other.key, f, sig],
          [key, f, flipped.toBase64({ alphabet: "base64url" })],
          [key, f, "!"],
          [key, f, sig.slice(0, 40)],
          [key, { ...f, hop: -1 }, sig],
        ] as const
      ) {
        const got = await checks.check(k, g, s);
        assert.equal(got.valid, false, `${asyncAt}: ${JSON.stringify(g)}`);
      }
    }
    // Each check went the forced way.
    const n = FIELDS.length * 9;
    assert.deepEqual(
      checks.made,
      asyncAt === 0 ? { sync: 0, web: n } : { sync: n, web: 0 },
    );
  }
});

Deno.test("hop check: HopChecker goes to WebCrypto only once asyncAt SAGE hops are in flight", async () => {
  const { seed, key } = await agent();
  const f = FIELDS[0];
  const sig = await signHop(seed, f);
  const checks = new HopChecker(3);
  checks.begin();
  const one = checks.check(key, f, sig);
  assert.ok(!(one instanceof Promise), "one in flight: synchronous");
  assert.equal(one.valid, true);
  checks.begin();
  checks.begin();
  const three = checks.check(key, f, sig);
  assert.ok(three instanceof Promise, "three in flight: WebCrypto");
  assert.equal((await three).valid, true);
  assert.equal(
    (await checks.check(key, { ...f, content: "Cancelled." }, sig)).valid,
    false,
  );
  for (let i = 0; i < 3; i++) checks.end();
  assert.equal(checks.pending, 0);
  assert.deepEqual(checks.made, { sync: 1, web: 2 });
});

/** Counts WebCrypto Ed25519 signs while `fn` runs. */
async function countingWebSigns(fn: () => Promise<void>): Promise<number> {
  const subtle = crypto.subtle;
  const original = subtle.sign;
  let signs = 0;
  Object.defineProperty(subtle, "sign", {
    configurable: true,
    value: (...args: Parameters<SubtleCrypto["sign"]>) => {
      signs++;
      return original.apply(subtle, args);
    },
  });
  try {
    await fn();
  } finally {
    delete (subtle as { sign?: unknown }).sign;
  }
  return signs;
}

Deno.test("hop check: servePrompts with batches off signs synchronously or with WebCrypto by the answers waiting, the same signatures", async () => {
  const k = await generateAgentKey();
  const seed = Uint8Array.fromBase64(k.privateKey, { alphabet: "base64url" });
  const key = hopKey(
    Uint8Array.fromBase64(k.publicKey, { alphabet: "base64url" }),
  );
  const serve = async (signAsyncAt?: number) => {
    const handler = await servedInProcess((hop) => `answer to ${hop.prompt}`, {
      key: seed,
      signAsyncAt,
      batch: false,
    });
    // 8 hops at once (as a sealed batch delivers them).
    return (await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        handler({
          payload: { requestId: `r${i}`, hop: 0, prompt: `p${i}`, sage: true },
        })),
    )) as { response: string; signature: string }[];
  };
  const want = await Promise.all(
    Array.from(
      { length: 8 },
      (_, i) =>
        signHop(seed, {
          requestId: `r${i}`,
          hop: 0,
          content: `answer to p${i}`,
        }),
    ),
  );
  for (
    const [signAsyncAt, webSigns] of [
      [Infinity, 0],
      [1, 8],
      [undefined, 8], // default 4: the 8 finish in one turn
    ] as const
  ) {
    let answers: { response: string; signature: string }[] = [];
    const signs = await countingWebSigns(async () => {
      answers = await serve(signAsyncAt);
    });
    assert.equal(signs, webSigns, `signAsyncAt ${signAsyncAt}`);
    assert.deepEqual(answers.map((a) => a.signature), want);
    for (const [i, a] of answers.entries()) {
      const fields = { requestId: `r${i}`, hop: 0, content: a.response };
      assert.equal(checkHop(key, fields, a.signature).valid, true);
    }
  }
  // One hop at a time: synchronous under the default.
  const one = await countingWebSigns(async () => {
    const handler = await servedInProcess((hop) => hop.prompt, { key: seed });
    for (let i = 0; i < 3; i++) {
      await handler({
        payload: { requestId: `r${i}`, hop: 0, prompt: "x", sage: true },
      });
    }
  });
  assert.equal(one, 0);
});

/** Answers signed as one batch with `seed`: each one's signature and proof. */
async function signedBatch(seed: Uint8Array, hops: typeof FIELDS) {
  const { root, proofs } = hopBatch(hops);
  const { privateKey } = await ed25519FromSeed(seed);
  const signature = new Uint8Array(
    await crypto.subtle.sign(
      "Ed25519",
      privateKey,
      hopBatchBytes(hops.length, root),
    ),
  ).toBase64({ alphabet: "base64url", omitPadding: true });
  return { root, signature, proofs };
}

const MANY = Array.from({ length: 7 }, (_, i) => ({
  requestId: `r${i % 3}`,
  hop: i,
  content: `answer ${i} ü`,
}));

Deno.test("hop check: answers signed in a batch verify by their proofs, here and by the SDK's verifyHopProof, for every batch size", async () => {
  const k = await generateAgentKey();
  const seed = Uint8Array.fromBase64(k.privateKey, { alphabet: "base64url" });
  const raw = Uint8Array.fromBase64(k.publicKey, { alphabet: "base64url" });
  const key = hopKey(raw);
  for (let m = 2; m <= MANY.length; m++) {
    const hops = [...FIELDS, ...MANY].slice(0, m);
    const { signature, proofs } = await signedBatch(seed, hops);
    for (const [i, f] of hops.entries()) {
      const got = checkHopProof(key, f, signature, proofs[i]);
      assert.deepEqual(got, { valid: true, digest: hopDigest(f.content) });
      assert.equal(await verifyHopProof(raw, f, signature, proofs[i]), true);
      // Not a v1 signature of the hop alone, nor the other way round.
      assert.equal(checkHop(key, f, signature).valid, false);
      assert.equal(
        checkHopProof(key, f, await signHop(seed, f), proofs[i]).valid,
        false,
      );
    }
  }
});

Deno.test("hop check: a batch proof refuses another answer, hop, request, index, root, path, size or key, and malformed proofs", async () => {
  const a = await agent();
  const b = await agent();
  const hops = MANY.slice(0, 5);
  const { signature, proofs } = await signedBatch(a.seed, hops);
  const f = hops[2];
  const p = decodeHopProof(proofs[2])!;
  const flip = (d: Uint8Array) => {
    const c = d.slice();
    c[5] ^= 1;
    return c;
  };
  const byB = (await signedBatch(b.seed, hops)).signature;
  const refused: [string, () => { valid: boolean }][] = [
    [
      "another answer",
      () => checkHopProof(a.key, { ...f, content: "x" }, signature, proofs[2]),
    ],
    [
      "another hop",
      () => checkHopProof(a.key, { ...f, hop: 9 }, signature, proofs[2]),
    ],
    [
      "another request",
      () =>
        checkHopProof(a.key, { ...f, requestId: "r9" }, signature, proofs[2]),
    ],
    [
      "another answer's proof",
      () => checkHopProof(a.key, f, signature, proofs[3]),
    ],
    ["another key", () => checkHopProof(b.key, f, signature, proofs[2])],
    [
      "an altered root",
      () =>
        checkHopProof(
          a.key,
          f,
          signature,
          encodeHopProof({ ...p, root: flip(p.root) }),
        ),
    ],
    [
      "an altered path",
      () =>
        checkHopProof(
          a.key,
          f,
          signature,
          encodeHopProof({ ...p, path: [flip(p.path[0]), ...p.path.slice(1)] }),
        ),
    ],
    [
      "another size (same tree shape)",
      () => checkHopProof(a.key, f, signature, encodeHopProof({ ...p, m: 6 })),
    ],
    [
      "a signature by another key",
      () => checkHopProof(a.key, f, byB, proofs[2]),
    ],
    [
      "a truncated proof",
      () => checkHopProof(a.key, f, signature, proofs[2].slice(0, -4)),
    ],
    [
      "a path too long",
      () =>
        checkHopProof(
          a.key,
          f,
          signature,
          encodeHopProof({ ...p, path: [...p.path, p.root] }),
        ),
    ],
    [
      "an index past the size",
      () => checkHopProof(a.key, f, signature, encodeHopProof({ ...p, i: 5 })),
    ],
    [
      "a batch of one",
      () =>
        checkHopProof(
          a.key,
          f,
          signature,
          encodeHopProof({ m: 1, i: 0, root: p.root, path: [] }),
        ),
    ],
    ["not base64url", () => checkHopProof(a.key, f, signature, "!!")],
    [
      "a malformed signature",
      () => checkHopProof(a.key, f, signature.slice(2), proofs[2]),
    ],
  ];
  for (const [what, check] of refused) {
    assert.equal(check().valid, false, what);
  }
  // Still good after all that: refusals are not remembered.
  assert.equal(checkHopProof(a.key, f, signature, proofs[2]).valid, true);
});

Deno.test("hop check: a verified batch root is remembered per key, and a remembered root takes no other signature", async () => {
  const a = await agent();
  const hops = MANY.slice(0, 4);
  const { root, signature, proofs } = await signedBatch(a.seed, hops);
  assert.equal(checkHopProof(a.key, hops[0], signature, proofs[0]).valid, true);
  // A forged signature over the same root and size (a valid base64url of
  // 64 bytes): remembered roots are matched with their signature.
  const forged = new Uint8Array(64).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
  assert.equal(checkHopProof(a.key, hops[1], forged, proofs[1]).valid, false);
  // The other members, checked by their proofs under the remembered root.
  for (const i of [1, 2, 3]) {
    assert.equal(
      checkHopProof(a.key, hops[i], signature, proofs[i]).valid,
      true,
    );
  }
  // The same root under another key is verified again (and fails).
  const other = hopKey(
    Uint8Array.fromBase64((await generateAgentKey()).publicKey, {
      alphabet: "base64url",
    }),
  );
  assert.equal(
    checkHopProof(other, hops[1], signature, proofs[1]).valid,
    false,
  );
  assert.equal(decodeHopProof(proofs[1])!.root.toHex(), root.toHex());
});

Deno.test("hop check: servePrompts signs the answers finished together as one batch, each verifying by its proof, with no WebCrypto sign", async () => {
  const { seed, key } = await agent();
  const handler = await servedInProcess((hop) => `answer to ${hop.prompt}`, {
    key: seed,
  });
  let answers: { response: string; signature: string; proof?: string }[] = [];
  const signs = await countingWebSigns(async () => {
    // 8 hops at once (as a sealed batch delivers them).
    answers = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        handler({
          payload: { requestId: `r${i}`, hop: 0, prompt: `p${i}`, sage: true },
        })),
    ) as typeof answers;
  });
  assert.equal(signs, 0);
  assert.equal(
    new Set(answers.map((a) => a.signature)).size,
    1,
    "one signature",
  );
  for (const [i, a] of answers.entries()) {
    const fields = { requestId: `r${i}`, hop: 0, content: a.response };
    assert.equal(decodeHopProof(a.proof!)?.m, 8);
    assert.equal(checkHopProof(key, fields, a.signature, a.proof!).valid, true);
  }
  // One at a time: each signed alone (v1), no proof.
  const one = await handler({
    payload: { requestId: "r9", hop: 0, prompt: "x", sage: true },
  }) as { response: string; signature: string; proof?: string };
  assert.equal(one.proof, undefined);
  assert.equal(
    checkHop(
      key,
      { requestId: "r9", hop: 0, content: one.response },
      one.signature,
    ).valid,
    true,
  );
});
