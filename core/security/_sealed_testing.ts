/**
 * Test helpers that alter a sealed payload (format 3) the way an attacker
 * with broker access could: for the refusal tests here and in tests/sealed.
 *
 * @module
 */
import {
  decodeSealed,
  DIGEST_BYTES,
  type SealedFields,
  SIG_BYTES,
} from "./sealed_format.ts";

const B64 = { alphabet: "base64url", omitPadding: true } as const;

/**
 * A sealed `envelope.payload` decoded (throws when it is not format 3).
 *
 * @example Usage
 * ```ts ignore
 * sealedFields(envelope.payload).wraps.map((w) => w.r); // ["node:b"]
 * ```
 */
export function sealedFields(payload: unknown): SealedFields {
  return decodeSealed(
    Uint8Array.fromBase64(String(payload), { alphabet: "base64url" }),
  );
}

/**
 * `payload` with `edit` applied to a copy of its bytes, as base64url again.
 *
 * @example Usage
 * ```ts ignore
 * const cut = editSealed(envelope.payload, (b) => b.subarray(0, b.length - 1));
 * ```
 */
export function editSealed(
  payload: unknown,
  edit: (bytes: Uint8Array, fields: SealedFields) => Uint8Array | void,
): string {
  const fields = sealedFields(payload);
  const bytes = fields.bytes.slice();
  return (edit(bytes, fields) ?? bytes).toBase64(B64);
}

/**
 * `payload` with one ciphertext byte flipped (`at` bytes into it).
 *
 * @example Usage
 * ```ts ignore
 * const tampered = { ...envelope, payload: flipCiphertext(envelope.payload) };
 * ```
 */
export function flipCiphertext(payload: unknown, at = 5): string {
  return editSealed(payload, (b, f) => {
    b[f.ctAt + at] ^= 1;
  });
}

/**
 * `payload` with one byte of its batch signature flipped.
 *
 * @example Usage
 * ```ts ignore
 * const forged = { ...envelope, payload: flipSignature(envelope.payload) };
 * ```
 */
export function flipSignature(payload: unknown): string {
  return editSealed(payload, (b, f) => {
    b[f.ctEnd + 10] ^= 1;
  });
}

/**
 * `payload`'s body with the batch proof (signature, root, place, path) of
 * `other`, a message of the same batch.
 *
 * @example Usage
 * ```ts ignore
 * const moved = withProofOf(first.payload, second.payload);
 * ```
 */
export function withProofOf(payload: unknown, other: unknown): string {
  const p = sealedFields(payload);
  const o = sealedFields(other);
  const out = new Uint8Array(p.ctEnd + o.bytes.length - o.ctEnd);
  out.set(p.bytes.subarray(0, p.ctEnd));
  out.set(o.bytes.subarray(o.ctEnd), p.ctEnd);
  return out.toBase64(B64);
}

/** Where a payload's batch size, index and path length are. */
export const PROOF_PLACE = SIG_BYTES + DIGEST_BYTES;
