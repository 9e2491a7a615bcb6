/**
 * The agent gateway's record layer: one ChaCha20-Poly1305 key per direction,
 * counter nonces, a sliding replay window, and rekeying by message count and
 * time. Specified in `docs/protocol.md` ("Records").
 *
 * A record is one binary WebSocket frame:
 *
 * ```
 * offset  size  field
 * 0       1     record version (1)
 * 1       1     flags (bit 0: the body starts with a 64-byte Ed25519 signature)
 * 2       4     epoch, u32 big-endian (0 after the handshake, +1 per rekey)
 * 6       8     sequence number within the epoch, u64 big-endian, from 0
 * 14      2     header length H, u16 big-endian
 * 16      H     header: UTF-8 JSON {"sid","from","to","ch","type","id",...}
 * 16+H    ...   ciphertext of the body, then the 16-byte Poly1305 tag
 * ```
 *
 * The 12-byte nonce is epoch ‖ sequence; the additional data is every byte
 * before the ciphertext, so the header (session id, sender, recipient,
 * channel, type, message id) is authenticated: change one byte and the
 * record is refused. Everything here is synchronous (node:crypto), so records
 * are sealed and sent in sequence order.
 *
 * A sealed batch frame ({@linkcode SEALED_BATCH_TYPE}, "Sealed batch frames"
 * in the same document) has a record's outer bytes with type 3 in place of
 * the version, and ONE ciphertext of several inner records laid out by
 * {@linkcode BatchWriter}: one AEAD operation and one sequence number for
 * the lot ({@linkcode RecordSealer.sealBatch}, {@linkcode
 * RecordOpener.openBatch}, {@linkcode readInnerRecord}).
 *
 * @module
 */
import { createCipheriv, createDecipheriv, hkdfSync } from "node:crypto";

/** Record format version. */
export const RECORD_VERSION = 1;
/** Bytes before the header. */
export const RECORD_PREFIX_BYTES = 16;
/** Poly1305 tag length. */
export const TAG_BYTES = 16;
/** Flag: the body begins with a detached Ed25519 signature. */
export const FLAG_SIGNED = 1;
/** Largest header, bytes. */
export const MAX_HEADER_BYTES = 4096;
/** HKDF info for the next epoch's key. */
export const REKEY_INFO = "plexus-gateway/v1 rekey";
/**
 * First byte of a sealed batch frame: the outer bytes of a record (this type
 * where a record has its version), then one ciphertext of several inner
 * records ({@linkcode BatchWriter}). docs/protocol.md, "Sealed batch frames".
 */
export const SEALED_BATCH_TYPE = 3;
/** Bytes before an inner record's header: u32 length, flags, u16 header length. */
export const INNER_PREFIX_BYTES = 7;
/** Largest sealed batch frame a {@linkcode RecordOpener} accepts whatever its record limit: 64 KiB of inner records, the outer bytes and the tag. */
export const SEALED_BATCH_MAX_BYTES = 64 * 1024 + RECORD_PREFIX_BYTES +
  MAX_HEADER_BYTES + TAG_BYTES;

/** The authenticated routing header of a record. */
export interface RecordHeader {
  /** Session id (from the handshake). */
  sid: string;
  /** Sender: the agent id, or `node:{id}` for the gateway. */
  from: string;
  /** Recipient: the agent id, or `backend`. */
  to: string;
  /** Channel, e.g. `agent.{id}.heartbeat`; empty for control records. */
  ch: string;
  /** Record type: `auth`, `ready`, `msg`, `ack`, `sub`, `unsub`, `ping`, ... */
  type: string;
  /** Message id (unique per sender). */
  id: string;
  /** Further string/number fields (priority, reply-to, correlation). */
  [field: string]: string | number | boolean | undefined;
}

/** An opened record. */
export interface OpenedRecord {
  header: RecordHeader;
  /** The decrypted body (without the signature, when signed). */
  body: Uint8Array;
  /** The detached signature, when the record is flagged signed. */
  signature?: Uint8Array;
  /** The exact header bytes (what a signature covers, with the body). */
  headerBytes: Uint8Array;
  epoch: number;
  seq: number;
  /**
   * The body as text, when the reader decoded it already ({@linkcode
   * readInnerRecord}, an ASCII record): what a `TextDecoder` makes of
   * `body`.
   */
  text?: string;
}

