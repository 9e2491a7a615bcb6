import assert from "node:assert/strict";
import { ManualClock } from "../clock.ts";
import { createMetrics } from "../observe/metrics.ts";
import { createHealthChecks, type HealthEvent } from "./health_check.ts";

function flakyProbe(failing: Set<string>, calls: string[] = []) {
  return (id: string) => {
    calls.push(id);
    return failing.has(id)
      ? Promise.reject(new Error(`${id} refused`))
      : Promise.resolve();
  };
}

Deno.test("health checks: down after 3 failures in a row, up after 2 successes in a row", async () => {
  const failing = new Set(["b"]);
  const metrics = createMetrics("plexus_");
  const checks = createHealthChecks({ probe: flakyProbe(failing), metrics });
  const events: HealthEvent[] = [];
  checks.on("down", (e) => events.push(e));
  checks.on("up", (e) => events.push(e));
  checks.track(["a", "b"]);
  const nodes = [{ id: "a" }, { id: "b" }];
  await checks.check();
  await checks.check();
  assert.equal(checks.status("b"), "up");
  assert.equal(checks.filter(nodes), nodes);
  await checks.check();
  assert.equal(checks.status("b"), "down");
  assert.deepEqual(checks.filter(nodes), [{ id: "a" }]);
  assert.equal(
    metrics.gauge("plexus_endpoint_up", "").get({ endpoint: "b" }),
    0,
  );
  failing.delete("b");
  await checks.check();
  assert.equal(checks.status("b"), "down");
  await checks.check();
  assert.equal(checks.status("b"), "up");
  assert.equal(checks.filter(nodes), nodes);
  assert.deepEqual(events.map((e) => `${e.endpoint} ${e.status}`), [
    "b down",
    "b up",
  ]);
  assert.match((events[0].error as Error).message, /b refused/);
  assert.equal(
    metrics.gauge("plexus_endpoint_up", "").get({ endpoint: "b" }),
    1,
  );
});

Deno.test("health checks: a success resets the failure run", async () => {
  const failing = new Set(["a"]);
  const checks = createHealthChecks({ probe: flakyProbe(failing) });
  checks.track(["a"]);
  await checks.check();
  await checks.check();
  failing.clear();
  await checks.check();
  failing.add("a");
  await checks.check();
  await checks.check();
  assert.equal(checks.status("a"), "up");
  await checks.check();
  assert.equal(checks.status("a"), "down");
});

Deno.test("health checks: a probe that hangs past timeoutMs counts as failed", async () => {
  const clock = new ManualClock();
  let aborted = 0;
  const checks = createHealthChecks({
    clock,
    timeoutMs: 500,
    unhealthyThreshold: 1,
    probe: (_id, signal) =>
      new Promise((_, reject) =>
        signal.addEventListener("abort", () => {
          aborted++;
          reject(signal.reason);
        })
      ),
  });
  checks.track(["slow"]);
  const round = checks.check();
  await clock.advance(500);
  await round;
  assert.equal(checks.status("slow"), "down");
  assert.equal(aborted, 1);
});

Deno.test("health checks: start probes every interval until stop", async () => {
  const clock = new ManualClock();
  const calls: string[] = [];
  const checks = createHealthChecks({
    clock,
    intervalMs: 1000,
    probe: flakyProbe(new Set(), calls),
  });
  checks.track(["a"]);
  checks.start();
  await new Promise((r) => setTimeout(r, 0));
  assert.equal(calls.length, 1);
  await clock.advance(3000);
  assert.equal(calls.length, 4);
  await checks.stop();
  await clock.advance(5000);
  assert.equal(calls.length, 4);
});

Deno.test("health checks: untracked endpoints are forgotten and count as up", async () => {
  const checks = createHealthChecks({
    probe: flakyProbe(new Set(["b"])),
    unhealthyThreshold: 1,
  });
  checks.track(["a", "b"]);
  await checks.check();
  assert.equal(checks.status("b"), "down");
  checks.track(["a"]);
  const nodes = [{ id: "a" }, { id: "b" }];
  assert.equal(checks.filter(nodes), nodes);
  assert.equal(checks.status("b"), "up");
  assert.throws(
    () => createHealthChecks({ probe: () => Promise.resolve(), intervalMs: 0 }),
    /intervalMs must be a positive integer, got 0/,
  );
});
