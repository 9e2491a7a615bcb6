/**
 * SAGE hop signatures: in SAGE mode every agent that answers one hop of a
 * prompt (the root agent, and each agent it asks through the node) signs its
 * answer with its own Ed25519 key, and the node checks the signature against
 * the agent's enrolled key before the answer goes anywhere.
 *
 * The signature covers {@linkcode SAGE_CONTEXT}, the request id, the hop
 * number and the SHA-256 digest of the answer text, so an answer cannot be
 * moved to another request or hop, nor changed, without failing.
 *
 * @example Sign on the agent, verify on the node
 * ```ts
 * import { generateAgentKey } from "./keys.ts";
 * import { signHop, verifyHop } from "./sage.ts";
 * import assert from "node:assert/strict";
 * const key = await generateAgentKey();
 * const seed = Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" });
 * const pub = Uint8Array.fromBase64(key.publicKey, { alphabet: "base64url" });
 * const hop = { requestId: "r1", hop: 0, content: "Booked." };
 * const signature = await signHop(seed, hop);
 * assert.equal(await verifyHop(pub, hop, signature), true);
 * assert.equal(await verifyHop(pub, { ...hop, content: "Cancelled." }, signature), false);
 * ```
 *
 * @module
 */
import { createHash, hash } from "node:crypto";
import { merkleTree } from "../core/security/sealed_batch.ts";
import { pathLengthOf } from "../core/security/sealed_format.ts";
import { merkleNode, sha256 } from "../core/security/sealed_sha256.ts";
import { b64u, ed25519FromSeed, ed25519Verify } from "./protocol/handshake.ts";

/** What every hop signature starts with (domain separation). */
export const SAGE_CONTEXT = "plexus-sage/v1 hop\0";
/**
 * What a batch signature's bytes start with: one signature over the Merkle
 * root of several answers (`plexus-sage/v2`), each answer carrying its proof.
 */
export const SAGE_BATCH_CONTEXT = "plexus-sage/v2 batch\0";
/** A batch leaf's input before `JSON([requestId, hop, digest])`: 0x00 (a leaf, not an inner node) and the context. */
export const SAGE_LEAF_CONTEXT = "\0plexus-sage/v2 hop\0";
/** Most answers one batch signature covers. */
export const SAGE_BATCH_MAX = 1024;

const encoder = new TextEncoder();

/** The fields one hop signature covers. */
export interface HopFields {
  /** The prompt request's id (the node's `requestId`). */
  requestId: string;
  /** The hop number: 0 for the root agent, 1, 2, … for the agents it asks. */
  hop: number;
  /** The answer text the agent gives for this hop. */
  content: string;
}

/**
 * The SHA-256 digest of `content` (UTF-8), base64url: what the chain shows.
 *
 * @example Usage
 * ```ts
 * import { sageDigest } from "./sage.ts";
 * (await sageDigest("")).length; // 43
 * ```
 */
export function sageDigest(content: string): Promise<string> {
  // node:crypto, not WebCrypto: ~2 us here against ~54 us for a
  // crypto.subtle.digest call (its promise and thread hop). Still a promise,
  // as callers await it.
  return Promise.resolve(
    createHash("sha256").update(content, "utf8").digest("base64url"),
  );
}

/**
 * The bytes a hop signature covers: `SAGE_CONTEXT ‖ JSON([requestId, hop, digest])`.
 *
 * @example Usage
 * ```ts
 * import { hopSignedBytes } from "./sage.ts";
 * const bytes = await hopSignedBytes({ requestId: "r1", hop: 0, content: "hi" });
 * new TextDecoder().decode(bytes).startsWith("plexus-sage/v1 hop\0"); // true
 * ```
 */
export async function hopSignedBytes(
  fields: HopFields,
): Promise<Uint8Array<ArrayBuffer>> {
  if (!Number.isSafeInteger(fields.hop) || fields.hop < 0) {
    throw new RangeError(`hop must be an integer >= 0 (got ${fields.hop})`);
  }
  const digest = await sageDigest(fields.content);
  return encoder.encode(
    SAGE_CONTEXT + JSON.stringify([fields.requestId, fields.hop, digest]),
  );
}

/**
 * Signs one hop's answer with the agent's key (its 32-byte seed or a
 * private CryptoKey); the signature is base64url.
 *
 * @example Usage
 * ```ts
 * import { generateAgentKey } from "./keys.ts";
 * import { signHop } from "./sage.ts";
 * const key = await generateAgentKey();
 * const seed = Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" });
 * (await signHop(seed, { requestId: "r1", hop: 0, content: "ok" })).length; // 86
 * ```
 */
