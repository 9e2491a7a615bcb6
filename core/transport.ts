/**
 * The Transport contract (DESIGN §3): how envelopes travel between nodes over
 * a broker or a mesh. Every transport declares its {@linkcode TransportCaps}
 * and passes the shared conformance suite for them (`testing/conformance.ts`,
 * public as `conformance` in `@plexus/host/testing`, so a transport written
 * outside this repository runs it too).
 *
 * Delivery semantics, shared by every transport:
 * - A subscription with a `group` shares the work with every other
 *   subscription of that group on the topic: each message reaches one of
 *   them. Subscriptions without a group each get every message.
 * - A {@linkcode Delivery} has JetStream's verbs, like the KV queue's:
 *   `ack`, `nak(delayMs?)`, `inProgress`, `term(reason)`.
 * - A handler that returns without settling acks; one that throws naks with
 *   the error recorded (backoff from `envelope.delivery.backoff`). After
 *   `envelope.delivery.maxAttempts` failed attempts the message goes to the
 *   dead-letter queue with its error history, as `term` does at once.
 * - Size is the UTF-8 length of `JSON.stringify(envelope)`
 *   ({@linkcode envelopeBytes}); above `caps.maxMessageBytes`, `publish`
 *   rejects with a {@linkcode TransportError} coded `too_large`.
 *
 * @example A consumer group
 * ```ts ignore
 * import type { Transport } from "./transport.ts";
 * declare const transport: Transport;
 * const sub = await transport.subscribe("orders.created", async (d) => {
 *   if (d.envelope.payload === null) return d.term("empty order");
 *   await d.ack();
 * }, { group: "billing", maxInFlight: 8 });
 * await sub.close();
 * ```
 *
 * @module
 */
import type { Envelope } from "./envelope.ts";
import { PlexusError } from "./errors.ts";
import { backoffDelay as exponentialDelay } from "./resilience/backoff.ts";

/** What a transport promises; the conformance suite tests exactly these. */
export interface TransportCaps {
  /** Messages survive a broker restart and a consumer crash (acked = kept). */
  durable: boolean;
  /** Order kept for consumers: none, per `publish({key})`, or per topic. */
  ordering: "none" | "per-key" | "total";
  /** Consumer groups (work sharing) are supported. */
  groups: boolean;
  /** Largest accepted `envelopeBytes(envelope)`. */
  maxMessageBytes: number;
  /**
   * Request/reply to one chosen node: the transport implements
   * {@linkcode Transport.respond}, {@linkcode Transport.responders} and
   * {@linkcode Transport.request} (service calls, docs/services.md, need it).
   * @default {false}
   */
  requestReply?: boolean;
}

/**
 * Answers one request: `body` is what the caller sent, the resolved value
 * the reply. A throw is sent back as an error the caller's `request`
 * rejects with (a `TransportError` coded `bad_message` naming the topic);
 * callers that need typed errors encode them in the reply.
 */
export type RequestHandler = (
  body: unknown,
  info: { from: string; headers: Record<string, string> },
) => Promise<unknown>;

/** Options of {@linkcode Transport.request}. */
export interface RequestOptions {
  /** Longest wait for the reply; then a `TimeoutError`. */
  timeoutMs: number;
  /** Small string metadata (trace and correlation ids). */
  headers?: Record<string, string>;
}

/** A node's registration as a responder on a topic. */
export interface Responder {
  /** The topic answered. */
  readonly topic: string;
  /** Stops answering; other nodes stop seeing this node as a responder. */
  close(): Promise<void>;
}

/** Options of {@linkcode Transport.publish}. */
export interface PublishOptions {
  /** Ordering (and partitioning) key: messages with one key stay in order. */
  key?: string;
}

/** Options of {@linkcode Transport.subscribe}. */
export interface SubscribeOptions {
  /** Consumer group; members share the work. @default {undefined} (every message) */
  group?: string;
  /** Deliveries handled at once by this subscription. @default {1} */
  maxInFlight?: number;
}

/** One failed attempt, as kept in a dead letter's history. */
export interface AttemptError {
  /** Epoch ms. */
  at: number;
  /** 1 for the first delivery. */
  attempt: number;
  /** The error's message. */
  error: string;
  /** The consumer that made the attempt, where the transport knows it. */
  consumer?: string;
}

/** A received message and the verbs that settle it. */
export interface Delivery {
  /** The message. */
  readonly envelope: Envelope;
  /** The topic it was published on. */
  readonly topic: string;
  /** The ordering key given at publish, if any. */
  readonly key?: string;
  /** 1 on first delivery. */
  readonly attempts: number;
  /** Done: the message is not delivered to this group again. */
  ack(): Promise<void>;
  /** Redeliver after `delayMs` (default: the envelope's backoff); `error` goes to the history. */
  nak(delayMs?: number, error?: string): Promise<void>;
  /** Still working: restarts the redelivery timer (JetStream's `+WPI`). */
  inProgress(): Promise<void>;
  /** Straight to the dead-letter queue, with `reason`. */
  term(reason: string): Promise<void>;
  /** Whether ack/nak/term already ran. */
  readonly settled: boolean;
}

