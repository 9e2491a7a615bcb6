/**
 * The gossip wire format: a datagram is a sequence of messages, each a type
 * byte followed by its fields (unsigned LEB128 varints and length-prefixed
 * UTF-8 strings). Piggybacked broadcasts are encoded once and appended to
 * whatever packet is going out, so a packet's size is exactly what a
 * datagram driver sends.
 *
 * @module
 */

/** What a member believes about another member. */
export type MemberState = "alive" | "suspect" | "dead" | "left";

/** One member's entry in a push/pull exchange. */
export interface MemberSnapshot {
  id: string;
  addr: string;
  incarnation: number;
  state: MemberState;
}

/** Every message of the protocol. */
export type GossipMessage =
  | { type: "ping"; seq: number; target: string }
  | {
    type: "indirect-ping";
    seq: number;
    target: string;
    targetAddr: string;
    nack: boolean;
  }
  | { type: "ack"; seq: number }
  | { type: "nack"; seq: number }
  | { type: "alive"; incarnation: number; node: string; addr: string }
  | { type: "suspect"; incarnation: number; node: string; from: string }
  | { type: "dead"; incarnation: number; node: string; from: string }
  | {
    type: "push-pull";
    join: boolean;
    reply: boolean;
    members: MemberSnapshot[];
  };

const TYPE_CODES = {
  "ping": 1,
  "indirect-ping": 2,
  "ack": 3,
  "nack": 4,
  "alive": 5,
  "suspect": 6,
  "dead": 7,
  "push-pull": 8,
} as const;
const STATE_CODES: MemberState[] = ["alive", "suspect", "dead", "left"];

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** One growable scratch buffer: encoding allocates only the result. */
let scratch = new Uint8Array(1 << 16);

class Writer {
  len = 0;
  #room(n: number): void {
    if (this.len + n <= scratch.length) return;
    let size = scratch.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(scratch.subarray(0, this.len));
    scratch = next;
  }
  byte(b: number): void {
    this.#room(1);
    scratch[this.len++] = b;
  }
  varint(v: number): void {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(
        `Cannot encode varint: expected a safe integer >= 0, got ${v}`,
      );
    }
    this.#room(8);
    while (v >= 0x80) {
      scratch[this.len++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    scratch[this.len++] = v;
  }
  string(s: string): void {
    // ASCII (ids and addresses, in practice) skips the TextEncoder call.
    let ascii = s.length < 0x80;
    for (let i = 0; ascii && i < s.length; i++) {
      if (s.charCodeAt(i) >= 0x80) ascii = false;
    }
    if (ascii) {
      this.#room(1 + s.length);
      scratch[this.len++] = s.length;
      for (let i = 0; i < s.length; i++) scratch[this.len++] = s.charCodeAt(i);
      return;
    }
    const bytes = encoder.encode(s);
    this.varint(bytes.length);
    this.#room(bytes.length);
    scratch.set(bytes, this.len);
    this.len += bytes.length;
  }
  done(): Uint8Array {
    return scratch.slice(0, this.len);
  }
}

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}
  byte(): number {
    if (this.pos >= this.buf.length) {
      throw new RangeError(
        `Cannot decode gossip packet: truncated at byte ${this.pos} of ${this.buf.length}`,
      );
    }
    return this.buf[this.pos++];
  }
  varint(): number {
    let v = 0;
    let mult = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.byte();
      v += (b & 0x7f) * mult;
      if (b < 0x80) return v;
      mult *= 0x80;
    }
    throw new RangeError(
      `Cannot decode gossip packet: varint longer than 8 bytes at byte ${this.pos}`,
    );
  }
  string(): string {
    const len = this.varint();
    if (this.pos + len > this.buf.length) {
      throw new RangeError(
        `Cannot decode gossip packet: string of ${len} bytes at byte ${this.pos} runs past the end (${this.buf.length})`,
      );
    }
    const buf = this.buf;
    const end = this.pos + len;
    if (len <= 64) {
      let i = this.pos;
      while (i < end && buf[i] < 0x80) i++;
      if (i === end) {
        // A flat string (not a rope), so Map lookups on ids stay cheap.
        const s = String.fromCharCode.apply(
          null,
          buf.subarray(this.pos, end) as unknown as number[],
        );
        this.pos = end;
        return s;
      }
    }
    const s = decoder.decode(buf.subarray(this.pos, end));
    this.pos = end;
    return s;
  }
}

