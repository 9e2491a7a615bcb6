/**
 * `Content-Digest` (RFC 9530) with `sha-256` and `sha-512`: a Dictionary of
 * Byte Sequences over the message content as sent (after any
 * content-coding). Covering the header in an RFC 9421 signature is what ties
 * a body to the signature.
 *
 * @module
 */
import { timingSafeEqual } from "node:crypto";
import {
  type Dictionary,
  item,
  parseDictionary,
  serializeDictionary,
} from "./_structured_fields.ts";

/** Digest algorithms this module computes (RFC 9530 §5 "standard"). */
export type DigestAlgorithm = "sha-256" | "sha-512";

/** Every supported algorithm, strongest last. */
export const DIGEST_ALGORITHMS: readonly DigestAlgorithm[] = [
  "sha-256",
  "sha-512",
];

const WEBCRYPTO_NAME: Record<DigestAlgorithm, string> = {
  "sha-256": "SHA-256",
  "sha-512": "SHA-512",
};

/** Message content: raw bytes, or text encoded as UTF-8. */
export type Content = Uint8Array | ArrayBuffer | string;

function toBytes(content: Content): Uint8Array<ArrayBuffer> {
  if (typeof content === "string") return new TextEncoder().encode(content);
  if (content instanceof ArrayBuffer) return new Uint8Array(content);
  return new Uint8Array(content);
}

async function digest(
  algorithm: DigestAlgorithm,
  content: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.digest(WEBCRYPTO_NAME[algorithm], content),
  );
}

/** Options for {@linkcode createContentDigest}. */
export interface CreateContentDigestOptions {
  /** Algorithms to include, in this order. @default {["sha-256"]} */
  algorithms?: readonly DigestAlgorithm[];
}

/**
 * The `Content-Digest` value for `content`.
 *
 * @example Usage
 * ```ts
 * import { createContentDigest } from "./content_digest.ts";
 * await createContentDigest('{"hello": "world"}');
 * // "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
 * ```
 */
export async function createContentDigest(
  content: Content,
  options: CreateContentDigestOptions = {},
): Promise<string> {
  const algorithms = options.algorithms ?? ["sha-256"];
  if (algorithms.length === 0) {
    throw new TypeError(
      "Cannot create Content-Digest: 'algorithms' must not be empty",
    );
  }
  const bytes = toBytes(content);
  const dict: Dictionary = new Map();
  for (const algorithm of algorithms) {
    if (!(algorithm in WEBCRYPTO_NAME)) {
      throw new TypeError(
        `Cannot create Content-Digest: unsupported algorithm '${algorithm}'`,
      );
    }
    dict.set(
      algorithm,
      item({ type: "bytes", value: await digest(algorithm, bytes) }),
    );
  }
  return serializeDictionary(dict);
}

/** Options for {@linkcode verifyContentDigest}. */
export interface VerifyContentDigestOptions {
  /**
   * Algorithms accepted; members with any other key are ignored (RFC 9530
   * §2), and at least one accepted one must be present.
   * @default {DIGEST_ALGORITHMS}
   */
  algorithms?: readonly DigestAlgorithm[];
}

/** Outcome of {@linkcode verifyContentDigest}. */
export type ContentDigestResult =
  | { ok: true; algorithms: DigestAlgorithm[] }
  | { ok: false; reason: string };

/**
 * Checks a `Content-Digest` header against `content`: every accepted
 * algorithm present must match (compared in constant time), and at least
 * one must be present. A repeated algorithm key fails.
 *
 * @example Usage
 * ```ts
 * import { verifyContentDigest } from "./content_digest.ts";
 * const header = "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:";
 * (await verifyContentDigest('{"hello": "world"}', header)).ok; // true
 * (await verifyContentDigest('{"hello": "world!"}', header)).ok; // false
 * ```
 */
export async function verifyContentDigest(
  content: Content,
  header: string | null | undefined,
  options: VerifyContentDigestOptions = {},
): Promise<ContentDigestResult> {
  const accepted = options.algorithms ?? DIGEST_ALGORITHMS;
  if (header === null || header === undefined) {
    return { ok: false, reason: "no Content-Digest header" };
  }
  let dict: Dictionary;
  try {
    dict = parseDictionary(header, { rejectDuplicates: true });
  } catch (err) {
    return { ok: false, reason: (err as Error).message };
  }
  const bytes = toBytes(content);
  const checked: DigestAlgorithm[] = [];
  for (const [key, member] of dict) {
    const algorithm = key as DigestAlgorithm;
    if (!accepted.includes(algorithm) || !(algorithm in WEBCRYPTO_NAME)) {
      continue;
    }
    if (member.kind !== "item" || member.value.type !== "bytes") {
      return {
        ok: false,
        reason: `Content-Digest '${key}' is not a byte sequence`,
      };
    }
    const expected = await digest(algorithm, bytes);
    const given = member.value.value;
    if (
      given.length !== expected.length || !timingSafeEqual(given, expected)
    ) {
      return { ok: false, reason: `Content-Digest '${key}' does not match` };
    }
    checked.push(algorithm);
  }
  if (checked.length === 0) {
    return {
      ok: false,
      reason: `Content-Digest has none of the accepted algorithms (${
        accepted.join(", ")
      }): '${header.slice(0, 80)}'`,
    };
  }
  return { ok: true, algorithms: checked };
}
