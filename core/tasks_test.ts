import assert from "node:assert/strict";
import { z } from "zod";
import { createTestKernel } from "./testing.ts";
import { definePlugin } from "./plugin.ts";

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

const post = (body: unknown, headers: Record<string, string> = {}) => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: typeof body === "string" ? body : JSON.stringify(body),
});

Deno.test("tasks: echo and sleep run to done over HTTP with their results", async () => {
  await using t = await createTestKernel([]);
  const res = await t.api(
    "/api/v1/tasks",
    post({ type: "echo", payload: { hi: 1 }, priority: 7 }),
  );
  assert.equal(res.status, 202);
  const { id, status } = await res.json();
  assert.equal(status, "ready");
  const done = await until(
    () => t.api(`/api/v1/tasks/${id}`).then((r) => r.json()),
    (v) => v.status === "done",
    "echo",
  );
  assert.deepEqual(done, {
    id,
    status: "done",
    attempts: 1,
    type: "echo",
    node: "test-node",
    result: { hi: 1 },
  });
  const sleep = await (await t.api(
    "/api/v1/tasks",
    post({ type: "sleep", payload: { ms: 5 } }),
  )).json();
  const slept = await until(
    () => t.tasks.get(sleep.id),
    (v) => v?.status === "done",
    "sleep",
  );
  assert.deepEqual(slept?.result, { slept: 5 });
});

Deno.test("tasks: an idempotency key returns the first task with 200", async () => {
  await using t = await createTestKernel([]);
  const a = await t.api(
    "/api/v1/tasks",
    post({ type: "echo", payload: 1, idempotencyKey: "k1" }),
  );
  const b = await t.api(
    "/api/v1/tasks",
    post({ type: "echo", payload: 2, idempotencyKey: "k1" }),
  );
  assert.equal(a.status, 202);
  assert.equal(b.status, 200);
  assert.equal((await a.json()).id, (await b.json()).id);
});

Deno.test("tasks: bad submissions get 400/413 with a reason and enqueue nothing", async () => {
  await using t = await createTestKernel([]);
  const cases: [RequestInit, number, RegExp][] = [
    [post("{not json"), 400, /body is not JSON/],
    [
      post({ type: "nope" }),
      400,
      /unknown task type 'nope' \(known: echo, sleep\)/,
    ],
    [post({ type: "echo", priority: 12 }), 400, /priority: .*got 12/],
    [post({ type: "echo", extra: 1 }), 400, /Unrecognized key.*extra/],
    [
      post({ type: "sleep", payload: { ms: -1 } }),
      400,
      /payload for 'sleep': ms: .*got -1/,
    ],
    [
      post({
        type: "echo",
        payload: JSON.parse("[".repeat(40) + "]".repeat(40)),
      }),
      400,
      /nests deeper than 32/,
    ],
    [
      post({ type: "echo", payload: "x".repeat(70_000) }),
      413,
      /request body over 61440 bytes/,
    ],
    [
      post('{"type":"echo","__proto__":{"polluted":true}}'),
      400,
      /Unrecognized key.*__proto__/,
    ],
  ];
  for (const [init, status, message] of cases) {
    const res = await t.api("/api/v1/tasks", init);
    const body = await res.json();
    assert.equal(
      res.status,
      status,
      `${init.body?.toString().slice(0, 60)} → ${JSON.stringify(body)}`,
    );
    assert.match(body.error.message, message);
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal((await t.tasks.queue.stats()).ready, 0);
  const missing = await t.api("/api/v1/tasks/nope");
  assert.equal(missing.status, 404);
});

Deno.test("tasks: a plugin registers a task type; a failure is reported as failed with its error", async () => {
  const flaky = definePlugin({
    manifest: {
      name: "flaky",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:flaky"],
      requires: ["tasks:local"],
    },
    setup(ctx) {
      const tasks = ctx.kernel.get("tasks:local");
      tasks.register("divide", (p) => {
        const { a, b } = p as { a: number; b: number };
        if (b === 0) return Promise.reject(new Error("division by zero"));
        return Promise.resolve(a / b);
      }, z.object({ a: z.number(), b: z.number() }));
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
  await using t = await createTestKernel([flaky]);
  const ok = await t.tasks.submit({ type: "divide", payload: { a: 6, b: 3 } });
  assert.equal(
    (await until(
      () => t.tasks.get(ok.id),
      (v) => v?.status === "done",
      "divide",
    ))?.result,
    2,
  );
  const bad = await t.tasks.submit({ type: "divide", payload: { a: 1, b: 0 } });
  const failed = await until(
    () => t.tasks.get(bad.id),
    (v) => v?.status === "failed",
    "first failure",
  );
  assert.equal(failed?.attempts, 1);
  assert.equal(failed?.error, "division by zero");
  await assert.rejects(
    t.tasks.submit({ type: "divide", payload: { a: "x" } }),
    /payload for 'divide': a: /,
  );
});

/** Returns `bytes` characters of result: a task type whose results are large. */
const blob = definePlugin({
  manifest: {
    name: "blob",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:blob"],
    requires: ["tasks:local"],
  },
  setup(ctx) {
    ctx.kernel.get("tasks:local").register(
      "blob",
      (p) => Promise.resolve("b".repeat((p as { bytes: number }).bytes)),
      z.strictObject({ bytes: z.number().int().min(0) }),
    );
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
});

Deno.test("tasks: results larger than one KV value are kept and returned by GET", async () => {
  await using t = await createTestKernel([blob]);
  // The done record held the payload and the result: an echo of 40 KiB died.
  const payload = { text: "e".repeat(40 * 1024) };
  const echo = await (await t.api(
    "/api/v1/tasks",
    post({ type: "echo", payload }),
  )).json();
  const big = await (await t.api(
    "/api/v1/tasks",
    post({ type: "blob", payload: { bytes: 300_000 } }),
  )).json();
  for (
    const [id, result] of [[echo.id, payload], [big.id, "b".repeat(300_000)]]
  ) {
    const view = await until(
      () => t.api(`/api/v1/tasks/${id}`).then((r) => r.json()),
      (v) => v.status !== "ready" && v.status !== "running",
      "a large result",
    );
    assert.equal(view.status, "done", JSON.stringify(view).slice(0, 300));
    assert.equal(view.attempts, 1);
    assert.deepEqual(view.result, result);
  }
});

Deno.test("tasks: a result over the limit fails only its task, at once, naming size and limit", async () => {
  await using t = await createTestKernel([blob]);
  const over = 4 * 1024 * 1024 + 1;
  const [bad, ok] = await Promise.all([
    t.tasks.submit({ type: "blob", payload: { bytes: over } }),
    t.tasks.submit({ type: "echo", payload: "beside it" }),
  ]);
  const failed = await until(
    () => t.tasks.get(bad.id),
    (v) => v?.status === "dead",
    "the over-limit task",
  );
  assert.equal(failed?.attempts, 1);
  assert.match(
    failed?.error ?? "",
    /its result is 4194\d\d\d bytes, over the limit of 4194304 bytes/,
  );
  const done = await until(
    () => t.tasks.get(ok.id),
    (v) => v?.status === "done",
    "the small task",
  );
  assert.equal(done?.result, "beside it");
});
