/**
 * The binary layout of a sealed payload, format 3 (docs/wire-format.md,
 * "Sealed payloads"): one versioned byte string holding the sender, topic,
 * session, recipients' wraps, batch number and key stream block, ciphertext
 * and batch proof, carried as `envelope.payload` in base64url (one string; the envelope's routing
 * fields and headers stay readable on the broker). Integers are big-endian.
 * {@linkcode sealedTransport} writes it; {@linkcode decodeSealed} reads it;
 * {@linkcode inspectSealed} shows what a broker tool would not.
 *
 * @module
 */

/** The format byte this module writes and reads. */
export const SEALED_FORMAT = 3;
/** Bytes of a session id. */
export const SESSION_BYTES = 16;
/** Bytes of a wrap's HPKE `enc` (an X25519 public key). */
export const ENC_BYTES = 32;
/** Bytes of an Ed25519 signature. */
export const SIG_BYTES = 64;
/** Bytes of a SHA-256 digest (the root and each path entry). */
export const DIGEST_BYTES = 32;
/** Largest batch read. */
const MAX_BATCH = 4096;
/** Most recipients read. */
const MAX_WRAPS = 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** One recipient's copy of the session key: its id, HPKE `enc` and wrapped key. */
export interface SealedWrap {
  /** The recipient's directory id (`node:ID`, `agent:ID`). */
  r: string;
  /** The HPKE encapsulated key (32 bytes). */
  enc: Uint8Array;
  /** The session key sealed to the recipient (key and tag). */
  k: Uint8Array;
}

/**
 * A format-3 payload decoded. Byte fields from the session id to the wraps
 * are views into `head`, the rest views into `bytes`.
 */
export interface SealedFields {
  /** The whole payload. */
  bytes: Uint8Array;
  /**
   * A copy of the payload's head (format to wraps), shared by the payloads
   * of a session decoded with one another as `known`.
   */
  head: Uint8Array;
  /** The sender's directory id. */
  from: string;
  /** The topic it was sealed for. */
  topic: string;
  /** The session id (16 bytes). */
  session: Uint8Array;
  /** The recipients' wraps, in order. */
  wraps: SealedWrap[];
  /** Where the session id starts and the wraps end in `bytes` (a session's constant part). */
  sessionAt: number;
  /** End of the wraps in `bytes`. */
  wrapsEnd: number;
  /** The batch's number in its session (the ChaCha20 nonce). */
  n: number;
  /** The 64-byte key stream block the ciphertext starts at. */
  block: number;
  /** Offset of the ciphertext in `bytes`. */
  ctAt: number;
  /** End of the ciphertext in `bytes` (where the batch proof starts). */
  ctEnd: number;
  /** The sender's Ed25519 signature over the batch. */
  sig: Uint8Array;
  /** The batch's Merkle root. */
  root: Uint8Array;
  /** The batch's size. */
  m: number;
  /** This message's leaf index in the batch. */
  i: number;
  /** Where the path (sibling digests from the leaf up, 32 bytes each) starts in `bytes`. */
  pathAt: number;
  /** Digests on the path. */
  pathLength: number;
}

/**
 * Digest `k` of a decoded payload's Merkle path (leaf upwards), a view into
 * its bytes; undefined past the path's end.
 *
 * @example Usage
 * ```ts ignore
 * const sibling = pathDigest(fields, 0);
 * ```
 */
export function pathDigest(
  p: SealedFields,
  k: number,
): Uint8Array | undefined {
  if (k >= p.pathLength) return undefined;
  const at = p.pathAt + k * DIGEST_BYTES;
  return p.bytes.subarray(at, at + DIGEST_BYTES);
}

/**
 * The part of a payload that is the same for every message of a session on
 * one topic: format, sender, topic, session id and wraps.
 *
 * @example Usage
 * ```ts
 * import { encodeSealedHead } from "./sealed_format.ts";
 * const head = encodeSealedHead("node:a", "orders.created", new Uint8Array(16), [
 *   { r: "node:b", enc: new Uint8Array(32), k: new Uint8Array(48) },
 * ]);
 * head[0]; // 3
 * ```
 */
