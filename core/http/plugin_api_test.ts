import assert from "node:assert/strict";
import { createTestKernel } from "../testing.ts";
import { definePlugin, type Plugin } from "../plugin.ts";
import { CORE_API_PREFIXES, createPluginApi } from "./plugin_api.ts";

/** A plugin serving `/api/v1/{prefix}/note/:id`: reads for viewers, writes for analysts. */
const notes = (name = "notes", prefix = "notes"): Plugin =>
  definePlugin({
    manifest: {
      name,
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: [`extension:${name}`],
    },
    setup(ctx) {
      const store = new Map<string, string>();
      ctx.api(prefix)
        .get("/note/:id", "tasks:read", (c) =>
          c.json({
            id: c.req.param("id"),
            text: store.get(c.req.param("id")) ?? null,
            reader: c.var.principal.sub,
          }))
        .put("/note/:id", "tasks:write", async (c) => {
          store.set(c.req.param("id"), (await c.req.json()).text);
          return c.json({
            by: c.var.principal.sub,
            role: c.var.principal.role,
          });
        })
        .delete("/note/:id", "admin", (c) => {
          store.delete(c.req.param("id"));
          return c.body(null, 204);
        });
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });

const put = (text: string): RequestInit => ({
  method: "PUT",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ text }),
});

Deno.test("plugin api: a route refuses no token with 401 and a too-low role with 403", async () => {
  await using t = await createTestKernel([notes()]);
  const anon = await t.request("/api/v1/notes/note/a");
  assert.equal(anon.status, 401);
  assert.equal(
    anon.headers.get("www-authenticate")?.startsWith("Bearer"),
    true,
  );
  await anon.body?.cancel();
  const viewerWrite = await t.api("/api/v1/notes/note/a", put("x"), "viewer");
  assert.equal(viewerWrite.status, 403);
  assert.equal(
    (await viewerWrite.json()).error.message,
    "role 'viewer' lacks permission 'tasks:write'",
  );
  const operatorDelete = await t.api(
    "/api/v1/notes/note/a",
    { method: "DELETE" },
    "operator",
  );
  assert.equal(operatorDelete.status, 403);
  await operatorDelete.body?.cancel();
  assert.equal(
    (await t.api("/api/v1/notes/note/a", { method: "DELETE" })).status,
    204,
  );
});

Deno.test("plugin api: the handler sees the verified principal", async () => {
  await using t = await createTestKernel([notes()]);
  const w = await t.api("/api/v1/notes/note/a", put("hello"), "analyst");
  assert.equal(w.status, 200);
  assert.deepEqual(await w.json(), { by: "test", role: "analyst" });
  const r = await t.api("/api/v1/notes/note/a", {}, "viewer");
  assert.deepEqual(await r.json(), { id: "a", text: "hello", reader: "test" });
});

Deno.test("plugin api: unknown paths and methods under a prefix get the node's JSON 404, as do unclaimed prefixes", async () => {
  await using t = await createTestKernel([notes()]);
  for (
    const [method, path] of [
      ["GET", "/api/v1/notes/nothing"],
      ["GET", "/api/v1/notes"],
      ["POST", "/api/v1/notes/note/a"],
      ["GET", "/api/v1/unclaimed/x"],
    ]
  ) {
    const res = await t.api(path, { method }, "admin");
    assert.equal(res.status, 404, `${method} ${path}`);
    assert.deepEqual(await res.json(), {
      error: { code: "not_found", message: `no route for ${method} ${path}` },
    });
  }
});

Deno.test("plugin api: routes are rate limited per principal like core routes", async () => {
  await using t = await createTestKernel([notes()], {
    rateLimit: { principal: { rate: 1, periodMs: 60_000, burst: 2 } },
  });
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await t.api("/api/v1/notes/note/a", {}, "viewer");
    statuses.push(res.status);
    await res.body?.cancel();
  }
  assert.deepEqual(statuses, [200, 200, 429]);
  // The same bucket as core routes: the next core call is refused too.
  const core = await t.api("/api/v1/plugins", {}, "viewer");
  assert.equal(core.status, 429);
  await core.body?.cancel();
});