/** Why a record was refused; the gateway closes with 4403 (1009 for size). */
export class RecordError extends Error {
  override name = "RecordError";
  constructor(
    readonly reason:
      | "too-large"
      | "malformed"
      | "bad-version"
      | "bad-epoch"
      | "replayed"
      | "too-old"
      | "bad-tag"
      | "exhausted",
    message: string,
  ) {
    super(message);
  }
}

/** When a sender moves to a new key. */
export interface RekeyPolicy {
  /** Records per epoch. @default {1048576} */
  afterMessages?: number;
  /** Age of an epoch's key, ms. @default {600000} (10 min) */
  afterMs?: number;
}

/** The key of the next epoch: HKDF-SHA256(ikm = key, salt = "", info = REKEY_INFO), 32 bytes. */
export function nextKey(key: Uint8Array): Uint8Array {
  return new Uint8Array(
    hkdfSync("sha256", key, new Uint8Array(0), REKEY_INFO, 32),
  );
}

/** The 12-byte nonce epoch ‖ sequence, one buffer reused per direction. */
class Nonce {
  readonly bytes = new Uint8Array(12);
  readonly #view = new DataView(this.bytes.buffer);

  of(epoch: number, seq: number): Uint8Array {
    this.#view.setUint32(0, epoch);
    this.#view.setUint32(4, Math.floor(seq / 0x1_0000_0000));
    this.#view.setUint32(8, seq >>> 0);
    return this.bytes;
  }
}

/** The cipher options of every record (one object, not one per record). */
const AEAD = { authTagLength: TAG_BYTES } as const;

