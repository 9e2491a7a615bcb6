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
import { createHash } from "node:crypto";
import { b64u, ed25519FromSeed, ed25519Verify } from "./protocol/handshake.ts";

/** What every hop signature starts with (domain separation). */
export const SAGE_CONTEXT = "plexus-sage/v1 hop\0";

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
