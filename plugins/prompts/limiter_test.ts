import assert from "node:assert/strict";
import { PlexusError } from "../../core/plugin.ts";
import { createLimiter } from "./limiter.ts";

Deno.test("limiter: holders up to the limit, then a bounded queue, then 429", async () => {
  const limiter = createLimiter({ maxConcurrent: 2, maxQueued: 1 });
  const r1 = await limiter.acquire();
  await limiter.acquire();
  const waiting = limiter.acquire();
  assert.equal(limiter.queued, 1);
  await assert.rejects(
    limiter.acquire(),
    (e) => e instanceof PlexusError && e.status === 429 && e.retryAfterS === 1,
  );
  r1();
  r1(); // a second release of the same slot does nothing
  const r3 = await waiting;
  assert.equal(limiter.running, 2);
  assert.equal(limiter.queued, 0);
  r3();
  assert.equal(limiter.running, 1);
});

Deno.test("limiter: a waiter whose signal aborts leaves the queue", async () => {
  const limiter = createLimiter({ maxConcurrent: 1, maxQueued: 1 });
  const release = await limiter.acquire();
  const controller = new AbortController();
  const waiting = limiter.acquire(controller.signal);
  controller.abort(new Error("client gone"));
  await assert.rejects(waiting, /client gone/);
  assert.equal(limiter.queued, 0);
  release();
  assert.equal(limiter.running, 0);
});

Deno.test("limiter: tryAcquire takes a free slot at once, none when all are taken", async () => {
  const limiter = createLimiter({ maxConcurrent: 1, maxQueued: 1 });
  const release = limiter.tryAcquire();
  assert.ok(release);
  assert.equal(limiter.running, 1);
  assert.equal(limiter.tryAcquire(), undefined);
  const waiting = limiter.acquire();
  assert.equal(limiter.queued, 1);
  release();
  release(); // a second release of the same slot does nothing
  (await waiting)();
  assert.equal(limiter.running, 0);
  assert.ok(limiter.tryAcquire());
});
