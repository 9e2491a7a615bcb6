import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import { definePlugin } from "../../core/plugin.ts";
import sagasPlugin, { type SagaService } from "./mod.ts";

/** Task handlers that log each effect once per idempotency key. */
function shop(log: string[], failing: Set<string>) {
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
      const applied = new Set<string>();
      for (const type of ["reserve", "charge", "release", "refund"]) {
        tasks.register(type, (payload) => {
          const p = payload as {
            saga: { idempotencyKey: string };
            sagaInput?: { order: string };
          };
          if (failing.has(type)) {
            return Promise.reject(new Error(`${type} broke`));
          }
          if (!applied.has(p.saga.idempotencyKey)) {
            applied.add(p.saga.idempotencyKey);
            log.push(type);
          }
          return Promise.resolve({ [type]: p.sagaInput?.order });
        });
      }
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
}

const json = (body: unknown): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
});

const order = {
  name: "order",
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
      compensate: { kind: "task", type: "refund" },
      retry: { maxAttempts: 2, backoffMs: 1 },
    },
  ],
};

const options = { pluginConfig: { sagas: { tickMs: 5 } } };

/** Waits through the capability (polling the API would meet its rate limit), then reads the saga over HTTP. */
async function waitFinished(
  t: {
    api: (p: string, i?: RequestInit, r?: "viewer") => Promise<Response>;
    kernel: { get<T>(c: string): T };
  },
  id: string,
) {
  await t.kernel.get<SagaService>("extension:sagas").finished(id, 30_000);
  return await (await t.api(`/api/v1/sagas/${id}`, {}, "viewer")).json();
}

Deno.test("sagas HTTP: POST a JSON definition runs it; GET shows each step's attempts and results; the list pages by status", async () => {
  const log: string[] = [];
  await using t = await createTestKernel(
    [sagasPlugin, shop(log, new Set())],
    options,
  );
  const res = await t.api(
    "/api/v1/sagas",
    json({ definition: order, input: { order: "o-1" }, id: "o-1" }),
    "analyst",
  );
  assert.equal(res.status, 201);
  assert.deepEqual(await res.json(), { id: "o-1" });
  const s = await waitFinished(t, "o-1");
  assert.equal(s.status, "completed");
  assert.deepEqual(s.steps.charge.result, { charge: "o-1" });
  assert.equal(s.steps.reserve.attempts.length, 1);
  assert.equal(s.steps.reserve.attempts[0].ok, true);
  assert.deepEqual(log, ["reserve", "charge"]);
  // Idempotent by id: nothing runs again.
  const again = await t.api(
    "/api/v1/sagas",
    json({ definition: order, id: "o-1" }),
  );
  assert.equal(again.status, 201);
  for (const id of ["o-2", "o-3"]) {
    await t.api("/api/v1/sagas", json({ definition: order, id }));
    await waitFinished(t, id);
  }
  assert.deepEqual(log.length, 6);
  const page1 = await (await t.api(
    "/api/v1/sagas?status=completed&limit=2",
    {},
    "viewer",
  )).json();
  assert.equal(page1.sagas.length, 2);
  const page2 = await (await t.api(
    `/api/v1/sagas?status=completed&limit=2&cursor=${page1.cursor}`,
    {},
    "viewer",
  )).json();
  assert.deepEqual(
    [...page1.sagas, ...page2.sagas].map((x: { id: string }) => x.id),
    ["o-1", "o-2", "o-3"],
  );
  assert.equal(page2.cursor, undefined);
  // Viewers read, they do not start.
  assert.equal(
    (await t.api("/api/v1/sagas", json({ definition: order }), "viewer"))
      .status,
    403,
  );
  assert.equal((await t.api("/api/v1/sagas/nope", {}, "viewer")).status, 404);
  assert.equal(
    (await t.api("/api/v1/sagas?status=lost", {}, "viewer")).status,
    400,
  );
});

Deno.test("sagas HTTP: a failing step compensates over the task service; a finished saga cannot be cancelled (409)", async () => {
  const log: string[] = [];
  await using t = await createTestKernel(
    [sagasPlugin, shop(log, new Set(["charge"]))],
    options,
  );
  const { id } =
    await (await t.api("/api/v1/sagas", json({ definition: order })))
      .json();
  const s = await waitFinished(t, id);
  assert.equal(s.status, "compensated");
  assert.equal(s.steps.charge.attempts.length, 2);
  assert.match(s.steps.charge.attempts[1].error, /charge broke/);
  assert.equal(s.steps.reserve.status, "compensated");
  assert.deepEqual(log, ["reserve", "release"]);
  const cancel = await t.api(`/api/v1/sagas/${id}/cancel`, { method: "POST" });
  assert.equal(cancel.status, 409);
  assert.match(
    (await cancel.json()).error.message,
    /is compensated, not running/,
  );
  const dead = await (await t.api("/api/v1/sagas/dead-letters", {}, "viewer"))
    .json();
  assert.deepEqual(dead, { deadLetters: [] });
});

Deno.test("sagas HTTP: bad definitions are refused at submit with 400 naming the field", async () => {
  await using t = await createTestKernel(
    [sagasPlugin, shop([], new Set())],
    options,
  );
  const task = (id: string, type = "reserve") => ({
    id,
    run: { kind: "task", type },
  });
  const cases: [unknown, string, RegExp][] = [
    [
      { name: "x", steps: [{ id: "a", run: { kind: "teleport", type: "a" } }] },
      "definition.steps[0].run.kind",
      /./,
    ],
    [
      { name: "x", steps: [task("a", "launch")] },
      "definition.steps[0].run",
      /unknown task type 'launch'/,
    ],
    [
      {
        name: "x",
        steps: [{ id: "a", run: { kind: "capability", capability: "oracle" } }],
      },
      "definition.steps[0].run",
      /unknown capability 'oracle'/,
    ],
    [
      { name: "x", steps: [task("a"), task("a")] },
      "definition.steps[1].id",
      /duplicate step id 'a'/,
    ],
    [
      {
        name: "x",
        steps: [{ parallel: [task("a"), { parallel: [task("b")] }] }],
      },
      "definition.steps[0].parallel[1]",
      /holds steps, not groups/,
    ],
    [
      { name: "x", requireCompensation: true, steps: [task("a")] },
      "definition.steps[0].compensate",
      /requires one for every step/,
    ],
    [
      {
        name: "x",
        steps: Array.from({ length: 10_000 }, (_, i) => task(`s${i}`)),
      },
      "definition.steps",
      /at most 1000 steps, got 10000/,
    ],
    [
      { name: "x", steps: [{ id: "a", run: { kind: "function", name: "f" } }] },
      "definition.steps[0].run.kind",
      /function steps are for definitions a plugin registers/,
    ],
    ["no-such-definition", "definition", /no saga definition named/],
  ];
  for (const [definition, field, message] of cases) {
    const res = await t.api("/api/v1/sagas", json({ definition }));
    const body = await res.json();
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error.field, field, body.error.message);
    assert.match(body.error.message, message);
    assert.ok(body.error.message.startsWith(`${field}: `), body.error.message);
  }
  const extra = await t.api(
    "/api/v1/sagas",
    json({ definition: "x", when: 1 }),
  );
  assert.equal((await extra.json()).error.field, "when");
  // Nothing was started.
  const list = await (await t.api("/api/v1/sagas", {}, "viewer")).json();
  assert.deepEqual(list.sagas, []);
});
