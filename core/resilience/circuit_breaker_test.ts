import assert from "node:assert/strict";
import { ManualClock } from "../clock.ts";
import { createMetrics } from "../observe/metrics.ts";
import {
  type CircuitBreaker,
  type CircuitBreakerOptions,
  type CircuitEvent,
  createCircuitBreakers,
} from "./circuit_breaker.ts";
import { CircuitOpenError } from "./errors.ts";

/** The breaker of one endpoint, from a set of its own. */
function breaker(
  endpoint: string,
  options: CircuitBreakerOptions = {},
): CircuitBreaker {
  return createCircuitBreakers(options).get(endpoint);
}

function failMany(record: (ok: boolean) => void, ok: number, failed: number) {
  for (let i = 0; i < ok; i++) record(true);
  for (let i = 0; i < failed; i++) record(false);
}

Deno.test("circuit breaker: stays closed until minRequests calls were seen, then opens", () => {
  const clock = new ManualClock();
  const breakers = createCircuitBreakers({ clock });
  const events: CircuitEvent[] = [];
  breakers.on("change", (e) => events.push(e));
  const b = breakers.get("node-1");
  for (let i = 0; i < 19; i++) b.record(false);
  assert.equal(b.state, "closed");
  assert.equal(events.length, 0);
  b.record(false);
  assert.equal(b.state, "open");
  assert.deepEqual(events, [{
    endpoint: "node-1",
    from: "closed",
    to: "open",
    failureRate: 1,
    requests: 20,
  }]);
  assert.equal(breakers.notClosed, 1);
});

Deno.test("circuit breaker: opens at a failure rate of 0.5, not below it", () => {
  const clock = new ManualClock();
  const below = breaker("a", { clock });
  failMany((ok) => below.record(ok), 11, 9);
  assert.equal(below.state, "closed");
  assert.equal(below.stats().failureRate, 9 / 20);
  const at = breaker("b", { clock });
  failMany((ok) => at.record(ok), 10, 10);
  assert.equal(at.state, "open");
});

Deno.test("circuit breaker: an open circuit refuses calls, naming the endpoint and the wait", async () => {
  const clock = new ManualClock();
  const metrics = createMetrics("plexus_");
  const b = breaker("node-7", { clock, minRequests: 2, metrics });
  b.record(false);
  b.record(false);
  await clock.advance(4000);
  assert.equal(b.canPass(), false);
  let err: unknown;
  try {
    b.acquire();
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof CircuitOpenError);
  assert.equal(err.code, "circuit_open");
  assert.equal(err.retryable, true);
  assert.equal(err.endpoint, "node-7");
  assert.match(err.message, /'node-7' is open.*6000 ms/);
  let ran = false;
  await assert.rejects(
    b.call(() => {
      ran = true;
      return Promise.resolve();
    }),
    CircuitOpenError,
  );
  assert.equal(ran, false);
  assert.equal(
    metrics.counter("plexus_circuit_rejected_total", "").get({
      endpoint: "node-7",
    }),
    2,
  );
  assert.equal(
    metrics.gauge("plexus_circuit_state", "").get({ endpoint: "node-7" }),
    2,
  );
});

Deno.test("circuit breaker: half-open after 10 s lets one trial through; success closes it", async () => {
  const clock = new ManualClock();
  const metrics = createMetrics("plexus_");
  const b = breaker("n", { clock, minRequests: 4, metrics });
  const seen: string[] = [];
  b.on("open", () => seen.push("open"));
  b.on("half-open", () => seen.push("half-open"));
  b.on("closed", () => seen.push("closed"));
  failMany((ok) => b.record(ok), 0, 4);
  await clock.advance(9_999);
  assert.equal(b.state, "open");
  await clock.advance(1);
  assert.equal(b.state, "half-open");
  b.acquire();
  assert.equal(b.canPass(), false, "the one trial slot is taken");
  assert.throws(() => b.acquire(), /half-open and its trial calls/);
  b.record(true);
  assert.equal(b.state, "closed");
  assert.deepEqual(seen, ["open", "half-open", "closed"]);
  // The window starts afresh: three failures out of four new calls are
  // judged on their own, without the failures that opened the circuit.
  failMany((ok) => b.record(ok), 1, 2);
  assert.equal(b.state, "closed");
  assert.equal(b.stats().requests, 3);
  assert.equal(
    metrics.counter("plexus_circuit_transitions_total", "").get({
      endpoint: "n",
      state: "half-open",
    }),
    1,
  );
  assert.equal(
    metrics.gauge("plexus_circuit_state", "").get({ endpoint: "n" }),
    0,
  );
});