Deno.test("plugin api: mutating calls are audited with principal and outcome, reads are not", async () => {
  await using t = await createTestKernel([notes()]);
  await (await t.api("/api/v1/notes/note/a", put("x"), "analyst")).body
    ?.cancel();
  await (await t.api("/api/v1/notes/note/a", put("x"), "viewer")).body
    ?.cancel();
  await (await t.api("/api/v1/notes/note/a", {}, "viewer")).body?.cancel();
  const res = await t.api("/api/v1/audit?limit=10");
  const records: {
    method: string;
    path: string;
    principal: string;
    status: number;
    outcome: string;
  }[] = await res.json();
  assert.deepEqual(
    records.map((r) => [r.method, r.path, r.principal, r.status, r.outcome]),
    [
      ["PUT", "/api/v1/notes/note/a", "test", 200, "ok"],
      ["PUT", "/api/v1/notes/note/a", "test", 403, "denied"],
    ],
  );
});

Deno.test("plugin api: requests are labelled with the plugin's route pattern in metrics, an unclaimed prefix as unmatched", async () => {
  await using t = await createTestKernel([notes()]);
  await (await t.api("/api/v1/notes/note/a", {}, "viewer")).body?.cancel();
  await (await t.api("/api/v1/notes/zzz", {}, "viewer")).body?.cancel();
  await (await t.api("/api/v1/unclaimed/x", {}, "viewer")).body?.cancel();
  const text = t.metrics.render();
  assert.match(text, /route="\/api\/v1\/notes\/note\/:id",status="200"/);
  assert.match(text, /route="\/api\/v1\/notes\/\*",status="404"/);
  assert.match(text, /route="unmatched",status="404"/);
});

Deno.test("plugin api: a prefix claimed twice fails the start naming both plugins", async () => {
  await assert.rejects(
    createTestKernel([notes("first", "shared"), notes("second", "shared")]),
    /plugin '(first|second)' failed to start: \/api\/v1\/shared is already served by plugin '(first|second)'/,
  );
});

Deno.test("plugin api: a core prefix or a malformed one fails the start", async () => {
  for (const prefix of CORE_API_PREFIXES) {
    await assert.rejects(
      createTestKernel([notes("greedy", prefix)]),
      new RegExp(
        `plugin 'greedy' failed to start: /api/v1/${prefix} is already served by the node's core routes`,
      ),
    );
  }
  await assert.rejects(
    createTestKernel([notes("greedy", "a/b")]),
    /plugin 'greedy' failed to start: Cannot serve \/api\/v1\/a\/b/,
  );
});

Deno.test("plugin api: CORE_API_PREFIXES lists exactly the first segments of the node's own /api/v1 routes", async () => {
  await using t = await createTestKernel([]);
  const segments = new Set(
    t.app.routes.map((r) => /^\/api\/v1\/([^/:*]+)/.exec(r.path)?.[1])
      .filter((s): s is string => s !== undefined),
  );
  assert.deepEqual([...segments].sort(), [...CORE_API_PREFIXES].sort());
});

Deno.test("plugin api: a plugin without API routes adds none", async () => {
  await using bare = await createTestKernel([]);
  const quiet = definePlugin({
    manifest: {
      name: "quiet",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:quiet"],
    },
    setup: () => Promise.resolve({ stop: () => Promise.resolve() }),
  });
  await using t = await createTestKernel([quiet]);
  const paths = (routes: { method: string; path: string }[]) =>
    routes.map((r) => `${r.method} ${r.path}`);
  assert.deepEqual(paths(t.app.routes), paths(bare.app.routes));
  assert.equal(t.kernel.apiFor("quiet"), undefined);
});

