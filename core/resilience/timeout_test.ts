import assert from "node:assert/strict";
import { ManualClock } from "../clock.ts";
import { createMetrics } from "../observe/metrics.ts";
import { TimeoutError } from "./errors.ts";
import { createTimeout } from "./timeout.ts";

Deno.test("timeout: a call past its deadline rejects with TimeoutError and sees its signal abort", async () => {
  const clock = new ManualClock();
  const metrics = createMetrics("plexus_");
  const timeout = createTimeout({ name: "load profile", clock, metrics });
  const events: number[] = [];
  timeout.on("timeout", (e) => events.push(e.timeoutMs));
  let callSignal!: AbortSignal;
  const p = timeout.run((signal) => {
    callSignal = signal;
    return new Promise<never>(() => {});
  }, 250);
  const outcome = p.catch((e) => e);
  await clock.advance(249);
  assert.equal(callSignal.aborted, false);
  await clock.advance(1);
  const err = await outcome;
  assert.ok(err instanceof TimeoutError);
  assert.equal(err.code, "timeout");
  assert.equal(err.retryable, true);
  assert.equal(err.message, "'load profile' timed out after 250 ms");
  assert.equal(callSignal.aborted, true);
  assert.equal(callSignal.reason, err);
  assert.deepEqual(events, [250]);
  assert.equal(
    metrics.counter("plexus_timeouts_total", "").get({
      policy: "load profile",
    }),
    1,
  );
});

Deno.test("timeout: a call that settles in time keeps its value or error", async () => {
  const clock = new ManualClock();
  const timeout = createTimeout({ clock });
  let fired = 0;
  timeout.on("timeout", () => fired++);
  assert.equal(await timeout.run(() => Promise.resolve(7), 100), 7);
  await assert.rejects(
    timeout.run(() => Promise.reject(new Error("boom")), 100),
    /boom/,
  );
  await assert.rejects(
    timeout.run(() => {
      throw new Error("sync boom");
    }, 100),
    /sync boom/,
  );
  await clock.advance(1000);
  assert.equal(fired, 0);
});

Deno.test("timeout: the caller's signal aborts the call before the deadline", async () => {
  const clock = new ManualClock();
  const ctl = new AbortController();
  let callSignal!: AbortSignal;
  const p = createTimeout({ clock }).run(
    (signal) => {
      callSignal = signal;
      return new Promise<never>(() => {});
    },
    1000,
    ctl.signal,
  );
  ctl.abort(new Error("client went away"));
  await assert.rejects(p, /client went away/);
  assert.equal(callSignal.aborted, true);
});

Deno.test("timeout: a deadline of 0 or less is refused with the value seen", async () => {
  await assert.rejects(
    createTimeout().run(() => Promise.resolve(), 0),
    /timeoutMs must be > 0, got 0/,
  );
});
