import assert from "node:assert/strict";
import {
  activeIds,
  currentTraceparent,
  otelEnabled,
  span,
  traceIdOf,
} from "./otel.ts";

Deno.test("otel: off (no OTEL_DENO), span is a plain call and nothing is propagated", async () => {
  assert.equal(otelEnabled, false);
  assert.equal(span("x", {}, (s) => s), undefined);
  assert.equal(await span("x", {}, () => Promise.resolve(7)), 7);
  assert.throws(() =>
    span("x", {}, () => {
      throw new RangeError("bad");
    }), RangeError);
  assert.equal(span("x", {}, () => currentTraceparent()), undefined);
  assert.equal(activeIds(), undefined);
});

Deno.test("otel: traceIdOf reads a W3C traceparent and refuses malformed or all-zero ones", () => {
  const id = "4bf92f3577b34da6a3ce929d0e0e4736";
  assert.equal(traceIdOf(`00-${id}-00f067aa0ba902b7-01`), id);
  assert.equal(traceIdOf(`00-${id}-00f067aa0ba902b7`), undefined);
  assert.equal(
    traceIdOf(`00-${"0".repeat(32)}-00f067aa0ba902b7-01`),
    undefined,
  );
  assert.equal(traceIdOf(`00-${id}-${"0".repeat(16)}-01`), undefined);
  assert.equal(
    traceIdOf(`00-${id.toUpperCase()}-00f067aa0ba902b7-01`),
    undefined,
  );
  assert.equal(traceIdOf(null), undefined);
});
