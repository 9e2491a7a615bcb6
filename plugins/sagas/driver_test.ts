import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import { definePlugin } from "../../core/plugin.ts";
import { createSagaStore, FencedError } from "./store.ts";
import { electionEpochKey } from "../../core/state/keys.ts";
import { NotLeaderError } from "../../core/state/fence.ts";
import { createSagaDriver } from "./driver.ts";
import { parseSagaDefinition } from "./definition.ts";
import type { SagaState } from "./machine.ts";
import { sagaEvents } from "./events.ts";

/** Task types that record their effect once per idempotency key. */
function shop(log: string[], failing: Set<string>) {
  const applied = new Set<string>();
  return definePlugin({
    manifest: {
      name: "shop",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:shop"],
    },
    setup(ctx) {
      const tasks = ctx.kernel.get("tasks:local");
      for (
        const type of ["reserve", "charge", "ship", "release", "refund"]
      ) {
        tasks.register(type, (payload) => {
          const { saga } = payload as { saga: { idempotencyKey: string } };
          if (failing.has(type)) {
            return Promise.reject(new Error(`${type} broke`));
          }
          if (!applied.has(saga.idempotencyKey)) {
            applied.add(saga.idempotencyKey);
            log.push(type);
          }
          return Promise.resolve({ [type]: true });
        });
      }
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
}

const def = parseSagaDefinition({
  name: "order",
  requireCompensation: false,
  steps: [
    {
      id: "reserve",
      run: { kind: "task", type: "reserve" },
      compensate: { kind: "task", type: "release" },
      retry: { maxAttempts: 1 },
    },
    {
      id: "charge",
      run: { kind: "task", type: "charge" },
      compensate: { kind: "function", name: "refund.fn" },
      retry: { maxAttempts: 1 },
    },
    {
      id: "ship",
      run: { kind: "task", type: "ship" },
      retry: { maxAttempts: 1 },
    },
  ],
});

Deno.test("saga driver: task and function steps run through the task service to completion", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([shop(log, new Set())]);
  const store = createSagaStore(t.kv);
  const driver = createSagaDriver({
    store,
    tasks: t.tasks,
    functions: new Map([[
      "refund.fn",
      () => Promise.resolve(log.push("refund.fn")),
    ]]),
    tickMs: 10,
  });
  try {
    await driver.submit("o1", def);
    assert.equal(await driver.finished("o1"), "completed");
    assert.deepEqual(log, ["reserve", "charge", "ship"]);
    const s = (await store.get("o1"))!;
    assert.deepEqual(s.steps.charge.result, { charge: true });
  } finally {
    await driver.stop();
  }
});

Deno.test("saga driver: a failing last step compensates the others in reverse, each once, as the side-effect log shows", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([shop(log, new Set(["ship"]))]);
  const store = createSagaStore(t.kv);
  const driver = createSagaDriver({
    store,
    tasks: t.tasks,
    functions: new Map([[
      "refund.fn",
      () => Promise.resolve(log.push("refund.fn")),
    ]]),
    tickMs: 10,
  });
  try {
    await driver.submit("o2", def);
    assert.equal(await driver.finished("o2", 60_000), "compensated");
    assert.deepEqual(log, ["reserve", "charge", "refund.fn", "release"]);
    const s = (await store.get("o2"))!;
    assert.match(
      s.reason!,
      /step 'ship' failed after 1 attempt\(s\): task .*ship broke/,
    );
  } finally {
    await driver.stop();
  }
});

Deno.test("saga driver: a driver taking over resumes what the stopped one had in flight, each effect once", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([shop(log, new Set())]);
  const store = createSagaStore(t.kv);
  const functions = new Map([
    ["refund.fn", () => Promise.resolve(log.push("refund.fn"))],
  ]);
  const a = createSagaDriver({ store, tasks: t.tasks, functions, tickMs: 10 });
  await a.submit("o3", def);
  // The first driver goes away with its first step in flight.
  await a.stop();
  assert.equal((await store.get("o3"))!.steps.reserve.status, "running");
  const b = createSagaDriver({ store, tasks: t.tasks, functions, tickMs: 10 });
  try {
    await b.resume();
    assert.equal(await b.finished("o3"), "completed");
    assert.deepEqual(log, ["reserve", "charge", "ship"]);
    // The re-issued run found the first driver's task (same key): one task.
    const reserveTasks = (await Array.fromAsync(
      t.kv.list<{ payload: { type: string } }>({
        prefix: ["queue", "tasks", "msg"],
      }),
    )).filter((e) => e.value.payload.type === "reserve");
    assert.equal(reserveTasks.length, 1);
  } finally {
    await b.stop();
  }
});

