import assert from "node:assert/strict";
import { definePlugin } from "../plugin.ts";
import { createTestKernel, type TestKernel } from "../testing.ts";
import { upgradeOriginGuard } from "./origin.ts";
import { rawUpgrade } from "../../tests/_raw_upgrade.ts";

const upgrade = (port: number, path: string, origin?: string) =>
  rawUpgrade(`ws://127.0.0.1:${port}${path}`, { origin });

/** A plugin upgrading `WS /ws/echo` through `ctx.websocket`. */
const echo = definePlugin({
  manifest: {
    name: "echo",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:echo"],
  },
  setup(ctx) {
    ctx.websocket("echo", (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => socket.close();
      return response;
    });
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
});

function serve(t: TestKernel) {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    t.app.fetch,
  );
  return {
    port: server.addr.port,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** Status of each upgrade, as `"path origin": status`. */
async function statuses(
  port: number,
  paths: string[],
  origins: (string | undefined)[],
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const path of paths) {
    for (const origin of origins) {
      out[`${path} ${origin ?? "(none)"}`] =
        (await upgrade(port, path, origin)).status;
    }
  }
  return out;
}

Deno.test("origin: with corsOrigins, /ws and plugin sockets (/ws/echo) refuse a foreign Origin with 403 and upgrade a listed, own or absent one", async () => {
  await using t = await createTestKernel([echo], {
    http: { corsOrigins: ["https://ops.example.com"] },
  });
  await using s = serve(t);
  const own = `http://127.0.0.1:${s.port}`;
  const expected: Record<string, number> = {};
  for (const path of ["/ws", "/ws/echo"]) {
    expected[`${path} https://evil.example`] = 403;
    expected[`${path} null`] = 403; // an opaque origin (sandboxed frame, file:)
    expected[`${path} https://ops.example.com`] = 101;
    expected[`${path} ${own}`] = 101;
    expected[`${path} (none)`] = 101; // not a browser
  }
  assert.deepEqual(
    await statuses(s.port, ["/ws", "/ws/echo"], [
      "https://evil.example",
      "null",
      "https://ops.example.com",
      own,
      undefined,
    ]),
    expected,
  );
  const refused = await upgrade(s.port, "/ws/echo", "https://evil.example");
  assert.deepEqual(JSON.parse(refused.body).error.code, "forbidden");
  assert.match(JSON.parse(refused.body).error.message, /evil\.example/);
  assert.match(
    t.metrics.render(),
    /^plexus_http_websocket_origin_refused_total 5$/m,
  );
});

Deno.test("origin: without corsOrigins only the node's own origin and clients without Origin may open /ws and plugin sockets", async () => {
  await using t = await createTestKernel([echo]);
  await using s = serve(t);
  const own = `http://127.0.0.1:${s.port}`;
  const others = [
    "https://evil.example",
    `http://127.0.0.1:${s.port + 1}`,
    `http://localhost:${s.port}`,
  ];
  const expected: Record<string, number> = {};
  for (const path of ["/ws", "/ws/echo"]) {
    for (const o of others) expected[`${path} ${o}`] = 403;
    expected[`${path} ${own}`] = 101;
    expected[`${path} (none)`] = 101;
  }
  assert.deepEqual(
    await statuses(s.port, ["/ws", "/ws/echo"], [...others, own, undefined]),
    expected,
  );
});

Deno.test("origin: plugin routes that upgrade are checked too", async () => {
  const linky = definePlugin({
    manifest: {
      name: "linky",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:linky"],
    },
    setup(ctx) {
      ctx.http.get("/link", (c) => {
        const { socket, response } = Deno.upgradeWebSocket(c.req.raw);
        socket.onopen = () => socket.close();
        return response;
      });
      return Promise.resolve({ stop: () => Promise.resolve() });
    },
  });
  await using t = await createTestKernel([linky]);
  await using s = serve(t);
  assert.equal(
    (await upgrade(s.port, "/plugins/linky/link", "https://evil.example"))
      .status,
    403,
  );
  assert.equal((await upgrade(s.port, "/plugins/linky/link")).status, 101);
});

Deno.test("origin: the guard compares normalized origins and leaves other requests alone", () => {
  const guard = upgradeOriginGuard({ allowed: ["https://OPS.example.com/"] });
  const req = (origin: string | undefined, upgrade = "websocket") =>
    new Request("http://node.internal:8086/ws", {
      headers: {
        host: "node.internal:8086",
        ...(upgrade ? { upgrade } : {}),
        ...(origin ? { origin } : {}),
      },
    });
  assert.equal(guard(req("https://ops.example.com")), undefined);
  assert.equal(guard(req("https://ops.example.com:443")), undefined);
  assert.equal(guard(req("http://ops.example.com"))?.status, 403, "scheme");
  assert.equal(guard(req("https://ops.example.com:8443"))?.status, 403);
  assert.equal(guard(req("https://node.internal:8086")), undefined, "own host");
  assert.equal(guard(req("https://evil.example", "WebSocket"))?.status, 403);
  assert.equal(guard(req("https://evil.example", "")), undefined, "no upgrade");
  assert.equal(guard(req("not a url"))?.status, 403);
  const extension = upgradeOriginGuard({
    allowed: ["chrome-extension://abcdef"],
  });
  assert.equal(extension(req("chrome-extension://abcdef")), undefined);
  assert.equal(extension(req("chrome-extension://other"))?.status, 403);
});