/** Reads the u64 sequence at `at`; above 2^53 - 1 (never sent) → -1. */
function readSeq(v: DataView, at: number): number {
  const hi = v.getUint32(at);
  if (hi > 0x1f_ffff) return -1;
  return hi * 0x1_0000_0000 + v.getUint32(at + 4);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const looseDecoder = new TextDecoder();

/**
 * The header's text, or a TypeError when it is not UTF-8. The lenient
 * decoder is Deno's fast path (~0.12 against ~0.34 µs for 200 bytes); a
 * header whose text holds U+FFFD is decoded again strictly, so invalid bytes
 * are refused as before.
 */
function decodeHeader(bytes: Uint8Array): string {
  const text = looseDecoder.decode(bytes);
  return text.includes("\uFFFD") ? decoder.decode(bytes) : text;
}

/** The exact header bytes a record carries (and a message signature covers). */
export function encodeHeader(header: RecordHeader): Uint8Array {
  return encoder.encode(JSON.stringify(header));
}

/**
 * The sending half: seals records in sequence and rekeys on schedule.
 *
 * @example Usage
 * ```ts
 * import { RecordOpener, RecordSealer } from "./record.ts";
 * import assert from "node:assert/strict";
 * const key = new Uint8Array(32).fill(1);
 * const tx = new RecordSealer(key);
 * const rx = new RecordOpener(key);
 * const header = { sid: "s", from: "a", to: "backend", ch: "agent.a.x", type: "msg", id: "1" };
 * const frame = tx.seal(header, new TextEncoder().encode("hi"));
 * assert.equal(new TextDecoder().decode(rx.open(frame).body), "hi");
 * ```
 */
export class RecordSealer {
  #key: Uint8Array;
  #epoch = 0;
  #seq = 0;
  readonly #nonce = new Nonce();
  #epochStarted: number;
  readonly #afterMessages: number;
  readonly #afterMs: number;
  readonly #now: () => number;

  constructor(
    key: Uint8Array,
    policy: RekeyPolicy = {},
    now: () => number = Date.now,
  ) {
    if (key.length !== 32) throw new RangeError("key must be 32 bytes");
    this.#key = key.slice();
    this.#afterMessages = policy.afterMessages ?? 1 << 20;
    if (
      !Number.isSafeInteger(this.#afterMessages) || this.#afterMessages < 1
    ) {
      throw new RangeError(
        `afterMessages must be a safe integer >= 1, got ${this.#afterMessages}`,
      );
    }
    this.#afterMs = policy.afterMs ?? 600_000;
    this.#now = now;
    this.#epochStarted = now();
  }

  /** The current epoch (for metrics and tests). */
  get epoch(): number {
    return this.#epoch;
  }

  /** Moves to the next epoch's key once this one sealed its share or aged out. */
  #rekeyIfDue(): void {
    if (
      this.#seq >= this.#afterMessages ||
      this.#now() - this.#epochStarted >= this.#afterMs
    ) {
      if (this.#epoch === 0xffff_ffff) {
        throw new RecordError("exhausted", "epochs exhausted; reconnect");
      }
      this.#key = nextKey(this.#key);
      this.#epoch++;
      this.#seq = 0;
      this.#epochStarted = this.#now();
    }
  }

  /**
   * Seals a sealed batch frame ({@linkcode SEALED_BATCH_TYPE}): `plain` is
   * the inner records as a {@linkcode BatchWriter} lays them out, sealed
   * with ONE ChaCha20-Poly1305 operation under the next sequence number (a
   * frame counts as one record for the replay window and the rekey
   * schedule). The outer header is empty. The frame does not share bytes
   * with `plain`, so `plain` may be reused at once; like a record's, a
   * small frame is a view of a shared slab.
   *
   * @example Usage
   * ```ts
   * import { BatchWriter, RecordOpener, RecordSealer, readInnerRecord } from "./record.ts";
   * import assert from "node:assert/strict";
   * const key = new Uint8Array(32).fill(2);
   * const w = new BatchWriter();
   * const h = { sid: "s", from: "node:n", to: "a", ch: "backend.a.x", type: "msg", id: "1" };
   * w.add(h, new TextEncoder().encode("one"));
   * w.add({ ...h, id: "2" }, new TextEncoder().encode("two"));
   * const frame = new RecordSealer(key).sealBatch(w.bytes());
   * const { plain } = new RecordOpener(key).openBatch(frame);
   * const first = readInnerRecord(plain, 0, h);
   * assert.equal(first.record.header.id, "1");
   * assert.equal(readInnerRecord(plain, first.next, h).record.header.id, "2");
   * ```
   */
  sealBatch(plain: Uint8Array): Uint8Array<ArrayBuffer> {
    this.#rekeyIfDue();
    const epoch = this.#epoch, seq = this.#seq;
    // A small frame is cut from the shared slab, as a record's is.
    const out = frameBytes(RECORD_PREFIX_BYTES + plain.length + TAG_BYTES);
    writePrefix(out, SEALED_BATCH_TYPE, 0, epoch, seq, 0);
    this.#encrypt(out, RECORD_PREFIX_BYTES, epoch, seq, plain);
    return out;
  }

  /**
   * Seals one record. `signature`, when given, is put before the body and
   * flagged. The frame is a view: records up to 4 KiB share 64 KiB buffers
   * (one allocation per ~150 small records), so its `byteOffset` may be
   * non-zero and its `buffer` holds other records; copy it to keep it alone.
   */
  seal(
    header: RecordHeader,
    body: Uint8Array,
    signature?: Uint8Array,
  ): Uint8Array<ArrayBuffer> {
    this.#rekeyIfDue();
    if (signature !== undefined && signature.length !== 64) {
      throw new RangeError("signature must be 64 bytes");
    }
    const plainLength = body.length + (signature ? 64 : 0);
    // The header's JSON is written straight into the frame when it is ASCII
    // (one allocation, no copy); otherwise encoded first.
    const json = JSON.stringify(header);
    let hLen = json.length;
    let out = frameBytes(RECORD_PREFIX_BYTES + hLen + plainLength + TAG_BYTES);
    const wrote = encoder.encodeInto(json, out.subarray(RECORD_PREFIX_BYTES));
    if (wrote.read !== json.length || wrote.written !== hLen) {
      const h = encoder.encode(json);
      hLen = h.length;
      if (hLen <= MAX_HEADER_BYTES) {
        out = frameBytes(RECORD_PREFIX_BYTES + hLen + plainLength + TAG_BYTES);
        out.set(h, RECORD_PREFIX_BYTES);
      }
    }
    if (hLen > MAX_HEADER_BYTES) {
      throw new RecordError(
        "malformed",
        `header is ${hLen} bytes (limit ${MAX_HEADER_BYTES})`,
      );
    }
    const epoch = this.#epoch, seq = this.#seq;
    writePrefix(
      out,
      RECORD_VERSION,
      signature ? FLAG_SIGNED : 0,
      epoch,
      seq,
      hLen,
    );
    const aadEnd = RECORD_PREFIX_BYTES + hLen;
    if (signature) this.#encrypt(out, aadEnd, epoch, seq, signature, body);
    else this.#encrypt(out, aadEnd, epoch, seq, body);
    return out;
  }

  /**
   * Encrypts `parts` (the plaintext, in order) into `out` after its first
   * `aadEnd` bytes (the additional data), then the tag, under the nonce of
   * `epoch` and `seq`; moves the sequence on.
   */
  #encrypt(
    out: Uint8Array,
    aadEnd: number,
    epoch: number,
    seq: number,
    ...parts: Uint8Array[]
  ): void {
    const cipher = createCipheriv(
      "chacha20-poly1305",
      this.#key,
      this.#nonce.of(epoch, seq),
      AEAD,
    );
    let plainLength = 0;
    for (const p of parts) plainLength += p.length;
    cipher.setAAD(out.subarray(0, aadEnd), { plaintextLength: plainLength });
    let at = aadEnd;
    for (const p of parts) {
      const c = cipher.update(p);
      out.set(c, at);
      at += c.length;
    }
    const f = cipher.final();
    if (f.length) out.set(f, at);
    at += f.length;
    out.set(cipher.getAuthTag(), at);
    this.#seq++;
  }
}

