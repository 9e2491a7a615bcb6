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
 * @module
 */
import type { LogRecord, LogSink } from "./logger.ts";

/** Message types on the stream. */
export type StreamMessageType =
  | "log"
  | "error"
  | "status"
  | "heartbeat"
  | "connection";

/** One message on the live log stream. */
export interface StreamMessage {
  type: StreamMessageType;
  payload: unknown;
  timestamp: string;
  messageId: string;
}

/** Close code sent to a client that cannot keep up. */
export const SLOW_CONSUMER_CLOSE_CODE = 4008;
/** Close code sent to clients when the node shuts down (RFC 6455 "going away"). */
export const GOING_AWAY_CLOSE_CODE = 1001;

/** Options for {@linkcode createLogStream}. */
export interface LogStreamOptions {
  /** Messages kept for replay to new clients. @default {100} */
  replay?: number;
  /** Heartbeat period in ms; 0 turns heartbeats off. @default {30000} */
  heartbeatMs?: number;
  /** Unsent bytes a client may accumulate before it is closed. @default {1048576} */
  maxBufferedBytes?: number;
  /** Largest message a client may send us before it is closed with 1009. @default {4096} */
  maxInboundBytes?: number;
}

/** Counters a caller can report (`GET /stats`, `/metrics`). */
export interface LogStreamStats {
  clients: number;
  bufferSize: number;
  uptime: number;
  published: number;
  slowConsumersClosed: number;
}

/** The hub. */
export interface LogStream {
  /** Sends a message to every client; `log`/`error`/`status` are kept for replay. */
  publish(type: StreamMessageType, payload: unknown): StreamMessage;
  /** Adds a client socket; replay and live messages start once it opens. */
  attach(socket: WebSocket): void;
  /** A logger sink that publishes each record (`error` level as `error`). */
  sink: LogSink;
  stats(): LogStreamStats;
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
  // Ring buffer of serialized messages: serialized once, sent to many.
  const ring: string[] = [];
  let ringStart = 0;
  const clients = new Set<WebSocket>();
  let published = 0;
  let slowClosed = 0;
  let closed = false;

  const make = (type: StreamMessageType, payload: unknown): StreamMessage => ({
    type,
    payload,
    timestamp: new Date().toISOString(),
    messageId: crypto.randomUUID(),
  });

  const sendTo = (socket: WebSocket, text: string): void => {
    if (socket.readyState !== WebSocket.OPEN) return;
    if (socket.bufferedAmount > maxBuffered) {
      clients.delete(socket);
      slowClosed++;
      socket.close(
        SLOW_CONSUMER_CLOSE_CODE,
        `slow consumer: more than ${maxBuffered} bytes unsent`,
      );
      return;
    }
    socket.send(text);
  };

  const broadcast = (text: string): void => {
    for (const socket of clients) sendTo(socket, text);
  };

  const publish = (
    type: StreamMessageType,
    payload: unknown,
  ): StreamMessage => {
    const msg = make(type, payload);
    if (closed) return msg;
    const text = JSON.stringify(msg);
    published++;
    if (type !== "heartbeat" && type !== "connection" && replay > 0) {
      if (ring.length < replay) ring.push(text);
      else {
        ring[ringStart] = text;
        ringStart = (ringStart + 1) % replay;
      }
    }
    broadcast(text);
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
      sendTo(socket, ring[(ringStart + i) % ring.length]);
    }
    sendTo(
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
    attach(socket) {
      if (socket.readyState === WebSocket.OPEN) start(socket);
      else socket.addEventListener("open", () => start(socket), { once: true });
      socket.addEventListener("close", () => clients.delete(socket));
      socket.addEventListener("error", () => clients.delete(socket));
      socket.addEventListener("message", (ev) => {
        const size = typeof ev.data === "string"
          ? ev.data.length
          : (ev.data as ArrayBuffer).byteLength ?? 0;
        if (size > maxInbound) {
          clients.delete(socket);
          socket.close(1009, `message too big: limit ${maxInbound} bytes`);
        }
      });
    },
    sink(record: LogRecord) {
      publish(record.level === "error" ? "error" : "log", record);
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
      for (const socket of clients) {
        try {
          socket.close(GOING_AWAY_CLOSE_CODE, "node shutting down");
        } catch {
          // already closing
        }
      }
      clients.clear();
    },
  };
}
