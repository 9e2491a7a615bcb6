import assert from "node:assert/strict";
import { createTestKernel } from "./testing.ts";
import { definePlugin } from "./plugin.ts";
import type { NodeEvent, NodeEvents } from "./events.ts";
import { DurableQueue } from "./state/queue.ts";
import { createTaskService } from "./tasks.ts";
import { createLogger } from "./observe/logger.ts";
import { createMetrics } from "./observe/metrics.ts";

async function until<T>(
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  what: string,
): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) {
      throw new Error(
        `timed out waiting for ${what}: last ${JSON.stringify(v)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}

const post = (body?: unknown) => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  ...(body === undefined
    ? {}
    : { body: typeof body === "string" ? body : JSON.stringify(body) }),
});

/** A plugin whose `steps` task reports the fractions it is given, then waits for `release`. */
function stepsPlugin(release: Promise<void>) {
  return definePlugin({
    manifest: {
      name: "steps",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:steps"],
      requires: ["tasks:local"],
    },
    setup(ctx) {
      ctx.kernel.get("tasks:local").register("steps", async (p, run) => {
        const { fractions, burst } = p as {
          fractions: number[];
          burst?: number;
        };
        // A burst well over 10/s: all but the last are held back or replaced.
        for (let i = 0; i < (burst ?? 0); i++) run.progress(i / 1000, "burst");
        for (const f of fractions) {
          run.progress(f, `at ${f}`);
          // Apart enough that none is dropped by the 10/s limit.
          await new Promise((r) => setTimeout(r, 120));
        }
        await release;
        return "ok";
      });
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
}

Deno.test("queue: cancel takes a ready, a delayed and an in-flight message out for good; finished and unknown ones are refused", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const q = new DurableQueue<string>(kv, "c");
    const ready = await q.enqueue("ready");
    const delayed = await q.enqueue("delayed", { delayMs: 1 });
    const running = await q.enqueue("running", { priority: 9 });
    const [d] = await q.claim(1, 30_000, "n1");
    assert.equal(d.id, running.id);
    for (const m of [ready, delayed, running]) {
      const r = await q.cancel(m.id, "no longer wanted");
      assert.equal(r.outcome, "cancelled");
    }
    // The holder's settles are no-ops now: neither acked nor retried.
    await d.nak(0, "handler aborted");
    assert.equal(d.settled, true);
    const after = await q.get(running.id);
    assert.equal(after?.state, "cancelled");
    assert.equal(after?.cancelReason, "no longer wanted");
    assert.deepEqual(
      [...(await q.cancelMarks([ready.id, running.id])).keys()],
      [running.id],
    );
    await new Promise((r) => setTimeout(r, 5));
    await q.sweep();
    assert.deepEqual(await q.claim(10, 30_000), []);
    const s = await q.stats();
    assert.deepEqual([s.ready, s.delayed, s.inflight, s.dead], [0, 0, 0, 0]);
    assert.equal((await q.cancel(running.id, "again")).outcome, "finished");
    assert.equal((await q.cancel("nope", "x")).outcome, "unknown");
  } finally {
    kv.close();
  }
});

Deno.test("queue: cancels racing claims never let a message cancelled from ready run; every message ends claimed or cancelled, once", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const q = new DurableQueue<number>(kv, "race", { maxGroup: 1 });
    const ids: string[] = [];
    // Several per commit too: one index entry shared by many ids.
    for (let i = 0; i < 40; i++) ids.push((await q.enqueue(i)).id);
    ids.push(
      ...await q.enqueueMany(
        Array.from({ length: 160 }, (_, i) => ({ payload: i })),
      ),
    );
    const claimed = new Set<string>();
    const cancelledFromReady = new Set<string>();
    // Cancels start from the far end, so some surely meet ready messages
    // and the two meet somewhere in the middle, whichever is faster (the
    // claimer takes 7 an op; from the front, a cancel of every other id was
    // outrun by it on a fast queue and met none).
    let cancelsLeft = ids.filter((_, i) => i % 2 === 0).reverse();
    const claimer = (async () => {
      for (let idle = 0; idle < 3;) {
        const got = await q.claim(7, 60_000, "c");
        for (const d of got) {
          assert.ok(!claimed.has(d.id), `claimed twice: ${d.id}`);
          claimed.add(d.id);
        }
        idle = got.length ? 0 : idle + 1;
      }
    })();
    const canceller = (async () => {
      while (cancelsLeft.length) {
        const id = cancelsLeft.shift()!;
        const r = await q.cancel(id, "race");
        if (r.outcome === "cancelled" && r.from === "ready") {
          cancelledFromReady.add(id);
        }
      }
    })();
    await Promise.all([claimer, canceller]);
    cancelsLeft = [];
    for (const id of cancelledFromReady) {
      assert.ok(!claimed.has(id), `cancelled from ready, then claimed: ${id}`);
    }
    let inflight = 0;
    for (const id of ids) {
      const m = await q.get(id);
      if (m?.state === "inflight") inflight++;
      assert.ok(
        m?.state === "cancelled" ||
          (m?.state === "inflight" && claimed.has(id)),
        `${id} ended ${m?.state}`,
      );
    }
    const s = await q.stats();
    assert.deepEqual([s.ready, s.delayed, s.inflight], [0, 0, inflight]);
    assert.ok(cancelledFromReady.size > 0 && claimed.size > 0);
  } finally {
    kv.close();
  }
});

Deno.test("tasks: cancel over HTTP — a ready task never runs and shows cancelled with its reason; done is 409, unknown 404, a bad body 400", async () => {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  await using t = await createTestKernel([stepsPlugin(released)]);
  const seen: NodeEvent[] = [];
  const events = t.kernel.get<NodeEvents>("events:local");
  events.listen((e) => seen.push(e));
  // Fill every slot (8) so the next task stays ready.
  const blockers = await Promise.all(
    Array.from(
      { length: 8 },
      () => t.tasks.submit({ type: "steps", payload: { fractions: [] } }),
    ),
  );
  await until(
    () => Promise.resolve(t.tasks.running()),
    (n) => n === 8,
    "8 running",
  );
  const { id } = await t.tasks.submit({ type: "echo", payload: 1 });
  const res = await t.api(
    `/api/v1/tasks/${id}/cancel`,
    post({ reason: "changed my mind" }),
  );
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  assert.equal(body.status, "cancelled");
  release();
  for (const b of blockers) {
    await until(
      () => t.tasks.get(b.id),
      (v) => v?.status === "done",
      "blocker",
    );
  }
  const view = await (await t.api(`/api/v1/tasks/${id}`)).json();
  assert.equal(view.status, "cancelled");
  assert.equal(view.reason, "changed my mind");
  assert.equal(view.attempts, 0);
  assert.ok(
    !seen.some((e) =>
      (e.data as { taskId?: string }).taskId === id && e.type === "task.started"
    ),
  );
  assert.deepEqual(
    seen.filter((e) => e.type === "task.cancelled").map((e) => e.data),
    [{ taskId: id, type: "echo", reason: "changed my mind" }],
  );
  // A second cancel, a finished task, an unknown one, a bad body.
  const again = await t.api(`/api/v1/tasks/${id}/cancel`, post());
  assert.equal(again.status, 409);
  assert.match((await again.json()).error.message, /task '.*' is cancelled/);
  const done = await t.api(`/api/v1/tasks/${blockers[0].id}/cancel`, post());
  assert.equal(done.status, 409);
  assert.match((await done.json()).error.message, /is done: only a ready/);
  const unknown = await t.api(`/api/v1/tasks/nope/cancel`, post());
  assert.equal(unknown.status, 404);
  const bad = await t.api(`/api/v1/tasks/${id}/cancel`, post({ reason: 7 }));
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error.message, /reason/);
  assert.equal(seen.filter((e) => e.type === "task.cancelled").length, 1);
});

Deno.test("tasks: cancelling a task running here aborts its handler's signal at once; it ends cancelled, not failed or retried", async () => {
  await using t = await createTestKernel([]);
  const seen: NodeEvent[] = [];
  t.kernel.get<NodeEvents>("events:local").listen((e) => seen.push(e));
  const { id } = await t.tasks.submit({
    type: "sleep",
    payload: { ms: 60_000 },
  });
  await until(() => t.tasks.get(id), (v) => v?.status === "running", "running");
  const view = await t.tasks.cancel(id, "too slow");
  assert.equal(view.status, "cancelled");
  await until(
    () => Promise.resolve(t.tasks.running()),
    (n) => n === 0,
    "the handler to stop",
  );
  const types = seen.filter((e) =>
    (e.data as { taskId?: string }).taskId === id
  )
    .map((e) => e.type);
  assert.deepEqual(types, ["task.started", "task.cancelled"]);
  const final = await t.tasks.get(id);
  assert.equal(final?.status, "cancelled");
  assert.equal(final?.attempts, 1);
  assert.equal(final?.reason, "too slow");
});

Deno.test("tasks: ctx.progress is seen in order by a listener and the latest by GET; a burst is limited to 10/s with the last sent; bad fractions throw", async () => {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  await using t = await createTestKernel([stepsPlugin(released)]);
  const seen: NodeEvent[] = [];
  t.kernel.get<NodeEvents>("events:local").listen((e) => seen.push(e));
  const { id } = await t.tasks.submit({
    type: "steps",
    payload: { fractions: [0.25, 0.5, 1], burst: 200 },
  });
  const progressOf = () =>
    seen.filter((e) =>
      e.type === "task.progress" && (e.data as { taskId: string }).taskId === id
    ).map((e) => (e.data as { progress: number }).progress);
  await until(
    () => Promise.resolve(progressOf()),
    (p) => p.at(-1) === 1,
    "progress 1",
  );
  const running = await (await t.api(`/api/v1/tasks/${id}`)).json();
  assert.equal(running.status, "running");
  assert.equal(running.progress.fraction, 1);
  assert.equal(running.progress.message, "at 1");
  assert.equal(running.progress.attempt, 1);
  assert.ok(!Number.isNaN(Date.parse(running.progress.at)));
  // The burst of 200 sent its first report only (the others were replaced
  // by 0.25 within the same 100 ms), then 0.25, 0.5, 1 in order.
  assert.deepEqual(progressOf(), [0, 0.25, 0.5, 1]);
  release();
  await until(() => t.tasks.get(id), (v) => v?.status === "done", "done");
  const types = seen.filter((e) =>
    (e.data as { taskId?: string }).taskId === id
  )
    .map((e) => e.type);
  assert.equal(types.at(-1), "task.completed");

  // Validation, from a handler: the RangeError fails the task with the reason.
  const bad = definePlugin({
    manifest: {
      name: "bad-progress",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:bad-progress"],
      requires: ["tasks:local"],
    },
    setup(ctx) {
      ctx.kernel.get("tasks:local").register("bad-progress", (p, run) => {
        run.progress(p as number);
        return Promise.resolve("unreachable");
      });
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
  await using t2 = await createTestKernel([bad]);
  for (const f of [1.5, -0.1, Number.NaN]) {
    const r = await t2.tasks.submit({ type: "bad-progress", payload: f });
    const v = await until(
      () => t2.tasks.get(r.id),
      (v) => v?.status === "failed",
      "failure",
    );
    assert.match(v!.error!, /fraction must be a number in \[0, 1\]/);
  }
});

Deno.test("tasks: cancelling a capability task stops waiting for the agent at once; its late answer is dropped", async () => {
  const kv = await Deno.openKv(":memory:");
  let answer!: (v: unknown) => void;
  let asked!: () => void;
  const agentAsked = new Promise<void>((r) => (asked = r));
  const tasks = createTaskService(kv, {
    nodeId: "n1",
    log: createLogger({ sinks: [] }),
    metrics: createMetrics(),
    runOnAgent: () => {
      asked();
      return new Promise((r) => (answer = r));
    },
  });
  tasks.start();
  try {
    const { id } = await tasks.submit({
      type: "crunch",
      capability: "crunch",
    });
    await agentAsked;
    assert.equal(tasks.running(), 1);
    await tasks.cancel(id, "no need");
    await until(
      () => Promise.resolve(tasks.running()),
      (n) => n === 0,
      "the slot freed",
    );
    answer({ late: true });
    const v = await tasks.get(id);
    assert.deepEqual([v?.status, v?.result], ["cancelled", undefined]);
  } finally {
    await tasks.stop(1000);
    kv.close();
  }
});

Deno.test("tasks: GET shows only the running attempt's progress, not a failed earlier one's", async () => {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const flaky = definePlugin({
    manifest: {
      name: "flaky-progress",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:flaky-progress"],
      requires: ["tasks:local"],
    },
    setup(ctx) {
      ctx.kernel.get("tasks:local").register("flaky", async (_p, run) => {
        if (run.attempt === 1) {
          run.progress(0.9, "nearly");
          throw new Error("fell over at 90%");
        }
        await released;
        return "ok";
      });
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
  await using t = await createTestKernel([flaky]);
  const { id } = await t.tasks.submit({ type: "flaky" });
  const failed = await until(
    () => t.tasks.get(id),
    (v) => v?.status === "failed",
    "attempt 1 failed",
  );
  assert.deepEqual(
    [failed?.progress?.fraction, failed?.progress?.attempt],
    [0.9, 1],
  );
  const second = await until(
    () => t.tasks.get(id),
    (v) => v?.status === "running" && v.attempts === 2,
    "attempt 2 running",
  );
  assert.equal(second?.progress, undefined);
  release();
  await until(() => t.tasks.get(id), (v) => v?.status === "done", "done");
});
