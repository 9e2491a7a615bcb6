/**
 * The node's check of a SAGE hop signature, synchronous and with the
 * agent's public key imported once: the same bytes as `sdk/sage.ts`
 * (`SAGE_CONTEXT ‖ JSON([requestId, hop, SHA-256 of the answer, base64url])`)
 * checked with `node:crypto` on the event loop. WebCrypto's Ed25519 runs on
 * Deno's blocking pool, but an awaited call wakes the event loop again
 * (~20-40 µs of its CPU when it was idle) and costs ~10 µs more in all; with
 * 16 prompts in flight it cost the main thread more than the ~45 µs
 * synchronous verify (docs/prompts.md, "A prompt against the bare sealed
 * request"). WebCrypto's digest cost ~55 µs against ~2 here.
 *
 * @example Check a hop an agent signed
 * ```ts
 * import { generateAgentKey } from "../../sdk/keys.ts";
 * import { signHop } from "../../sdk/sage.ts";
 * import { checkHop, hopKey } from "./hop_check.ts";
 * import assert from "node:assert/strict";
 * const agent = await generateAgentKey();
 * const seed = Uint8Array.fromBase64(agent.privateKey, { alphabet: "base64url" });
 * const key = hopKey(Uint8Array.fromBase64(agent.publicKey, { alphabet: "base64url" }));
 * const hop = { requestId: "r1", hop: 0, content: "Booked." };
 * const signature = await signHop(seed, hop);
 * assert.equal(checkHop(key, hop, signature).valid, true);
 * assert.equal(checkHop(key, { ...hop, hop: 1 }, signature).valid, false);
 * ```
 *
 * @module
 */
import { createPublicKey, hash, type KeyObject, verify } from "node:crypto";
import { checkEd25519PublicKey } from "../../core/security/ed25519.ts";
import { type HopFields, SAGE_CONTEXT } from "../../sdk/sage.ts";

const encoder = new TextEncoder();

/**
 * An agent's raw 32-byte Ed25519 public key, imported for {@linkcode checkHop};
 * throws a `TypeError` saying why when it is not one (its length, bytes that
 * are no curve point, or a key of small order, which would verify forged
 * signatures: `node:crypto` and WebCrypto both take those).
 *
 * @example Usage
 * ```ts
 * import { hopKey } from "./hop_check.ts";
 * import assert from "node:assert/strict";
 * assert.throws(() => hopKey(new Uint8Array(31)), TypeError);
 * ```
 */
export function hopKey(publicRaw: Uint8Array): KeyObject {
  if (publicRaw.length !== 32) {
    throw new TypeError(
      `an Ed25519 public key is 32 bytes, the enrolled one is ${publicRaw.length}`,
    );
  }
  const x = publicRaw.toBase64({ alphabet: "base64url", omitPadding: true });
  try {
    checkEd25519PublicKey(publicRaw);
    return createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x },
      format: "jwk",
    });
  } catch (err) {
    throw new TypeError(
      `the enrolled key is not an Ed25519 public key: ${
        (err as Error).message
      }`,
      { cause: err },
    );
  }
}

/**
 * The SHA-256 digest of `content` (UTF-8), base64url: what the chain shows
 * (the same as `sageDigest` of `sdk/sage.ts`, without its promise).
 *
 * @example Usage
 * ```ts
 * import { hopDigest } from "./hop_check.ts";
 * hopDigest("").length; // 43
 * ```
 */
export function hopDigest(content: string): string {
  // One-shot: createHash builds a Node stream per digest.
  return hash("sha256", content, "base64url");
}

/**
 * Checks hop signature `signature` (base64url) of `fields` by `key`: whether
 * it verifies (false for a malformed signature, never a throw), and the
 * answer's digest it covers.
 *
 * @example Usage
 * ```ts
 * import { generateAgentKey } from "../../sdk/keys.ts";
 * import { checkHop, hopKey } from "./hop_check.ts";
 * const { publicKey } = await generateAgentKey();
 * const key = hopKey(Uint8Array.fromBase64(publicKey, { alphabet: "base64url" }));
 * checkHop(key, { requestId: "r", hop: 0, content: "" }, "!").valid; // false
 * ```
 */
export function checkHop(
  key: KeyObject,
  fields: HopFields,
  signature: string,
): { valid: boolean; digest: string } {
  const digest = hopDigest(fields.content);
  let sig: Uint8Array;
  try {
    sig = Uint8Array.fromBase64(signature, { alphabet: "base64url" });
  } catch {
    return { valid: false, digest };
  }
  if (
    sig.length !== 64 || !Number.isSafeInteger(fields.hop) || fields.hop < 0
  ) {
    return { valid: false, digest };
  }
  const signed = encoder.encode(
    SAGE_CONTEXT + JSON.stringify([fields.requestId, fields.hop, digest]),
  );
  try {
    return { valid: verify(null, signed, key, sig), digest };
  } catch {
    return { valid: false, digest };
  }
}
