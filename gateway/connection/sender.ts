/**
 * The one way records leave an agent connection: addressed from the node to
 * the agent under the session id, sealed with the session's node → agent
 * key, sent and counted; and the send side of flow control, which watches
 * the socket's unsent bytes.
 *
 * Flow control: over `sendBufferBytes` unsent, the connection is
 * {@linkcode RecordSender.congested} (delivery claims nothing more). A slow
 * consumer, over the limit for {@linkcode SLOW_CHECK_MS} or at once over the
 * hard cap (8× the limit, and at least the limit plus two frames), is
 * reported to be closed; a buffer that drains below the limit is reported so
 * delivery resumes.
 *
 * Batched frames: once the agent said it reads them ({@linkcode
 * RecordSender.batchFrames}, the `batch` of its `auth`), the records sealed
 * in one turn of the event loop's microtasks (a burst of broadcasts, a
 * backlog) leave in one WebSocket frame: {@linkcode BATCH_FRAME_TYPE}, then
 * each record as a u32 big-endian length and the record, in sequence order,
 * at most {@linkcode BATCH_FRAME_BYTES} (after the type byte) a frame. A lone
 * record, or one too big to share a frame, still leaves as a plain record
 * frame, so no frame is larger than without batching (beyond that limit).
 *
 * Sealed batch frames (`batch: 2` in the agent's `auth`, {@linkcode
 * RecordSender.batchFrames}`(2)`): the records of one microtask turn are
 * laid out as inner records in one buffer kept per connection (a
 * {@linkcode BatchWriter}: header without `sid`/`from`/`to` unless signed,
 * body, in the clear until sealed) and sealed once, when the turn ends,
 * as one {@linkcode SEALED_BATCH_TYPE} frame under one sequence number; at
 * most {@linkcode BATCH_FRAME_BYTES} of inner records a frame. A record too
 * big for that goes alone as a plain record frame, after what waits. So
 * one AEAD per frame instead of one per record (docs/protocol.md, "Sealed
 * batch frames").
 *
 * When a batched frame is cut: at the end of the microtask turn in which
 * its first record came, if the socket has nothing unsent then. If it still
 * has (the agent is behind, or the last frame has not been written yet:
 * Deno writes only in turns of the event loop), records keep joining the
 * frame, and it is cut once the socket has drained (checked on the next
 * turn of the event loop, then by a 1 ms timer), at {@linkcode BATCH_FRAME_BYTES}, or after {@linkcode
 * BATCH_WAIT_MS}, whichever comes first (as Centrifugo coalesces the
 * writes to a client that is behind). Order is kept either way.
 *
 * @module
 */
import {
  BatchWriter,
  INNER_PREFIX_BYTES,
  type RecordHeader,
  type RecordSealer,
} from "../../sdk/protocol/record.ts";
import type { GatewayConfig, GatewayMetrics } from "./types.ts";
import { clearImmediate, setImmediate } from "node:timers";

/** A slow consumer is closed once over the limit this long (as the log stream does). */
export const SLOW_CHECK_MS = 100;
/** First byte of a frame holding several records (a record's first byte is its version, 1). */
export const BATCH_FRAME_TYPE = 2;
/** Most bytes of records (with their lengths) in one batched frame. */
export const BATCH_FRAME_BYTES = 64 * 1024;
/**
 * Longest a batched frame waits for the socket to drain before it is cut
 * anyway (records keep joining it meanwhile; see the module doc).
 */
export const BATCH_WAIT_MS = 4;

/** The fields of a record the node sends (`sid`, `from`, `to` are filled in; `ch` defaults to ""). */
export type RecordFields =
  & { type: string; id: string; ch?: string }
  & Record<string, string | number | boolean | undefined>;

/** What a {@linkcode RecordSender} sends with and reports to. */
export interface RecordSenderOptions {
  /** The agent's socket. */
  socket: Pick<WebSocket, "send" | "readyState" | "bufferedAmount">;
  /** Seals with the session's node → agent key. */
  sealer: RecordSealer;
  /** The session id (`sid`). */
  sid: string;
  /** The sender, `node:{id}`. */
  from: string;
  /** The recipient: the agent id from its hello. */
  to: string;
  /** `sendBufferBytes`: the flow control limit. */
  config: Pick<GatewayConfig, "sendBufferBytes">;
  /** The largest frame (the hard cap allows two over the limit). */
  maxFrame: number;
  /** Counts each frame sent (`"out"`). */
  metrics: Pick<GatewayMetrics, "message">;
  /** Whether the connection is closed (the slow-consumer watch ends). */
  closed(): boolean;
  /** The consumer is too slow: close the connection (4008) with `reason`. */
  slow(reason: string): void;
  /** The unsent bytes fell below the limit again: deliver more. */
  drained(): void;
  /**
   * Longest a batched frame waits for the socket to drain (ms).
   *
   * @default {BATCH_WAIT_MS}
   */
  batchWaitMs?: number;
}