export function encodeSealedHead(
  from: string,
  topic: string,
  session: Uint8Array,
  wraps: SealedWrap[],
): Uint8Array {
  const f = encoder.encode(from);
  const t = encoder.encode(topic);
  const rs = wraps.map((w) => encoder.encode(w.r));
  if (f.length < 1 || f.length > 255) {
    throw new RangeError(`sender id '${from}' is not 1-255 bytes`);
  }
  if (t.length < 1 || t.length > 0xffff) {
    throw new RangeError(`topic '${topic}' is not 1-65535 bytes`);
  }
  if (session.length !== SESSION_BYTES) {
    throw new RangeError(`session id is ${session.length} bytes, not 16`);
  }
  if (wraps.length < 1 || wraps.length > MAX_WRAPS) {
    throw new RangeError(`${wraps.length} recipients, not 1-${MAX_WRAPS}`);
  }
  let size = 1 + 1 + f.length + 2 + t.length + SESSION_BYTES + 2;
  wraps.forEach((w, j) => {
    if (rs[j].length < 1 || rs[j].length > 255) {
      throw new RangeError(`recipient id '${w.r}' is not 1-255 bytes`);
    }
    if (w.enc.length !== ENC_BYTES || w.k.length > 255) {
      throw new RangeError(`the wrap of '${w.r}' has a wrong enc or key size`);
    }
    size += 1 + rs[j].length + ENC_BYTES + 1 + w.k.length;
  });
  const out = new Uint8Array(size);
  let at = 0;
  out[at++] = SEALED_FORMAT;
  out[at++] = f.length;
  out.set(f, at);
  at += f.length;
  out[at++] = t.length >>> 8;
  out[at++] = t.length & 0xff;
  out.set(t, at);
  at += t.length;
  out.set(session, at);
  at += SESSION_BYTES;
  out[at++] = wraps.length >>> 8;
  out[at++] = wraps.length & 0xff;
  wraps.forEach((w, j) => {
    out[at++] = rs[j].length;
    out.set(rs[j], at);
    at += rs[j].length;
    out.set(w.enc, at);
    at += ENC_BYTES;
    out[at++] = w.k.length;
    out.set(w.k, at);
    at += w.k.length;
  });
  return out;
}

/**
 * Bytes of a batch proof with a path of `pathLength` digests.
 *
 * @example Usage
 * ```ts
 * import { proofBytes } from "./sealed_format.ts";
 * proofBytes(6); // 64 + 32 + 2 + 2 + 1 + 6 * 32
 * ```
 */
export function proofBytes(pathLength: number): number {
  return SIG_BYTES + DIGEST_BYTES + 5 + DIGEST_BYTES * pathLength;
}

/** Bytes of the batch number, first block and ciphertext length. */
export const COUNTER_BYTES = 16;

/**
 * Writes the batch number, the first key stream block and the ciphertext
 * length at `at` in `out` (sized for the head, {@linkcode COUNTER_BYTES},
 * the ciphertext and a proof): returns where the ciphertext goes.
 *
 * @example Usage
 * ```ts
 * import { writeSealedCounters } from "./sealed_format.ts";
 * const out = new Uint8Array(64);
 * writeSealedCounters(out, 10, 7, 3, 100); // 26
 * ```
 */
export function writeSealedCounters(
  out: Uint8Array,
  at: number,
  n: number,
  block: number,
  ctLength: number,
): number {
  // Byte by byte: no DataView per message.
  writeU32(out, at, Math.floor(n / 0x1_0000_0000));
  writeU32(out, at + 4, n >>> 0);
  writeU32(out, at + 8, block);
  writeU32(out, at + 12, ctLength);
  return at + COUNTER_BYTES;
}

function writeU32(out: Uint8Array, at: number, v: number): void {
  out[at] = v >>> 24;
  out[at + 1] = v >>> 16;
  out[at + 2] = v >>> 8;
  out[at + 3] = v;
}

/**
 * Writes a batch proof at `at` (signature, root, batch size, index, path):
 * returns where it ends.
 *
 * @example Usage
 * ```ts
 * import { proofBytes, writeSealedProof } from "./sealed_format.ts";
 * const out = new Uint8Array(proofBytes(0));
 * writeSealedProof(out, 0, new Uint8Array(64), new Uint8Array(32), 1, 0, []); // 101
 * ```
 */
export function writeSealedProof(
  out: Uint8Array,
  at: number,
  sig: Uint8Array,
  root: Uint8Array,
  m: number,
  i: number,
  path: Uint8Array[],
): number {
  out.set(sig, at);
  at += SIG_BYTES;
  out.set(root, at);
  at += DIGEST_BYTES;
  out[at++] = m >>> 8;
  out[at++] = m & 0xff;
  out[at++] = i >>> 8;
  out[at++] = i & 0xff;
  out[at++] = path.length;
  for (const d of path) {
    out.set(d, at);
    at += DIGEST_BYTES;
  }
  return at;
}