Deno.test("saga driver: a deposed leader's write fails with FencedError and its saga goes no further there; the new leader finishes it", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([shop(log, new Set())]);
  const store = createSagaStore(t.kv);
  const term = async (epoch: number, holder: string) => ({
    election: "plexus",
    epoch,
    holder,
    versionstamp: (await t.kv.set(electionEpochKey("plexus"), { epoch }))
      .versionstamp,
  });
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let holds = 0;
  const functions = new Map([
    ["hold", async () => {
      holds++;
      await gate;
      return "held";
    }],
  ]);
  const held = parseSagaDefinition({
    name: "held",
    steps: [
      { id: "hold", run: { kind: "function", name: "hold" } },
      { id: "reserve", run: { kind: "task", type: "reserve" } },
    ],
  });
  const first = await term(1, "a");
  const errors: unknown[] = [];
  // `leads` stays true: only the fence in KV stops the old leader.
  const a = createSagaDriver({
    store,
    tasks: t.tasks,
    functions,
    fence: () => first,
    onError: (err) => errors.push(err),
    tickMs: 10,
  });
  try {
    await a.submit("f1", held);
    while (holds === 0) await new Promise((r) => setTimeout(r, 5));
    const second = await term(2, "b");
    release();
    while (errors.length === 0) await new Promise((r) => setTimeout(r, 5));
    assert.ok(errors[0] instanceof FencedError, String(errors[0]));
    assert.match((errors[0] as Error).message, /epoch 1\) ended/);
    const s = (await store.get("f1"))!;
    assert.equal(s.steps.hold.status, "running", "nothing written by a");
    assert.equal(s.steps.reserve.status, "pending");
    assert.equal(a.inflight(), 0);
    // The new leader resumes: the function runs again (same key), then the task.
    const c = createSagaDriver({
      store,
      tasks: t.tasks,
      functions,
      fence: () => second,
      tickMs: 10,
    });
    try {
      await c.resume();
      assert.equal(await c.finished("f1"), "completed");
    } finally {
      await c.stop();
    }
    assert.equal(holds, 2);
    assert.deepEqual(log, ["reserve"]);
  } finally {
    await a.stop();
  }
});

Deno.test("saga driver: a busy store failing a task submit or read is retried, not taken for the step's failure", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([shop(log, new Set())]);
  const store = createSagaStore(t.kv);
  let submits = 0, gets = 0;
  const busy = () => Promise.reject(new Error("database is locked"));
  const tasks = {
    ...t.tasks,
    submit: (s: Parameters<typeof t.tasks.submit>[0]) =>
      submits++ % 2 === 0 ? busy() : t.tasks.submit(s),
    get: (id: string) => gets++ % 2 === 0 ? busy() : t.tasks.get(id),
  } as typeof t.tasks;
  const errors: unknown[] = [];
  const driver = createSagaDriver({
    store,
    tasks,
    functions: new Map([["refund.fn", () => Promise.resolve()]]),
    onError: (err) => errors.push(err),
    tickMs: 5,
  });
  try {
    await driver.submit("busy", def);
    assert.equal(await driver.finished("busy"), "completed");
    assert.deepEqual(log, ["reserve", "charge", "ship"]);
    const s = (await store.get("busy"))!;
    for (const step of ["reserve", "charge", "ship"]) {
      assert.equal(s.steps[step].attempts.length, 1, step);
    }
    assert.ok(errors.length >= 6, `${errors.length} busy errors reported`);
    assert.match(String(errors[0]), /database is locked/);
  } finally {
    await driver.stop();
  }
});

Deno.test("saga driver: a node that does not lead writes what it starts or cancels and marks it; the leader's sweep carries it out", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([shop(log, new Set())]);
  const store = createSagaStore(t.kv);
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const calls: string[] = [];
  const functions = new Map([
    ["hold", (_: unknown, c: { compensating: boolean }) => {
      calls.push(c.compensating ? "undo-hold" : "hold");
      return c.compensating ? Promise.resolve() : gate;
    }],
  ]);
  const held = parseSagaDefinition({
    name: "held",
    steps: [
      {
        id: "reserve",
        run: { kind: "task", type: "reserve" },
        compensate: { kind: "task", type: "release" },
      },
      { id: "hold", run: { kind: "function", name: "hold" } },
    ],
  });
  const follower = createSagaDriver({
    store,
    tasks: t.tasks,
    functions,
    leads: () => false,
    tickMs: 5,
  });
  const leader = createSagaDriver({
    store,
    tasks: t.tasks,
    functions,
    tickMs: 5,
  });
  try {
    await follower.submit("k1", held);
    assert.equal(follower.inflight(), 0, "the follower runs nothing");
    while (!calls.includes("hold")) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(log, ["reserve"], "the leader ran the first step");
    const t1 = await follower.apply("k1", {
      type: "cancel",
      reason: "changed mind",
    });
    assert.equal(t1?.state.status, "compensating");
    release();
    assert.equal(await leader.finished("k1"), "compensated");
    assert.deepEqual(log, ["reserve", "release"]);
    assert.deepEqual(await store.kicks(), []);
  } finally {
    await follower.stop();
    await leader.stop();
  }
});