const encoder = new TextEncoder();

/**
 * A record that is the same for every recipient but for its channel (a
 * broadcast's copy): its fields, its body, and its inner header's JSON
 * after the channel, made once ({@linkcode sharedRecord}).
 */
export interface SharedRecord {
  /** The fields without `ch`. */
  readonly fields: RecordFields;
  /** The body. */
  readonly body: Uint8Array;
  /** `,"type":…}`: the inner header's JSON after `{"ch":"…"`. */
  readonly tail: string;
  /** `tail`'s UTF-8 bytes, then `body`: an inner record's bytes after `{"ch":"…"`. */
  readonly rest: Uint8Array;
  /** How many bytes of `rest` are header (`tail`'s). */
  readonly restHeader: number;
}

/**
 * A {@linkcode SharedRecord} of `fields` (no `ch`) and `body`, for
 * {@linkcode RecordSender.sendShared}.
 *
 * @example Usage
 * ```ts
 * import { sharedRecord } from "./sender.ts";
 * import assert from "node:assert/strict";
 * const r = sharedRecord({ type: "msg", id: "m-1", prio: 4 }, new Uint8Array(0));
 * assert.equal(r.tail, ',"type":"msg","id":"m-1","prio":4}');
 * ```
 */
export function sharedRecord(
  fields: RecordFields,
  body: Uint8Array,
): SharedRecord {
  const json = JSON.stringify(fields);
  const tail = json === "{}" ? "}" : `,${json.slice(1)}`;
  const head = encoder.encode(tail);
  const rest = new Uint8Array(head.length + body.length);
  rest.set(head);
  rest.set(body, head.length);
  return { fields, body, tail, rest, restHeader: head.length };
}

/**
 * Seals and sends a connection's records, and watches its send buffer.
 *
 * @example Usage
 * ```ts
 * import { RecordSender } from "./sender.ts";
 * import { RecordOpener, RecordSealer } from "../../sdk/protocol/record.ts";
 * import assert from "node:assert/strict";
 * const key = new Uint8Array(32);
 * const frames: Uint8Array[] = [];
 * const sender = new RecordSender({
 *   socket: {
 *     readyState: WebSocket.OPEN,
 *     bufferedAmount: 0,
 *     send: (f) => void frames.push(f as Uint8Array),
 *   },
 *   sealer: new RecordSealer(key),
 *   sid: "s1",
 *   from: "node:n1",
 *   to: "agent-1",
 *   config: { sendBufferBytes: 1 << 20 },
 *   maxFrame: 1 << 20,
 *   metrics: { message: () => {} },
 *   closed: () => false,
 *   slow: () => {},
 *   drained: () => {},
 * });
 * sender.send({ type: "ping", id: "p1" }, new Uint8Array(0));
 * const rec = new RecordOpener(key).open(frames[0]);
 * assert.deepEqual(
 *   [rec.header.sid, rec.header.from, rec.header.to, rec.header.ch, rec.header.type],
 *   ["s1", "node:n1", "agent-1", "", "ping"],
 * );
 * assert.equal(sender.congested, false);
 * ```
 */
