/**
 * The `debate.*` event types, declared the way `core/events.ts` declares the
 * node's own: type → `{version, data}` with a zod schema of `data`. The
 * plugin defines them on the event bus (`bus.define`) when `events:bus` is
 * loaded, so `GET /api/v1/events?filter=type ^= "debate."` follows debates
 * live. Every event carries `debateId`.
 *
 * @module
 */
import { z } from "../../core/plugin.ts";

const id = z.string().min(1).max(256);
const round = z.number().int().min(1);
const position = z.string().min(1).max(64);

/**
 * Every debate event type → `{version, data}`.
 *
 * @example Validate one
 * ```ts
 * import { DEBATE_EVENT_SCHEMAS } from "./events.ts";
 * DEBATE_EVENT_SCHEMAS["debate.consensus"].data.parse({
 *   debateId: "d1", round: 2, position: "for", share: 0.67,
 * });
 * ```
 */
export const DEBATE_EVENT_SCHEMAS = {
  "debate.started": {
    version: 1,
    data: z.strictObject({
      debateId: id,
      /** The topic, cut to 200 characters. */
      topic: z.string().max(200),
      participants: z.array(id).max(64),
      rounds: round,
      method: z.enum(["majority", "unanimous", "threshold"]),
    }),
  },
  "debate.turn": {
    version: 1,
    data: z.strictObject({
      debateId: id,
      round,
      participant: id,
      agent: id,
      position,
      confidence: z.number().min(0).max(1),
      /** The argument, cut to 1,000 characters. */
      argument: z.string().max(1000),
      latencyMs: z.number().nonnegative(),
    }),
  },
  "debate.turn.skipped": {
    version: 1,
    data: z.strictObject({
      debateId: id,
      round,
      participant: id,
      agent: id.optional(),
      reason: z.string().max(1000),
    }),
  },
  "debate.round.completed": {
    version: 1,
    data: z.strictObject({
      debateId: id,
      round,
      /** position → participants holding it. */
      tally: z.record(position, z.number().int().nonnegative()),
      answered: z.number().int().nonnegative(),
      silent: z.number().int().nonnegative(),
      reached: z.boolean(),
      summary: z.string().max(1000).optional(),
    }),
  },
  "debate.consensus": {
    version: 1,
    data: z.strictObject({
      debateId: id,
      round,
      position,
      share: z.number().min(0).max(1),
    }),
  },
  "debate.finished": {
    version: 1,
    data: z.strictObject({
      debateId: id,
      status: z.enum(["consensus", "no-consensus", "failed", "cancelled"]),
      roundsRun: z.number().int().nonnegative(),
      position: position.optional(),
    }),
  },
} as const;

/** A debate event type. */
export type DebateEventType = keyof typeof DEBATE_EVENT_SCHEMAS;

/** The `data` of debate event type `K`. */
export type DebateEventData<K extends DebateEventType> = z.input<
  typeof DEBATE_EVENT_SCHEMAS[K]["data"]
>;
