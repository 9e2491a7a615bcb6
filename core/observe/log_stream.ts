/**
 * The live log stream behind `WS /ws`: a replay ring buffer for late joiners,
 * fan-out to every connected client, heartbeats, and per-client back-pressure.
 *
 * Each message is `{type, payload, timestamp, messageId}`. A new client first
 * receives the buffered messages (oldest first, at most `replay`), then one
 * `connection` message marking the end of the replay, then live messages.
 * A client whose unsent bytes exceed `maxBufferedBytes` is closed with
 * {@linkcode SLOW_CONSUMER_CLOSE_CODE} so it never holds the others back.
 *
 * A client attached with `batch` gets the messages published in one turn of
 * the event loop (a burst) in one frame, separated by `\n` (each message
 * is one line: JSON has no raw newline), as Centrifugo writes its pushes;
 * order and the replay are the same. A frame holds at most
 * {@linkcode MAX_BATCH_FRAME_BYTES}. One frame per message costs the sender
 * a WebSocket write each, and is what caps fan-out.
 *
 * @module
 */
import { isoNow, type LogRecord, type LogSink } from "./logger.ts";
import type { MetricsRegistry } from "./metrics.ts";

const encoder = new TextEncoder();

/** Message types on the stream. */
export type StreamMessageType =
  | "log"
  | "error"
  | "status"
  | "heartbeat"
  | "connection";

/** One message on the live log stream. */
export interface StreamMessage {
  /** What the message is. */
  type: StreamMessageType;
  /** Its content (a log record for `log` and `error`). */
  payload: unknown;
  /** When it was published, ISO 8601. */
  timestamp: string;
  /** A unique id. */
  messageId: string;
}

/** Close code sent to a client that cannot keep up. */
export const SLOW_CONSUMER_CLOSE_CODE = 4008;
/** How long a client may stay over `maxBufferedBytes` before it is closed. */
export const SLOW_CHECK_MS = 100;
/** Close code sent to clients when the node shuts down (RFC 6455 "going away"). */
export const GOING_AWAY_CLOSE_CODE = 1001;
/** A batched client's frame stops growing at this many bytes (more go in the next frame). */
export const MAX_BATCH_FRAME_BYTES = 64 * 1024;
/** The kernel capability plugins read the node's {@linkcode LogStream} under (the dashboard's live feed). */
export const LOG_STREAM_CAPABILITY = "observe:log-stream";

/** Options for {@linkcode createLogStream}. */
export interface LogStreamOptions {
  /** Messages kept for replay to new clients. @default {100} */
  replay?: number;
  /** Heartbeat period in ms; 0 turns heartbeats off. @default {30000} */
  heartbeatMs?: number;
  /** Unsent bytes a client may hold for longer than SLOW_CHECK_MS (or, at any moment, 8 times as many and at least 8 MiB) before it is closed. @default {1048576} */
  maxBufferedBytes?: number;
  /** Largest message a client may send us before it is closed with 1009. @default {4096} */
  maxInboundBytes?: number;
}

/** Counters a caller can report (`GET /stats`, `/metrics`). */
export interface LogStreamStats {
  /** Clients connected now. */
  clients: number;
  /** Messages held for replay. */
  bufferSize: number;
  /** Seconds since the hub was created. */
  uptime: number;
  /** Messages published so far (heartbeats included). */
  published: number;
  /** Clients closed for falling behind. */
  slowConsumersClosed: number;
}

/** The hub. */
export interface LogStream {
  /**
   * Sends a message to every client; `log`/`error`/`status` are kept for
   * replay. With no client attached the message is kept unserialized until
   * one joins, so `payload` must not be changed after the call.
   */
  publish(type: StreamMessageType, payload: unknown): StreamMessage;
  /**
   * Adds a client socket; replay and live messages start once it opens.
   * With `batch`, a burst of messages shares a frame, one per line.
   */
  attach(socket: WebSocket, options?: { batch?: boolean }): void;
  /** A logger sink that publishes each record (`error` level as `error`). */
  sink: LogSink;
  /** The hub's counters now. */
  stats(): LogStreamStats;
  /**
   * Counts published messages in `metrics` as the counter
   * `plexus_log_stream_messages_published_total`, those published before the
   * call included.
   */
  instrument(metrics: MetricsRegistry): void;
  /** Closes every client with 1001 and stops heartbeats. */
  close(): void;
}