export class RecordSender {
  readonly #o: RecordSenderOptions;
  #slowSince?: number;
  #slowTimer?: ReturnType<typeof setInterval>;
  /** 0: a frame per record; 1: batched frames of sealed records; 2: sealed batch frames. */
  #batch: 0 | 1 | 2 = 0;
  /** Inner records waiting to be sealed at the end of this microtask turn (sealed batch frames). */
  #writer?: BatchWriter;
  /** Sealed records waiting for the end of this microtask turn (batched frames only). */
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** A {@linkcode RecordSender.#cut} is queued (microtask or timer). */
  #cutQueued = false;
  /** The immediate (first check) or timer (later ones) of a cut that waits for the socket to drain. */
  #cutTimer?: { immediate: boolean; id: unknown };
  /** When the first record of the waiting frame came (`performance.now()`). */
  #waitingSince = 0;
  /** See {@linkcode RecordSender.#chHead}. */
  readonly #chHeads = new Map<string, Uint8Array>();

  constructor(options: RecordSenderOptions) {
    this.#o = options;
  }

  /** The full header of a record with `fields`. */
  header(fields: RecordFields): RecordHeader {
    return {
      sid: this.#o.sid,
      from: this.#o.from,
      to: this.#o.to,
      ch: "",
      ...fields,
    };
  }

  /** Seals and sends one record (a JSON object body is encoded). */
  send(
    fields: RecordFields,
    body: Uint8Array | Record<string, unknown>,
    signature?: Uint8Array,
  ): void {
    this.sendHeader(this.header(fields), body, signature);
  }

  /** Seals and sends one record with a full header; nothing when the socket is not open. */
  sendHeader(
    header: RecordHeader,
    body: Uint8Array | Record<string, unknown>,
    signature?: Uint8Array,
  ): void {
    const socket = this.#o.socket;
    if (socket.readyState !== WebSocket.OPEN) return;
    const bytes = body instanceof Uint8Array
      ? body
      : encoder.encode(JSON.stringify(body));
    if (this.#batch === 2) return this.#addInner(header, bytes, signature);
    const frame = this.#o.sealer.seal(header, bytes, signature);
    this.#o.metrics.message("out", frame.length);
    if (!this.#batch) {
      socket.send(frame);
      return this.#checkBuffer();
    }
    const size = 4 + frame.length;
    // What waits goes first if this one would take the frame past the limit.
    if (this.#pendingBytes + size > BATCH_FRAME_BYTES) this.flush();
    if (size > BATCH_FRAME_BYTES) {
      socket.send(frame); // a big record leaves alone, as a plain frame
      return this.#checkBuffer();
    }
    if (this.#pending.length === 0) this.#queueCut();
    this.#pending.push(frame);
    this.#pendingBytes += size;
  }

  /**
   * Sends `shared` on channel `ch`, unsigned. To a connection that reads
   * sealed batch frames its inner header is `{"ch":…` and the shared tail
   * (no header object, no JSON of the whole header per recipient);
   * otherwise as {@linkcode RecordSender.send}.
   */
  sendShared(ch: string, shared: SharedRecord): void {
    if (this.#batch !== 2) {
      return this.send({ ...shared.fields, ch }, shared.body);
    }
    if (this.#o.socket.readyState !== WebSocket.OPEN) return;
    const head = this.#chHead(ch);
    const writer = this.#writer ??= new BatchWriter();
    const size = INNER_PREFIX_BYTES + head.length + shared.rest.length;
    if (size > BATCH_FRAME_BYTES) {
      return this.sendHeader(
        this.header({ ...shared.fields, ch }),
        shared.body,
      );
    }
    if (writer.length + size > BATCH_FRAME_BYTES) this.flush();
    if (writer.count === 0) this.#queueCut();
    this.#o.metrics.message(
      "out",
      writer.addShared(head, shared.rest, shared.restHeader),
    );
  }

  /** `{"ch":"…"` of channel `ch` as UTF-8, made once per channel (a few per connection). */
  #chHead(ch: string): Uint8Array {
    let head = this.#chHeads.get(ch);
    if (head === undefined) {
      head = encoder.encode(`{"ch":${JSON.stringify(ch)}`);
      if (this.#chHeads.size >= 256) this.#chHeads.clear();
      this.#chHeads.set(ch, head);
    }
    return head;
  }

  /** Puts one record into the sealed batch of this turn (or sends it alone if too big). */
  #addInner(
    header: RecordHeader,
    body: Uint8Array,
    signature?: Uint8Array,
  ): void {
    const writer = this.#writer ??= new BatchWriter();
    const { sid: _sid, from: _from, to: _to, ...inner } = header;
    const json = JSON.stringify(signature ? header : inner);
    // The most this record can take (a header of non-ASCII text takes up
    // to 3 bytes a character).
    const most = INNER_PREFIX_BYTES + json.length * 3 + body.length +
      (signature ? 64 : 0);
    if (most > BATCH_FRAME_BYTES) {
      this.flush(); // what waits goes first, then this one alone
      const frame = this.#o.sealer.seal(header, body, signature);
      this.#o.metrics.message("out", frame.length);
      this.#o.socket.send(frame);
      return this.#checkBuffer();
    }
    if (writer.length + most > BATCH_FRAME_BYTES) this.flush();
    if (writer.count === 0) this.#queueCut();
    const n = writer.addJson(json, body, signature);
    this.#o.metrics.message("out", n);
  }

  /** The first record of a new frame waits: cut it when this turn ends, or later (module doc). */
  #queueCut(): void {
    this.#waitingSince = performance.now();
    if (this.#cutQueued) return;
    this.#cutQueued = true;
    queueMicrotask(this.#cut);
  }

  /** Cuts the waiting frame, unless the socket still has unsent bytes and the wait is not over. */
  readonly #cut = (): void => {
    const checked = this.#cutTimer !== undefined;
    this.#cutTimer = undefined;
    if (this.#pending.length === 0 && !this.#writer?.count) {
      this.#cutQueued = false;
      return;
    }
    const socket = this.#o.socket;
    if (
      socket.bufferedAmount > 0 && socket.readyState === WebSocket.OPEN &&
      performance.now() - this.#waitingSince <
        (this.#o.batchWaitMs ?? BATCH_WAIT_MS)
    ) {
      // The next turn of the loop first (a write in flight is done by
      // then); a timer after that (~1-2 ms in Deno 2.9: not a busy loop).
      this.#cutTimer = checked
        ? { immediate: false, id: setTimeout(this.#cut, 1) }
        : { immediate: true, id: setImmediate(this.#cut) };
      return;
    }
    this.#cutQueued = false;
    this.flush();
  };

  /**
   * From now on, records sealed in one microtask turn leave in one frame
   * (see the module doc): the agent said it reads such frames. `version`
   * 2: sealed batch frames (one AEAD a frame); 1: frames of sealed records.
   */
  batchFrames(version: 1 | 2 = 1): void {
    this.#batch = version;
  }

  /** Sends the records waiting for a batched frame now (before a close, say). */
  flush(): void {
    const timer = this.#cutTimer;
    if (timer !== undefined) {
      if (timer.immediate) {
        clearImmediate(timer.id as ReturnType<typeof setImmediate>);
      } else clearTimeout(timer.id as ReturnType<typeof setTimeout>);
      this.#cutTimer = undefined;
      this.#cutQueued = false;
    }
    const writer = this.#writer;
    if (writer !== undefined && writer.count > 0) {
      const socket = this.#o.socket;
      if (socket.readyState !== WebSocket.OPEN) return writer.clear();
      const frame = this.#o.sealer.sealBatch(writer.bytes());
      writer.clear();
      socket.send(frame);
      return this.#checkBuffer();
    }
    const records = this.#pending;
    if (records.length === 0) return;
    this.#pending = [];
    const bytes = this.#pendingBytes;
    this.#pendingBytes = 0;
    const socket = this.#o.socket;
    if (socket.readyState !== WebSocket.OPEN) return;
    if (records.length === 1) socket.send(records[0]);
    else {
      const frame = new Uint8Array(1 + bytes);
      const view = new DataView(frame.buffer);
      frame[0] = BATCH_FRAME_TYPE;
      let at = 1;
      for (const r of records) {
        view.setUint32(at, r.length);
        frame.set(r, at + 4);
        at += 4 + r.length;
      }
      socket.send(frame);
    }
    this.#checkBuffer();
  }

  /** Whether more is unsent than `sendBufferBytes`. */
  get congested(): boolean {
    return this.#o.socket.bufferedAmount + this.#pendingBytes +
        (this.#writer?.length ?? 0) >
      this.#o.config.sendBufferBytes;
  }

  /** Ends the slow-consumer watch (the connection is closing). */
  stop(): void {
    clearInterval(this.#slowTimer);
    this.#slowTimer = undefined;
    this.#slowSince = undefined;
  }

  /**
   * A slow consumer: over the limit for SLOW_CHECK_MS, or at once over the
   * hard cap. Un-acked queue messages go back to the queue on close.
   */
  #checkBuffer(): void {
    const o = this.#o;
    const limit = o.config.sendBufferBytes;
    const buffered = o.socket.bufferedAmount;
    if (buffered <= limit || this.#slowSince !== undefined) return;
    if (buffered > Math.max(limit * 8, limit + 2 * o.maxFrame)) {
      return o.slow(`slow consumer: over ${limit} bytes unsent`);
    }
    this.#slowSince = performance.now();
    this.#slowTimer = setInterval(() => {
      if (o.closed()) return this.stop();
      if (o.socket.bufferedAmount <= limit) {
        this.stop();
        o.drained();
      } else if (performance.now() - this.#slowSince! >= SLOW_CHECK_MS) {
        o.slow(`slow consumer: over ${limit} bytes unsent`);
      }
    }, SLOW_CHECK_MS / 2);
  }
}
