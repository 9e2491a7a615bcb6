import assert from "node:assert/strict";
import { HTTPException } from "hono/http-exception";
import { createTestKernel } from "../testing.ts";
import { definePlugin } from "../plugin.ts";
import { httpError } from "./errors.ts";

const routes = definePlugin({
  manifest: {
    name: "routes",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:routes"],
  },
  setup(ctx) {
    ctx.http.get("/log", async (c) => {
      await new Promise((r) => setTimeout(r, 1));
      ctx.log.info("inside handler");
      return c.json({ ok: true });
    });
    ctx.http.get("/boom", () => {
      throw new Error("secret internals");
    });
    ctx.http.get("/conflict", () => httpError(409, "already there"));
    ctx.http.get("/items/:id", (c) => c.json({ id: c.req.param("id") }));
    ctx.http.post("/echo", async (c) => c.json(await c.req.json()));
    ctx.http.get("/plain", () => {
      throw new HTTPException(403, { message: "nope" });
    });
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
});

Deno.test("http: plugin log lines made while serving carry the request's correlation id", async () => {
  await using t = await createTestKernel([routes]);
  const res = await t.request("/plugins/routes/log", {
    headers: { "X-Request-Id": "req-42" },
  });
  assert.equal(res.headers.get("X-Request-Id"), "req-42");
  const line = t.logs.find((r) => r.msg === "inside handler");
  assert.equal(line?.correlationId, "req-42");
  assert.equal(line?.plugin, "routes");
  const access = t.logs.find((r) =>
    r.msg === "http request" && r.path === "/plugins/routes/log"
  );
  assert.equal(access?.correlationId, "req-42");
  const other = await t.request("/plugins/routes/log", {
    headers: { "X-Request-Id": "bad id with spaces" },
  });
  assert.match(other.headers.get("X-Request-Id")!, /^[0-9a-f-]{36}$/);
});

Deno.test("http: errors are JSON with the right status and no internals", async () => {
  await using t = await createTestKernel([routes]);
  const boom = await t.request("/plugins/routes/boom");
  assert.equal(boom.status, 500);
  assert.deepEqual(await boom.json(), {
    error: { code: "internal", message: "internal error" },
  });
  const logged = t.logs.find((r) =>
    r.level === "error" && r.msg === "unhandled error"
  );
  assert.equal(
    (logged?.error as { message: string }).message,
    "secret internals",
  );
  const conflict = await t.request("/plugins/routes/conflict");
  assert.equal(conflict.status, 409);
  assert.deepEqual(await conflict.json(), {
    error: { code: "conflict", message: "already there" },
  });
  const plain = await t.request("/plugins/routes/plain");
  assert.equal(plain.status, 403);
  assert.deepEqual(await plain.json(), {
    error: { code: "forbidden", message: "nope" },
  });
  const missing = await t.request("/plugins/nobody/x");
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.code, "not_found");
});