Deno.test("saga driver: a node that becomes leader takes over open sagas by itself", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([shop(log, new Set())]);
  const store = createSagaStore(t.kv);
  const functions = new Map([["refund.fn", () => Promise.resolve()]]);
  const a = createSagaDriver({ store, tasks: t.tasks, functions, tickMs: 5 });
  await a.submit("o4", def);
  await a.stop(); // the leader dies with the first step in flight
  let leading = false;
  const b = createSagaDriver({
    store,
    tasks: t.tasks,
    functions,
    leads: () => leading,
    tickMs: 5,
  });
  try {
    // Not leading: b leaves the saga alone (20 ticks).
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(b.inflight(), 0);
    assert.equal((await store.get("o4"))!.steps.charge.status, "pending");
    leading = true; // elected: no resume() call needed
    assert.equal(await b.finished("o4"), "completed");
    assert.deepEqual(log, ["reserve", "charge", "ship"]);
  } finally {
    await b.stop();
  }
});

Deno.test("saga driver: an outcome lost to a term that flickered between two ticks is fetched again, though leads() never said false", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([shop(log, new Set())]);
  const store = createSagaStore(t.kv);
  let writes = 0;
  const errors: unknown[] = [];
  const driver = createSagaDriver({
    store,
    tasks: t.tasks,
    functions: new Map([["refund.fn", () => Promise.resolve()]]),
    // The second fenced write (reserve's outcome) meets a lost term.
    fence: () => {
      if (++writes === 2) throw new NotLeaderError("term ended", null);
      return undefined;
    },
    onError: (err) => errors.push(err),
    resumeEveryMs: 60_000, // only the lost write may trigger the resume
    tickMs: 5,
  });
  try {
    await driver.submit("o5", def);
    assert.equal(await driver.finished("o5"), "completed");
    assert.ok(errors.some((e) => e instanceof NotLeaderError));
    assert.deepEqual(log, ["reserve", "charge", "ship"]);
    const s = (await store.get("o5"))!;
    assert.equal(s.steps.reserve.attempts.length, 1, "the same attempt");
  } finally {
    await driver.stop();
  }
});

Deno.test("saga driver: a crash exactly at a step boundary (outcome written, next step not yet submitted) is resumed by the next leader, each task once", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([shop(log, new Set())]);
  const store = createSagaStore(t.kv);
  // The dead leader started the saga, ran reserve and wrote its outcome,
  // which also marks charge running, then died before submitting charge.
  await store.start("b1", def, 0);
  const reserve = await t.tasks.submit({
    type: "reserve",
    payload: { saga: { idempotencyKey: "b1:reserve" }, input: null },
    idempotencyKey: "b1:reserve:1",
  });
  await store.apply("b1", {
    type: "succeeded",
    step: "reserve",
    attempt: 1,
    result: { reserve: true },
  }, 1);
  const s = (await store.get("b1"))!;
  assert.equal(s.steps.charge.status, "running");
  const functions = new Map([["refund.fn", () => Promise.resolve()]]);
  const next = createSagaDriver({
    store,
    tasks: t.tasks,
    functions,
    tickMs: 5,
  });
  try {
    assert.equal(await next.finished("b1"), "completed");
    const types = (await Array.fromAsync(
      t.kv.list<{ payload: { type: string } }>({
        prefix: ["queue", "tasks", "msg"],
      }),
    )).map((e) => e.value.payload.type).sort();
    assert.deepEqual(types, ["charge", "reserve", "ship"]);
    assert.ok(reserve.id);
    assert.deepEqual(log.sort(), ["charge", "reserve", "ship"]);
  } finally {
    await next.stop();
  }
});

Deno.test("saga driver: a resume that read the state just before this node wrote a step's outcome does not run the step again", async () => {
  await using t = await createTestKernel([]);
  const base = createSagaStore(t.kv);
  let stale: SagaState | null = null;
  // A store whose reads can lag: what a resume racing an outcome sees.
  const store = {
    ...base,
    get: (id: string) => stale ? Promise.resolve(stale) : base.get(id),
    open: () => stale ? Promise.resolve([stale.id]) : base.open(),
  };
  let calls = 0;
  const driver = createSagaDriver({
    store,
    tasks: t.tasks,
    functions: new Map([["f", () => Promise.resolve(++calls)]]),
    resumeEveryMs: 3_600_000,
    tickMs: 5,
  });
  try {
    const one = parseSagaDefinition({
      name: "one",
      steps: [{ id: "f", run: { kind: "function", name: "f" } }],
    });
    await driver.submit("r1", one);
    const before = (await base.get("r1"))!;
    assert.equal(await driver.finished("r1"), "completed");
    stale = before; // f still "running" in what the resume reads
    await driver.resume();
    assert.equal(calls, 1, "f ran once");
    assert.equal(driver.inflight(), 0);
  } finally {
    await driver.stop();
  }
});

