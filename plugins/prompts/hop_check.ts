/**
 * The node's check of a SAGE hop signature, with the agent's public key
 * imported once: the same bytes as `sdk/sage.ts`
 * (`SAGE_CONTEXT ‖ JSON([requestId, hop, SHA-256 of the answer, base64url])`).
 * {@linkcode checkHop} verifies with `node:crypto` on the event loop;
 * {@linkcode HopChecker} picks it or WebCrypto (on Deno's blocking pool) by
 * the SAGE hops in flight: an awaited WebCrypto call wakes an idle event
 * loop again (~20-40 µs of its CPU) and costs ~10 µs more in all, so it pays
 * only when the loop is busy (docs/prompts.md, "SAGE crypto that adapts to
 * load"). The digest is always `node:crypto`'s (~2 µs; WebCrypto's ~55).
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
import {
  decodeHopProof,
  hopBatchBytes,
  type HopFields,
  hopProofRoot,
  SAGE_CONTEXT,
} from "../../sdk/sage.ts";
import { deleteOldest } from "../../core/oldest.ts";

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
  const key = importHopKey(publicRaw);
  rawOf.set(key, publicRaw.slice());
  return key;
}

/** Each {@linkcode hopKey}'s raw bytes (checked), for its WebCrypto import. */
const rawOf = new WeakMap<KeyObject, Uint8Array<ArrayBuffer>>();
/** Each key's WebCrypto import, made the first time a check needs it. */
const webKeys = new WeakMap<KeyObject, Promise<CryptoKey>>();

function importHopKey(publicRaw: Uint8Array): KeyObject {
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
  const { digest, sig, signed } = hopInput(fields, signature);
  if (!sig) return { valid: false, digest };
  try {
    return { valid: verify(null, signed, key, sig), digest };
  } catch {
    return { valid: false, digest };
  }
}

/** Batch roots whose signature verified, per key: root and size → signature. */
const verifiedRoots = new WeakMap<KeyObject, Map<string, string>>();
/** Verified roots remembered per key (oldest forgotten first). */
const MAX_VERIFIED_ROOTS = 1024;

/**
 * Checks an answer signed in a batch (`plexus-sage/v2`): its `proof`
 * (base64url, `encodeHopProof` of `sdk/sage.ts`) must climb from `fields`'
 * leaf to the proof's root, and `signature` cover that root and the batch's
 * size by `key`. The signature is verified once per batch (`node:crypto`);
 * a root and signature verified before are remembered per key, so the
 * batch's other answers cost only their leaf and path (~1-2 µs each). Only a
 * good signature is remembered; false for anything malformed, never a
 * throw.
 *
 * @example Usage
 * ```ts
 * import { generateAgentKey } from "../../sdk/keys.ts";
 * import { checkHopProof, hopKey } from "./hop_check.ts";
 * const { publicKey } = await generateAgentKey();
 * const key = hopKey(Uint8Array.fromBase64(publicKey, { alphabet: "base64url" }));
 * checkHopProof(key, { requestId: "r", hop: 0, content: "" }, "!", "!").valid; // false
 * ```
 */
export function checkHopProof(
  key: KeyObject,
  fields: HopFields,
  signature: string,
  proof: string,
): { valid: boolean; digest: string } {
  const digest = hopDigest(fields.content);
  const p = decodeHopProof(proof);
  let sig: Uint8Array<ArrayBuffer>;
  try {
    sig = Uint8Array.fromBase64(signature, { alphabet: "base64url" });
  } catch {
    return { valid: false, digest };
  }
  if (!p || sig.length !== 64) return { valid: false, digest };
  let root: Uint8Array;
  try {
    root = hopProofRoot(fields, p, digest);
  } catch {
    return { valid: false, digest }; // a hop number that is no leaf's
  }
  const rootHex = root.toHex();
  if (rootHex !== p.root.toHex()) return { valid: false, digest };
  const slot = `${p.m}:${rootHex}`;
  let known = verifiedRoots.get(key);
  if (known?.get(slot) === signature) return { valid: true, digest };
  let valid: boolean;
  try {
    valid = verify(null, hopBatchBytes(p.m, root), key, sig);
  } catch {
    return { valid: false, digest };
  }
  if (valid) {
    if (!known) verifiedRoots.set(key, known = new Map());
    if (known.size >= MAX_VERIFIED_ROOTS) {
      deleteOldest(known);
    }
    known.set(slot, signature);
  }
  return { valid, digest };
}

/**
 * How many SAGE hops must be in flight at the node (sent and not yet
 * checked) for a check to go to WebCrypto rather than `node:crypto`'s
 * synchronous verify (docs/prompts.md, "SAGE crypto that adapts to load").
 */