const apiRoutes = definePlugin({
  manifest: {
    name: "notes",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:notes"],
  },
  setup(ctx) {
    ctx.api("notes")
      .get("/items/:id", "tasks:read", (c) => c.json({ id: c.req.param("id") }))
      .post(
        "/items/:id",
        "tasks:write",
        (c) => c.json({ id: c.req.param("id") }),
      )
      .get("/boom", "tasks:read", () => {
        throw new Error("secret internals");
      });
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
});

Deno.test("http: a plugin's /api/v1 routes are labelled by the pattern that answered, refusals and errors too", async () => {
  await using t = await createTestKernel([apiRoutes]);
  for (const id of ["1", "2"]) {
    assert.equal((await t.api(`/api/v1/notes/items/${id}`)).status, 200);
  }
  const refused = await t.api(
    "/api/v1/notes/items/3",
    { method: "POST" },
    "viewer",
  );
  assert.equal(refused.status, 403);
  assert.equal((await t.api("/api/v1/notes/boom")).status, 500);
  assert.equal((await t.api("/api/v1/notes/missing/a")).status, 404);
  assert.equal((await t.api("/api/v1/ghost/x")).status, 404);
  const series = (await (await t.request("/metrics")).text()).split("\n")
    .filter((l) => l.startsWith("plexus_http_requests_total{"))
    .filter((l) =>
      l.includes('route="/api/v1/notes') || l.includes("unmatched")
    )
    .sort();
  assert.deepEqual(series, [
    'plexus_http_requests_total{method="GET",route="/api/v1/notes/*",status="404"} 1',
    'plexus_http_requests_total{method="GET",route="/api/v1/notes/boom",status="500"} 1',
    'plexus_http_requests_total{method="GET",route="/api/v1/notes/items/:id",status="200"} 2',
    'plexus_http_requests_total{method="GET",route="unmatched",status="404"} 1',
    'plexus_http_requests_total{method="POST",route="/api/v1/notes/items/:id",status="403"} 1',
  ]);
});

Deno.test("http: metrics count requests by route pattern, not raw path", async () => {
  await using t = await createTestKernel([routes]);
  await t.request("/plugins/routes/log");
  await t.request("/nope/1");
  await t.request("/nope/2");
  const text = await (await t.request("/metrics")).text();
  assert.match(
    text,
    /plexus_http_requests_total\{method="GET",route="\/plugins\/routes\/log",status="200"\} 1/,
  );
  assert.match(
    text,
    /plexus_http_requests_total\{method="GET",route="unmatched",status="404"\} 2/,
  );
  assert.ok(!text.includes("/nope/1"));
});

Deno.test("http: each plugin route gets its own route label, its pattern, with bounded series", async () => {
  await using t = await createTestKernel([routes]);
  for (const id of ["1", "2", "3"]) {
    assert.equal((await t.request(`/plugins/routes/items/${id}`)).status, 200);
  }
  await t.request("/plugins/routes/log");
  await t.request("/plugins/routes/log", { method: "HEAD" });
  await t.request("/plugins/routes/missing/a");
  await t.request("/plugins/routes/missing/b");
  await t.request("/plugins/ghost-1/x");
  await t.request("/plugins/ghost-2/x");
  const series = (await (await t.request("/metrics")).text()).split("\n")
    .filter((l) => l.startsWith("plexus_http_requests_total{"))
    .filter((l) => l.includes('route="/plugins/'))
    .sort();
  assert.deepEqual(series, [
    'plexus_http_requests_total{method="GET",route="/plugins/:name/*",status="404"} 2',
    'plexus_http_requests_total{method="GET",route="/plugins/routes/*",status="404"} 2',
    'plexus_http_requests_total{method="GET",route="/plugins/routes/items/:id",status="200"} 3',
    'plexus_http_requests_total{method="GET",route="/plugins/routes/log",status="200"} 1',
    'plexus_http_requests_total{method="HEAD",route="/plugins/routes/log",status="200"} 1',
  ]);
  const json = await (await t.request("/metrics", {
    headers: { accept: "application/json" },
  })).json();
  assert.equal(
    json.http_metrics.requests_by_route["/plugins/routes/items/:id"],
    3,
  );
});

Deno.test("http: the log stream's published messages are a _total counter that follows publishes", async () => {
  await using t = await createTestKernel([routes]);
  // Every log record is published once (no heartbeats in tests); /metrics
  // renders before its own access log line.
  const read = async () => {
    const logged = t.logs.length;
    const text = await (await t.request("/metrics")).text();
    assert.match(
      text,
      /^# TYPE plexus_log_stream_messages_published_total counter$/m,
    );
    assert.doesNotMatch(text, /^plexus_log_stream_messages_published /m);
    const value = Number(
      /^plexus_log_stream_messages_published_total (\d+)$/m.exec(text)?.[1],
    );
    assert.equal(value, logged);
    return value;
  };
  const before = await read();
  await t.request("/plugins/routes/log"); // "inside handler", the access log
  assert.ok(await read() >= before + 2);
});

Deno.test("http: /api/v1/plugins lists name, version, kind, provides, status, trust level and permissions", async () => {
  await using t = await createTestKernel([routes]);
  assert.deepEqual(await (await t.api("/api/v1/plugins")).json(), [
    {
      name: "routes",
      version: "1.0.0",
      kind: "extension",
      provides: ["extension:routes"],
      status: "running",
      trust: "trusted",
      permissions: "all",
    },
  ]);
});

Deno.test("http: a cached /health is answered ahead of the router with the same shape, id and metrics", async () => {
  await using t = await createTestKernel([routes], { healthCacheMs: 60_000 });
  const first = await t.request("/health");
  const body = await first.json();
  const second = await t.request("/health?probe=1", {
    headers: { "X-Request-Id": "probe-7" },
  });
  assert.equal(second.status, 200);
  assert.equal(second.headers.get("content-type"), "application/json");
  assert.equal(second.headers.get("X-Request-Id"), "probe-7");
  assert.deepEqual(await second.json(), body, "the cached report");
  assert.deepEqual(Object.keys(body.services).sort(), ["kv", "routes"]);
  // Each answer is its own copy of the cached one: whole body, its own id.
  const more = await Promise.all(
    ["probe-8", "probe-9"].map((id) =>
      t.request("/health", { headers: { "X-Request-Id": id } })
    ),
  );
  for (const [i, res] of more.entries()) {
    assert.equal(res.headers.get("X-Request-Id"), `probe-${8 + i}`);
    assert.deepEqual(await res.json(), body);
  }
  const text = await (await t.request("/metrics")).text();
  assert.match(
    text,
    /plexus_http_requests_total\{method="GET",route="\/health",status="200"\} 4/,
  );
  assert.match(
    text,
    /plexus_http_request_duration_seconds_count\{method="GET",route="\/health"\} 4/,
  );
  const head = await t.request("/healthz");
  assert.equal(head.status, 404, "only the exact path takes the fast path");
});

Deno.test("http: secure headers on every answer, the cached /health fast path included", async () => {
  await using t = await createTestKernel([routes], { healthCacheMs: 60_000 });
  const full = await t.request("/health");
  const fast = await t.request("/health");
  for (const res of [full, fast, await t.request("/nope")]) {
    assert.equal(res.headers.get("x-content-type-options"), "nosniff");
    assert.equal(res.headers.get("x-frame-options"), "DENY");
    assert.equal(
      res.headers.get("content-security-policy"),
      "frame-ancestors 'none'",
    );
    assert.match(
      res.headers.get("strict-transport-security") ?? "",
      /max-age=/,
    );
  }
  const names = (r: Response) =>
    [...r.headers.keys()].filter((k) =>
      k !== "x-request-id" && k !== "content-length"
    ).sort();
  assert.deepEqual(
    names(fast),
    names(full),
    "the fast path answers with the same headers",
  );
});

Deno.test("http: CORS allows only configured origins", async () => {
  await using t = await createTestKernel([routes], {
    http: { corsOrigins: ["https://ops.example.com"] },
    healthCacheMs: 60_000,
  });
  await t.request("/health");
  const ok = await t.request("/health", {
    headers: { Origin: "https://ops.example.com" },
  });
  assert.equal(
    ok.headers.get("access-control-allow-origin"),
    "https://ops.example.com",
  );
  const other = await t.request("/health", {
    headers: { Origin: "https://evil.example" },
  });
  assert.equal(other.headers.get("access-control-allow-origin"), null);
  const preflight = await t.api("/api/v1/tasks", {
    method: "OPTIONS",
    headers: {
      Origin: "https://ops.example.com",
      "Access-Control-Request-Method": "POST",
    },
  });
  assert.equal(preflight.status, 204);
  assert.match(
    preflight.headers.get("access-control-allow-headers") ?? "",
    /Authorization/,
  );
  await using none = await createTestKernel([routes]);
  const noCors = await none.request("/health", {
    headers: { Origin: "https://ops.example.com" },
  });
  assert.equal(noCors.headers.get("access-control-allow-origin"), null);
});

Deno.test("http: a body over the limit gets 413 on any route and the node keeps serving", async () => {
  await using t = await createTestKernel([routes], {
    http: { bodyLimitBytes: 2048 },
  });
  const big = await t.request("/plugins/routes/log", {
    method: "POST",
    body: "x".repeat(5000),
  });
  assert.equal(big.status, 413);
  assert.deepEqual(await big.json(), {
    error: {
      code: "payload_too_large",
      message: "request body over 2048 bytes",
    },
  });
  assert.equal((await t.request("/plugins/routes/log")).status, 200);
});

Deno.test("http: over real HTTP, a body with a declared length is limited by it, and a chunked one as it streams", async () => {
  await using t = await createTestKernel([routes], {
    http: { bodyLimitBytes: 2048 },
  });
  await using server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    t.app.fetch,
  );
  const url = `http://127.0.0.1:${server.addr.port}/plugins/routes/echo`;
  // fetch sends a string body with Content-Length.
  const big = await fetch(url, { method: "POST", body: "x".repeat(5000) });
  assert.equal(big.status, 413);
  assert.match((await big.json()).error.message, /over 2048 bytes/);
  const small = await fetch(url, { method: "POST", body: '{"a":[1,2]}' });
  assert.equal(small.status, 200);
  assert.deepEqual(await small.json(), { a: [1, 2] });
  // A stream body goes chunked, without a length: counted as it comes.
  const chunked = (n: number) =>
    new Blob(["[", '"x",'.repeat(n), '"y"]']).stream();
  const over = await fetch(url, { method: "POST", body: chunked(1000) });
  assert.equal(over.status, 413);
  await over.body?.cancel();
  const under = await fetch(url, { method: "POST", body: chunked(10) });
  assert.equal(under.status, 200);
  assert.equal((await under.json()).length, 11);
});