export async function signHop(
  key: Uint8Array | CryptoKey,
  fields: HopFields,
): Promise<string> {
  const privateKey = key instanceof CryptoKey
    ? key
    : (await ed25519FromSeed(key)).privateKey;
  return b64u(
    new Uint8Array(
      await crypto.subtle.sign(
        "Ed25519",
        privateKey,
        await hopSignedBytes(fields),
      ),
    ),
  );
}

/**
 * Checks a hop signature (base64url) by the agent's raw 32-byte public key;
 * false for a malformed signature, never a throw.
 *
 * @example Usage
 * ```ts
 * import { verifyHop } from "./sage.ts";
 * await verifyHop(new Uint8Array(32), { requestId: "r", hop: 0, content: "" }, "!"); // false
 * ```
 */
export async function verifyHop(
  publicRaw: Uint8Array,
  fields: HopFields,
  signature: string,
): Promise<boolean> {
  let sig: Uint8Array;
  try {
    sig = Uint8Array.fromBase64(signature, { alphabet: "base64url" });
  } catch {
    return false;
  }
  if (sig.length !== 64) return false;
  return await ed25519Verify(publicRaw, sig, await hopSignedBytes(fields))
    .catch(() => false);
}

/**
 * Where one answer sits in a batch one signature covers: the batch's size
 * `m`, the answer's index `i`, the Merkle root and the sibling digests from
 * its leaf up (a level's odd last node is carried up unpaired, so it has no
 * sibling there).
 */
export interface HopProof {
  /** The batch's size (2 to {@linkcode SAGE_BATCH_MAX}). */
  m: number;
  /** This answer's index in the batch (< `m`). */
  i: number;
  /** The Merkle root the batch signature covers (32 bytes). */
  root: Uint8Array;
  /** The sibling digests from this answer's leaf up (32 bytes each). */
  path: Uint8Array[];
}

/**
 * The leaf digest of one answer in a batch:
 * `SHA-256(SAGE_LEAF_CONTEXT ‖ JSON([requestId, hop, base64url(SHA-256(answer))]))`
 * (`digest`, the answer's, when the caller has it). Throws a `RangeError`
 * for a hop number that is not an integer ≥ 0.
 *
 * @example Usage
 * ```ts
 * import { hopLeaf } from "./sage.ts";
 * hopLeaf({ requestId: "r1", hop: 0, content: "hi" }).length; // 32
 * ```
 */
export function hopLeaf(
  fields: HopFields,
  digest: string = hash("sha256", fields.content, "base64url"),
): Uint8Array {
  if (!Number.isSafeInteger(fields.hop) || fields.hop < 0) {
    throw new RangeError(`hop must be an integer >= 0 (got ${fields.hop})`);
  }
  return sha256(
    encoder.encode(
      SAGE_LEAF_CONTEXT +
        JSON.stringify([fields.requestId, fields.hop, digest]),
    ),
  );
}

/**
 * The bytes a batch signature covers: `SAGE_BATCH_CONTEXT ‖ m (2 bytes,
 * big-endian) ‖ root`.
 *
 * @example Usage
 * ```ts
 * import { hopBatchBytes } from "./sage.ts";
 * hopBatchBytes(2, new Uint8Array(32)).length; // 21 + 2 + 32
 * ```
 */
export function hopBatchBytes(
  m: number,
  root: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const head = encoder.encode(SAGE_BATCH_CONTEXT);
  const out = new Uint8Array(head.length + 2 + 32);
  out.set(head);
  out[head.length] = m >>> 8;
  out[head.length + 1] = m & 0xff;
  out.set(root, head.length + 2);
  return out;
}

/**
 * The Merkle tree of a batch of answers: its root, and each answer's
 * proof (base64url, {@linkcode encodeHopProof}); the caller signs
 * {@linkcode hopBatchBytes} of the root.
 *
 * @example Usage
 * ```ts
 * import { hopBatch } from "./sage.ts";
 * const b = hopBatch([{ requestId: "r", hop: 0, content: "a" }, { requestId: "r", hop: 1, content: "b" }]);
 * b.proofs.length; // 2
 * ```
 */
export function hopBatch(
  answers: HopFields[],
): { root: Uint8Array; proofs: string[] } {
  const m = answers.length;
  if (m < 2 || m > SAGE_BATCH_MAX) {
    throw new RangeError(`a batch holds 2 to ${SAGE_BATCH_MAX} answers`);
  }
  const { root, paths } = merkleTree(answers.map((a) => hopLeaf(a)));
  return {
    root,
    proofs: paths.map((path, i) => encodeHopProof({ m, i, root, path })),
  };
}

