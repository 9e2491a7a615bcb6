import assert from "node:assert/strict";
import { formatDuration, parseDuration } from "./duration.ts";

Deno.test("duration: single units read as milliseconds", () => {
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("15m"), 900_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("7d"), 604_800_000);
});

Deno.test("duration: parts combine from the largest unit down", () => {
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration("1d2h3m4s5ms"), 93_784_005);
  assert.throws(() => parseDuration("30m1h"), /largest to smallest/);
  assert.throws(() => parseDuration("1m1m"), /largest to smallest/);
});

Deno.test("duration: unreadable text is a SyntaxError quoting the value", () => {
  for (
    const bad of [
      "",
      "soon",
      "15",
      "m",
      "1.5h",
      "-1h",
      " 1h",
      "1h ",
      "1H",
      "1w",
      "1e3s",
      "0x10s",
      "1 h",
    ]
  ) {
    assert.throws(
      () => parseDuration(bad),
      (err: Error) =>
        err instanceof SyntaxError && err.message.includes(`'${bad}'`),
      bad,
    );
  }
  assert.throws(() => parseDuration("1".repeat(100) + "s"), SyntaxError);
  assert.throws(() => parseDuration("1h\nx"), (err: Error) => {
    assert.ok(err instanceof SyntaxError);
    assert.ok(!err.message.includes("\n"), "one line");
    assert.match(err.message, /'1h\\nx'/);
    return true;
  });
  assert.throws(
    () => parseDuration(15 as unknown as string),
    /got number/,
  );
});

Deno.test("duration: values outside the bounds are a RangeError naming them", () => {
  assert.throws(() => parseDuration("0s"), RangeError);
  assert.throws(
    () => parseDuration("366d"),
    /out of range: expected 1ms to 365d/,
  );
  assert.throws(
    () => parseDuration("31d", { minMs: 1000, maxMs: 30 * 86_400_000 }),
    /'31d' is out of range: expected 1s to 30d/,
  );
  assert.throws(
    () => parseDuration("999ms", { minMs: 1000 }),
    RangeError,
  );
  assert.equal(parseDuration("30d", { maxMs: 30 * 86_400_000 }), 2_592_000_000);
});

Deno.test("duration: formatDuration writes what parseDuration reads", () => {
  for (const ms of [1, 999, 1000, 61_000, 5_400_000, 93_784_005]) {
    assert.equal(parseDuration(formatDuration(ms)), ms);
  }
  assert.equal(formatDuration(604_800_000), "7d");
  assert.throws(() => formatDuration(-1), RangeError);
  assert.throws(() => formatDuration(1.5), RangeError);
});
