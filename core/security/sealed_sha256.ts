/**
 * SHA-256 (FIPS 180-4) in plain JavaScript over reused buffers, for the
 * small inputs of sealed payloads' Merkle trees (docs/security.md, "Sealed
 * payloads"): an inner node hashes 65 bytes, where `node:crypto`'s per-call
 * machinery (a `Hash` object, a Buffer copy of the digest) costs more than
 * the two compression rounds. Larger inputs (a message's ~1.2 KB leaf) are
 * faster through `node:crypto`'s native code and stay there.
 *
 * @module
 */

const K = new Int32Array([
  0x428a2f98,
  0x71374491,
  0xb5c0fbcf,
  0xe9b5dba5,
  0x3956c25b,
  0x59f111f1,
  0x923f82a4,
  0xab1c5ed5,
  0xd807aa98,
  0x12835b01,
  0x243185be,
  0x550c7dc3,
  0x72be5d74,
  0x80deb1fe,
  0x9bdc06a7,
  0xc19bf174,
  0xe49b69c1,
  0xefbe4786,
  0x0fc19dc6,
  0x240ca1cc,
  0x2de92c6f,
  0x4a7484aa,
  0x5cb0a9dc,
  0x76f988da,
  0x983e5152,
  0xa831c66d,
  0xb00327c8,
  0xbf597fc7,
  0xc6e00bf3,
  0xd5a79147,
  0x06ca6351,
  0x14292967,
  0x27b70a85,
  0x2e1b2138,
  0x4d2c6dfc,
  0x53380d13,
  0x650a7354,
  0x766a0abb,
  0x81c2c92e,
  0x92722c85,
  0xa2bfe8a1,
  0xa81a664b,
  0xc24b8b70,
  0xc76c51a3,
  0xd192e819,
  0xd6990624,
  0xf40e3585,
  0x106aa070,
  0x19a4c116,
  0x1e376c08,
  0x2748774c,
  0x34b0bcb5,
  0x391c0cb3,
  0x4ed8aa4a,
  0x5b9cca4f,
  0x682e6ff3,
  0x748f82ee,
  0x78a5636f,
  0x84c87814,
  0x8cc70208,
  0x90befffa,
  0xa4506ceb,
  0xbef9a3f7,
  0xc67178f2,
]);
const W = new Int32Array(64);
const H = new Int32Array(8);

/** Compresses the 64-byte blocks of `b[0, end)` into `H`. */
function compress(b: Uint8Array, end: number): void {
  let h0 = H[0], h1 = H[1], h2 = H[2], h3 = H[3];
  let h4 = H[4], h5 = H[5], h6 = H[6], h7 = H[7];
  for (let off = 0; off < end; off += 64) {
    for (let t = 0, j = off; t < 16; t++, j += 4) {
      W[t] = (b[j] << 24) | (b[j + 1] << 16) | (b[j + 2] << 8) | b[j + 3];
    }
    for (let t = 16; t < 64; t++) {
      const x = W[t - 15], y = W[t - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^
        (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^
        (y >>> 10);
      W[t] = (W[t - 16] + s0 + W[t - 7] + s1) | 0;
    }
    let a = h0, c1 = h1, c2 = h2, d = h3, e = h4, f = h5, g = h6, h = h7;
    for (let t = 0; t < 64; t++) {
      const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^
        ((e >>> 25) | (e << 7));
      const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[t] + W[t]) | 0;
      const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^
        ((a >>> 22) | (a << 10));
      const t2 = (s0 + ((a & c1) ^ (a & c2) ^ (c1 & c2))) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c2;
      c2 = c1;
      c1 = a;
      a = (t1 + t2) | 0;
    }
    h0 = (h0 + a) | 0;
    h1 = (h1 + c1) | 0;
    h2 = (h2 + c2) | 0;
    h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0;
    h5 = (h5 + f) | 0;
    h6 = (h6 + g) | 0;
    h7 = (h7 + h) | 0;
  }
  H[0] = h0;
  H[1] = h1;
  H[2] = h2;
  H[3] = h3;
  H[4] = h4;
  H[5] = h5;
  H[6] = h6;
  H[7] = h7;
}

function digestOut(): Uint8Array {
  const out = new Uint8Array(32);
  for (let i = 0, j = 0; i < 8; i++, j += 4) {
    const v = H[i];
    out[j] = v >>> 24;
    out[j + 1] = v >>> 16;
    out[j + 2] = v >>> 8;
    out[j + 3] = v;
  }
  return out;
}

function init(): void {
  H[0] = 0x6a09e667;
  H[1] = 0xbb67ae85;
  H[2] = 0x3c6ef372;
  H[3] = 0xa54ff53a;
  H[4] = 0x510e527f;
  H[5] = 0x9b05688c;
  H[6] = 0x1f83d9ab;
  H[7] = 0x5be0cd19;
}

let padded = new Uint8Array(256);

/**
 * SHA-256 of `data`, in JavaScript (the input is copied into a reused,
 * padded buffer). Meant for small inputs; `node:crypto` is faster past a
 * few hundred bytes.
 *
 * @example Usage
 * ```ts
 * import { sha256 } from "./sealed_sha256.ts";
 * sha256(new TextEncoder().encode("abc")).toHex();
 * // "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
 * ```
 */
export function sha256(data: Uint8Array): Uint8Array {
  const length = data.length;
  const end = ((length + 9 + 63) >>> 6) << 6;
  if (padded.length < end) padded = new Uint8Array(end * 2);
  padded.set(data);
  padded[length] = 0x80;
  padded.fill(0, length + 1, end);
  // The length in bits, big-endian in the last 8 bytes (< 2^53).
  const high = Math.floor(length / 0x2000_0000);
  const low = (length << 3) >>> 0;
  padded[end - 8] = high >>> 24;
  padded[end - 7] = high >>> 16;
  padded[end - 6] = high >>> 8;
  padded[end - 5] = high;
  padded[end - 4] = low >>> 24;
  padded[end - 3] = low >>> 16;
  padded[end - 2] = low >>> 8;
  padded[end - 1] = low;
  init();
  compress(padded, end);
  return digestOut();
}

// An inner node's input, 0x01 || left || right (65 bytes), padded to two
// blocks: only the 64 digest bytes change from node to node.
const nodeBlocks = new Uint8Array(128);
nodeBlocks[0] = 1;
nodeBlocks[65] = 0x80;
nodeBlocks[126] = (65 * 8) >>> 8;
nodeBlocks[127] = (65 * 8) & 0xff;

/**
 * A Merkle inner node of a sealed batch: SHA-256 over the node tag 0x01 and
 * the two 32-byte child digests.
 *
 * @example Usage
 * ```ts
 * import { merkleNode, sha256 } from "./sealed_sha256.ts";
 * const l = new Uint8Array(32).fill(1), r = new Uint8Array(32).fill(2);
 * merkleNode(l, r).toHex() === sha256(new Uint8Array([1, ...l, ...r])).toHex(); // true
 * ```
 */
export function merkleNode(left: Uint8Array, right: Uint8Array): Uint8Array {
  nodeBlocks.set(left, 1);
  nodeBlocks.set(right, 33);
  init();
  compress(nodeBlocks, 128);
  return digestOut();
}
