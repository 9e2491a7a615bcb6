/**
 * What a client sends to `POST /api/v1/debates`, checked with zod. Every
 * refusal is a {@linkcode DebateInputError} (400 `bad_debate`) whose message
 * starts with the field and says the value seen: `rounds: at most 50, got
 * 10000`. Whether each participant exists is checked by the plugin, which
 * knows the agents (see `mod.ts`).
 *
 * @example Usage
 * ```ts
 * import { parseDebateInput } from "./input.ts";
 * const input = parseDebateInput({
 *   topic: "Tabs or spaces?",
 *   participants: ["debate", "debate", "debate"],
 *   rounds: 3,
 *   consensus: { method: "majority" },
 * });
 * input.turnTimeoutMs; // 30000
 * ```
 *
 * @module
 */
import { PlexusError, z } from "../../core/plugin.ts";

/** Most characters in a topic. */
export const MAX_TOPIC = 2000;
/** Most rounds of one debate. */
export const MAX_ROUNDS = 50;
/** Most participants of one debate. */
export const MAX_PARTICIPANTS = 16;

/** An agent id (`did:key:…` or another enrolled id) or a capability name. */
const ref = z.string().min(1).max(256).regex(
  /^[A-Za-z0-9_.:+-]+$/,
  "expected an agent id or a capability name (letters, digits, '_', '.', ':', '+', '-')",
);

const schema = z.strictObject({
  topic: z.string().trim().min(1, "must not be empty").max(
    MAX_TOPIC,
    `at most ${MAX_TOPIC} characters`,
  ),
  participants: z.array(ref).min(2, "at least 2 participants").max(
    MAX_PARTICIPANTS,
    `at most ${MAX_PARTICIPANTS} participants`,
  ),
  rounds: z.number().int().min(1, "at least 1 round").max(
    MAX_ROUNDS,
    `at most ${MAX_ROUNDS} rounds`,
  ),
  turnTimeoutMs: z.number().int().min(100).max(600_000).default(30_000),
  consensus: z.strictObject({
    method: z.enum(["majority", "unanimous", "threshold"]),
    threshold: z.number().gt(0, "must be over 0").max(1, "at most 1")
      .optional(),
  }).default({ method: "majority" }),
  moderator: ref.optional(),
});

/** A checked debate request. */
export type DebateInput = z.output<typeof schema>;

/**
 * A refused debate request (HTTP 400); `field` names where.
 *
 * @example Usage
 * ```ts
 * import { DebateInputError } from "./input.ts";
 * const err = new DebateInputError("rounds", "at most 50 rounds, got 51");
 * err.message; // "rounds: at most 50 rounds, got 51"
 * err.status; // 400
 * ```
 */
export class DebateInputError extends PlexusError {
  override name = "DebateInputError";
  /** The path of the bad field, e.g. `consensus.threshold`. */
  readonly field: string;
  /** `message` starts with the field. */
  constructor(field: string, message: string) {
    super("bad_debate", `${field}: ${message}`, {
      status: 400,
      data: { field },
    });
    this.field = field;
  }
}

const shown = (v: unknown): string => {
  if (typeof v === "string") {
    return v.length > 40 ? `a string of ${v.length} characters` : `'${v}'`;
  }
  if (Array.isArray(v)) return `${v.length} items`;
  return v === undefined ? "nothing" : JSON.stringify(v);
};

const at = (obj: unknown, path: PropertyKey[]): unknown =>
  path.reduce<unknown>(
    (o, k) =>
      o && typeof o === "object"
        ? (o as Record<PropertyKey, unknown>)[k]
        : undefined,
    obj,
  );

/**
 * Checks a `POST /api/v1/debates` body; throws a
 * {@linkcode DebateInputError} naming the field.
 *
 * @example A refusal names the field
 * ```ts
 * import { parseDebateInput } from "./input.ts";
 * import assert from "node:assert/strict";
 * assert.throws(
 *   () => parseDebateInput({ topic: "x", participants: ["a", "b"], rounds: 0 }),
 *   /^DebateInputError: rounds: at least 1 round, got 0$/,
 * );
 * ```
 */
export function parseDebateInput(body: unknown): DebateInput {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    const field = i.path.map((p) =>
      typeof p === "number" ? `[${p}]` : `.${String(p)}`
    ).join("").replace(/^\./, "") || "(body)";
    const seen = i.code === "unrecognized_keys"
      ? ""
      : `, got ${shown(at(body, i.path))}`;
    throw new DebateInputError(field, `${i.message}${seen}`);
  }
  const input = parsed.data;
  const { method, threshold } = input.consensus;
  if (method === "threshold" && threshold === undefined) {
    throw new DebateInputError(
      "consensus.threshold",
      "required for method 'threshold' (a share of participants in (0, 1])",
    );
  }
  if (method !== "threshold" && threshold !== undefined) {
    throw new DebateInputError(
      "consensus.threshold",
      `only for method 'threshold', not '${method}'`,
    );
  }
  return input;
}
