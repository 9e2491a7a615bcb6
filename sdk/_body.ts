/**
 * Record bodies of the agent SDK: JSON in, JSON (or text) out. Private to
 * `sdk/`.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A body parsed as JSON; the text when it is not JSON; undefined when empty. */
export function parseBody(body: Uint8Array): unknown {
  if (body.length === 0) return undefined;
  const text = decoder.decode(body);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** `value` as a JSON body (`undefined` becomes `null`). */
export function jsonBody(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value === undefined ? null : value));
}
