/**
 * The authenticated envelope around every gossip packet on the wire:
 * `magic "PG" | version 1 | flags | addr length | sender addr | packet |
 * HMAC-SHA256 (32 bytes)` over everything before the tag, keyed by the
 * cluster secret. The sender's advertised address rides inside the signed
 * part, so replies go to where the sender is reachable (through a NAT or a
 * proxy), not to the datagram's source port.
 *
 * There is no replay window: a captured packet can be replayed until the
 * secret changes. SWIM messages are idempotent (acks match a sequence number
 * the receiver still waits for, alive/suspect/dead carry incarnations), so a
 * replay can at worst repeat old news the receiver already has.
 *
 * @module
 */
import { createHmac, timingSafeEqual } from "node:crypto";

const MAGIC0 = 0x50; // "P"
const MAGIC1 = 0x47; // "G"
const VERSION = 1;
const HEADER = 5;
const TAG = 32;

/** Frame flag: the sender receives only over TCP (its UDP is blocked). */
export const FLAG_TCP_ONLY = 1;

/** A frame that passed its HMAC check. */
export interface OpenedFrame {
  /** The sender's advertised address. */
  from: string;
  /** The gossip packet inside. */
  packet: Uint8Array;
  /** Flags set by the sender ({@linkcode FLAG_TCP_ONLY}). */
  flags: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Seals and opens frames with a key derived from the cluster secret
 * (HMAC-SHA256 of "plexus gossip v1" under the secret, so the same secret
 * can key other links without their tags being interchangeable).
 *
 * @example Usage
 * ```ts
 * import { FrameCodec } from "./frame.ts";
 * const codec = new FrameCodec("a-cluster-secret-of-32-chars!!!!");
 * const frame = codec.seal("127.0.0.1:7946", new Uint8Array([1, 2]));
 * codec.open(frame)?.from; // "127.0.0.1:7946"
 * new FrameCodec("another-secret-of-32-characters!").open(frame); // null
 * ```
 */
export class FrameCodec {
  #key: Uint8Array;

  /** Throws a RangeError when the secret is shorter than 16 characters. */
  constructor(secret: string) {
    if (typeof secret !== "string" || secret.length < 16) {
      throw new RangeError(
        `Gossip needs a cluster secret of at least 16 characters, got ${
          typeof secret === "string" ? `${secret.length}` : typeof secret
        }`,
      );
    }
    this.#key = createHmac("sha256", secret).update("plexus gossip v1")
      .digest();
  }

  /** Wraps `packet` from sender address `from`. */
  seal(from: string, packet: Uint8Array, flags = 0): Uint8Array {
    const addr = encoder.encode(from);
    if (addr.length > 255) {
      throw new RangeError(
        `Gossip address must be at most 255 bytes, got ${addr.length} ('${from}')`,
      );
    }
    const body = HEADER + addr.length + packet.length;
    const out = new Uint8Array(body + TAG);
    out[0] = MAGIC0;
    out[1] = MAGIC1;
    out[2] = VERSION;
    out[3] = flags;
    out[4] = addr.length;
    out.set(addr, HEADER);
    out.set(packet, HEADER + addr.length);
    out.set(this.#tag(out.subarray(0, body)), body);
    return out;
  }

  /** The frame's content, or null when it is malformed or its tag is wrong. */
  open(frame: Uint8Array): OpenedFrame | null {
    if (
      frame.length < HEADER + TAG || frame[0] !== MAGIC0 ||
      frame[1] !== MAGIC1 || frame[2] !== VERSION
    ) {
      return null;
    }
    const addrEnd = HEADER + frame[4];
    const body = frame.length - TAG;
    if (addrEnd > body) return null;
    const tag = this.#tag(frame.subarray(0, body));
    if (!timingSafeEqual(tag, frame.subarray(body))) return null;
    let from: string;
    try {
      from = decoder.decode(frame.subarray(HEADER, addrEnd));
    } catch {
      return null;
    }
    return {
      from,
      packet: frame.slice(addrEnd, body),
      flags: frame[3],
    };
  }

  #tag(data: Uint8Array): Uint8Array {
    return createHmac("sha256", this.#key).update(data).digest();
  }
}
