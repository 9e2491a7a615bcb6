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

Deno.test("tasks routes: dead letters are listed to viewers, and replayed or purged by operators only", async () => {
  using kv = await Deno.openKv(":memory:");
  const tasks = createTaskService(kv, {
    nodeId: "n1",
    log: createLogger({ sinks: [] }),
    metrics: createMetrics(),
  });
  // Two tasks that died: claimed once each and terminated.
  const ids: string[] = [];
  for (const type of ["resize", "email"]) {
    const { id } = await tasks.queue.enqueue({ type, payload: null }, {
      maxAttempts: 1,
    });
    ids.push(id);
    const [d] = await tasks.queue.claim(1, 30_000, "test");
    await d.term(`${type} failed for good`);
  }
  let role: Principal["role"] = "viewer";
  const app = new Hono();
  app.use("*", async (c, next) => {
    c.set(
      "principal" as never,
      { sub: "t", role, via: "jwt", keyid: "k" } as never,
    );
    await next();
  });
  app.route("/api/v1/tasks", taskRoutes(tasks));
  const post = (path: string, body?: unknown) =>
    app.request(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body ?? {}),
    });

  const list = await (await app.request("/api/v1/tasks/dead")).json();
  assert.deepEqual(list.map((d: { type: string }) => d.type).sort(), [
    "email",
    "resize",
  ]);
  assert.match(list[0].reason, /failed for good/);
  assert.equal((await post(`/api/v1/tasks/dead/${ids[0]}/replay`)).status, 403);
  assert.equal((await post("/api/v1/tasks/dead/purge")).status, 403);
  assert.equal(
    (await app.request("/api/v1/tasks/dead?limit=0")).status,
    400,
  );

  role = "operator";
  const replayed = await post(`/api/v1/tasks/dead/${ids[0]}/replay`);
  assert.equal(replayed.status, 200);
  assert.equal((await tasks.queue.get(ids[0]))?.state, "ready");
  assert.equal((await tasks.queue.get(ids[0]))?.attempts, 0);
  assert.equal((await post(`/api/v1/tasks/dead/${ids[0]}/replay`)).status, 409);
  assert.equal((await post("/api/v1/tasks/dead/nope/replay")).status, 404);
  const purged = await (await post("/api/v1/tasks/dead/purge", {
    ids: [ids[1]],
  })).json();
  assert.deepEqual(purged, { purged: 1 });
  assert.equal(await tasks.queue.get(ids[1]), null);
  assert.deepEqual(await (await app.request("/api/v1/tasks/dead")).json(), []);
});
