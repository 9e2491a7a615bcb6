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
 * @module
 */
import type { RecordHeader, RecordSealer } from "../../sdk/protocol/record.ts";
import type { GatewayConfig, GatewayMetrics } from "./types.ts";

/** A slow consumer is closed once over the limit this long (as the log stream does). */
export const SLOW_CHECK_MS = 100;

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
}

const encoder = new TextEncoder();

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
    const frame = this.#o.sealer.seal(header, bytes, signature);
    socket.send(frame);
    this.#o.metrics.message("out", frame.length);
    this.#checkBuffer();
  }

  /** Whether more is unsent than `sendBufferBytes`. */
  get congested(): boolean {
    return this.#o.socket.bufferedAmount > this.#o.config.sendBufferBytes;
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
