/**
 * The message envelope every transport carries, and its zod schema.
 *
 * @module
 */
import { z } from "zod";
import type * as npm from "./_npm_types.ts";

// The enums' values, shared by the schema and the hand check below.
const TYPE_VALUES = [
  "command",
  "event",
  "request",
  "response",
  "notification",
] as const;
const GUARANTEE_VALUES = [
  "at-most-once",
  "at-least-once",
  "exactly-once",
] as const;
const BACKOFF_VALUES = ["none", "fixed", "exponential"] as const;

const schema = z.object({
  id: z.string().min(1).max(128),
  type: z.enum(TYPE_VALUES),
  topic: z.string().min(1).max(512),
  source: z.string().min(1).max(256),
  destination: z.array(z.string().max(256)).max(1024).optional(),
  timestamp: z.number().int().nonnegative(),
  correlationId: z.string().max(128).optional(),
  replyTo: z.string().max(512).optional(),
  priority: z.number().int().min(0).max(9).default(4),
  ttlMs: z.number().int().positive().optional(),
  headers: z.record(z.string(), z.string()).default({}),
  payload: z.unknown(),
  delivery: z.object({
    guarantee: z.enum(GUARANTEE_VALUES).default("at-least-once"),
    maxAttempts: z.number().int().min(1).max(1000).default(3),
    backoff: z.enum(BACKOFF_VALUES).default("exponential"),
    timeoutMs: z.number().int().positive().default(30_000),
    persistent: z.boolean().default(false),
  }).prefault({}),
});

/** The message kinds an envelope can carry. */
export type EnvelopeType =
  | "command"
  | "event"
  | "request"
  | "response"
  | "notification";

/** How a message is to be delivered, as {@linkcode Envelope}'s `delivery`. */
export interface EnvelopeDelivery {
  /** The delivery guarantee asked for. @default {"at-least-once"} */
  guarantee: "at-most-once" | "at-least-once" | "exactly-once";
  /** Attempts (1 to 1000) before the message is dead-lettered. @default {3} */
  maxAttempts: number;
  /** Wait between attempts. @default {"exponential"} */
  backoff: "none" | "fixed" | "exponential";
  /** How long one attempt may take, in ms. @default {30000} */
  timeoutMs: number;
  /** Whether the message must survive a restart. @default {false} */
  persistent: boolean;
}

/** A message on any transport (what {@linkcode envelopeSchema} parses to). */
export interface Envelope {
  /** Unique message id (1-128 characters). */
  id: string;
  /** What kind of message this is. */
  type: EnvelopeType;
  /** The topic it is published on (1-512 characters). */
  topic: string;
  /** Who sent it (1-256 characters). */
  source: string;
  /** The intended receivers, if it is addressed (at most 1024). */
  destination?: string[];
  /** When it was created, in epoch ms. */
  timestamp: number;
  /** Ties a response to its request. */
  correlationId?: string;
  /** The topic a response goes to. */
  replyTo?: string;
  /** 0 (lowest) to 9 (highest). @default {4} */
  priority: number;
  /** How long the message stays deliverable, in ms. */
  ttlMs?: number;
  /** String headers. @default {{}} */
  headers: Record<string, string>;
  /** The message body: any JSON value. */
  payload: unknown;
  /** How it is to be delivered. */
  delivery: EnvelopeDelivery;
}

/**
 * What {@linkcode envelopeSchema} accepts: an {@linkcode Envelope} whose
 * fields with defaults may be left out.
 */
export interface EnvelopeInput
  extends Omit<Envelope, "priority" | "headers" | "delivery"> {
  /** 0 (lowest) to 9 (highest). @default {4} */
  priority?: number;
  /** String headers. @default {{}} */
  headers?: Record<string, string>;
  /** How it is to be delivered; each field has its default. */
  delivery?: Partial<EnvelopeDelivery>;
}

/** Zod schema of {@linkcode Envelope}. */
export const envelopeSchema: npm.ZodType<Envelope, EnvelopeInput> = schema;

// The types above are written out for the documentation and for JSR; this
// fails type checking when they and the schema drift apart.
type Same<A, B> = [A] extends [B] ? [B] extends [A] ? true : false : false;
type Assert<T extends true> = T;
type _EnvelopeTypesMatchSchema = Assert<
  Same<Envelope, z.output<typeof schema>> extends true
    ? Same<EnvelopeInput, z.input<typeof schema>>
    : false
>;

/**
 * Builds a valid envelope, filling id, timestamp and delivery defaults.
 *
 * @example Usage
 * ```ts
 * import { createEnvelope } from "./envelope.ts";
 * const msg = createEnvelope({ type: "event", topic: "agent.a1.heartbeat", source: "node-1", payload: {} });
 * msg.priority; // 4
 * ```
 */
export function createEnvelope(
  fields: Omit<EnvelopeInput, "id" | "timestamp"> & {
    id?: string;
    timestamp?: number;
  },
): Envelope {
  return parseEnvelope({
    id: crypto.randomUUID(),
    timestamp: Date.now(),
    ...fields,
  });
}

/**
 * `envelopeSchema.parse(input)`: the same envelope, or the same
 * {@linkcode ZodError}. What every transport calls per message: the common
 * input is checked by hand first, and anything that check does not accept
 * goes through the schema.
 *
 * @example Usage
 * ```ts
 * import { parseEnvelope } from "./envelope.ts";
 * const e = parseEnvelope({ id: "1", type: "event", topic: "t", source: "s", timestamp: 1, payload: 1 });
 * e.delivery.maxAttempts; // 3
 * ```
 */