/** Reads a payload front to back, naming what is missing when it is short. */
class Reader {
  at = 0;
  constructor(readonly bytes: Uint8Array) {}
  need(n: number, what: string): void {
    if (this.at + n > this.bytes.length) {
      throw new RangeError(
        `truncated: ${what} needs ${n} bytes at offset ${this.at}, ${
          this.bytes.length - this.at
        } left`,
      );
    }
  }
  u8(what: string): number {
    this.need(1, what);
    return this.bytes[this.at++];
  }
  u16(what: string): number {
    this.need(2, what);
    const v = (this.bytes[this.at] << 8) | this.bytes[this.at + 1];
    this.at += 2;
    return v;
  }
  u32(): number {
    const b = this.bytes, at = this.at;
    this.at += 4;
    return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) |
      b[at + 3]) >>>
      0;
  }
  take(n: number, what: string): Uint8Array {
    this.need(n, what);
    const v = this.bytes.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  text(n: number, what: string): string {
    const b = this.take(n, what);
    // Ids and topics are short and mostly ASCII: no decoder call for those.
    let ascii = "";
    for (let j = 0; j < b.length; j++) {
      if (b[j] > 0x7f) {
        try {
          return decoder.decode(b);
        } catch {
          throw new RangeError(`${what} is not UTF-8`);
        }
      }
      ascii += String.fromCharCode(b[j]);
    }
    return ascii;
  }
}

/**
 * The head decoded (format to wraps), its byte fields views into `head`, a
 * copy of its bytes: shared by every message of a session decoded after it.
 */
function decodeHead(bytes: Uint8Array) {
  const r = new Reader(bytes);
  const format = r.u8("the format byte");
  if (format !== SEALED_FORMAT) {
    throw new RangeError(`format ${format}, not ${SEALED_FORMAT}`);
  }
  const fromLength = r.u8("the sender id's length");
  if (fromLength < 1) {
    throw new RangeError(`sender id is 0 bytes, not 1-255`);
  }
  const from = r.text(fromLength, "the sender id");
  const topicLength = r.u16("the topic's length");
  if (topicLength < 1) throw new RangeError("topic is 0 bytes");
  const topic = r.text(topicLength, "the topic");
  const sessionAt = r.at;
  r.take(SESSION_BYTES, "the session id");
  const count = r.u16("the recipient count");
  if (count < 1 || count > MAX_WRAPS) {
    throw new RangeError(`${count} recipients, not 1-${MAX_WRAPS}`);
  }
  const spans: [string, number, number][] = [];
  for (let j = 0; j < count; j++) {
    const rLength = r.u8("a recipient id's length");
    if (rLength < 1) throw new RangeError(`recipient ${j}'s id is 0 bytes`);
    const id = r.text(rLength, "a recipient id");
    const encAt = r.at;
    r.take(ENC_BYTES, "a wrap's enc");
    spans.push([
      id,
      encAt,
      r.take(r.u8("a wrapped key's length"), "a wrapped key").length,
    ]);
  }
  const wrapsEnd = r.at;
  const head = bytes.slice(0, wrapsEnd);
  const wraps: SealedWrap[] = spans.map(([id, encAt, kLength]) => ({
    r: id,
    enc: head.subarray(encAt, encAt + ENC_BYTES),
    k: head.subarray(encAt + ENC_BYTES + 1, encAt + ENC_BYTES + 1 + kLength),
  }));
  return {
    head,
    from,
    topic,
    session: head.subarray(sessionAt, sessionAt + SESSION_BYTES),
    wraps,
    sessionAt,
    wrapsEnd,
  };
}

/** Whether `bytes` starts with `head`. */
function startsWith(bytes: Uint8Array, head: Uint8Array): boolean {
  if (bytes.length < head.length) return false;
  for (let j = head.length - 1; j >= 0; j--) {
    if (bytes[j] !== head[j]) return false;
  }
  return true;
}

/**
 * Reads a format-3 payload; throws `RangeError` naming what is wrong
 * (truncated, a length out of bounds, trailing bytes, not UTF-8). Given
 * payloads decoded before (`known`), one whose head bytes (format to wraps)
 * this payload starts with lends it its decoded head: the same bytes decode
 * to the same fields, so only the rest is read.
 *
 * @example Usage
 * ```ts
 * import { decodeSealed } from "./sealed_format.ts";
 * try {
 *   decodeSealed(new Uint8Array([3, 0]));
 * } catch (err) {
 *   (err as Error).message; // "sender id is 0 bytes, not 1-255"
 * }
 * ```
 */
