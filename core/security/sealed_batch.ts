/**
 * The crypto of sealed batches over one buffer (docs/security.md, "Sealed
 * payloads"). Sending: each message's ChaCha20 in place, its digest (the
 * Merkle leaf), the tree, the Ed25519 signature and each message's proof
 * ({@linkcode sealPlan}). Receiving: each message's digest, its climb to a
 * batch root, the batch signature checked once, and its decryption in place
 * ({@linkcode openPlan}, {@linkcode authenticateProof}). No I/O: the same
 * functions run in the node's thread or on the sealed worker
 * (`sealed_worker.ts`), which is handed a buffer and its plan in one message.
 *
 * @module
 */
import { createHash, type KeyObject, sign, verify } from "node:crypto";
import { chacha20 } from "./hpke.ts";
import { merkleNode } from "./sealed_sha256.ts";
import { digestKey, DigestSet } from "./sealed_digests.ts";
import {
  COUNTER_BYTES,
  DIGEST_BYTES,
  writeSealedCounters,
  writeSealedProof,
} from "./sealed_format.ts";
import { deleteOldest } from "../oldest.ts";

/** What the leaf digest's routing bytes start with: the leaf tag and context. */
export const LEAF_PREFIX = "\0plexus-sealed/v3 message\0";
const BATCH_CONTEXT = "plexus-sealed/v3 batch\0";
const encoder = new TextEncoder();

/** Int32 slots per message in {@linkcode SealPlan.items}. */
export const SEAL_ITEM = 6;

/**
 * A batch to seal: where each message lies in `buf` and the session keys.
 * Per message, `SEAL_ITEM` integers in `items`: where its leaf's routing
 * bytes start (they end where its payload starts: the digest's input is one
 * run of bytes), where its payload starts, where its ciphertext starts and
 * its length (the plaintext there, 4-byte aligned, room for the longest
 * proof after it), its session's index in `sessions`, and a slot the proof's
 * end is written to.
 */
export interface SealPlan {
  buf: Uint8Array<ArrayBuffer>;
  items: Int32Array<ArrayBuffer>;
  /** Each session's key and this batch's number in it (the nonce). */
  sessions: { key: Uint8Array; n: number }[];
}

/**
 * Seals a batch in place: each message's counters written and its plaintext
 * encrypted (one key stream per session, each message from a 64-byte block
 * of its own), the digests taken, the root signed by `signer` for `from`,
 * and each proof written after its ciphertext (its end in the item's last
 * slot).
 *
 * @example Usage
 * ```ts ignore
 * sealPlan(plan, "node:a", signer);
 * const end = plan.items[SEAL_ITEM - 1]; // the first payload's end
 * ```
 */
export function sealPlan(plan: SealPlan, from: string, signer: KeyObject) {
  const { buf, items, sessions } = plan;
  const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2);
  const count = items.length / SEAL_ITEM;
  const leaves: Uint8Array[] = new Array(count);
  for (let s = 0; s < sessions.length; s++) {
    let blocks = 0;
    for (let i = 0; i < count; i++) {
      if (items[i * SEAL_ITEM + 4] === s) {
        blocks += Math.ceil(items[i * SEAL_ITEM + 3] / 64);
      }
    }
    const length = blocks * 64;
    // The key stream is ChaCha20 over zeros: one zero buffer, never written.
    const stream = chacha20(
      sessions[s].key,
      nonceOf(sessions[s].n),
      0,
      length <= ZEROS.length
        ? ZEROS.subarray(0, length)
        : new Uint8Array(length),
    );
    const streamWords = stream.byteOffset % 4 === 0
      ? new Uint32Array(stream.buffer, stream.byteOffset, length >>> 2)
      : undefined;
    let block = 0;
    for (let i = 0; i < count; i++) {
      const o = i * SEAL_ITEM;
      if (items[o + 4] !== s) continue;
      const routingAt = items[o], ctAt = items[o + 2], ctLength = items[o + 3];
      writeSealedCounters(
        buf,
        ctAt - COUNTER_BYTES,
        sessions[s].n,
        block,
        ctLength,
      );
      const at = block * 64;
      let j = 0;
      if (streamWords && ctAt % 4 === 0) {
        const wordAt = ctAt >>> 2, streamAt = at >>> 2;
        const n = ctLength >>> 2;
        for (; j < n; j++) words[wordAt + j] ^= streamWords[streamAt + j];
        j = n * 4;
      }
      for (; j < ctLength; j++) buf[ctAt + j] ^= stream[at + j];
      block += Math.ceil(ctLength / 64);
      leaves[i] = sha256Of(buf.subarray(routingAt, ctAt + ctLength));
    }
  }
  const { root, paths } = merkleTree(leaves);
  const sig = sign(null, batchBytes(from, count, root), signer);
  for (let i = 0; i < count; i++) {
    const o = i * SEAL_ITEM;
    items[o + 5] = writeSealedProof(
      buf,
      items[o + 2] + items[o + 3],
      sig,
      root,
      count,
      i,
      paths[i],
    );
  }
}