export function parseEnvelope(input: unknown): Envelope {
  return commonEnvelope(input) ?? envelopeSchema.parse(input);
}

/** What {@linkcode safeParseEnvelope} returns: the envelope, or zod's error. */
export type EnvelopeParse =
  | { success: true; data: Envelope; error?: undefined }
  | { success: false; data?: undefined; error: npm.ZodError<Envelope> };

/**
 * `envelopeSchema.safeParse(input)`, as {@linkcode parseEnvelope} is
 * `parse`.
 *
 * @example Usage
 * ```ts
 * import { safeParseEnvelope } from "./envelope.ts";
 * safeParseEnvelope({ id: "" }).success; // false
 * ```
 */
export function safeParseEnvelope(input: unknown): EnvelopeParse {
  const data = commonEnvelope(input);
  if (data) return { success: true, data };
  return envelopeSchema.safeParse(input) as EnvelopeParse;
}

const TYPES = new Set<unknown>(TYPE_VALUES);
const GUARANTEES = new Set<unknown>(GUARANTEE_VALUES);
const BACKOFFS = new Set<unknown>(BACKOFF_VALUES);
const MAX = Number.MAX_SAFE_INTEGER;

const int = (v: unknown, min: number, max: number): boolean =>
  Number.isSafeInteger(v) && (v as number) >= min && (v as number) <= max;
const str = (v: unknown, min: number, max: number): boolean =>
  typeof v === "string" && v.length >= min && v.length <= max;
const plain = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null &&
  Object.getPrototypeOf(v) === Object.prototype;

/**
 * The envelope `envelopeSchema` would make of `input`, checked and built by
 * hand: the same members in the same order (optional ones present when the
 * input has them, even as `undefined`), defaults filled, unknown members
 * dropped, the arrays and records copied, the payload as it is. `undefined`
 * for anything it does not take (invalid, or unusual: not a plain object, a
 * `__proto__` header); the schema decides those. `envelope_test.ts` holds
 * it to the schema's answers on seeded inputs.
 */
function commonEnvelope(input: unknown): Envelope | undefined {
  if (!plain(input)) return undefined;
  const i = input;
  if (
    !str(i.id, 1, 128) || !TYPES.has(i.type) || !str(i.topic, 1, 512) ||
    !str(i.source, 1, 256) || !int(i.timestamp, 0, MAX) || !("payload" in i)
  ) return undefined;
  const hasDestination = "destination" in i;
  let destination: string[] | undefined;
  if (i.destination !== undefined) {
    const d = i.destination;
    if (!Array.isArray(d) || d.length > 1024) return undefined;
    for (let k = 0; k < d.length; k++) {
      if (!str(d[k], 0, 256)) return undefined;
    }
    destination = d.slice();
  }
  const hasCorrelation = "correlationId" in i;
  if (i.correlationId !== undefined && !str(i.correlationId, 0, 128)) {
    return undefined;
  }
  const hasReplyTo = "replyTo" in i;
  if (i.replyTo !== undefined && !str(i.replyTo, 0, 512)) return undefined;
  const priority = i.priority === undefined ? 4 : i.priority;
  if (!int(priority, 0, 9)) return undefined;
  const hasTtl = "ttlMs" in i;
  if (i.ttlMs !== undefined && !int(i.ttlMs, 1, MAX)) return undefined;
  const headers: Record<string, string> = {};
  if (i.headers !== undefined) {
    const h = i.headers;
    if (!plain(h)) return undefined;
    for (const k in h) {
      const v = h[k];
      if (typeof v !== "string" || k === "__proto__") return undefined;
      headers[k] = v;
    }
  }
  let delivery: Envelope["delivery"];
  const d = i.delivery;
  if (d === undefined) {
    delivery = {
      guarantee: "at-least-once",
      maxAttempts: 3,
      backoff: "exponential",
      timeoutMs: 30_000,
      persistent: false,
    };
  } else {
    if (!plain(d)) return undefined;
    // Defaults for `undefined` only: a `null` is the schema's to refuse.
    const guarantee = d.guarantee === undefined ? "at-least-once" : d.guarantee;
    const maxAttempts = d.maxAttempts === undefined ? 3 : d.maxAttempts;
    const backoff = d.backoff === undefined ? "exponential" : d.backoff;
    const timeoutMs = d.timeoutMs === undefined ? 30_000 : d.timeoutMs;
    const persistent = d.persistent === undefined ? false : d.persistent;
    if (
      !GUARANTEES.has(guarantee) || !int(maxAttempts, 1, 1000) ||
      !BACKOFFS.has(backoff) || !int(timeoutMs, 1, MAX) ||
      typeof persistent !== "boolean"
    ) return undefined;
    delivery = {
      guarantee: guarantee as Envelope["delivery"]["guarantee"],
      maxAttempts: maxAttempts as number,
      backoff: backoff as Envelope["delivery"]["backoff"],
      timeoutMs: timeoutMs as number,
      persistent,
    };
  }
  const out = {
    id: i.id,
    type: i.type,
    topic: i.topic,
    source: i.source,
  } as Record<string, unknown>;
  if (hasDestination) out.destination = destination;
  out.timestamp = i.timestamp;
  if (hasCorrelation) out.correlationId = i.correlationId;
  if (hasReplyTo) out.replyTo = i.replyTo;
  out.priority = priority;
  if (hasTtl) out.ttlMs = i.ttlMs;
  out.headers = headers;
  out.payload = i.payload;
  out.delivery = delivery;
  return out as unknown as Envelope;
}