/**
 * A proof as it travels (an answer's `proof`): base64url of `m` and `i` (2
 * bytes each, big-endian), the root and the path's digests (32 bytes each).
 *
 * @example Usage
 * ```ts
 * import { decodeHopProof, encodeHopProof } from "./sage.ts";
 * const p = { m: 2, i: 1, root: new Uint8Array(32), path: [new Uint8Array(32)] };
 * decodeHopProof(encodeHopProof(p))?.i; // 1
 * ```
 */
export function encodeHopProof(p: HopProof): string {
  const out = new Uint8Array(4 + 32 * (1 + p.path.length));
  out[0] = p.m >>> 8;
  out[1] = p.m & 0xff;
  out[2] = p.i >>> 8;
  out[3] = p.i & 0xff;
  out.set(p.root, 4);
  p.path.forEach((d, k) => out.set(d, 36 + 32 * k));
  return out.toBase64({ alphabet: "base64url", omitPadding: true });
}

/**
 * Reads a proof; undefined when it is not one: not base64url, `m` outside 2
 * to {@linkcode SAGE_BATCH_MAX}, `i` ≥ `m`, or not exactly the digests leaf
 * `i` of `m` has on its way up.
 *
 * @example Usage
 * ```ts
 * import { decodeHopProof } from "./sage.ts";
 * decodeHopProof("!"); // undefined
 * ```
 */
export function decodeHopProof(proof: string): HopProof | undefined {
  let bytes: Uint8Array;
  try {
    bytes = Uint8Array.fromBase64(proof, { alphabet: "base64url" });
  } catch {
    return undefined;
  }
  if (bytes.length < 36 || (bytes.length - 36) % 32 !== 0) return undefined;
  const m = (bytes[0] << 8) | bytes[1];
  const i = (bytes[2] << 8) | bytes[3];
  if (m < 2 || m > SAGE_BATCH_MAX || i >= m) return undefined;
  const n = (bytes.length - 36) / 32;
  if (n !== pathLengthOf(i, m)) return undefined;
  const path: Uint8Array[] = [];
  for (let k = 0; k < n; k++) {
    path.push(bytes.subarray(36 + 32 * k, 68 + 32 * k));
  }
  return { m, i, root: bytes.subarray(4, 36), path };
}

/**
 * The root `fields`' leaf climbs to along `p`'s path: equal to `p.root`
 * when the proof holds for these fields (the signature then decides);
 * `digest` is the answer's, when the caller has it.
 *
 * @example Usage
 * ```ts
 * import { hopBatch, decodeHopProof, hopProofRoot } from "./sage.ts";
 * const hops = [{ requestId: "r", hop: 0, content: "a" }, { requestId: "r", hop: 1, content: "b" }];
 * const { root, proofs } = hopBatch(hops);
 * hopProofRoot(hops[1], decodeHopProof(proofs[1])!).toHex() === root.toHex(); // true
 * ```
 */
export function hopProofRoot(
  fields: HopFields,
  p: HopProof,
  digest?: string,
): Uint8Array {
  let h = hopLeaf(fields, digest);
  let k = 0;
  for (
    let idx = p.i, count = p.m;
    count > 1;
    idx >>= 1, count = (count + 1) >> 1
  ) {
    if ((idx ^ 1) >= count) continue;
    const sibling = p.path[k++];
    h = idx & 1 ? merkleNode(sibling, h) : merkleNode(h, sibling);
  }
  return h;
}

/**
 * Checks an answer signed in a batch (its base64url `signature` and
 * `proof`) by the agent's raw 32-byte public key, as a third party would:
 * the proof must climb to its root and the signature cover that root and
 * the batch's size. False for anything malformed, never a throw.
 *
 * @example Usage
 * ```ts
 * import { verifyHopProof } from "./sage.ts";
 * await verifyHopProof(new Uint8Array(32), { requestId: "r", hop: 0, content: "" }, "!", "!"); // false
 * ```
 */
export async function verifyHopProof(
  publicRaw: Uint8Array,
  fields: HopFields,
  signature: string,
  proof: string,
): Promise<boolean> {
  const p = decodeHopProof(proof);
  let sig: Uint8Array;
  try {
    sig = Uint8Array.fromBase64(signature, { alphabet: "base64url" });
  } catch {
    return false;
  }
  if (!p || sig.length !== 64) return false;
  let root: Uint8Array;
  try {
    root = hopProofRoot(fields, p);
  } catch {
    return false;
  }
  if (root.toHex() !== p.root.toHex()) return false;
  return await ed25519Verify(publicRaw, sig, hopBatchBytes(p.m, p.root))
    .catch(() => false);
}