/**
 * SHA-256 of `bytes` through `node:crypto`, read as hex: the polyfill copies
 * a binary digest into a Buffer a byte at a time.
 */
export function sha256Of(bytes: Uint8Array): Uint8Array {
  return Uint8Array.fromHex(createHash("sha256").update(bytes).digest("hex"));
}

/**
 * What the sender's Ed25519 key signs: its id, the batch size and root.
 *
 * @example Usage
 * ```ts
 * import { batchBytes } from "./sealed_batch.ts";
 * batchBytes("node:a", 2, new Uint8Array(32)).length; // 23 + 12 + 32
 * ```
 */
export function batchBytes(
  from: string,
  m: number,
  root: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const head = encoder.encode(BATCH_CONTEXT + JSON.stringify([from, m]));
  const out = new Uint8Array(head.length + DIGEST_BYTES);
  out.set(head);
  out.set(root, head.length);
  return out;
}

/**
 * The Merkle root over `leaves` and each leaf's path (sibling digests, leaf
 * upwards). A level's odd last node is carried up unpaired.
 *
 * @example Usage
 * ```ts
 * import { merkleTree } from "./sealed_batch.ts";
 * const leaf = new Uint8Array(32);
 * merkleTree([leaf]).root === leaf; // true
 * ```
 */
export function merkleTree(leaves: Uint8Array[]): {
  root: Uint8Array;
  paths: Uint8Array[][];
} {
  const levels: Uint8Array[][] = [leaves];
  for (let level = leaves; level.length > 1;) {
    const next: Uint8Array[] = [];
    for (let j = 0; j < level.length; j += 2) {
      next.push(
        j + 1 < level.length ? merkleNode(level[j], level[j + 1]) : level[j],
      );
    }
    levels.push(level = next);
  }
  const paths = leaves.map((_, i) => {
    const path: Uint8Array[] = [];
    for (let l = 0, idx = i; l < levels.length - 1; l++, idx >>= 1) {
      const sibling = levels[l][idx ^ 1];
      if (sibling !== undefined) path.push(sibling);
    }
    return path;
  });
  return { root: levels.at(-1)![0], paths };
}

/**
 * The 12-byte ChaCha20 nonce of batch `n` of a session.
 *
 * @example Usage
 * ```ts
 * import { nonceOf } from "./sealed_batch.ts";
 * nonceOf(1)[11]; // 1
 * ```
 */
export function nonceOf(n: number): Uint8Array {
  const nonce = new Uint8Array(12);
  // n < 2^53: the high 32 bits from a division, the low from the remainder.
  const high = Math.floor(n / 0x1_0000_0000);
  const low = n >>> 0;
  nonce[4] = high >>> 24;
  nonce[5] = high >>> 16;
  nonce[6] = high >>> 8;
  nonce[7] = high;
  nonce[8] = low >>> 24;
  nonce[9] = low >>> 16;
  nonce[10] = low >>> 8;
  nonce[11] = low;
  return nonce;
}

/** Verified batch signatures remembered per sender key. */
const MAX_VERIFIED_BATCHES = 4096;
/** Tree nodes under verified roots remembered per sender key (about 2 per message). */
const MAX_KNOWN_NODES = 16_384;

/** Why a batch proof was refused: `code` is the sealed refusal. */
export class ProofRefusal extends Error {
  /** Always "ProofRefusal". */
  override name = "ProofRefusal";
  /** `code` names the refusal, `message` what was found. */
  constructor(readonly code: "malformed" | "bad_signature", message: string) {
    super(message);
  }
}

/** What a message's batch proof is read from (a decoded payload has these). */
export interface ProofView {
  /** The payload's bytes (the path read from `pathAt`). */
  bytes: Uint8Array;
  /** The sender's id (signed with the root). */
  from: string;
  /** The leaf's index and the batch's size. */
  i: number;
  m: number;
  pathAt: number;
  pathLength: number;
  root: Uint8Array;
  sig: Uint8Array;
}

