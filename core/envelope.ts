/**
 * The message envelope every transport carries, and its zod schema.
 *
 * @module
 */
import { z } from "zod";

/** Zod schema of {@linkcode Envelope}. */
export const envelopeSchema = z.object({
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

/** A message on any transport. */
export type Envelope = z.output<typeof envelopeSchema>;

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
  fields: Omit<z.input<typeof envelopeSchema>, "id" | "timestamp"> & {
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
