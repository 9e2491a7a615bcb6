/**
 * Digests remembered as bytes: the Merkle nodes a sealed receiver has seen
 * under verified batch roots (core/security/sealed_transport.ts), without a
 * base64url string per digest.
 *
 * @module
 */

const DIGEST_BYTES = 32;

/**
 * A digest's first 30 bits, a small integer: the key of a map whose value
 * is checked against all the digest's bytes (two digests sharing it only
 * push each other out).
 *
 * @example Usage
 * ```ts
 * import { digestKey } from "./sealed_digests.ts";
 * digestKey(new Uint8Array(32).fill(255)); // 2 ** 30 - 1
 * ```
 */
export function digestKey(d: Uint8Array): number {
  return (d[0] << 22) | (d[1] << 14) | (d[2] << 6) | (d[3] >>> 2);
}

/**
 * A bounded set of 32-byte digests, kept as bytes (no string per digest):
 * two generations, the older dropped whole when the newer is full. Each
 * generation is a map from a digest's first 30 bits to its slot in one
 * buffer; `has` compares all 32 bytes, so it never answers yes for a digest
 * that was not added (a digest sharing the 30 bits replaces the other).
 *
 * @example Usage
 * ```ts
 * import { DigestSet } from "./sealed_digests.ts";
 * const known = new DigestSet(1024);
 * const d = new Uint8Array(32).fill(7);
 * known.add(d);
 * known.has(d); // true
 * known.has(new Uint8Array(32)); // false
 * ```
 */
export class DigestSet {
  #current: DigestGeneration;
  #previous: DigestGeneration;
  readonly #half: number;
  /** Keeps at least the newest `max / 2` digests added, at most `max`. */
  constructor(readonly max: number) {
    this.#half = Math.max(1, Math.floor(max / 2));
    this.#current = generation(this.#half);
    this.#previous = generation(0);
  }
  /** Whether the 32-byte digest `d` was added and is still kept. */
  has(d: Uint8Array): boolean {
    const key = digestKey(d);
    return inGeneration(this.#current, key, d) ||
      inGeneration(this.#previous, key, d);
  }
  /** Keeps a copy of `d`'s 32 bytes (a view into a payload is not held). */
  add(d: Uint8Array): void {
    const key = digestKey(d);
    if (inGeneration(this.#current, key, d)) return;
    let g = this.#current;
    if (g.used >= this.#half) {
      // The older generation's buffer is reused for the new one.
      const spare = this.#previous;
      this.#previous = g;
      g = this.#current = spare.bytes.length === g.bytes.length
        ? { slots: new Map(), bytes: spare.bytes, used: 0 }
        : generation(this.#half);
    }
    const slot = g.used++;
    g.bytes.set(d, slot * DIGEST_BYTES);
    g.slots.set(key, slot);
  }
}

interface DigestGeneration {
  slots: Map<number, number>;
  bytes: Uint8Array;
  used: number;
}

function generation(n: number): DigestGeneration {
  return { slots: new Map(), bytes: new Uint8Array(n * DIGEST_BYTES), used: 0 };
}

function inGeneration(g: DigestGeneration, key: number, d: Uint8Array) {
  const slot = g.slots.get(key);
  if (slot === undefined) return false;
  const at = slot * DIGEST_BYTES;
  for (let j = 0; j < DIGEST_BYTES; j++) {
    if (g.bytes[at + j] !== d[j]) return false;
  }
  return true;
}
