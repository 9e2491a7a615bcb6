/**
 * Human durations for flags and options: `"30s"`, `"15m"`, `"1h"`, `"7d"`,
 * `"500ms"`, or several parts in decreasing units such as `"1h30m"`.
 *
 * @module
 */

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};
const UNIT_ORDER = ["d", "h", "m", "s", "ms"];
const PART = /(\d{1,9})(ms|s|m|h|d)/y;
const MAX_TEXT = 64;

/** `'text'` with control characters escaped, so a message stays one line. */
function quote(text: string): string {
  return `'${JSON.stringify(text).slice(1, -1)}'`;
}

/** Options for {@linkcode parseDuration}. */
export interface ParseDurationOptions {
  /** Shortest duration accepted, in ms. @default {1} */
  minMs?: number;
  /** Longest duration accepted, in ms. @default {31_536_000_000} (365 days) */
  maxMs?: number;
}

/**
 * Parses a duration such as `"15m"` into milliseconds. Units: `ms`, `s`,
 * `m`, `h`, `d`; parts may be combined from the largest unit down
 * (`"1h30m"`). Throws `SyntaxError` for text it cannot read and `RangeError`
 * outside `[minMs, maxMs]`, both quoting the value seen.
 *
 * @example Usage
 * ```ts
 * import { parseDuration } from "./duration.ts";
 * import assert from "node:assert/strict";
 * assert.equal(parseDuration("15m"), 900_000);
 * assert.equal(parseDuration("1h30m"), 5_400_000);
 * assert.throws(() => parseDuration("soon"), SyntaxError);
 * assert.throws(() => parseDuration("2h", { maxMs: 3_600_000 }), RangeError);
 * ```
 */
export function parseDuration(
  text: string,
  options: ParseDurationOptions = {},
): number {
  const minMs = options.minMs ?? 1;
  const maxMs = options.maxMs ?? 365 * UNIT_MS.d;
  if (typeof text !== "string" || text.length > MAX_TEXT) {
    throw new SyntaxError(
      `Cannot parse duration: expected a short string such as '15m', got ${
        typeof text === "string" ? `${text.length} characters` : typeof text
      }`,
    );
  }
  const expected =
    "expected a whole number and a unit (ms, s, m, h, d), e.g. '30s', '15m', '1h', '7d'";
  if (text === "") {
    throw new SyntaxError(`Cannot parse duration '': ${expected}`);
  }
  let total = 0;
  let lastUnit = -1;
  PART.lastIndex = 0;
  while (PART.lastIndex < text.length) {
    const at = PART.lastIndex;
    const match = PART.exec(text);
    if (!match) {
      throw new SyntaxError(
        `Cannot parse duration ${quote(text)} at character ${
          at + 1
        }: ${expected}`,
      );
    }
    const unit = UNIT_ORDER.indexOf(match[2]);
    if (unit <= lastUnit) {
      throw new SyntaxError(
        `Cannot parse duration ${
          quote(text)
        }: units must go from largest to smallest, each once (e.g. '1h30m')`,
      );
    }
    lastUnit = unit;
    total += Number(match[1]) * UNIT_MS[match[2]];
  }
  if (total < minMs || total > maxMs) {
    throw new RangeError(
      `Duration ${quote(text)} is out of range: expected ${
        formatDuration(minMs)
      } to ${formatDuration(maxMs)}`,
    );
  }
  return total;
}

/**
 * Formats milliseconds in the syntax {@linkcode parseDuration} reads, largest
 * units first (`5_400_000` → `"1h30m"`).
 *
 * @example Usage
 * ```ts
 * import { formatDuration } from "./duration.ts";
 * import assert from "node:assert/strict";
 * assert.equal(formatDuration(5_400_000), "1h30m");
 * assert.equal(formatDuration(0), "0ms");
 * ```
 */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) {
    throw new RangeError(
      `Cannot format duration: expected a whole number of ms >= 0, got ${ms}`,
    );
  }
  if (ms === 0) return "0ms";
  let rest = ms;
  let out = "";
  for (const unit of UNIT_ORDER) {
    const n = Math.floor(rest / UNIT_MS[unit]);
    if (n > 0) {
      out += `${n}${unit}`;
      rest -= n * UNIT_MS[unit];
    }
  }
  return out;
}