/**
 * Writes a frame's first 16 bytes: type or version, flags, epoch (u32),
 * sequence (u64) and header length (u16), big-endian.
 */
function writePrefix(
  out: Uint8Array,
  type: number,
  flags: number,
  epoch: number,
  seq: number,
  hLen: number,
): void {
  const hi = Math.floor(seq / 0x1_0000_0000), lo = seq >>> 0;
  out[0] = type;
  out[1] = flags;
  out[2] = epoch >>> 24;
  out[3] = epoch >>> 16;
  out[4] = epoch >>> 8;
  out[5] = epoch;
  out[6] = hi >>> 24;
  out[7] = hi >>> 16;
  out[8] = hi >>> 8;
  out[9] = hi;
  out[10] = lo >>> 24;
  out[11] = lo >>> 16;
  out[12] = lo >>> 8;
  out[13] = lo;
  out[14] = hLen >>> 8;
  out[15] = hLen;
}

/** Records up to this size are cut from a shared slab. */
const SLAB_RECORD_BYTES = 4096;
const SLAB_BYTES = 64 * 1024;
let slab = new ArrayBuffer(SLAB_BYTES);
let slabAt = 0;

/**
 * Fresh zeroed bytes for a sealed frame: a view of the current slab (never
 * handed out twice; a full slab is left to the frames that use it and a new
 * one started), or a buffer of its own when big. A small typed array with
 * its own buffer costs ~0.3 µs and off-heap memory the GC tracks; a view
 * ~0.05 µs.
 */
function frameBytes(n: number): Uint8Array<ArrayBuffer> {
  if (n > SLAB_RECORD_BYTES) return new Uint8Array(n);
  if (slabAt + n > SLAB_BYTES) {
    slab = new ArrayBuffer(SLAB_BYTES);
    slabAt = 0;
  }
  const out = new Uint8Array(slab, slabAt, n);
  slabAt += (n + 7) & ~7;
  return out;
}

/** Sliding-window size of the replay check (records). */
export const REPLAY_WINDOW = 64;

/**
 * The receiving half: checks size, version and epoch, authenticates and
 * decrypts, then updates the replay window (only after the tag verified).
 */
export class RecordOpener {
  #key: Uint8Array;
  #epoch = 0;
  /** Highest sequence number accepted in this epoch, -1 before the first. */
  #top = -1;
  /**
   * The replay window: slot `seq % REPLAY_WINDOW` holds the last sequence
   * accepted there. Any sequence inside the window maps to a slot that holds
   * either itself (seen) or one at least a window older (not seen).
   */
  #slots = new Float64Array(REPLAY_WINDOW).fill(-1);
  readonly #nonce = new Nonce();
  readonly #maxBytes: number;