/** A dead-lettered message. */
export interface DeadLetter {
  /** The message as it was published. */
  envelope: Envelope;
  /** The topic it was published on. */
  topic: string;
  /** The consumer group that gave up on it, if any. */
  group?: string;
  /** Why: the `term` reason, or `max attempts (N) reached`. */
  reason: string;
  /** Deliveries made before it was dead-lettered. */
  attempts: number;
  /** Failed attempts, oldest first. */
  errors: AttemptError[];
  /** Epoch ms. */
  deadAt: number;
}

/** A live subscription. */
export interface Subscription {
  /** The topic subscribed to. */
  readonly topic: string;
  /** The consumer group, if any. */
  readonly group?: string;
  /** Stops receiving; waits for deliveries in flight to settle. */
  close(): Promise<void>;
}

/** Handler of deliveries. */
export type DeliveryHandler = (delivery: Delivery) => Promise<void>;

/** A message transport (DESIGN §3). */
export interface Transport {
  /** Short name, e.g. `redis-streams`. */
  readonly name: string;
  /** What this transport promises (the conformance cases that apply). */
  readonly caps: TransportCaps;
  /** Resolves once the broker has the message (durable transports: stored). */
  publish(
    topic: string,
    envelope: Envelope,
    opts?: PublishOptions,
  ): Promise<void>;
  /** Starts delivering; resolves once the subscription receives new messages. */
  subscribe(
    topic: string,
    handler: DeliveryHandler,
    opts?: SubscribeOptions,
  ): Promise<Subscription>;
  /**
   * Answers requests on `topic` here, announced to every node; resolves once
   * the nodes linked now know (`caps.requestReply` transports).
   */
  respond?(topic: string, handler: RequestHandler): Promise<Responder>;
  /**
   * Ids of the nodes answering `topic` that this node can reach now (itself
   * included), sorted; a node that dies or loses its link drops out at once.
   */
  responders?(topic: string): readonly string[];
  /** Every topic answered anywhere reachable, with its responders. */
  listResponders?(): Map<string, readonly string[]>;
  /**
   * Sends `body` to the responder of `topic` on node `node` and resolves
   * with its reply. Rejects with `TransportError("unavailable")` when the
   * node is not reachable, does not answer `topic`, or its link drops before
   * the reply (the request may or may not have run), and with a
   * `TimeoutError` after `opts.timeoutMs`.
   */
  request?(
    node: string,
    topic: string,
    body: unknown,
    opts: RequestOptions,
  ): Promise<unknown>;
  /** Dead letters of `topic`, oldest first (transports that keep a DLQ). */
  deadLetters?(topic: string, opts?: { limit?: number }): Promise<DeadLetter[]>;
  /** Closes every subscription and connection. */
  close(): Promise<void>;
}

/** Why a transport operation failed. */
export type TransportErrorCode =
  | "too_large"
  | "closed"
  | "unavailable"
  | "bad_message"
  | "invalid_argument";

/**
 * A transport failure with a stable `code` and whether retrying may help.
 *
 * @example Usage
 * ```ts
 * import { TransportError } from "./transport.ts";
 * const err = new TransportError("too_large", "message is 2048 bytes; the limit is 1024", { data: { bytes: 2048, limit: 1024 } });
 * err.code; // "too_large"
 * err.retryable; // false
 * ```
 */
export class TransportError extends PlexusError {
  /** Always `"TransportError"`. */
  override name = "TransportError";
  /** Why the operation failed. */
  declare readonly code: TransportErrorCode;
  /** Retryable only when `unavailable`; the status follows the code. */
  constructor(
    code: TransportErrorCode,
    message: string,
    options: { cause?: unknown; data?: Record<string, unknown> } = {},
  ) {
    super(code, message, {
      retryable: code === "unavailable",
      status: TRANSPORT_STATUS[code],
      data: options.data,
      cause: options.cause,
    });
  }
}

const TRANSPORT_STATUS: Record<TransportErrorCode, number> = {
  too_large: 413,
  closed: 503,
  unavailable: 503,
  bad_message: 400,
  invalid_argument: 400,
};

const encoder = new TextEncoder();

/**
 * The size `caps.maxMessageBytes` is checked against: UTF-8 bytes of the
 * envelope's JSON.
 *
 * @example Usage
 * ```ts
 * import { envelopeBytes } from "./transport.ts";
 * import { createEnvelope } from "./envelope.ts";
 * envelopeBytes(createEnvelope({ type: "event", topic: "t", source: "s", payload: "é" })) > 0; // true
 * ```
 */
export function envelopeBytes(envelope: Envelope): number {
  return encoder.encode(JSON.stringify(envelope)).length;
}