export function decodeSealed(
  bytes: Uint8Array,
  known: readonly SealedFields[] = [],
): SealedFields {
  let h:
    | Pick<
      SealedFields,
      "head" | "from" | "topic" | "session" | "wraps" | "sessionAt" | "wrapsEnd"
    >
    | undefined;
  for (const k of known) {
    // The session id's first byte first: sessions differ there nearly always.
    if (
      bytes[k.sessionAt] === k.head[k.sessionAt] && startsWith(bytes, k.head)
    ) {
      h = k;
      break;
    }
  }
  h ??= decodeHead(bytes);
  const r = new Reader(bytes);
  r.at = h.wrapsEnd;
  r.need(COUNTER_BYTES, "the batch number, block and ciphertext length");
  const high = r.u32();
  if (high >= 0x20_0000) {
    throw new RangeError("the batch number is above 2^53");
  }
  const n = high * 0x1_0000_0000 + r.u32();
  const block = r.u32();
  const ctLength = r.u32();
  if (block + Math.ceil(ctLength / 64) > 0x1_0000_0000) {
    throw new RangeError(
      "the ciphertext runs past the key stream's 2^32 blocks",
    );
  }
  const ctAt = r.at;
  r.need(ctLength, "the ciphertext");
  r.at += ctLength;
  const ctEnd = r.at;
  const sig = r.take(SIG_BYTES, "the batch signature");
  const root = r.take(DIGEST_BYTES, "the batch root");
  const m = r.u16("the batch size");
  const i = r.u16("the batch index");
  if (m < 1 || m > MAX_BATCH || i >= m) {
    throw new RangeError(`message ${i} of a batch of ${m}`);
  }
  const pathLength = r.u8("the path length");
  const want = pathLengthOf(i, m);
  if (pathLength !== want) {
    throw new RangeError(
      `message ${i} of a batch of ${m} has a path of ${pathLength} digests, not ${want}`,
    );
  }
  const pathAt = r.at;
  r.need(DIGEST_BYTES * pathLength, "the path");
  r.at += DIGEST_BYTES * pathLength;
  if (r.at !== bytes.length) {
    throw new RangeError(`${bytes.length - r.at} bytes after the batch proof`);
  }
  return {
    bytes,
    head: h.head,
    from: h.from,
    topic: h.topic,
    session: h.session,
    wraps: h.wraps,
    sessionAt: h.sessionAt,
    wrapsEnd: h.wrapsEnd,
    n,
    block,
    ctAt,
    ctEnd,
    sig,
    root,
    m,
    i,
    pathAt,
    pathLength,
  };
}

/**
 * Digests on the Merkle path of leaf `i` in a batch of `m` (a level's odd
 * last node is carried up without a sibling).
 *
 * @example Usage
 * ```ts
 * import { pathLengthOf } from "./sealed_format.ts";
 * pathLengthOf(2, 3); // 1
 * ```
 */
export function pathLengthOf(i: number, m: number): number {
  let k = 0;
  for (let idx = i, count = m; count > 1; idx >>= 1, count = (count + 1) >> 1) {
    if ((idx ^ 1) < count) k++;
  }
  return k;
}

/** What {@linkcode inspectSealed} shows of a sealed payload. */
export interface SealedSummary {
  /** The format byte. */
  format: number;
  /** The sender's directory id. */
  from: string;
  /** The topic it was sealed for. */
  topic: string;
  /** The session id, base64url. */
  session: string;
  /** The recipients' directory ids. */
  recipients: string[];
  /** The batch's number in the session. */
  n: number;
  /** The first key stream block of the ciphertext. */
  block: number;
  /** Offset and length of the ciphertext in the decoded bytes. */
  ciphertext: { offset: number; length: number };
  /** This message's place in its signed batch. */
  batch: { index: number; size: number };
}

/**
 * Decodes a sealed `envelope.payload` (a base64url string) for tools and
 * tests, without checking any signature or key. Throws `RangeError` when it
 * is not a format-3 payload.
 *
 * @example Usage
 * ```ts ignore
 * import { inspectSealed } from "./sealed_format.ts";
 * inspectSealed(envelope.payload).recipients; // ["node:b"]
 * ```
 */
export function inspectSealed(payload: unknown): SealedSummary {
  if (typeof payload !== "string") {
    throw new RangeError("a sealed payload is a base64url string");
  }
  const p = decodeSealed(
    Uint8Array.fromBase64(payload, { alphabet: "base64url" }),
  );
  return {
    format: SEALED_FORMAT,
    from: p.from,
    topic: p.topic,
    session: p.session.toBase64({ alphabet: "base64url", omitPadding: true }),
    recipients: p.wraps.map((w) => w.r),
    n: p.n,
    block: p.block,
    ciphertext: { offset: p.ctAt, length: p.ctEnd - p.ctAt },
    batch: { index: p.i, size: p.m },
  };
}
