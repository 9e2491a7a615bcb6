import assert from "node:assert/strict";
import { createMetrics } from "../observe/metrics.ts";
import { createBulkhead } from "./bulkhead.ts";
import { BulkheadFullError } from "./errors.ts";

function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => open = r);
  return { promise, open };
}

Deno.test("bulkhead: runs up to concurrency, queues up to queueSize, refuses the rest", async () => {
  const metrics = createMetrics("plexus_");
  const bulkhead = createBulkhead({
    name: "db",
    concurrency: 2,
    queueSize: 1,
    metrics,
  });
  const rejected: unknown[] = [];
  bulkhead.on("rejected", (e) => rejected.push(e));
  const gates = [gate(), gate(), gate()];
  const started: number[] = [];
  const runs = gates.map((g, i) =>
    bulkhead.run(async () => {
      started.push(i);
      await g.promise;
      return i;
    })
  );
  await Promise.resolve();
  assert.deepEqual(started, [0, 1]);
  assert.equal(bulkhead.active, 2);
  assert.equal(bulkhead.queued, 1);
  const err = await bulkhead.run(() => Promise.resolve(-1)).catch((e) => e);
  assert.ok(err instanceof BulkheadFullError);
  assert.equal(err.code, "bulkhead_full");
  assert.equal(err.retryable, true);
  assert.equal(
    err.message,
    "Bulkhead 'db' is full: 2 calls running (limit 2) and 1 queued (limit 1)",
  );
  assert.deepEqual(rejected, [{
    name: "db",
    active: 2,
    queued: 1,
    concurrency: 2,
    queueSize: 1,
  }]);
  assert.equal(
    metrics.counter("plexus_bulkhead_rejected_total", "").get({
      bulkhead: "db",
    }),
    1,
  );
  assert.equal(
    metrics.gauge("plexus_bulkhead_queued", "").get({ bulkhead: "db" }),
    1,
  );
  gates[1].open();
  assert.equal(await runs[1], 1);
  await Promise.resolve();
  assert.deepEqual(started, [0, 1, 2], "the queued call took the freed slot");
  assert.equal(bulkhead.active, 2);
  assert.equal(bulkhead.queued, 0);
  gates[0].open();
  gates[2].open();
  assert.deepEqual(await Promise.all([runs[0], runs[2]]), [0, 2]);
  assert.equal(bulkhead.active, 0);
  assert.equal(
    metrics.gauge("plexus_bulkhead_active", "").get({ bulkhead: "db" }),
    0,
  );
});

Deno.test("bulkhead: never runs more than concurrency calls and serves the queue in order", async () => {
  const bulkhead = createBulkhead({ concurrency: 3, queueSize: 50 });
  let running = 0;
  let peak = 0;
  const order: number[] = [];
  await Promise.all(
    Array.from({ length: 40 }, (_, i) =>
      bulkhead.run(async () => {
        order.push(i);
        peak = Math.max(peak, ++running);
        for (let k = 0; k < (i % 4) + 1; k++) await Promise.resolve();
        running--;
      })),
  );
  assert.equal(peak, 3);
  assert.deepEqual(order, Array.from({ length: 40 }, (_, i) => i));
});

Deno.test("bulkhead: a failing call frees its slot", async () => {
  const bulkhead = createBulkhead({ concurrency: 1, queueSize: 0 });
  await assert.rejects(bulkhead.run(() => Promise.reject(new Error("x"))), /x/);
  assert.equal(bulkhead.active, 0);
  assert.equal(await bulkhead.run(() => Promise.resolve("ok")), "ok");
});

Deno.test("bulkhead: limits out of range are refused with the value seen", () => {
  assert.throws(
    () => createBulkhead({ name: "db", concurrency: 0 }),
    /bulkhead 'db': concurrency must be a positive integer, got 0/,
  );
  assert.throws(
    () => createBulkhead({ queueSize: -1 }),
    /queueSize must be a non-negative integer, got -1/,
  );
});
