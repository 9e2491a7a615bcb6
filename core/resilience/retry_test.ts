import assert from "node:assert/strict";
import type { Clock } from "../clock.ts";
import { createMetrics } from "../observe/metrics.ts";
import { RetriesExhaustedError, TimeoutError } from "./errors.ts";
import { createRetry } from "./retry.ts";

/** A clock whose sleeps return at once and are recorded. */
function recordingClock(): Clock & { slept: number[] } {
  const slept: number[] = [];
  return {
    slept,
    now: () => 0,
    mono: () => 0,
    sleep(ms, signal) {
      slept.push(ms);
      return signal?.aborted
        ? Promise.reject(signal.reason)
        : Promise.resolve();
    },
  };
}

class Unavailable extends Error {
  readonly retryable = true;
}

Deno.test("retry: a non-retryable error is thrown at once, unchanged", async () => {
  const clock = recordingClock();
  const retry = createRetry({ clock });
  let calls = 0;
  const bad = new TypeError("bad input");
  await assert.rejects(
    retry.run(() => {
      calls++;
      return Promise.reject(bad);
    }),
    (err) => err === bad,
  );
  assert.equal(calls, 1);
  assert.deepEqual(clock.slept, []);
});

Deno.test("retry: stops after 1 + retries attempts with the last error as cause", async () => {
  const clock = recordingClock();
  const metrics = createMetrics("plexus_");
  const retry = createRetry({ name: "send", retries: 3, clock, metrics });
  const seen: number[] = [];
  let exhausted = 0;
  retry.on("retry", (e) => seen.push(e.attempt));
  retry.on("exhausted", () => exhausted++);
  const attempts: number[] = [];
  const err = await retry.run((attempt) => {
    attempts.push(attempt);
    return Promise.reject(new Unavailable(`try ${attempt}`));
  }).catch((e) => e);
  assert.ok(err instanceof RetriesExhaustedError);
  assert.equal(err.attempts, 4);
  assert.equal(err.retryable, false);
  assert.equal((err.cause as Error).message, "try 4");
  assert.match(err.message, /'send' failed after 4 attempts: try 4/);
  assert.deepEqual(attempts, [1, 2, 3, 4]);
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(clock.slept.length, 3);
  assert.equal(exhausted, 1);
  assert.equal(
    metrics.counter("plexus_retry_attempts_total", "").get({ policy: "send" }),
    3,
  );
  assert.equal(
    metrics.counter("plexus_retry_exhausted_total", "").get({ policy: "send" }),
    1,
  );
});

Deno.test("retry: succeeds on a later attempt and retries only retryable errors", async () => {
  const clock = recordingClock();
  const retry = createRetry({ clock, retries: 5 });
  let calls = 0;
  const value = await retry.run(() => {
    calls++;
    if (calls < 3) return Promise.reject(new TimeoutError("ping", 10));
    return Promise.resolve("pong");
  });
  assert.equal(value, "pong");
  assert.equal(calls, 3);
  const custom = createRetry({
    clock,
    retryIf: (err) => (err as Error).message === "again",
  });
  calls = 0;
  await assert.rejects(
    custom.run(() => {
      calls++;
      return Promise.reject(new Error(calls < 2 ? "again" : "stop"));
    }),
    /stop/,
  );
  assert.equal(calls, 2);
});

Deno.test("retry: the waits slept are the jittered backoffs, in order", async () => {
  const clock = recordingClock();
  const values = [0.25, 0.5, 0.75, 1 - 2 ** -53];
  let i = 0;
  const retry = createRetry({
    clock,
    retries: 4,
    delayMs: 100,
    maxDelayMs: 300,
    random: () => values[i++],
  });
  await retry.run(() => Promise.reject(new Unavailable("x"))).catch(() => {});
  assert.deepEqual(clock.slept.slice(0, 3), [25, 100, 225]);
  assert.ok(clock.slept[3] < 300 && clock.slept[3] > 299.99);
});

Deno.test("retry: an aborted signal stops further attempts", async () => {
  const clock = recordingClock();
  const ctl = new AbortController();
  const retry = createRetry({ clock, retries: 10 });
  let calls = 0;
  await assert.rejects(
    retry.run(() => {
      if (++calls === 2) ctl.abort(new Error("shutting down"));
      return Promise.reject(new Unavailable("x"));
    }, ctl.signal),
    /shutting down/,
  );
  assert.equal(calls, 2);
});

Deno.test("retry: with no retries a retryable error ends the call after one attempt", async () => {
  const retry = createRetry({
    name: "once",
    retries: 0,
    clock: recordingClock(),
  });
  await assert.rejects(
    retry.run(() => Promise.reject(new Unavailable("gone"))),
    /'once' failed after 1 attempt: gone/,
  );
});

Deno.test("retry: options out of range are refused with the value seen", () => {
  assert.throws(() => createRetry({ retries: -1 }), /retries .* got -1/);
  assert.throws(
    () => createRetry({ factor: 0.5 }),
    /factor must be ≥ 1, got 0.5/,
  );
});