  constructor(key: Uint8Array, options: { maxRecordBytes?: number } = {}) {
    if (key.length !== 32) throw new RangeError("key must be 32 bytes");
    this.#key = key.slice();
    this.#maxBytes = options.maxRecordBytes ?? (1 << 20) + 8192;
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** Opens one frame or throws {@linkcode RecordError}. */
  open(frame: Uint8Array): OpenedRecord {
    const d = this.#decrypt(frame, RECORD_VERSION, this.#maxBytes);
    const { plain, aadEnd, flags } = d;
    // Authentic: now parse the header and move the window. The header bytes
    // are a view of the frame (the caller's, not written to here).
    const headerBytes = frame.subarray(RECORD_PREFIX_BYTES, aadEnd);
    let header: RecordHeader;
    try {
      header = JSON.parse(decodeHeader(headerBytes));
    } catch {
      throw new RecordError("malformed", "header is not UTF-8 JSON");
    }
    if (!isHeader(header)) {
      throw new RecordError(
        "malformed",
        "header lacks sid/from/to/ch/type/id strings",
      );
    }
    const signed = (flags & FLAG_SIGNED) !== 0;
    if (signed && plain.length < 64) {
      throw new RecordError(
        "malformed",
        "signed record shorter than its signature",
      );
    }
    this.#accept(d);
    return {
      header,
      body: signed ? plain.subarray(64) : plain,
      signature: signed ? plain.slice(0, 64) : undefined,
      headerBytes,
      epoch: d.epoch,
      seq: d.seq,
    };
  }

  /**
   * Opens a sealed batch frame ({@linkcode SEALED_BATCH_TYPE}) or throws
   * {@linkcode RecordError}: the same checks as a record (size, epoch,
   * replay window, tag), its sequence number taking one slot of the window.
   * The plaintext holds the inner records; read them in order with
   * {@linkcode readInnerRecord}. A frame of up to {@linkcode
   * SEALED_BATCH_MAX_BYTES} is accepted even when the record limit is lower.
   *
   * @example Usage
   * ```ts
   * import { BatchWriter, RecordOpener, RecordSealer } from "./record.ts";
   * import assert from "node:assert/strict";
   * const key = new Uint8Array(32).fill(5);
   * const w = new BatchWriter();
   * w.add({ sid: "s", from: "node:n", to: "a", ch: "", type: "ping", id: "p" }, new Uint8Array(0));
   * const frame = new RecordSealer(key).sealBatch(w.bytes());
   * const rx = new RecordOpener(key);
   * assert.equal(rx.openBatch(frame).seq, 0);
   * assert.throws(() => rx.openBatch(frame), /already received/);
   * ```
   */
  openBatch(
    frame: Uint8Array,
  ): { plain: Uint8Array; epoch: number; seq: number } {
    const d = this.#decrypt(
      frame,
      SEALED_BATCH_TYPE,
      Math.max(this.#maxBytes, SEALED_BATCH_MAX_BYTES),
    );
    if (d.flags !== 0) {
      throw new RecordError("malformed", `sealed batch flags ${d.flags}`);
    }
    this.#accept(d);
    return { plain: d.plain, epoch: d.epoch, seq: d.seq };
  }

  /** Checks a frame's outer bytes, its place in the window and its tag; returns the plaintext. */
  #decrypt(frame: Uint8Array, type: number, maxBytes: number): Decrypted {
    if (frame.length > maxBytes) {
      throw new RecordError(
        "too-large",
        `record of ${frame.length} bytes (limit ${maxBytes})`,
      );
    }
    if (frame.length < RECORD_PREFIX_BYTES + TAG_BYTES) {
      throw new RecordError(
        "malformed",
        `record of ${frame.length} bytes is truncated`,
      );
    }
    const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    if (frame[0] !== type) {
      throw new RecordError(
        "bad-version",
        type === RECORD_VERSION
          ? `record version ${frame[0]}`
          : `frame type ${frame[0]} (expected ${type})`,
      );
    }
    const flags = frame[1];
    if ((flags & ~FLAG_SIGNED) !== 0) {
      throw new RecordError("malformed", `unknown flags ${flags}`);
    }
    const epoch = v.getUint32(2);
    const seq = readSeq(v, 6);
    if (seq < 0) {
      throw new RecordError("malformed", "sequence number out of range");
    }
    const hLen = v.getUint16(14);
    const aadEnd = RECORD_PREFIX_BYTES + hLen;
    if (hLen > MAX_HEADER_BYTES || aadEnd + TAG_BYTES > frame.length) {
      throw new RecordError("malformed", `header length ${hLen} does not fit`);
    }
    let key = this.#key;
    if (epoch === this.#epoch + 1) key = nextKey(this.#key);
    else if (epoch !== this.#epoch) {
      throw new RecordError(
        "bad-epoch",
        `epoch ${epoch} (current ${this.#epoch})`,
      );
    }
    const sameEpoch = epoch === this.#epoch;
    if (sameEpoch && seq <= this.#top) {
      if (this.#top - seq >= REPLAY_WINDOW) {
        throw new RecordError(
          "too-old",
          `sequence ${seq} is behind the window`,
        );
      }
      if (this.#slots[seq % REPLAY_WINDOW] === seq) {
        throw new RecordError(
          "replayed",
          `sequence ${seq} was already received`,
        );
      }
    }
    const tagAt = frame.length - TAG_BYTES;
    const decipher = createDecipheriv(
      "chacha20-poly1305",
      key,
      this.#nonce.of(epoch, seq),
      AEAD,
    );
    decipher.setAAD(frame.subarray(0, aadEnd), {
      plaintextLength: tagAt - aadEnd,
    });
    decipher.setAuthTag(frame.subarray(tagAt));
    let plain: Uint8Array;
    try {
      const a = decipher.update(frame.subarray(aadEnd, tagAt));
      const b = decipher.final();
      plain = b.length
        ? concat(a, b)
        : new Uint8Array(a.buffer, a.byteOffset, a.length);
    } catch {
      throw new RecordError("bad-tag", "record failed authentication");
    }
    return { plain, flags, aadEnd, epoch, seq, key, sameEpoch };
  }

  /** Moves the window (and the key, on a new epoch) past an authentic frame. */
  #accept(d: Decrypted): void {
    if (!d.sameEpoch) {
      this.#key = d.key;
      this.#epoch = d.epoch;
      this.#top = -1;
      this.#slots.fill(-1);
    }
    this.#slots[d.seq % REPLAY_WINDOW] = d.seq;
    if (d.seq > this.#top) this.#top = d.seq;
  }
}

/** What {@linkcode RecordOpener}'s shared checks hand back. */
interface Decrypted {
  plain: Uint8Array;
  flags: number;
  aadEnd: number;
  epoch: number;
  seq: number;
  key: Uint8Array;
  sameEpoch: boolean;
}

const HEADER_KEYS = ["sid", "from", "to", "ch", "type", "id"] as const;

function isHeader(h: unknown): h is RecordHeader {
  if (typeof h !== "object" || h === null || Array.isArray(h)) return false;
  const r = h as Record<string, unknown>;
  for (const k of HEADER_KEYS) {
    if (typeof r[k] !== "string") return false;
  }
  return true;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** The inner header's JSON: without `sid`/`from`/`to` (implied by the session) unless signed. */
function innerHeaderJson(header: RecordHeader, signed: boolean): string {
  if (signed) return JSON.stringify(header);
  const { sid: _sid, from: _from, to: _to, ...inner } = header;
  return JSON.stringify(inner);
}

/**
 * Lays out the inner records of a sealed batch frame in one reusable
 * buffer. Each inner record is
 *
 * ```
 * offset  size  field
 * 0       4     L = length of what follows, u32 big-endian
 * 4       1     flags (bit 0: the body starts with a 64-byte Ed25519 signature)
 * 5       2     h = header length, u16 big-endian (≤ 4096)
 * 7       h     header, UTF-8 JSON {"ch","type","id",...}
 * 7+h     L-3-h body (signature first when flagged)
 * ```
 *
 * An unsigned record's header leaves out `sid`, `from` and `to` (the
 * session key implies them: the receiver fills in its session id, the
 * node and itself); a signed one keeps its full header, the exact bytes the
 * signature covers.
 *
 * @example Usage
 * ```ts
 * import { BatchWriter, readInnerRecord } from "./record.ts";
 * import assert from "node:assert/strict";
 * const w = new BatchWriter();
 * w.add({ sid: "s", from: "node:n", to: "a", ch: "backend.a.x", type: "msg", id: "1" }, new Uint8Array([7]));
 * const { record, next } = readInnerRecord(w.bytes(), 0, { sid: "s", from: "node:n", to: "a" });
 * assert.deepEqual([record.header.sid, record.header.id, [...record.body]], ["s", "1", [7]]);
 * assert.equal(next, w.length);
 * ```
 */
export class BatchWriter {
  #buf: Uint8Array;
  #view: DataView;
  #at = 0;
  #count = 0;
  readonly #initial: number;

  /** A writer whose buffer starts at `initialBytes` and grows as needed. */
  constructor(initialBytes = 8192) {
    this.#initial = initialBytes;
    this.#buf = new Uint8Array(initialBytes);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Bytes of inner records so far. */
  get length(): number {
    return this.#at;
  }

  /** Inner records so far. */
  get count(): number {
    return this.#count;
  }

  /**
   * Appends one inner record (see the class doc); returns the bytes it
   * took. `signature`, when given, goes before the body and is flagged.
   */
  add(
    header: RecordHeader,
    body: Uint8Array,
    signature?: Uint8Array,
  ): number {
    return this.addJson(
      innerHeaderJson(header, signature !== undefined),
      body,
      signature,
    );
  }

  /** {@linkcode BatchWriter.add} with the inner header's JSON already made. */
  addJson(json: string, body: Uint8Array, signature?: Uint8Array): number {
    if (signature !== undefined && signature.length !== 64) {
      throw new RangeError("signature must be 64 bytes");
    }
    const plainLength = body.length + (signature ? 64 : 0);
    this.#ensure(INNER_PREFIX_BYTES + json.length * 3 + plainLength);
    const start = this.#at;
    const buf = this.#buf;
    const hLen = encoder.encodeInto(
      json,
      buf.subarray(start + INNER_PREFIX_BYTES),
    ).written;
    if (hLen > MAX_HEADER_BYTES) {
      throw new RecordError(
        "malformed",
        `header is ${hLen} bytes (limit ${MAX_HEADER_BYTES})`,
      );
    }
    this.#view.setUint32(start, 3 + hLen + plainLength);
    buf[start + 4] = signature ? FLAG_SIGNED : 0;
    this.#view.setUint16(start + 5, hLen);
    let at = start + INNER_PREFIX_BYTES + hLen;
    if (signature) {
      buf.set(signature, at);
      at += 64;
    }
    buf.set(body, at);
    at += body.length;
    this.#at = at;
    this.#count++;
    return at - start;
  }

  /**
   * Appends one unsigned inner record whose header is `head` followed by
   * the first `restHeader` bytes of `rest`, and whose body is the rest of
   * `rest`: a record made of a per-recipient start (`{"ch":"…"`, say) and a
   * part made once for every recipient, copied, not encoded. Returns the
   * bytes it took.
   */
  addShared(head: Uint8Array, rest: Uint8Array, restHeader: number): number {
    const hLen = head.length + restHeader;
    if (hLen > MAX_HEADER_BYTES) {
      throw new RecordError(
        "malformed",
        `header is ${hLen} bytes (limit ${MAX_HEADER_BYTES})`,
      );
    }
    const size = INNER_PREFIX_BYTES + head.length + rest.length;
    this.#ensure(size);
    const start = this.#at;
    const buf = this.#buf;
    this.#view.setUint32(start, size - 4);
    buf[start + 4] = 0;
    this.#view.setUint16(start + 5, hLen);
    buf.set(head, start + INNER_PREFIX_BYTES);
    buf.set(rest, start + INNER_PREFIX_BYTES + head.length);
    this.#at = start + size;
    this.#count++;
    return size;
  }

  /** The inner records so far: a view of the buffer, valid until the next `add` or `clear`. */
  bytes(): Uint8Array {
    return this.#buf.subarray(0, this.#at);
  }

  /** Empties the writer; the buffer is kept (or shrunk back after a big batch). */
  clear(): void {
    this.#at = 0;
    this.#count = 0;
    if (this.#buf.length > 4 * Math.max(this.#initial, 64 * 1024)) {
      this.#buf = new Uint8Array(this.#initial);
      this.#view = new DataView(this.#buf.buffer);
    }
  }

  #ensure(more: number): void {
    const need = this.#at + more;
    if (need <= this.#buf.length) return;
    const grown = new Uint8Array(Math.max(need, this.#buf.length * 2));
    grown.set(this.#buf.subarray(0, this.#at));
    this.#buf = grown;
    this.#view = new DataView(grown.buffer);
  }
}

/** What a receiver knows from its session: filled in where an inner header leaves them out. */
export interface InnerRecordContext {
  /** The session id. */
  sid: string;
  /** The sender (`node:{id}`). */
  from: string;
  /** The receiver (its agent id). */
  to: string;
  /** The frame's epoch, reported on each record. */
  epoch?: number;
  /** The frame's sequence number, reported on each record. */
  seq?: number;
}

/**
 * Reads the inner record at `at` of a sealed batch's plaintext (from
 * {@linkcode RecordOpener.openBatch}); `next` is where the following one
 * starts (`plain.length` after the last). A length that runs past the
 * plaintext, or a header that is not JSON with the fields of a record,
 * throws {@linkcode RecordError} (`malformed`: close 4403).
 *
 * An unsigned record whose header and body are ASCII (the usual JSON) is
 * decoded with one `TextDecoder` call, not one for the header and one for
 * the body: the record carries its body as text too ({@linkcode
 * OpenedRecord.text}).
 *
 * @example Usage
 * ```ts
 * import { BatchWriter, readInnerRecord } from "./record.ts";
 * import assert from "node:assert/strict";
 * const w = new BatchWriter();
 * w.add({ sid: "s", from: "node:n", to: "a", ch: "", type: "ping", id: "p" }, new Uint8Array(0));
 * const cut = w.bytes().slice(0, w.length - 1);
 * assert.throws(() => readInnerRecord(cut, 0, { sid: "s", from: "node:n", to: "a" }), /runs past/);
 * ```
 */
export function readInnerRecord(
  plain: Uint8Array,
  at: number,
  context: InnerRecordContext,
): { record: OpenedRecord; next: number } {
  const len = at + INNER_PREFIX_BYTES <= plain.length
    ? ((plain[at] << 24) | (plain[at + 1] << 16) | (plain[at + 2] << 8) |
      plain[at + 3]) >>> 0
    : -1;
  const end = at + 4 + len;
  if (len < 3 || end > plain.length) {
    throw new RecordError(
      "malformed",
      `inner record at byte ${at} runs past the frame`,
    );
  }
  const flags = plain[at + 4];
  if ((flags & ~FLAG_SIGNED) !== 0) {
    throw new RecordError("malformed", `unknown inner flags ${flags}`);
  }
  const hLen = (plain[at + 5] << 8) | plain[at + 6];
  const hStart = at + INNER_PREFIX_BYTES;
  const hEnd = hStart + hLen;
  if (hLen > MAX_HEADER_BYTES || hEnd > end) {
    throw new RecordError(
      "malformed",
      `inner header length ${hLen} does not fit`,
    );
  }
  const signed = (flags & FLAG_SIGNED) !== 0;
  const headerBytes = plain.subarray(hStart, hEnd);
  // Header and body in one call when both are ASCII: the lenient decoder
  // makes one U+FFFD of each invalid byte and fewer characters than bytes
  // of each multi-byte character, so the same length and no U+FFFD means
  // ASCII (byte offsets are string offsets).
  let text: string | undefined = signed
    ? undefined
    : looseDecoder.decode(plain.subarray(hStart, end));
  if (
    text !== undefined &&
    (text.length !== end - hStart || text.includes("\uFFFD"))
  ) text = undefined;
  let header: RecordHeader;
  try {
    header = JSON.parse(
      text === undefined ? decodeHeader(headerBytes) : text.slice(0, hLen),
    );
  } catch {
    throw new RecordError("malformed", "inner header is not UTF-8 JSON");
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new RecordError("malformed", "inner header is not a JSON object");
  }
  header.sid ??= context.sid;
  header.from ??= context.from;
  header.to ??= context.to;
  if (!isHeader(header)) {
    throw new RecordError(
      "malformed",
      "inner header lacks ch/type/id strings",
    );
  }
  if (signed && end - hEnd < 64) {
    throw new RecordError(
      "malformed",
      "signed inner record shorter than its signature",
    );
  }
  return {
    record: {
      header,
      body: plain.subarray(signed ? hEnd + 64 : hEnd, end),
      signature: signed ? plain.slice(hEnd, hEnd + 64) : undefined,
      headerBytes,
      epoch: context.epoch ?? 0,
      seq: context.seq ?? 0,
      // One shape with or without it.
      text: text === undefined ? undefined : text.slice(hLen),
    },
    next: end,
  };
}
