import assert from "node:assert/strict";
import { mulberry32 } from "../random.ts";
import { backoffDelay } from "./backoff.ts";

Deno.test("backoff: without jitter the delay doubles from baseMs up to maxMs", () => {
  const o = { baseMs: 100, maxMs: 1000 };
  const caps = [100, 200, 400, 800, 1000, 1000];
  caps.forEach((cap, i) => assert.equal(backoffDelay(i + 1, o), cap));
});

Deno.test("backoff: the defaults are 1 s doubling to 60 s, an attempt below 1 counts as 1", () => {
  assert.equal(backoffDelay(1), 1000);
  assert.equal(backoffDelay(0), 1000);
  assert.equal(backoffDelay(7), 60_000);
});

Deno.test("backoff: full-jitter waits stay in [0, min(max, base × factor^(n-1)))", () => {
  const o = { baseMs: 100, maxMs: 1000, factor: 2, jitter: "full" as const };
  const caps = [100, 200, 400, 800, 1000, 1000];
  for (let n = 1; n <= caps.length; n++) {
    assert.equal(backoffDelay(n, { ...o, random: () => 0 }), 0);
    assert.equal(backoffDelay(n, { ...o, random: () => 0.5 }), caps[n - 1] / 2);
    assert.ok(
      backoffDelay(n, { ...o, random: () => 1 - 2 ** -53 }) < caps[n - 1],
    );
  }
  // Over many draws the waits cover the whole range, not a fixed point.
  const random = mulberry32(7);
  const draws = Array.from(
    { length: 2000 },
    () => backoffDelay(3, { ...o, random }),
  );
  const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
  assert.ok(Math.min(...draws) >= 0 && Math.min(...draws) < 10);
  assert.ok(Math.max(...draws) < 400 && Math.max(...draws) > 390);
  assert.ok(Math.abs(mean - 200) < 15, `mean ${mean}`);
});

Deno.test("backoff: a zero base stays zero however many attempts failed", () => {
  assert.equal(backoffDelay(5000, { baseMs: 0 }), 0);
  assert.equal(backoffDelay(5000, { baseMs: 0, jitter: "full" }), 0);
});
