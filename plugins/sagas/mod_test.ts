import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import { definePlugin } from "../../core/plugin.ts";
import type { NodeEvent, NodeEvents } from "../../core/events.ts";
import sagasPlugin, { SagaDefinitionError, type SagaService } from "./mod.ts";
import eventsPlugin, {
  type EventBus,
  type StoredEvent,
} from "../events/mod.ts";

/** A plugin using the capability: function steps that log their effects. */
function user(log: string[], failing: Set<string>) {
  return definePlugin({
    manifest: {
      name: "shop",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:shop"],
      requires: ["extension:sagas"],
    },
    setup(ctx) {
      const sagas = ctx.kernel.get<SagaService>("extension:sagas");
      for (const name of ["reserve", "charge", "ship"]) {
        sagas.registerFunction(`shop.${name}`, (input, c) => {
          if (failing.has(name)) {
            return Promise.reject(new Error(`${name} broke`));
          }
          log.push(`${name}:${JSON.stringify(c.sagaInput)}`);
          return Promise.resolve({ [name]: input ?? true, after: c.results });
        });
        sagas.registerFunction(`shop.undo-${name}`, (_input, c) => {
          assert.equal(c.compensating, true);
          log.push(`undo-${name}`);
          return Promise.resolve();
        });
      }
      sagas.define("order", {
        name: "order",
        steps: ["reserve", "charge", "ship"].map((n) => ({
          id: n,
          run: { kind: "function", name: `shop.${n}` },
          compensate: { kind: "function", name: `shop.undo-${n}` },
          retry: { maxAttempts: 2, backoffMs: 1 },
        })),
      });
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
}

const config = { pluginConfig: { sagas: { tickMs: 5 } } };

Deno.test("sagas plugin: a registered definition runs its function steps in order with the saga's input and earlier results", async () => {
  const log: string[] = [];
  await using t = await createTestKernel(
    [sagasPlugin, user(log, new Set())],
    config,
  );
  const sagas = t.kernel.get<SagaService>("extension:sagas");
  const id = await sagas.start("order", { input: { sku: "a1" } });
  assert.equal(await sagas.finished(id, 10_000), "completed");
  assert.deepEqual(log, [
    'reserve:{"sku":"a1"}',
    'charge:{"sku":"a1"}',
    'ship:{"sku":"a1"}',
  ]);
  const s = (await sagas.get(id))!;
  assert.deepEqual(s.steps.ship.result, {
    ship: true,
    after: {
      reserve: { reserve: true, after: {} },
      charge: s.steps.charge.result,
    },
  });
  assert.equal(s.steps.ship.attempts.length, 1);
  // The same id again starts nothing.
  assert.equal(await sagas.start("order", { id: "fixed" }), "fixed");
  assert.equal(await sagas.start("order", { id: "fixed" }), "fixed");
  assert.equal(await sagas.finished("fixed", 10_000), "completed");
  assert.equal(log.filter((l) => l.startsWith("ship")).length, 2);
  const listed = await sagas.list({ status: "completed", limit: 1 });
  assert.equal(listed.sagas.length, 1);
  const rest = await sagas.list({ status: "completed", cursor: listed.cursor });
  assert.deepEqual(
    [...listed.sagas, ...rest.sagas].map((x) => x.id).sort(),
    [id, "fixed"].sort(),
  );
});

Deno.test("sagas plugin: a step failing after its retries compensates the done ones in reverse, and the bus sees saga.* events", async () => {
  const log: string[] = [];
  await using t = await createTestKernel(
    [sagasPlugin, user(log, new Set(["ship"]))],
    config,
  );
  const seen: NodeEvent[] = [];
  let ended!: () => void;
  const end = new Promise<void>((r) => ended = r);
  const off = t.kernel.get<NodeEvents>("events:local").listen((e) => {
    if (e.type.startsWith("saga.")) seen.push(e);
    if (e.type === "saga.compensated") ended();
  });
  const sagas = t.kernel.get<SagaService>("extension:sagas");
  const id = await sagas.start("order");
  assert.equal(await sagas.finished(id, 10_000), "compensated");
  // The last write's events follow the write: `finished` polls the store and
  // can see it first (twice in 300 runs this test stopped listening there).
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    end,
    new Promise((_, reject) =>
      timer = setTimeout(
        () => reject(new Error(`no saga.compensated: ${JSON.stringify(seen)}`)),
        10_000,
      )
    ),
  ]).finally(() => clearTimeout(timer));
  off();
  assert.deepEqual(log.slice(2), ["undo-charge", "undo-reserve"]);
  const s = (await sagas.get(id))!;
  assert.equal(s.steps.ship.attempts.length, 2);
  assert.match(s.steps.ship.attempts[1].error!, /ship broke/);
  const types = seen.map((e) => e.type);
  // Once (CI, 2026-12-07) only one of the two failures was seen: say what
  // was, should it happen again.
  assert.deepEqual(
    types.filter((x) => x === "saga.step.failed").length,
    2,
    JSON.stringify({
      seen: seen.map((e) => [e.seq, e.type, e.data]),
      ship: s.steps.ship,
    }),
  );
  assert.ok(types.includes("saga.started"));
  assert.ok(
    types.indexOf("saga.compensating") < types.indexOf("saga.compensated"),
  );
  assert.deepEqual(
    seen.filter((e) => e.type === "saga.step.compensated").map((e) =>
      (e.data as { step: string }).step
    ),
    ["charge", "reserve"],
  );
});

Deno.test("sagas plugin: cancel compensates a running saga; bad definitions are refused naming the field", async () => {
  const log: string[] = [];
  await using t = await createTestKernel(
    [sagasPlugin, user(log, new Set())],
    config,
  );
  const sagas = t.kernel.get<SagaService>("extension:sagas");
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  sagas.registerFunction("slow", () => gate);
  const id = await sagas.start({
    name: "waits",
    steps: [
      {
        id: "first",
        run: { kind: "function", name: "shop.reserve" },
        compensate: { kind: "function", name: "shop.undo-reserve" },
      },
      { id: "slow", run: { kind: "function", name: "slow" } },
    ],
  });
  // Wait for the slow step to be running, by the state.
  for (;;) {
    if ((await sagas.get(id))!.steps.slow.status === "running") break;
    await new Promise((r) => setTimeout(r, 5));
  }
  const metrics = await (await t.request("/metrics")).text();
  assert.match(metrics, /^plexus_sagas_inflight 1$/m);
  assert.match(
    metrics,
    /^plexus_sagas_transitions_total\{status="running"\} \d+$/m,
  );
  assert.equal(await sagas.cancel(id, "customer changed mind"), true);
  assert.equal(await sagas.cancel(id), false);
  release();
  assert.equal(await sagas.finished(id, 10_000), "compensated");
  assert.deepEqual(log.slice(1), ["undo-reserve"]);
  assert.match((await sagas.get(id))!.reason!, /customer changed mind/);

  await assert.rejects(
    () =>
      sagas.start({
        name: "bad",
        steps: [{ id: "x", run: { kind: "function", name: "nope" } }],
      }),
    (err: unknown) =>
      err instanceof SagaDefinitionError && err.field === "steps[0].run" &&
      /unknown function 'nope'/.test(err.message),
  );
  // ':' would let one saga's idempotency keys meet another's.
  await assert.rejects(
    () => sagas.start("order", { id: "x:s" }),
    (err: unknown) => err instanceof SagaDefinitionError && err.field === "id",
  );
  await assert.rejects(
    () => sagas.finished("never-started"),
    /no saga 'never-started'/,
  );
  await assert.rejects(
    () => sagas.start("missing"),
    (err: unknown) =>
      err instanceof SagaDefinitionError && err.field === "definition",
  );
  assert.throws(
    () => sagas.define("bad", { name: "bad", steps: [] }),
    SagaDefinitionError,
  );
  // validate is synchronous (shape, functions, task types); check adds the
  // capabilities, as start does.
  assert.equal(
    sagas.validate({
      name: "v",
      steps: [{ id: "a", run: { kind: "function", name: "slow" } }],
    }).groups[0][0].timeoutMs,
    30_000,
  );
  assert.throws(
    () =>
      sagas.validate({
        name: "v",
        steps: [{ id: "a", run: { kind: "function", name: "nope" } }],
      }),
    (err: unknown) =>
      err instanceof SagaDefinitionError && err.field === "steps[0].run",
  );
  await assert.rejects(
    () =>
      sagas.check({
        name: "v",
        steps: [{ id: "a", run: { kind: "capability", capability: "oracle" } }],
      }),
    /steps\[0\]\.run: unknown capability 'oracle'/,
  );
});

Deno.test("sagas plugin: a saga whose state would not fit one KV value is refused at start; an oversized result fails its step", async () => {
  await using t = await createTestKernel([sagasPlugin], config);
  const sagas = t.kernel.get<SagaService>("extension:sagas");
  sagas.registerFunction("big", () => Promise.resolve("x".repeat(10_000)));
  sagas.registerFunction("ok", () => Promise.resolve(1));
  sagas.registerFunction("undo", () => Promise.resolve());
  const many = {
    name: "many",
    steps: Array.from({ length: 500 }, (_, i) => ({
      id: `s${i}`,
      run: { kind: "function", name: "ok" },
    })),
  };
  await assert.rejects(
    () => sagas.start(many),
    (err: unknown) =>
      err instanceof SagaDefinitionError && err.field === "steps" &&
      /would start at \d+ bytes/.test(err.message),
  );
  assert.deepEqual((await sagas.list()).sagas, []);
  const id = await sagas.start({
    name: "big",
    steps: [
      {
        id: "a",
        run: { kind: "function", name: "ok" },
        compensate: { kind: "function", name: "undo" },
      },
      {
        id: "b",
        run: { kind: "function", name: "big" },
        retry: { maxAttempts: 1 },
      },
    ],
  });
  assert.equal(await sagas.finished(id, 10_000), "compensated");
  const s = (await sagas.get(id))!;
  assert.match(
    s.steps.b.attempts[0].error!,
    /result is 10002 bytes; a saga keeps at most 4096/,
  );
});

Deno.test("sagas plugin: with the event bus loaded, a saga's events are stored in order in the saga stream", async () => {
  const log: string[] = [];
  await using t = await createTestKernel(
    [eventsPlugin, sagasPlugin, user(log, new Set(["charge"]))],
    config,
  );
  const sagas = t.kernel.get<SagaService>("extension:sagas");
  const bus = t.kernel.get<EventBus>("events:bus");
  const id = await sagas.start("order", { id: "bus-1" });
  assert.equal(await sagas.finished(id, 10_000), "compensated");
  // Every saga.* event of this saga, once the store has it.
  const read = async () => {
    const out: StoredEvent[] = [];
    for (let after = "";;) {
      const page = await bus.store.read({ after }, { streams: ["saga"] });
      out.push(...page.events);
      if (page.next === after) return out;
      after = page.next;
    }
  };
  let events: StoredEvent[] = [];
  for (let i = 0; i < 200; i++) {
    events = await read();
    if (events.some((e) => e.type === "saga.compensated")) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(
    events.map((e) => {
      const d = e.data as { step?: string; attempt?: number };
      return [e.type, d.step, d.attempt].filter((x) => x !== undefined)
        .join(" ");
    }),
    [
      "saga.started",
      "saga.step.started reserve 1",
      "saga.step.completed reserve 1",
      "saga.step.started charge 1",
      "saga.step.failed charge 1",
      "saga.step.started charge 2",
      "saga.step.failed charge 2",
      "saga.compensating",
      "saga.step.compensated reserve 1",
      "saga.compensated",
    ],
  );
  assert.ok(events.every((e) => (e.data as { sagaId: string }).sagaId === id));
  assert.equal(events[0].version, 1);
});

Deno.test("sagas plugin: a compensation that keeps failing is dead-lettered, the others still run, and the operator sees it", async () => {
  const log: string[] = [];
  await using t = await createTestKernel([sagasPlugin], config);
  const sagas = t.kernel.get<SagaService>("extension:sagas");
  const fn = (name: string, fail = false) => () => {
    log.push(name);
    return fail
      ? Promise.reject(new Error(`${name} broke`))
      : Promise.resolve();
  };
  sagas.registerFunction("a", fn("a"));
  sagas.registerFunction("undo-a", fn("undo-a"));
  sagas.registerFunction("b", fn("b"));
  sagas.registerFunction("undo-b", fn("undo-b", true));
  sagas.registerFunction("c", fn("c", true));
  const id = await sagas.start({
    name: "stuck-refund",
    steps: ["a", "b", "c"].map((s) => ({
      id: s,
      run: { kind: "function", name: s },
      ...(s === "c"
        ? {}
        : { compensate: { kind: "function", name: `undo-${s}` } }),
      retry: { maxAttempts: 1 },
      compensationRetry: { maxAttempts: 3, backoffMs: 1, maxBackoffMs: 1 },
    })),
  });
  assert.equal(await sagas.finished(id, 10_000), "compensation-failed");
  // undo-b tried three times, then undo-a still ran: nothing skipped.
  assert.deepEqual(log, [
    "a",
    "b",
    "c",
    "undo-b",
    "undo-b",
    "undo-b",
    "undo-a",
  ]);
  const s = (await sagas.get(id))!;
  assert.equal(s.steps.b.status, "dead-lettered");
  assert.equal(s.steps.b.compensations.length, 3);
  assert.equal(s.steps.a.status, "compensated");
  const res = await t.api("/api/v1/sagas/dead-letters", {}, "viewer");
  const { deadLetters } = await res.json();
  assert.equal(deadLetters.length, 1);
  assert.deepEqual(
    {
      saga: deadLetters[0].saga,
      step: deadLetters[0].step,
      error: deadLetters[0].error,
    },
    { saga: id, step: "b", error: "undo-b broke" },
  );
  // The operator mends undo-b and retries the dead letter over HTTP.
  const retry = (sagaId: string, step: string) =>
    t.api(`/api/v1/sagas/${sagaId}/dead-letters/${step}/retry`, {
      method: "POST",
    });
  assert.equal((await retry(id, "a")).status, 409, "a is not dead-lettered");
  assert.equal((await retry(id, "zz")).status, 404);
  assert.equal((await retry("nope", "b")).status, 404);
  assert.equal(
    (await t.api(`/api/v1/sagas/${id}/dead-letters/b/retry`, {
      method: "POST",
    }, "viewer")).status,
    403,
  );
  sagas.registerFunction("undo-b", fn("undo-b"));
  const res2 = await retry(id, "b");
  assert.equal(res2.status, 202, await res2.clone().text());
  assert.deepEqual(await res2.json(), {
    id,
    step: "b",
    status: "compensating",
  });
  assert.equal(await sagas.finished(id, 10_000), "compensated");
  assert.deepEqual(log.slice(-1), ["undo-b"]);
  const after = (await sagas.get(id))!;
  assert.equal(after.steps.b.status, "compensated");
  assert.equal(after.steps.b.compensations.length, 4);
  assert.deepEqual(await sagas.deadLetters(), []);
  assert.equal((await retry(id, "b")).status, 409, "nothing left to retry");
});

Deno.test("sagas plugin: the leader deletes finished sagas past retention.maxAgeMs", async () => {
  await using t = await createTestKernel([sagasPlugin], {
    pluginConfig: {
      sagas: { tickMs: 5, retention: { maxAgeMs: 50, everyMs: 10 } },
    },
  });
  const sagas = t.kernel.get<SagaService>("extension:sagas");
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  sagas.registerFunction("quick", () => Promise.resolve(1));
  sagas.registerFunction("gated", () => gate);
  const one = (name: string) => ({
    name,
    steps: [{ id: "a", run: { kind: "function", name } }],
  });
  const done = await sagas.start(one("quick"));
  const open = await sagas.start(one("gated"));
  assert.equal(await sagas.finished(done, 10_000), "completed");
  for (let i = 0; await sagas.get(done); i++) {
    assert.ok(i < 1000, "the finished saga was not deleted");
    await new Promise((r) => setTimeout(r, 10));
  }
  // A saga still running is kept, however old.
  assert.equal((await sagas.get(open))?.status, "running");
  release();
});
