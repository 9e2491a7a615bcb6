/**
 * The node's check of a SAGE hop signature, with the agent's public key
 * imported once: the same bytes as `sdk/sage.ts`
 * (`SAGE_CONTEXT ‖ JSON([requestId, hop, SHA-256 of the answer, base64url])`).
 *
 * Which crypto runs where, by what it costs the event loop (the node's main
 * thread, which every request shares): the Ed25519 verification is
 * WebCrypto's (`crypto.subtle.verify`), which Deno runs on its blocking
 * thread pool, ~8-12 µs of the main thread against ~45 µs for
 * `node:crypto`'s synchronous `verify` (more CPU in all, ~55 µs, but on
 * another core). The SHA-256 digest stays `node:crypto`'s one-shot `hash`
 * (~2 µs, where `crypto.subtle.digest` costs the main thread more in its
 * promise and thread hop than the hash itself).
 *
 * @example Check a hop an agent signed
 * ```ts
 * import { generateAgentKey } from "../../sdk/keys.ts";
 * import { signHop } from "../../sdk/sage.ts";
 * import { checkHop, hopKey } from "./hop_check.ts";
 * import assert from "node:assert/strict";
 * const agent = await generateAgentKey();
 * const seed = Uint8Array.fromBase64(agent.privateKey, { alphabet: "base64url" });
 * const key = await hopKey(Uint8Array.fromBase64(agent.publicKey, { alphabet: "base64url" }));
 * const hop = { requestId: "r1", hop: 0, content: "Booked." };
 * const signature = await signHop(seed, hop);
 * assert.equal((await checkHop(key, hop, signature)).valid, true);
 * assert.equal((await checkHop(key, { ...hop, hop: 1 }, signature)).valid, false);
 * ```
 *
 * @module
 */
import { hash } from "node:crypto";
import { importEd25519PublicKey } from "../../core/security/ed25519.ts";
import { type HopFields, SAGE_CONTEXT } from "../../sdk/sage.ts";

const encoder = new TextEncoder();

/**
 * An agent's raw 32-byte Ed25519 public key, imported for {@linkcode checkHop};
 * rejects with a `TypeError` saying why when it is not one (its length, bytes
 * that are no curve point, or a key of small order, which would verify forged
 * signatures: WebCrypto itself accepts those).
 *
 * @example Usage
 * ```ts
 * import { hopKey } from "./hop_check.ts";
 * import assert from "node:assert/strict";
 * await assert.rejects(hopKey(new Uint8Array(31)), TypeError);
 * ```
 */
export async function hopKey(publicRaw: Uint8Array): Promise<CryptoKey> {
  if (publicRaw.length !== 32) {
    throw new TypeError(
      `an Ed25519 public key is 32 bytes, the enrolled one is ${publicRaw.length}`,
    );
  }
  try {
    return await importEd25519PublicKey(publicRaw);
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
 * it verifies (false for a malformed signature, never a rejection), and the
 * answer's digest it covers.
 *
 * @example Usage
 * ```ts
 * import { generateAgentKey } from "../../sdk/keys.ts";
 * import { checkHop, hopKey } from "./hop_check.ts";
 * const { publicKey } = await generateAgentKey();
 * const key = await hopKey(Uint8Array.fromBase64(publicKey, { alphabet: "base64url" }));
 * (await checkHop(key, { requestId: "r", hop: 0, content: "" }, "!")).valid; // false
 * ```
 */
export async function checkHop(
  key: CryptoKey,
  fields: HopFields,
  signature: string,
): Promise<{ valid: boolean; digest: string }> {
  const digest = hopDigest(fields.content);
  let sig: Uint8Array<ArrayBuffer>;
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
    return {
      valid: await crypto.subtle.verify("Ed25519", key, sig, signed),
      digest,
    };
  } catch {
    return { valid: false, digest };
  }
}
