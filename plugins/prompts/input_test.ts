import assert from "node:assert/strict";
import { PlexusError } from "../../core/plugin.ts";
import { promptsConfigSchema } from "./config.ts";
import { parsePromptInput } from "./input.ts";

const config = promptsConfigSchema.parse({ maxPromptChars: 100 });
const parse = (body: unknown, headers: Record<string, string> = {}) =>
  parsePromptInput(body, new Headers(headers), config);
const refused = (
  body: unknown,
  status: number,
  message: RegExp,
  headers: Record<string, string> = {},
) =>
  assert.throws(
    () => parse(body, headers),
    (e) =>
      e instanceof PlexusError && e.status === status &&
      message.test(e.message),
  );

Deno.test("prompt input: a full body is kept; defaults fill the rest", () => {
  assert.deepEqual(
    parse({
      prompt: "Book",
      sageEnabled: false,
      scenario: "hotel",
      metadata: { userId: "u", sessionId: "s", n: 1 },
    }),
    {
      prompt: "Book",
      sage: false,
      scenario: "hotel",
      metadata: { userId: "u", sessionId: "s", n: 1 },
      cacheKeyFields: [],
      noCache: false,
    },
  );
  assert.deepEqual(parse({ prompt: "x" }), {
    prompt: "x",
    sage: true,
    metadata: {},
    cacheKeyFields: [],
    noCache: false,
  });
});

Deno.test("prompt input: headers win over the body and are checked", () => {
  const p = parse({ prompt: "x", sageEnabled: true, scenario: "hotel" }, {
    "x-sage-enabled": "false",
    "x-scenario": "order",
  });
  assert.equal(p.sage, false);
  assert.equal(p.scenario, "order");
  refused(
    { prompt: "x" },
    400,
    /X-SAGE-Enabled must be true or false \(got 'yes'\)/,
    {
      "x-sage-enabled": "yes",
    },
  );
  refused(
    { prompt: "x" },
    400,
    /unknown scenario 'spa' \(known: hotel, order, plan\)/,
    {
      "x-scenario": "spa",
    },
  );
});

Deno.test("prompt input: missing, empty, non-string and oversize prompts are refused", () => {
  refused({}, 400, /prompt is missing/);
  refused({ prompt: "  " }, 400, /prompt is empty/);
  refused({ prompt: 42 }, 400, /prompt must be a string \(got a number\)/);
  refused({ prompt: ["a"] }, 400, /got an array/);
  refused({ prompt: "x".repeat(101) }, 413, /101 characters; the limit is 100/);
  refused([], 400, /body must be a JSON object \(got an array\)/);
  refused(null, 400, /got null/);
});

Deno.test("prompt input: bad fields, scenarios and metadata are refused naming them", () => {
  refused({ prompt: "x", extra: 1 }, 400, /unknown field 'extra'/);
  refused(
    { prompt: "x", sageEnabled: "yes" },
    400,
    /sageEnabled must be a boolean/,
  );
  refused({ prompt: "x", scenario: 3 }, 400, /scenario must be a string/);
  refused({ prompt: "x", scenario: "Hotel!" }, 400, /not a scenario name/);
  refused({ prompt: "x", scenario: "spa" }, 400, /unknown scenario 'spa'/);
  refused({ prompt: "x", metadata: "u1" }, 400, /^metadata: /);
  refused(
    { prompt: "x", metadata: { userId: { a: 1 } } },
    400,
    /metadata\.userId/,
  );
  refused({ prompt: "x", metadata: { "bad key": 1 } }, 400, /metadata/);
  const many = Object.fromEntries(
    Array.from({ length: 33 }, (_, i) => [`k${i}`, i]),
  );
  refused({ prompt: "x", metadata: many }, 400, /at most 32 keys/);
  const big = Object.fromEntries(
    Array.from({ length: 8 }, (_, i) => [`k${i}`, "v".repeat(1000)]),
  );
  refused(
    { prompt: "x", metadata: big },
    400,
    /bytes as JSON; the limit is 4096/,
  );
});

Deno.test("prompt input: X-Cache-Key names the cache's key set; Cache-Control: no-cache bypasses it", () => {
  const p = parse({ prompt: "x" }, {
    "x-cache-key": "userId, sessionId",
    "cache-control": "max-age=0, no-cache",
  });
  assert.deepEqual(p.cacheKeyFields, ["userId", "sessionId"]);
  assert.equal(p.noCache, true);
  assert.equal(
    parse({ prompt: "x" }, { "cache-control": "no-store" }).noCache,
    false,
  );
  refused(
    { prompt: "x" },
    400,
    /X-Cache-Key must list at most 8 metadata field names/,
    {
      "x-cache-key": "a b",
    },
  );
});