/**
 * At least the UTF-8 bytes of `envelope`'s JSON without its payload, counted
 * without serialising it: a string is at most 6 bytes a UTF-16 unit (`\uXXXX`)
 * and 2 quotes, any other value at most 24, each key and its punctuation
 * likewise; undefined for a value it does not count (nested deeper than the
 * headers, delivery options and destination, or not plain data), which the
 * caller then serialises.
 *
 * @example Usage
 * ```ts
 * import { boundWithoutPayload, envelopeBytes } from "./transport.ts";
 * import { createEnvelope } from "./envelope.ts";
 * const e = createEnvelope({ type: "event", topic: "t", source: "s", payload: 1 });
 * boundWithoutPayload(e)! >= envelopeBytes(e); // true
 * ```
 */
export function boundWithoutPayload(envelope: Envelope): number | undefined {
  let bytes = 2;
  const e = envelope as unknown as Record<string, unknown>;
  for (const key in e) {
    if (key === "payload") continue;
    const v = e[key];
    bytes += key.length * 6 + 4;
    if (typeof v === "string") bytes += v.length * 6 + 2;
    else if (v === null || PRIMITIVE.has(typeof v)) bytes += 24;
    else if (
      typeof v === "object" &&
      (Array.isArray(v) || Object.getPrototypeOf(v) === Object.prototype)
    ) {
      const o = v as Record<string, unknown>;
      bytes += 2;
      for (const k in o) {
        const w = o[k];
        bytes += k.length * 6 + 4;
        if (typeof w === "string") bytes += w.length * 6 + 2;
        else if (w === null || PRIMITIVE.has(typeof w)) bytes += 24;
        else return undefined;
      }
    } else return undefined;
  }
  return bytes;
}
/** Types whose JSON is at most 24 characters (a number's longest; omitted ones count alike). */
const PRIMITIVE = new Set(["number", "boolean", "undefined"]);

/**
 * At least {@linkcode envelopeBytes} of `envelope`, counted without
 * serialising it, when its payload is a string, number, boolean or null (or
 * absent); undefined otherwise (an object or array payload, or fields
 * {@linkcode boundWithoutPayload} does not count).
 *
 * @example Usage
 * ```ts
 * import { envelopeBytes, envelopeBytesBound } from "./transport.ts";
 * import { createEnvelope } from "./envelope.ts";
 * const e = createEnvelope({ type: "event", topic: "t", source: "s", payload: "é" });
 * envelopeBytesBound(e)! >= envelopeBytes(e); // true
 * envelopeBytesBound({ ...e, payload: { a: 1 } }); // undefined
 * ```
 */
export function envelopeBytesBound(envelope: Envelope): number | undefined {
  const p = envelope.payload;
  let payload: number;
  if (typeof p === "string") payload = p.length * 6 + 2;
  else if (p === null || PRIMITIVE.has(typeof p)) payload = 24;
  else return undefined;
  const rest = boundWithoutPayload(envelope);
  // The key, its quotes, colon and comma.
  return rest === undefined ? undefined : rest + 7 * 6 + 4 + payload;
}

/**
 * Throws `TransportError("too_large")` when `envelope` exceeds `limit`.
 *
 * @example Usage
 * ```ts
 * import { assertFits } from "./transport.ts";
 * import { createEnvelope } from "./envelope.ts";
 * assertFits(createEnvelope({ type: "event", topic: "t", source: "s", payload: 1 }), 1_000_000);
 * ```
 */
export function assertFits(envelope: Envelope, limit: number): void {
  // Exact only near the limit: a bound that fits needs no serialising (a
  // string payload), and JSON whose every UTF-16 unit took UTF-8's most (3
  // bytes) no encoding.
  const bound = envelopeBytesBound(envelope);
  if (bound !== undefined && bound <= limit) return;
  const json = JSON.stringify(envelope);
  if (json.length * 3 <= limit) return;
  const bytes = encoder.encode(json).length;
  if (bytes > limit) {
    throw new TransportError(
      "too_large",
      `Cannot publish message '${envelope.id}': it is ${bytes} bytes; the limit is ${limit} bytes`,
      { data: { bytes, limit } },
    );
  }
}

/**
 * Redelivery delay after failed attempt `attempt` (1-based), from the
 * envelope's `delivery.backoff`: none → 0, fixed → `baseMs`, exponential →
 * `min(maxMs, baseMs * 2^(attempt-1))`.
 *
 * @example Usage
 * ```ts
 * import { backoffDelay } from "./transport.ts";
 * backoffDelay("exponential", 3, { baseMs: 100, maxMs: 1000 }); // 400
 * ```
 */
export function backoffDelay(
  backoff: "none" | "fixed" | "exponential",
  attempt: number,
  options: { baseMs: number; maxMs: number },
): number {
  if (backoff === "none") return 0;
  if (backoff === "fixed") return options.baseMs;
  return exponentialDelay(attempt, options);
}
