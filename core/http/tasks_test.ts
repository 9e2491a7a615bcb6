import assert from "node:assert/strict";
import { join } from "node:path";
import { Hono } from "hono";
import { createLogger } from "../observe/logger.ts";
import { createMetrics } from "../observe/metrics.ts";
import { openStore } from "../state/store.ts";
import { createTaskService } from "../tasks.ts";
import type { Principal } from "./auth.ts";
import { taskRoutes } from "./tasks.ts";

Deno.test("tasks routes: a result of several KV values round-trips through GET on a KV file", async () => {
  const dir = await Deno.makeTempDir();
  const kv = await openStore(join(dir, "plexus.kv"));
  const tasks = createTaskService(kv, {
    nodeId: "n1",
    log: createLogger({ sinks: [] }),
    metrics: createMetrics(),
  });
  tasks.register("rows", (p) =>
    Promise.resolve(
      Array.from(
        { length: (p as { n: number }).n },
        (_, i) => ({ i, name: `row ${i}`, even: i % 2 === 0 }),
      ),
    ));
  tasks.start();
  const app = new Hono();
  app.use("*", async (c, next) => {
    const admin: Principal = {
      sub: "test",
      role: "admin",
      via: "jwt",
      keyid: "k",
    };
    c.set("principal" as never, admin as never);
    await next();
  });
  app.route("/api/v1/tasks", taskRoutes(tasks));
  try {
    const res = await app.request("/api/v1/tasks", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "rows", payload: { n: 20_000 } }),
    });
    assert.equal(res.status, 202);
    const { id } = await res.json();
    let view;
    for (const deadline = Date.now() + 15_000; Date.now() < deadline;) {
      view = await (await app.request(`/api/v1/tasks/${id}`)).json();
      if (view.status !== "ready" && view.status !== "running") break;
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(view.status, "done", JSON.stringify(view).slice(0, 300));
    assert.equal(view.attempts, 1);
    assert.equal(view.result.length, 20_000);
    assert.deepEqual(view.result[19_999], {
      i: 19_999,
      name: "row 19999",
      even: false,
    });
    assert.ok(JSON.stringify(view.result).length > 10 * 64 * 1024);
  } finally {
    await tasks.stop(1000);
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
