/**
 * The message envelope every transport carries, and its zod schema.
 *
 * @module
 */
import { z } from "zod";
import type * as npm from "./_npm_types.ts";

const schema = z.object({
  id: z.string().min(1).max(128),
  type: z.enum(["command", "event", "request", "response", "notification"]),
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
    guarantee: z.enum(["at-most-once", "at-least-once", "exactly-once"])
      .default("at-least-once"),
    maxAttempts: z.number().int().min(1).max(1000).default(3),
    backoff: z.enum(["none", "fixed", "exponential"]).default("exponential"),
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
  return envelopeSchema.parse({
    id: crypto.randomUUID(),
    timestamp: Date.now(),
    ...fields,
  });
}
