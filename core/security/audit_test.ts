import assert from "node:assert/strict";
import { Hono } from "hono";
import { ManualClock } from "../clock.ts";
import { createLogger } from "../observe/logger.ts";
import { createTestKernel } from "../testing.ts";
import { auditLog, listAudit, outcomeOf } from "./audit.ts";

Deno.test("audit: mutating API calls are recorded in KV and the log, reads are not", async () => {
  await using t = await createTestKernel([]);
  const ok = await t.api("/api/v1/tasks", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "X-Request-Id": "req-audit-1",
    },
    body: JSON.stringify({ type: "echo", payload: 1 }),
  });
  assert.equal(ok.status, 202);
  const bad = await t.api("/api/v1/tasks", {
    method: "POST",
    body: "{nope",
  });
  assert.equal(bad.status, 400);
  const anonymous = await t.request("/api/v1/tasks", {
    method: "POST",
    body: JSON.stringify({ type: "echo" }),
  });
  assert.equal(anonymous.status, 401);
  const viewer = await t.api("/api/v1/tasks", {
    method: "POST",
    body: JSON.stringify({ type: "echo" }),
  }, "viewer");
  assert.equal(viewer.status, 403);
  await t.api("/api/v1/plugins");
  const records = await listAudit(t.kv);
  assert.deepEqual(
    records.map((r) => [r.method, r.route, r.status, r.outcome, r.principal]),
    [
      ["POST", "/api/v1/tasks", 202, "ok", "test"],
      ["POST", "/api/v1/tasks", 400, "failed", "test"],
      ["POST", "/api/v1/*", 401, "denied", "anonymous"],
      ["POST", "/api/v1/tasks", 403, "denied", "test"],
    ],
  );
  assert.equal(records[0].correlationId, "req-audit-1");
  const lines = t.logs.filter((r) => r.msg === "audit");
  assert.equal(lines.length, 4);
  assert.equal(
    (lines[0].audit as { correlationId: string }).correlationId,
    "req-audit-1",
  );
});

Deno.test("audit: outcomes", () => {
  assert.deepEqual([200, 202, 401, 403, 429, 400, 500].map(outcomeOf), [
    "ok",
    "ok",
    "denied",
    "denied",
    "denied",
    "failed",
    "failed",
  ]);
});

Deno.test("audit: calls within one millisecond list in call order", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const app = new Hono();
    app.use(
      "*",
      auditLog({
        kv,
        log: createLogger({ sinks: [] }),
        clock: new ManualClock(5),
      }),
    );
    app.post("/calls/:n", (c) => c.text("ok"));
    const calls = Array.from({ length: 40 }, (_, i) => `/calls/${i}`);
    for (const path of calls) {
      assert.equal((await app.request(path, { method: "POST" })).status, 200);
    }
    const records = await listAudit(kv);
    assert.ok(records.every((r) => r.at === 5), "all in one millisecond");
    assert.deepEqual(records.map((r) => r.path), calls);
    assert.deepEqual(
      (await listAudit(kv, { since: 5, limit: 3 })).map((r) => r.path),
      calls.slice(0, 3),
    );
    assert.deepEqual(await listAudit(kv, { since: 6 }), []);
  } finally {
    kv.close();
  }
});