/** One sender key's verified batches and the tree nodes under them. */
export interface VerifiedBatches {
  batches: Map<number, { m: number; root: Uint8Array; sig: Uint8Array }>;
  nodes: DigestSet;
}

/**
 * An empty memory of verified batches, for one sender key.
 *
 * @example Usage
 * ```ts
 * import { verifiedBatches } from "./sealed_batch.ts";
 * verifiedBatches().batches.size; // 0
 * ```
 */
export function verifiedBatches(): VerifiedBatches {
  return { batches: new Map(), nodes: new DigestSet(MAX_KNOWN_NODES) };
}

/**
 * Checks that `leaf` is under a batch root `p`'s sender signed, and
 * remembers the tree nodes on its path once it is: later members of a batch
 * stop climbing at the first node known. The batch signature is verified
 * here, once per batch (`node:crypto`'s Ed25519 with `publicKey()`).
 * Throws {@linkcode ProofRefusal}.
 *
 * @example Usage
 * ```ts ignore
 * authenticateProof(known, () => senderKey, fields, leaf);
 * ```
 */
export function authenticateProof(
  known: VerifiedBatches,
  publicKey: () => KeyObject,
  p: ProofView,
  leaf: Uint8Array,
): void {
  const { batches, nodes } = known;
  if (nodes.has(leaf)) return;
  const learned = [leaf];
  const learn = () => {
    for (const node of learned) nodes.add(node);
  };
  let h = leaf;
  let k = 0;
  for (
    let idx = p.i, count = p.m;
    count > 1;
    idx >>= 1, count = (count + 1) >> 1
  ) {
    if ((idx ^ 1) >= count) continue;
    if (k >= p.pathLength) {
      throw new ProofRefusal(
        "malformed",
        `the batch path of message ${p.i} of ${p.m} has ${p.pathLength} digests, not enough`,
      );
    }
    const at = p.pathAt + k++ * DIGEST_BYTES;
    const sibling = p.bytes.subarray(at, at + DIGEST_BYTES);
    h = idx & 1 ? merkleNode(sibling, h) : merkleNode(h, sibling);
    learned.push(sibling);
    if (nodes.has(h)) return learn();
    learned.push(h);
  }
  if (k !== p.pathLength) {
    throw new ProofRefusal(
      "malformed",
      `the batch path of message ${p.i} of ${p.m} has ${p.pathLength} digests, not ${k}`,
    );
  }
  if (!equalBytes(h, p.root)) {
    throw new ProofRefusal(
      "bad_signature",
      `the signature of '${p.from}' does not cover this envelope: its digest is not in the batch it claims (message ${p.i} of ${p.m}; altered after sealing)`,
    );
  }
  const slot = digestKey(p.root);
  const entry = batches.get(slot);
  if (
    entry && entry.m === p.m && equalBytes(entry.root, p.root) &&
    equalBytes(entry.sig, p.sig)
  ) return learn();
  let good: boolean;
  try {
    good = verify(null, batchBytes(p.from, p.m, h), publicKey(), p.sig);
  } catch (err) {
    throw new ProofRefusal(
      "bad_signature",
      `the key of '${p.from}' does not verify Ed25519 signatures: ${
        (err as Error).message
      }`,
    );
  }
  // Only a good signature is remembered: a bad one must not shadow it.
  if (!good) {
    throw new ProofRefusal(
      "bad_signature",
      `the signature of '${p.from}' does not cover this envelope: the batch signature does not verify over its root (not sealed by '${p.from}')`,
    );
  }
  if (batches.size >= MAX_VERIFIED_BATCHES && !batches.has(slot)) {
    deleteOldest(batches);
  }
  batches.set(slot, { m: p.m, root: p.root.slice(), sig: p.sig.slice() });
  learn();
}

/** Slots per message in {@linkcode OpenPlan.items}. */
export const OPEN_ITEM = 13;

/**
 * Sealed messages to check and decrypt, their leaf inputs side by side in
 * `buf` (each: its routing bytes, then its decoded payload). Per message,
 * `OPEN_ITEM` numbers in `items`: where its routing bytes start (they end
 * where its payload starts), where its payload starts, its ciphertext's
 * start and end, its index and batch size, where its path starts and its
 * length, its sender's index (into the worker's senders), its session key's
 * index in `keys`, its batch number and first block, and a slot the outcome
 * is written to (0 opened, 1 malformed, 2 bad signature; `errors` says
 * what). All offsets are into `buf`.
 */