function write(w: Writer, m: GossipMessage): void {
  w.byte(TYPE_CODES[m.type]);
  switch (m.type) {
    case "ping":
      w.varint(m.seq);
      w.string(m.target);
      break;
    case "indirect-ping":
      w.varint(m.seq);
      w.string(m.target);
      w.string(m.targetAddr);
      w.byte(m.nack ? 1 : 0);
      break;
    case "ack":
    case "nack":
      w.varint(m.seq);
      break;
    case "alive":
      w.varint(m.incarnation);
      w.string(m.node);
      w.string(m.addr);
      break;
    case "suspect":
    case "dead":
      w.varint(m.incarnation);
      w.string(m.node);
      w.string(m.from);
      break;
    case "push-pull":
      w.byte((m.join ? 1 : 0) | (m.reply ? 2 : 0));
      w.varint(m.members.length);
      for (const s of m.members) {
        w.string(s.id);
        w.string(s.addr);
        w.varint(s.incarnation);
        w.byte(STATE_CODES.indexOf(s.state));
      }
      break;
  }
}

/**
 * Encodes messages into one packet.
 *
 * @example Usage
 * ```ts
 * import { decodePacket, encodePacket } from "./codec.ts";
 * const bytes = encodePacket([{ type: "ping", seq: 7, target: "b" }]);
 * decodePacket(bytes); // [{ type: "ping", seq: 7, target: "b" }]
 * bytes.length; // 4
 * ```
 */
export function encodePacket(messages: readonly GossipMessage[]): Uint8Array {
  const w = new Writer();
  for (const m of messages) write(w, m);
  return w.done();
}

/**
 * Decodes a packet, throwing a `RangeError` naming the byte offset when it
 * is truncated or carries an unknown message type.
 *
 * @example Usage
 * ```ts
 * import { decodePacket, encodePacket } from "./codec.ts";
 * const bytes = encodePacket([{ type: "ack", seq: 1 }, { type: "nack", seq: 2 }]);
 * decodePacket(bytes).length; // 2
 * ```
 */
export function decodePacket(bytes: Uint8Array): GossipMessage[] {
  const r = new Reader(bytes);
  const out: GossipMessage[] = [];
  while (r.pos < bytes.length) {
    const at = r.pos;
    const code = r.byte();
    switch (code) {
      case 1:
        out.push({ type: "ping", seq: r.varint(), target: r.string() });
        break;
      case 2:
        out.push({
          type: "indirect-ping",
          seq: r.varint(),
          target: r.string(),
          targetAddr: r.string(),
          nack: r.byte() === 1,
        });
        break;
      case 3:
        out.push({ type: "ack", seq: r.varint() });
        break;
      case 4:
        out.push({ type: "nack", seq: r.varint() });
        break;
      case 5:
        out.push({
          type: "alive",
          incarnation: r.varint(),
          node: r.string(),
          addr: r.string(),
        });
        break;
      case 6:
      case 7:
        out.push({
          type: code === 6 ? "suspect" : "dead",
          incarnation: r.varint(),
          node: r.string(),
          from: r.string(),
        });
        break;
      case 8: {
        const flags = r.byte();
        const count = r.varint();
        if (count > bytes.length) {
          throw new RangeError(
            `Cannot decode gossip packet: push-pull claims ${count} members in ${bytes.length} bytes`,
          );
        }
        const members: MemberSnapshot[] = [];
        for (let i = 0; i < count; i++) {
          const id = r.string();
          const addr = r.string();
          const incarnation = r.varint();
          const stateCode = r.byte();
          const state = STATE_CODES[stateCode];
          if (state === undefined) {
            throw new RangeError(
              `Cannot decode gossip packet: unknown member state ${stateCode} at byte ${
                r.pos - 1
              }`,
            );
          }
          members.push({ id, addr, incarnation, state });
        }
        out.push({
          type: "push-pull",
          join: (flags & 1) !== 0,
          reply: (flags & 2) !== 0,
          members,
        });
        break;
      }
      default:
        throw new RangeError(
          `Cannot decode gossip packet: unknown message type ${code} at byte ${at}`,
        );
    }
  }
  return out;
}

/**
 * Joins already-encoded messages into one packet (messages are
 * self-delimiting, so concatenation is the compound format).
 *
 * @example Usage
 * ```ts
 * import { concatPacket, decodePacket, encodePacket } from "./codec.ts";
 * const a = encodePacket([{ type: "ack", seq: 1 }]);
 * const b = encodePacket([{ type: "alive", incarnation: 2, node: "n", addr: "h:1" }]);
 * decodePacket(concatPacket([a, b])).length; // 2
 * ```
 */
export function concatPacket(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