Deno.test("circuit breaker: a failed trial reopens the circuit and restarts the wait", async () => {
  const clock = new ManualClock();
  const b = breaker("n", { clock, minRequests: 1 });
  b.record(false);
  await clock.advance(10_000);
  b.acquire();
  b.record(false);
  assert.equal(b.state, "open");
  await clock.advance(9_000);
  assert.equal(b.state, "open");
  await clock.advance(1_000);
  assert.equal(b.state, "half-open");
});

Deno.test("circuit breaker: a trial never recorded frees its slot after halfOpenAfterMs", async () => {
  const clock = new ManualClock();
  const b = breaker("n", { clock, minRequests: 1 });
  b.record(false);
  await clock.advance(10_000);
  b.acquire();
  await clock.advance(9_999);
  assert.equal(b.canPass(), false);
  await clock.advance(1);
  assert.equal(b.canPass(), true);
  b.acquire();
  b.record(true);
  assert.equal(b.state, "closed");
});

Deno.test("circuit breaker: failures older than the window are forgotten", async () => {
  const clock = new ManualClock();
  const b = breaker("n", { clock });
  failMany((ok) => b.record(ok), 0, 19);
  await clock.advance(60_000);
  b.record(false);
  assert.equal(b.state, "closed");
  assert.equal(b.stats().requests, 1);
});

Deno.test("circuit breaker: the window slides by buckets, keeping recent calls", async () => {
  const clock = new ManualClock();
  const b = breaker("n", { clock });
  failMany((ok) => b.record(ok), 0, 10);
  await clock.advance(30_000);
  failMany((ok) => b.record(ok), 0, 9);
  await clock.advance(24_000);
  // The first ten are 54 s old: still inside the 60 s window.
  b.record(false);
  assert.equal(b.state, "open");
});

Deno.test("circuit breaker: call() counts only errors the predicate calls failures", async () => {
  const clock = new ManualClock();
  const b = breaker("n", {
    clock,
    minRequests: 2,
    isFailure: (err) => !(err instanceof TypeError),
  });
  for (let i = 0; i < 3; i++) {
    await assert.rejects(
      b.call(() => Promise.reject(new TypeError("bad input"))),
    );
  }
  assert.equal(b.state, "closed");
  assert.equal(b.stats().failures, 0);
  // Three non-failures and three failures: a rate of 0.5.
  for (let i = 0; i < 2; i++) {
    await assert.rejects(b.call(() => Promise.reject(new Error("down"))));
  }
  assert.equal(b.state, "closed");
  await assert.rejects(b.call(() => Promise.reject(new Error("down"))));
  assert.equal(b.state, "open");
});

Deno.test("circuit breakers: filter drops open endpoints and returns the same array when all are closed", async () => {
  const clock = new ManualClock();
  const breakers = createCircuitBreakers({ clock, minRequests: 1 });
  const nodes = [{ id: "a" }, { id: "b" }, { id: "c" }];
  assert.equal(breakers.filter(nodes), nodes);
  breakers.get("b").record(false);
  assert.deepEqual(breakers.filter(nodes).map((n) => n.id), ["a", "c"]);
  await clock.advance(10_000);
  assert.deepEqual(breakers.filter(nodes).map((n) => n.id), ["a", "b", "c"]);
  breakers.get("b").acquire();
  assert.deepEqual(breakers.filter(nodes).map((n) => n.id), ["a", "c"]);
  breakers.get("b").record(true);
  assert.equal(breakers.notClosed, 0);
  assert.equal(breakers.filter(nodes), nodes);
  breakers.get("c").record(false);
  breakers.prune(["a", "b"]);
  assert.equal(breakers.notClosed, 0);
  assert.equal(breakers.get("c").state, "closed", "c starts afresh");
});

Deno.test("circuit breakers: prune drops the state gauge of forgotten endpoints", () => {
  const metrics = createMetrics("plexus_");
  const breakers = createCircuitBreakers({ metrics });
  breakers.get("gone");
  breakers.get("kept");
  assert.match(metrics.render(), /endpoint="gone"/);
  breakers.prune(["kept"]);
  assert.doesNotMatch(
    metrics.render(),
    /plexus_circuit_state\{endpoint="gone"\}/,
  );
  assert.match(metrics.render(), /plexus_circuit_state\{endpoint="kept"\} 0/);
});

Deno.test("circuit breaker: options out of range are refused with the value seen", () => {
  assert.throws(
    () => breaker("n", { threshold: 1.5 }),
    /threshold must be in \(0, 1\], got 1.5/,
  );
  assert.throws(
    () => breaker("n", { minRequests: 0 }),
    /minRequests must be a positive integer, got 0/,
  );
});
