/**
 * Reading JSON request bodies safely: parse, refuse nesting deeper than
 * {@linkcode MAX_JSON_DEPTH} before any recursive validation runs (a zod
 * schema on 20,000-deep JSON would overflow the stack), then validate with a
 * zod schema. `JSON.parse` makes `"__proto__"` an own property, never the
 * prototype, and the schemas are strict objects, so such keys are refused,
 * not merged.
 *
 * @module
 */
import type { Context } from "hono";
import type { z } from "zod";
import { describeIssues } from "../plugin.ts";
import { errorResponse } from "./errors.ts";

/** Nesting deeper than this is refused before validation. */
export const MAX_JSON_DEPTH = 32;

/**
 * How deeply `value` nests, counting stops just past `limit` (so the walk
 * is bounded too). Iterative: safe on any input.
 *
 * @example Usage
 * ```ts
 * import { jsonDepth } from "./json.ts";
 * import assert from "node:assert/strict";
 * assert.equal(jsonDepth({ a: [1, { b: 2 }] }), 3);
 * assert.equal(jsonDepth(7), 0);
 * ```
 */
export function jsonDepth(value: unknown, limit = MAX_JSON_DEPTH): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (d + 1 > max) max = d + 1;
    if (max > limit) return max;
    for (const x of Object.values(v)) stack.push([x, d + 1]);
  }
  return max;
}

/**
 * The request body parsed and validated against `schema`, or the 400
 * response to return (body not JSON, too deep, or invalid, each named).
 *
 * @example Usage
 * ```ts ignore
 * const body = await readJson(c, schema);
 * if (body instanceof Response) return body;
 * ```
 */
export async function readJson<S extends z.ZodType>(
  c: Context,
  schema: S,
): Promise<z.output<S> | Response> {
  let body: unknown;
  try {
    body = JSON.parse(await c.req.text());
  } catch (err) {
    return errorResponse(400, `body is not JSON: ${(err as Error).message}`);
  }
  if (jsonDepth(body) > MAX_JSON_DEPTH) {
    return errorResponse(
      400,
      `body nests deeper than ${MAX_JSON_DEPTH} levels`,
    );
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    return errorResponse(400, describeIssues(parsed.error, body));
  }
  return parsed.data;
}