export interface OpenPlan {
  buf: Uint8Array<ArrayBuffer>;
  items: Float64Array<ArrayBuffer>;
  keys: Uint8Array[];
  errors?: string[];
}

/** A sender as {@linkcode openPlan} sees it. */
export interface PlanSender {
  from: string;
  publicKey: () => KeyObject;
  known: VerifiedBatches;
}

/**
 * Checks each message of `plan` against its batch signature and decrypts
 * the ones that hold in place (the plaintext where the ciphertext was);
 * each outcome in its item's last slot. Messages of one batch share a key
 * stream.
 *
 * @example Usage
 * ```ts ignore
 * openPlan(plan, senders);
 * plan.items[OPEN_ITEM - 1]; // 0: the first message opened
 * ```
 */
export function openPlan(plan: OpenPlan, senders: PlanSender[]): void {
  const { buf, items, keys } = plan;
  const count = items.length / OPEN_ITEM;
  let stream: Uint8Array | undefined;
  let streamKey = -1, streamN = -1, streamStart = 0, streamEnd = 0;
  for (let i = 0; i < count; i++) {
    const o = i * OPEN_ITEM;
    const ctAt = items[o + 2], ctEnd = items[o + 3];
    const sender = senders[items[o + 8]];
    try {
      authenticateProof(sender.known, sender.publicKey, {
        bytes: buf,
        from: sender.from,
        i: items[o + 4],
        m: items[o + 5],
        pathAt: items[o + 6],
        pathLength: items[o + 7],
        sig: buf.subarray(ctEnd, ctEnd + 64),
        root: buf.subarray(ctEnd + 64, ctEnd + 64 + DIGEST_BYTES),
      }, sha256Of(buf.subarray(items[o], ctEnd)));
    } catch (err) {
      items[o + 12] = err instanceof ProofRefusal && err.code === "malformed"
        ? 1
        : 2;
      (plan.errors ??= [])[i] = (err as Error).message;
      continue;
    }
    const key = items[o + 9], n = items[o + 10], block = items[o + 11];
    const end = block + Math.ceil((ctEnd - ctAt) / 64);
    if (
      !stream || key !== streamKey || n !== streamN || block < streamStart ||
      end > streamEnd
    ) {
      // One key stream for this member and the later ones of its batch here.
      streamKey = key;
      streamN = n;
      streamStart = block;
      streamEnd = end;
      for (let j = i + 1; j < count; j++) {
        const q = j * OPEN_ITEM;
        if (items[q + 9] !== key || items[q + 10] !== n) continue;
        if (items[q + 11] < block) continue;
        const e = items[q + 11] + Math.ceil((items[q + 3] - items[q + 2]) / 64);
        if (e > streamEnd && e - block <= 4096) streamEnd = e;
      }
      const length = (streamEnd - streamStart) * 64;
      stream = chacha20(
        keys[key],
        nonceOf(n),
        streamStart,
        length <= ZEROS.length
          ? ZEROS.subarray(0, length)
          : new Uint8Array(length),
      );
    }
    // Four bytes at a time through an aligned scratch copy.
    const length = ctEnd - ctAt, at = (block - streamStart) * 64;
    if (scratch.length < length) scratch = new Uint8Array(length * 2 + 3 & ~3);
    const words = new Uint32Array(scratch.buffer, 0, length >>> 2);
    const streamWords = stream.byteOffset % 4 === 0
      ? new Uint32Array(stream.buffer, stream.byteOffset + at, length >>> 2)
      : undefined;
    scratch.set(buf.subarray(ctAt, ctEnd));
    let j = 0;
    if (streamWords) {
      for (; j < words.length; j++) words[j] ^= streamWords[j];
      j = words.length * 4;
    }
    for (; j < length; j++) scratch[j] ^= stream[at + j];
    buf.set(scratch.subarray(0, length), ctAt);
  }
}
let scratch = new Uint8Array(4096);

/** Whether two byte strings are equal (public values: no constant time needed). */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let j = 0; j < a.length; j++) if (a[j] !== b[j]) return false;
  return true;
}

/** The input of key streams (up to 4,096 blocks at a time). */
export const ZEROS: Uint8Array = new Uint8Array(4096 * 64);