/**
 * Creates a log stream hub.
 *
 * @example Usage
 * ```ts
 * import { createLogStream } from "./log_stream.ts";
 * const hub = createLogStream({ heartbeatMs: 0 });
 * hub.publish("status", { plugin: "hello", state: "running" });
 * hub.stats().bufferSize; // 1
 * hub.close();
 * ```
 */
export function createLogStream(options: LogStreamOptions = {}): LogStream {
  const replay = options.replay ?? 100;
  const maxBuffered = options.maxBufferedBytes ?? 1 << 20;
  const maxInbound = options.maxInboundBytes ?? 4096;
  const heartbeatMs = options.heartbeatMs ?? 30_000;
  const started = performance.now();
  // Ring buffer for replay: a message is serialized once, sent to many. With
  // no client attached nobody may ever read it, so it is kept as it is and
  // serialized only when a client joins (most nodes run with none attached).
  const ring: (string | StreamMessage)[] = [];
  let ringStart = 0;
  const clients = new Set<WebSocket>();
  let published = 0;
  let countPublished: ((by?: number) => void) | undefined;
  let slowClosed = 0;
  let closed = false;

  const make = (type: StreamMessageType, payload: unknown): StreamMessage => ({
    type,
    payload,
    timestamp: isoNow(),
    messageId: crypto.randomUUID(),
  });

  // `bufferedAmount` only drops once the event loop writes, so a burst sent
  // in one tick makes every client look slow for a moment. A client over
  // the limit is closed only if it is still over it SLOW_CHECK_MS later, or
  // at once past the hard cap.
  const hardCap = Math.max(maxBuffered * 8, 8 << 20);
  const suspects = new Map<WebSocket, number>();
  let checkTimer: ReturnType<typeof setInterval> | undefined;
  const closeSlow = (socket: WebSocket) => {
    clients.delete(socket);
    batched.delete(socket);
    suspects.delete(socket);
    slowClosed++;
    socket.close(
      SLOW_CONSUMER_CLOSE_CODE,
      `slow consumer: more than ${maxBuffered} bytes unsent`,
    );
  };
  const checkSuspects = () => {
    const now = performance.now();
    for (const [socket, since] of suspects) {
      if (
        socket.readyState !== WebSocket.OPEN ||
        socket.bufferedAmount <= maxBuffered
      ) suspects.delete(socket);
      else if (now - since >= SLOW_CHECK_MS) closeSlow(socket);
    }
    if (suspects.size === 0) {
      clearInterval(checkTimer);
      checkTimer = undefined;
    }
  };
  const sendTo = (socket: WebSocket, text: string): void => {
    if (socket.readyState !== WebSocket.OPEN) return;
    const buffered = socket.bufferedAmount;
    if (buffered > hardCap) return closeSlow(socket);
    socket.send(text);
    if (buffered > maxBuffered && !suspects.has(socket)) {
      suspects.set(socket, performance.now());
      checkTimer ??= setInterval(checkSuspects, SLOW_CHECK_MS / 2);
    }
  };

  // Batched clients: what this turn published for each, sent as one frame
  // (or more, each up to MAX_BATCH_FRAME_BYTES) when the turn ends.
  const batched = new Map<WebSocket, { lines: string[]; bytes: number }>();
  let flushQueued = false;
  const flushOne = (
    socket: WebSocket,
    pending: { lines: string[]; bytes: number },
  ) => {
    if (pending.lines.length === 0) return;
    const text = pending.lines.length === 1
      ? pending.lines[0]
      : pending.lines.join("\n");
    pending.lines = [];
    pending.bytes = 0;
    sendTo(socket, text);
  };
  const flushAll = () => {
    flushQueued = false;
    for (const [socket, pending] of batched) flushOne(socket, pending);
  };
  const deliver = (socket: WebSocket, text: string): void => {
    const pending = batched.get(socket);
    if (!pending) return sendTo(socket, text);
    if (pending.bytes + text.length > MAX_BATCH_FRAME_BYTES) {
      flushOne(socket, pending);
    }
    pending.lines.push(text);
    pending.bytes += text.length + 1;
    if (!flushQueued) {
      flushQueued = true;
      queueMicrotask(flushAll);
    }
  };

  const broadcast = (text: string): void => {
    for (const socket of clients) deliver(socket, text);
  };

  const publish = (
    type: StreamMessageType,
    payload: unknown,
  ): StreamMessage => {
    const msg = make(type, payload);
    if (closed) return msg;
    published++;
    countPublished?.();
    const text = clients.size > 0 ? JSON.stringify(msg) : undefined;
    if (type !== "heartbeat" && type !== "connection" && replay > 0) {
      const kept = text ?? msg;
      if (ring.length < replay) ring.push(kept);
      else {
        ring[ringStart] = kept;
        ringStart = (ringStart + 1) % replay;
      }
    }
    if (text !== undefined) broadcast(text);
    return msg;
  };

  const timer = heartbeatMs > 0
    ? setInterval(
      () => publish("heartbeat", { clients: clients.size }),
      heartbeatMs,
    )
    : undefined;
  if (timer !== undefined) Deno.unrefTimer(timer);

  const start = (socket: WebSocket): void => {
    if (closed) {
      socket.close(GOING_AWAY_CLOSE_CODE, "node shutting down");
      return;
    }
    for (let i = 0; i < ring.length; i++) {
      const at = (ringStart + i) % ring.length;
      let text = ring[at];
      if (typeof text !== "string") ring[at] = text = JSON.stringify(text);
      deliver(socket, text);
    }
    deliver(
      socket,
      JSON.stringify(
        make("connection", {
          replayed: ring.length,
          clients: clients.size + 1,
        }),
      ),
    );
    if (socket.readyState === WebSocket.OPEN) clients.add(socket);
  };

  return {
    publish,
    attach(socket, attachOptions) {
      if (attachOptions?.batch) batched.set(socket, { lines: [], bytes: 0 });
      const gone = () => {
        clients.delete(socket);
        batched.delete(socket);
      };
      if (socket.readyState === WebSocket.OPEN) start(socket);
      else socket.addEventListener("open", () => start(socket), { once: true });
      socket.addEventListener("close", gone);
      socket.addEventListener("error", gone);
      socket.addEventListener("message", (ev) => {
        // A string's UTF-8 size is at least its length and at most 3 times it.
        const size = typeof ev.data === "string"
          ? (ev.data.length * 3 <= maxInbound
            ? ev.data.length
            : encoder.encode(ev.data).length)
          : (ev.data as ArrayBuffer).byteLength ?? 0;
        if (size > maxInbound) {
          gone();
          socket.close(1009, `message too big: limit ${maxInbound} bytes`);
        }
      });
    },
    sink(record: LogRecord) {
      publish(record.level === "error" ? "error" : "log", record);
    },
    instrument(metrics) {
      const counter = metrics.counter(
        "plexus_log_stream_messages_published_total",
        "Messages published on the live log stream (heartbeats included)",
      ).labels({});
      counter.inc(published);
      countPublished = counter.inc;
    },
    stats: () => ({
      clients: clients.size,
      bufferSize: ring.length,
      uptime: Math.round((performance.now() - started) / 1000),
      published,
      slowConsumersClosed: slowClosed,
    }),
    close() {
      closed = true;
      if (timer !== undefined) clearInterval(timer);
      clearInterval(checkTimer);
      suspects.clear();
      for (const socket of clients) {
        try {
          socket.close(GOING_AWAY_CLOSE_CODE, "node shutting down");
        } catch {
          // already closing
        }
      }
      clients.clear();
      batched.clear();
    },
  };
}
