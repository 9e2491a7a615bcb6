import assert from "node:assert/strict";
import { ManualClock } from "../../core/clock.ts";
import { createCircuitBreakers } from "../../core/resilience/circuit_breaker.ts";
import { createHealthChecks } from "../../core/resilience/health_check.ts";
import { nodes } from "./_test_util.ts";
import {
  withCircuitBreakers,
  withHealthChecks,
} from "../../core/resilience/guarded.ts";
import { createLeastConnections } from "./least_connections.ts";
import { createRoundRobin } from "./round_robin.ts";
import { dispatch, NoCandidateError } from "./strategy.ts";

Deno.test("guarded: an endpoint whose circuit opened is not picked until it is half-open", async () => {
  const clock = new ManualClock();
  const breakers = createCircuitBreakers({ clock, minRequests: 3 });
  const b = withCircuitBreakers(createRoundRobin(), breakers);
  const c = nodes(3);
  for (let i = 0; i < 9; i++) {
    const p = b.pick(c)!;
    b.report(p.id, { ok: p.id !== "n1", latencyMs: 1 });
  }
  assert.equal(breakers.get("n1").state, "open");
  const picked = Array.from({ length: 20 }, () => b.pick(c)!.id);
  assert.ok(!picked.includes("n1"), `${picked}`);
  await clock.advance(10_000);
  // Half-open: one trial goes to n1; while it runs n1 takes no other call.
  const during: string[] = [];
  let trial = false;
  for (let i = 0; i < 6; i++) {
    const id = b.pick(c)!.id;
    if (id === "n1") trial = true;
    else during.push(id);
  }
  assert.ok(trial);
  assert.equal(during.length, 5);
  b.report("n1", { ok: true, latencyMs: 1 });
  assert.equal(breakers.get("n1").state, "closed");
  assert.equal(breakers.notClosed, 0);
});

Deno.test("guarded: when every circuit is open nothing is picked and dispatch says why", async () => {
  const breakers = createCircuitBreakers({ minRequests: 1 });
  const inner = createLeastConnections();
  const b = withCircuitBreakers(inner, breakers);
  const c = nodes(2);
  for (const n of c) breakers.get(n.id).record(false);
  assert.equal(b.pick(c), undefined);
  const err = await dispatch(b, c, () => Promise.resolve()).catch((e) => e);
  assert.ok(err instanceof NoCandidateError);
  assert.match(err.message, /none of the 2 candidates is available/);
});

Deno.test("guarded: reports reach both the strategy and the circuit", () => {
  const breakers = createCircuitBreakers();
  const inner = createLeastConnections();
  const b = withCircuitBreakers(inner, breakers);
  const p = b.pick(nodes(2))!;
  assert.equal(inner.inflight(p.id), 1);
  b.report(p.id, { ok: false, latencyMs: 2 });
  assert.equal(inner.inflight(p.id), 0);
  assert.deepEqual(breakers.get(p.id).stats(), {
    requests: 1,
    failures: 1,
    failureRate: 1,
  });
});

Deno.test("guarded: endpoints failing health checks are skipped, with breakers on top", async () => {
  const failing = new Set(["n0"]);
  const checks = createHealthChecks({
    probe: (id) =>
      failing.has(id) ? Promise.reject(new Error("down")) : Promise.resolve(),
    unhealthyThreshold: 1,
    healthyThreshold: 1,
  });
  const breakers = createCircuitBreakers({ minRequests: 1 });
  const b = withCircuitBreakers(
    withHealthChecks(createRoundRobin(), checks),
    breakers,
  );
  const c = nodes(3);
  checks.track(c.map((n) => n.id));
  await checks.check();
  const picked = Array.from({ length: 6 }, () => {
    const p = b.pick(c)!;
    b.report(p.id, { ok: p.id !== "n2", latencyMs: 1 });
    return p.id;
  });
  assert.ok(!picked.includes("n0"), `${picked}`);
  // n2 failed a call: its circuit is open, n0 is down: only n1 is left.
  assert.deepEqual(Array.from({ length: 3 }, () => b.pick(c)!.id), [
    "n1",
    "n1",
    "n1",
  ]);
  failing.clear();
  await checks.check();
  assert.ok(Array.from({ length: 4 }, () => b.pick(c)!.id).includes("n0"));
});