Deno.test("http: a step of the /api/v1 chain that throws is answered 500 where it stands: audited, with the request id, security and per-IP limit headers", async () => {
  await using t = await createTestKernel([apiRoutes]);
  const principal = t.security.limits!.principal;
  const check = principal.check;
  principal.check = () => Promise.reject(new Error("limiter store down"));
  const info = {
    remoteAddr: { hostname: "203.0.113.9", port: 1, transport: "tcp" },
  } as Deno.ServeHandlerInfo<Deno.NetAddr>;
  const token = await t.token("admin", "chain");
  const call = (id: string) =>
    t.app.fetch(
      new Request(`http://localhost/api/v1/notes/items/${id}`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "x-request-id": id },
      }),
      info,
    );
  const res = await call("r-500");
  principal.check = check;
  assert.equal(res.status, 500);
  assert.deepEqual(await res.json(), {
    error: { code: "internal", message: "internal error" },
  });
  assert.equal(res.headers.get("x-request-id"), "r-500");
  assert.equal(res.headers.get("x-frame-options"), "DENY");
  assert.match(res.headers.get("ratelimit-policy") ?? "", /^"ip";q=\d+/);
  // Admitted: the per-IP limit's members first, then the per-principal one's.
  const ok = await call("r-200");
  assert.equal(ok.status, 200);
  assert.match(
    ok.headers.get("ratelimit-policy") ?? "",
    /^"ip";q=\d+;w=\d+, "principal";q=\d+;w=\d+$/,
  );
  const audit = await (await t.api("/api/v1/audit")).json();
  const mine = audit.filter((r: { principal: string }) =>
    r.principal === "chain"
  ).map((r: { status: number; correlationId: string; route: string }) => [
    r.correlationId,
    r.status,
    r.route,
  ]);
  assert.deepEqual(mine, [
    ["r-500", 500, "/api/v1/*"],
    ["r-200", 200, "/api/v1/:prefix/*"],
  ]);
});