export const HOP_ASYNC_AT = 32;

/**
 * Checks hop signatures with the crypto that fits the load: `node:crypto`'s
 * synchronous verify (~45 µs of the event loop) while fewer than `asyncAt`
 * SAGE hops are in flight, WebCrypto (run on Deno's blocking pool, ~8-12 µs
 * of the event loop when many are in flight, but an awaited call that finds
 * the loop idle wakes it: ~20-40 µs more) when that many are. A hop counts
 * from {@linkcode HopChecker.begin} (called when it is sent) to its `end`
 * (after its check, or its failure). Answers to check rarely pile up (one
 * sealed frame of answers is checked within its turn), so the hops in flight
 * are the load: with many, the event loop has work queued behind each check
 * and does not sleep between them. Both paths check the same bytes against
 * the same key (small-order keys refused by {@linkcode hopKey}).
 *
 * @example Usage
 * ```ts
 * import { generateAgentKey } from "../../sdk/keys.ts";
 * import { signHop } from "../../sdk/sage.ts";
 * import { HopChecker, hopKey } from "./hop_check.ts";
 * import assert from "node:assert/strict";
 * const agent = await generateAgentKey();
 * const seed = Uint8Array.fromBase64(agent.privateKey, { alphabet: "base64url" });
 * const key = hopKey(Uint8Array.fromBase64(agent.publicKey, { alphabet: "base64url" }));
 * const hop = { requestId: "r1", hop: 0, content: "Booked." };
 * const checks = new HopChecker();
 * checks.begin();
 * try {
 *   assert.equal((await checks.check(key, hop, await signHop(seed, hop))).valid, true);
 * } finally {
 *   checks.end();
 * }
 * ```
 */
export class HopChecker {
  /** SAGE hops in flight now. */
  pending = 0;
  /** Checks made by each path (for tests and the bench). */
  readonly made = { sync: 0, web: 0 };
  /** @param asyncAt SAGE hops in flight from which checks go to WebCrypto */
  constructor(readonly asyncAt: number = HOP_ASYNC_AT) {}
  /** A SAGE hop was sent. */
  begin(): void {
    this.pending++;
  }
  /** Its check is done (or it failed before): always call after `begin`. */
  end(): void {
    this.pending--;
  }
  /**
   * {@linkcode checkHop}, synchronous or on WebCrypto by the hops in
   * flight; a plain value when synchronous (await it either way).
   */
  check(
    key: KeyObject,
    fields: HopFields,
    signature: string,
  ):
    | { valid: boolean; digest: string }
    | Promise<
      { valid: boolean; digest: string }
    > {
    const raw = rawOf.get(key);
    if (this.pending < this.asyncAt || !raw) {
      this.made.sync++;
      return checkHop(key, fields, signature);
    }
    this.made.web++;
    return checkHopWeb(key, raw, fields, signature);
  }
}

/** {@linkcode checkHop} through WebCrypto's verify. */
async function checkHopWeb(
  key: KeyObject,
  raw: Uint8Array<ArrayBuffer>,
  fields: HopFields,
  signature: string,
): Promise<{ valid: boolean; digest: string }> {
  const { digest, sig, signed } = hopInput(fields, signature);
  if (!sig) return { valid: false, digest };
  let web = webKeys.get(key);
  if (!web) {
    web = crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, [
      "verify",
    ]);
    webKeys.set(key, web);
  }
  try {
    return {
      valid: await crypto.subtle.verify("Ed25519", await web, sig, signed),
      digest,
    };
  } catch {
    return { valid: false, digest };
  }
}

/**
 * What both checks verify: the answer's digest, the signature's 64 bytes
 * (none when it is not base64url of 64 bytes or the hop number is not a
 * non-negative integer) and the signed bytes.
 */
function hopInput(fields: HopFields, signature: string): {
  digest: string;
  sig?: Uint8Array<ArrayBuffer>;
  signed: Uint8Array<ArrayBuffer>;
} {
  const digest = hopDigest(fields.content);
  const signed = encoder.encode(
    SAGE_CONTEXT + JSON.stringify([fields.requestId, fields.hop, digest]),
  );
  let sig: Uint8Array<ArrayBuffer>;
  try {
    sig = Uint8Array.fromBase64(signature, { alphabet: "base64url" });
  } catch {
    return { digest, signed };
  }
  const ok = sig.length === 64 && Number.isSafeInteger(fields.hop) &&
    fields.hop >= 0;
  return ok ? { digest, sig, signed } : { digest, signed };
}
