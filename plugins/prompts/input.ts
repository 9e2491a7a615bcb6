/**
 * What a client sends to `POST /send/prompt` (and `/api/v1/prompts`),
 * checked: the JSON body `{prompt, sageEnabled?, scenario?, metadata?}` and
 * the headers `X-SAGE-Enabled` and `X-Scenario`, which win over the body
 * when both are given. Every refusal is a {@linkcode PlexusError} with the
 * status to answer (400, 413) and a message naming the field and the value.
 *
 * @example Usage
 * ```ts
 * import { parsePromptInput } from "./input.ts";
 * import { promptsConfigSchema } from "./config.ts";
 * const config = promptsConfigSchema.parse({});
 * const input = parsePromptInput({ prompt: "Book a hotel" }, new Headers({ "x-scenario": "hotel" }), config);
 * input.scenario; // "hotel"
 * input.sage; // true (config.sageByDefault)
 * ```
 *
 * @module
 */
import { PlexusError, z } from "../../core/plugin.ts";
import { METADATA_KEY_RE, type PromptsConfig, SCENARIO_RE } from "./config.ts";

/** A checked prompt request. */
export interface PromptInput {
  /** The prompt, as sent. */
  prompt: string;
  /** SAGE mode for this request. */
  sage: boolean;
  /** The scenario, when one was named. */
  scenario?: string;
  /** The client's metadata (`userId`, `sessionId`, …). */
  metadata: Record<string, string | number | boolean | null>;
  /** Metadata fields whose values key the cache (`X-Cache-Key`, else the config's). */
  cacheKeyFields: string[];
  /** `Cache-Control: no-cache`: do not answer from the cache. */
  noCache: boolean;
}

const bad = (message: string, status = 400) =>
  new PlexusError(status === 413 ? "too_large" : "bad_request", message, {
    status,
  });

const metadataSchema = z.record(
  z.string().regex(
    METADATA_KEY_RE,
    "keys are 1-64 letters, digits, '_', '.', '-'",
  ),
  z.union([z.string().max(1024), z.number(), z.boolean(), z.null()]),
).refine((m) => Object.keys(m).length <= 32, "at most 32 keys");

const describe = (v: unknown) =>
  v === null ? "null" : Array.isArray(v) ? "an array" : `a ${typeof v}`;

function headerBoolean(
  name: string,
  value: string | null,
): boolean | undefined {
  if (value === null) return undefined;
  const v = value.trim().toLowerCase();
  if (v === "true" || v === "1") return true;
  if (v === "false" || v === "0") return false;
  throw bad(`${name} must be true or false (got '${value.slice(0, 40)}')`);
}

/**
 * Checks a prompt request's parsed JSON body and headers against `config`;
 * throws a {@linkcode PlexusError} (400 or 413) naming what is wrong.
 */
export function parsePromptInput(
  body: unknown,
  headers: Headers,
  config: PromptsConfig,
): PromptInput {
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw bad(`the body must be a JSON object (got ${describe(body)})`);
  }
  const b = body as Record<string, unknown>;
  const unknown = Object.keys(b).filter((k) =>
    !["prompt", "sageEnabled", "scenario", "metadata"].includes(k)
  );
  if (unknown.length) {
    throw bad(
      `unknown field '${
        unknown[0].slice(0, 40)
      }' (known: prompt, sageEnabled, scenario, metadata)`,
    );
  }
  if (b.prompt === undefined) throw bad("prompt is missing");
  if (typeof b.prompt !== "string") {
    throw bad(`prompt must be a string (got ${describe(b.prompt)})`);
  }
  if (b.prompt.trim() === "") throw bad("prompt is empty");
  if (b.prompt.length > config.maxPromptChars) {
    throw bad(
      `prompt is ${b.prompt.length} characters; the limit is ${config.maxPromptChars}`,
      413,
    );
  }
  if (b.sageEnabled !== undefined && typeof b.sageEnabled !== "boolean") {
    throw bad(
      `sageEnabled must be a boolean (got ${describe(b.sageEnabled)})`,
    );
  }
  const sage = headerBoolean("X-SAGE-Enabled", headers.get("x-sage-enabled")) ??
    (b.sageEnabled as boolean | undefined) ?? config.sageByDefault;

  if (b.scenario !== undefined && typeof b.scenario !== "string") {
    throw bad(`scenario must be a string (got ${describe(b.scenario)})`);
  }
  const scenario = headers.get("x-scenario")?.trim() ||
    (b.scenario as string | undefined);
  if (scenario !== undefined) {
    if (!SCENARIO_RE.test(scenario)) {
      throw bad(
        `scenario '${
          scenario.slice(0, 40)
        }' is not a scenario name (lower-case letters, digits, '_', '-')`,
      );
    }
    if (!config.scenarios.includes(scenario)) {
      throw bad(
        `unknown scenario '${scenario}' (known: ${
          config.scenarios.join(", ")
        })`,
      );
    }
  }

  let metadata: PromptInput["metadata"] = {};
  if (b.metadata !== undefined) {
    const r = metadataSchema.safeParse(b.metadata);
    if (!r.success) {
      const issue = r.error.issues[0];
      const at = issue.path.length ? `.${issue.path.join(".")}` : "";
      throw bad(`metadata${at}: ${issue.message}`);
    }
    const size = new TextEncoder().encode(JSON.stringify(r.data)).length;
    if (size > config.maxMetadataBytes) {
      throw bad(
        `metadata is ${size} bytes as JSON; the limit is ${config.maxMetadataBytes}`,
      );
    }
    metadata = r.data;
  }
  let cacheKeyFields = config.cache.keyFields;
  const vary = headers.get("x-cache-key");
  if (vary !== null) {
    cacheKeyFields = vary.split(",").map((f) => f.trim()).filter(Boolean);
    const badField = cacheKeyFields.find((f) => !METADATA_KEY_RE.test(f));
    if (badField !== undefined || cacheKeyFields.length > 8) {
      throw bad(
        `X-Cache-Key must list at most 8 metadata field names (got '${
          vary.slice(0, 80)
        }')`,
      );
    }
  }
  const noCache = /(^|,)\s*no-cache\s*(,|$)/i.test(
    headers.get("cache-control") ?? "",
  );
  return {
    prompt: b.prompt,
    sage,
    ...(scenario ? { scenario } : {}),
    metadata,
    cacheKeyFields,
    noCache,
  };
}