/** A plugin with a node-only route and a way to call it with ctx.nodeFetch. */
function peerPlugin() {
  let call: ((url: string) => Promise<Response>) | undefined;
  const plugin = definePlugin({
    manifest: {
      name: "peer",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:peer"],
    },
    setup(ctx) {
      ctx.api("peer").post(
        "/ping",
        "node",
        (c) => c.json({ from: c.var.principal.sub }),
      );
      call = (url) => ctx.nodeFetch(url, { method: "POST", body: "{}" });
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
  return { plugin, call: (url: string) => call!(url) };
}

Deno.test("plugin api: a route with access 'node' answers a call signed with ctx.nodeFetch and refuses tokens, even an admin's", async () => {
  const peer = peerPlugin();
  await using t = await createTestKernel([peer.plugin]);
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    t.app.fetch,
  );
  try {
    const url = `http://127.0.0.1:${server.addr.port}/api/v1/peer/ping`;
    const signed = await peer.call(url);
    assert.equal(signed.status, 200);
    assert.deepEqual(await signed.json(), { from: "node:test-node" });
    const admin = await t.api("/api/v1/peer/ping", { method: "POST" });
    assert.equal(admin.status, 403);
    assert.match((await admin.json()).error.message, /node's signature/);
  } finally {
    await server.shutdown();
  }
});

/** A plugin upgrading `/ws/{name}` that counts its drains and stops. */
function socketPlugin(name: string, wsName: string, events: string[]) {
  return definePlugin({
    manifest: {
      name,
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: [`extension:${name}`],
    },
    setup(ctx) {
      ctx.websocket(wsName, () => new Response("upgraded", { status: 200 }));
      return Promise.resolve({
        drain: () => Promise.resolve(void events.push(`drain ${name}`)),
        stop: () => Promise.resolve(void events.push(`stop ${name}`)),
      });
    },
  });
}

Deno.test("plugin websocket: /ws/{name} reaches the plugin only as an upgrade; unclaimed names are 404; a name claimed twice fails the start", async () => {
  const events: string[] = [];
  await using t = await createTestKernel([socketPlugin("a", "alpha", events)]);
  const plain = await t.request("/ws/alpha");
  assert.equal(plain.status, 426);
  assert.equal(plain.headers.get("upgrade"), "websocket");
  await plain.body?.cancel();
  const up = await t.request("/ws/alpha", {
    headers: { upgrade: "websocket" },
  });
  assert.equal(await up.text(), "upgraded");
  const none = await t.request("/ws/beta", {
    headers: { upgrade: "websocket" },
  });
  assert.equal(none.status, 404);
  assert.match((await none.json()).error.message, /no running plugin/);
  await assert.rejects(
    createTestKernel([
      socketPlugin("one", "same", []),
      socketPlugin("two", "same", []),
    ]),
    /\/ws\/same is already served by plugin 'one'/,
  );
  await assert.rejects(
    createTestKernel([socketPlugin("bad", "A/B", [])]),
    /Cannot serve \/ws\/A\/B/,
  );
});

Deno.test("plugin drain: kernel.drain calls drain in reverse start order, before any stop", async () => {
  const events: string[] = [];
  const t = await createTestKernel([
    socketPlugin("first", "one", events),
    socketPlugin("second", "two", events),
  ]);
  await t.kernel.drain();
  assert.deepEqual(events, ["drain second", "drain first"]);
  await t.close();
  assert.deepEqual(events.slice(2), [
    "drain second",
    "drain first",
    "stop second",
    "stop first",
  ]);
});

Deno.test("tasks: a plugin's capability executor runs capability tasks here and is withdrawn on stop", async () => {
  const ran: string[] = [];
  const workers = definePlugin({
    manifest: {
      name: "workers",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:workers"],
      requires: ["tasks:local"],
    },
    setup(ctx) {
      const withdraw = ctx.kernel.get("tasks:local").provideCapabilities({
        capabilities: () => ({ resize: ["w1", "w2"] }),
        run: (id, task) => {
          ran.push(`${id} ${task.type}`);
          return Promise.resolve({ by: id });
        },
      });
      return Promise.resolve({ stop: () => Promise.resolve(withdraw()) });
    },
  });
  await using t = await createTestKernel([workers]);
  assert.deepEqual(t.tasks.capabilities(), { resize: ["w1", "w2"] });
  const [w1] = t.tasks.workers("resize");
  assert.deepEqual(
    await w1.run({ id: "t1", type: "img", payload: 1, attempt: 1 }, {
      timeoutMs: 1000,
    }),
    { by: "w1" },
  );
  assert.deepEqual(ran, ["w1 img"]);
  assert.deepEqual(t.tasks.workers("other"), []);
  await t.kernel.stop();
  assert.deepEqual(t.tasks.capabilities(), {});
});

Deno.test("plugin api: a request handed over with env.path is routed by that path, its body read once", async () => {
  const { routes, app } = createPluginApi("notes");
  routes.post(
    "/",
    "tasks:write",
    async (c) => c.json({ path: c.req.path, body: await c.req.json() }),
  );
  const principal = {
    sub: "ci",
    role: "analyst" as const,
    via: "jwt" as const,
    keyid: "k",
  };
  const req = new Request("http://n/send/prompt", {
    method: "POST",
    body: '{"a":1}',
  });
  const res = await app.fetch(req, { principal, path: "/api/v1/notes" });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), {
    path: "/api/v1/notes",
    body: { a: 1 },
  });
  // Without it, the request's own path: not a route of this app.
  const other = await app.fetch(
    new Request("http://n/send/prompt", { method: "POST", body: "{}" }),
    { principal },
  );
  assert.equal(other.status, 404);
});
