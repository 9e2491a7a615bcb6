/**
 * The prompt service's config (`pluginConfig.prompts` in the node's config
 * file), with its defaults; see docs/prompts.md.
 *
 * @module
 */
import { z } from "../../core/plugin.ts";

/** A scenario name: lower-case word, also the suffix of capability `prompt.{scenario}`. */
export const SCENARIO_RE = /^[a-z][a-z0-9_-]{0,31}$/;
/** A capability agents offer by handling `tasks.{capability}`. */
export const CAPABILITY_RE =
  /^[a-z][a-z0-9_-]{0,31}(\.[a-z][a-z0-9_-]{0,31})?$/;

/** A metadata field name. */
export const METADATA_KEY_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;

const ms = (max: number) => z.number().int().min(1).max(max);

/** The schema of `pluginConfig.prompts`. */
export const promptsConfigSchema = z.strictObject({
  /** The root agents' capability; `{capability}.{scenario}` is preferred when an agent offers it. */
  capability: z.string().regex(CAPABILITY_RE).default("prompt"),
  /** Scenarios a client may name (`scenario` / `X-Scenario`); any other is refused (400). */
  scenarios: z.array(z.string().regex(SCENARIO_RE)).max(64).default([
    "hotel",
    "order",
    "plan",
  ]),
  /** SAGE mode when the request says nothing. */
  sageByDefault: z.boolean().default(true),
  /** Longest prompt, in characters (413 above). */
  maxPromptChars: z.number().int().min(1).max(1_000_000).default(10_000),
  /** Largest `metadata`, as JSON bytes (400 above). */
  maxMetadataBytes: z.number().int().min(2).max(65_536).default(4096),
  /** Deadline of one prompt, every hop included (504 after it). */
  timeoutMs: ms(600_000).default(30_000),
  /** Hops one prompt may make (agent-to-agent asks included). */
  maxHops: z.number().int().min(1).max(64).default(16),
  /** Root agents tried for one prompt when one drops its connection mid-request. */
  attempts: z.number().int().min(1).max(5).default(2),
  /** Prompts answered at once on this node; more wait in the queue. */
  maxConcurrent: z.number().int().min(1).max(10_000).default(64),
  /** Prompts waiting for a slot; beyond, 429 with Retry-After. */
  maxQueued: z.number().int().min(0).max(100_000).default(256),
  /**
   * The balancer plugin (`balancer:NAME`) that picks among root agents, with
   * its circuit breakers; without one loaded, round-robin without breakers.
   */
  balancer: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/).default(
    "round-robin",
  ),
  /** The answer cache (answers given without SAGE only), in KV and shared by the nodes sharing it. */
  cache: z.strictObject({
    enabled: z.boolean().default(true),
    /** How long an answer is served as a hit (`X-Cache: HIT`). */
    ttlMs: ms(86_400_000).default(300_000),
    /** How much longer it may be served (`X-Cache: STALE`) when no agent can answer. */
    maxStaleMs: z.number().int().min(0).max(30 * 86_400_000).default(
      3_600_000,
    ),
    /** Metadata fields whose values are part of the key when the request names none (`X-Cache-Key`). */
    keyFields: z.array(z.string().regex(METADATA_KEY_RE)).max(8).default([]),
    /**
     * How long a node answers a hit from its own memory before reading KV
     * again: another node's newer answer for the same prompt is seen within
     * this. 0: every lookup reads KV.
     */
    localMs: z.number().int().min(0).max(60_000).default(1000),
  }).default({
    enabled: true,
    ttlMs: 300_000,
    maxStaleMs: 3_600_000,
    keyFields: [],
    localMs: 1000,
  }),
  /** How often this node tells the others (through KV) which capabilities its agents offer. */
  advertiseMs: z.number().int().min(100).max(60_000).default(2000),
  /**
   * Answer callers without credentials: `POST /plugins/prompts/send`, and
   * `POST /send/prompt` when the request carries none (`/api/v1/prompts`
   * always needs `prompt:send`).
   */
  anonymous: z.boolean().default(false),
});

/** The validated prompt service config. */
export type PromptsConfig = z.output<typeof promptsConfigSchema>;