Deno.test("saga driver: stop() ends the sweep's sleep instead of waiting out the tick", async () => {
  await using t = await createTestKernel([]);
  const driver = createSagaDriver({
    store: createSagaStore(t.kv),
    tasks: t.tasks,
    tickMs: 60_000,
  });
  // Whether the sweep is asleep or mid-pass when stop() comes.
  await driver.resume();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stopped = await Promise.race([
    driver.stop().then(() => "stopped"),
    new Promise((r) => timer = setTimeout(() => r("still sleeping"), 10_000)),
  ]);
  clearTimeout(timer);
  assert.equal(stopped, "stopped");
});

Deno.test("saga driver: a step's task cancelled through the tasks API fails the attempt at once (not at the step's timeout) and the saga compensates", async () => {
  const log: string[] = [];
  const running = Promise.withResolvers<string>();
  const hold = definePlugin({
    manifest: {
      name: "hold",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:hold"],
    },
    setup(ctx) {
      const tasks = ctx.kernel.get("tasks:local");
      tasks.register("reserve", () => {
        log.push("reserve");
        return Promise.resolve({ reserve: true });
      });
      tasks.register("release", () => {
        log.push("release");
        return Promise.resolve({ release: true });
      });
      // Runs until cancelled.
      tasks.register("wait", (_payload, task) => {
        running.resolve(task.id);
        return new Promise((_, reject) =>
          task.signal.addEventListener(
            "abort",
            () => reject(task.signal.reason),
          )
        );
      });
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
  await using t = await createTestKernel([hold]);
  const store = createSagaStore(t.kv);
  const driver = createSagaDriver({ store, tasks: t.tasks, tickMs: 10 });
  try {
    await driver.submit(
      "o-cancel",
      parseSagaDefinition({
        name: "hold",
        steps: [
          {
            id: "reserve",
            run: { kind: "task", type: "reserve" },
            compensate: { kind: "task", type: "release" },
            retry: { maxAttempts: 1 },
          },
          {
            id: "wait",
            run: { kind: "task", type: "wait" },
            timeoutMs: 600_000,
            retry: { maxAttempts: 1 },
          },
        ],
      }),
    );
    const taskId = await running.promise;
    const t0 = Date.now();
    await t.tasks.cancel(taskId, "operator stopped it");
    assert.equal(await driver.finished("o-cancel", 30_000), "compensated");
    assert.ok(Date.now() - t0 < 20_000, "well before the 600 s step timeout");
    assert.deepEqual(log, ["reserve", "release"]);
    const s = (await store.get("o-cancel"))!;
    assert.match(s.reason!, /was cancelled: operator stopped it/);
  } finally {
    await driver.stop();
  }
});

Deno.test("saga driver: a write others see before its own promise resolves is still told before the writes that follow it", async () => {
  // A KV commit can be read by others before its promise resolves: here the
  // first failure's write returns 100 ms late, while its retry timer is
  // already in KV for the sweep (tick 5 ms, backoff 1 ms) to run.
  await using t = await createTestKernel([]);
  const real = createSagaStore(t.kv);
  let held = false;
  const store = {
    ...real,
    async apply(...args: Parameters<typeof real.apply>) {
      const out = await real.apply(...args);
      if (args[1].type === "failed" && !held) {
        held = true;
        await new Promise((r) => setTimeout(r, 100));
      }
      return out;
    },
  };
  const told: string[] = [];
  const driver = createSagaDriver({
    store,
    tasks: t.tasks,
    functions: new Map([["boom", () => Promise.reject(new Error("boom"))]]),
    tickMs: 5,
    onTransition: (x) => told.push(...sagaEvents(x).map((e) => e.type)),
  });
  try {
    await driver.submit(
      "late",
      parseSagaDefinition({
        name: "late",
        steps: [{
          id: "a",
          run: { kind: "function", name: "boom" },
          retry: { maxAttempts: 2, backoffMs: 1, maxBackoffMs: 1 },
        }],
      }),
    );
    assert.equal(await driver.finished("late", 10_000), "compensated");
    for (let i = 0; !told.includes("saga.compensated"); i++) {
      assert.ok(i < 500, `never told saga.compensated: ${told}`);
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(told, [
      "saga.started",
      "saga.step.started",
      "saga.step.failed",
      "saga.step.started",
      "saga.step.failed",
      "saga.compensating",
      "saga.compensated",
    ]);
  } finally {
    await driver.stop();
  }
});
