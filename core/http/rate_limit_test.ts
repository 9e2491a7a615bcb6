import assert from "node:assert/strict";
import { openStore } from "../state/store.ts";
import { join } from "node:path";
import { type Context, Hono } from "hono";
import { ManualClock } from "../clock.ts";
import {
  createRateLimiter,
  type RateLimiter,
  type RateLimiterOptions,
} from "../security/rate_limit.ts";
import {
  clientIp,
  ipKey,
  limitHandshake,
  rateLimit,
  type RateLimitRefusal,
  websocketHandshakeLimit,
} from "./rate_limit.ts";

const T0 = 1_700_000_000_000;

function env(ip: string) {
  return { remoteAddr: { hostname: ip, port: 40000, transport: "tcp" } };
}

async function withKv(fn: (kv: Deno.Kv) => Promise<void> | void) {
  const kv = await Deno.openKv(":memory:");
  try {
    await fn(kv);
  } finally {
    kv.close();
  }
}

const principal = (c: Context) => c.req.header("x-principal");

function limiters(kv: Deno.Kv, clock: ManualClock) {
  return {
    // 3 per minute per IP, all at once.
    ip: createRateLimiter(kv, {
      scope: "ip",
      rate: 3,
      periodMs: 60_000,
      burst: 3,
      clock,
    }),
    // One per 1.2 s per principal, 2 at once.
    principal: createRateLimiter(kv, {
      scope: "principal",
      rate: 5,
      periodMs: 6_000,
      burst: 2,
      clock,
    }),
  };
}

Deno.test("http rate limit: past the limit a request gets 429 with the JSON error, Retry-After and RateLimit headers; another principal or IP is served right after", async () => {
  await withKv(async (kv) => {
    const clock = new ManualClock(T0);
    const { ip, principal: perPrincipal } = limiters(kv, clock);
    const refusals: RateLimitRefusal[] = [];
    const app = new Hono()
      .use(rateLimit({
        limiters: [
          { limiter: ip, key: clientIp },
          { limiter: perPrincipal, key: principal },
        ],
        onLimited: (_c, r) => refusals.push(r),
      }))
      .get("/", (c) => c.text("ok"));
    const get = (ip: string, who: string) =>
      app.request("/", { headers: { "x-principal": who } }, env(ip));

    const first = await get("10.0.0.1", "alice");
    assert.equal(first.status, 200);
    assert.equal(await first.text(), "ok");
    assert.equal(
      first.headers.get("RateLimit-Policy"),
      '"ip";q=3;w=60, "principal";q=2;w=3',
    );
    assert.equal(
      first.headers.get("RateLimit"),
      '"ip";r=2;t=20, "principal";r=1;t=2',
    );
    assert.equal(first.headers.get("Retry-After"), null);
    assert.equal((await get("10.0.0.1", "alice")).status, 200);

    // alice's principal limit is spent: 429 naming that limit.
    const limited = await get("10.0.0.1", "alice");
    assert.equal(limited.status, 429);
    assert.match(limited.headers.get("content-type")!, /application\/json/);
    const body = await limited.json();
    assert.deepEqual(Object.keys(body), ["error"]);
    assert.equal(body.error.code, "rate_limited");
    assert.match(body.error.message, /'principal'.*retry in 2 s/);
    assert.equal(limited.headers.get("Retry-After"), "2"); // 1.2 s, rounded up
    assert.equal(
      limited.headers.get("RateLimit-Policy"),
      '"ip";q=3;w=60, "principal";q=2;w=3',
    );
    assert.equal(
      limited.headers.get("RateLimit"),
      '"ip";r=0;t=60, "principal";r=0;t=3',
    );
    assert.deepEqual(
      refusals.map((r) => [r.name, r.id, r.decision.retryAfterMs]),
      [["principal", "alice", 1_200]],
    );

    // Another principal from another IP is served at once.
    const bob = await get("10.0.0.2", "bob");
    assert.equal(bob.status, 200);
    assert.equal(
      bob.headers.get("RateLimit"),
      '"ip";r=2;t=20, "principal";r=1;t=2',
    );

    // 10.0.0.1 spent its 3 (the refused request passed the IP limit first).
    const ipLimited = await get("10.0.0.1", "carol");
    assert.equal(ipLimited.status, 429);
    assert.equal(ipLimited.headers.get("Retry-After"), "20");
    // The chain stopped at the IP limit: carol's budget is untouched.
    assert.equal(ipLimited.headers.get("RateLimit"), '"ip";r=0;t=60');
    assert.equal(ipLimited.headers.get("RateLimit-Policy"), '"ip";q=3;w=60');
    assert.equal((await ipLimited.json()).error.code, "rate_limited");
    assert.equal((await get("10.0.0.3", "carol")).status, 200);

    // Waiting Retry-After seconds is enough.
    await clock.advance(2_000);
    assert.equal((await get("10.0.0.4", "alice")).status, 200);
    await clock.advance(18_000);
    assert.equal((await get("10.0.0.1", "dave")).status, 200);
  });
});

Deno.test("http rate limit: a limiter whose key is undefined is skipped, and a request with no limiter applying passes bare", async () => {
  await withKv(async (kv) => {
    const clock = new ManualClock(T0);
    const { ip, principal: perPrincipal } = limiters(kv, clock);
    const app = new Hono()
      .use(rateLimit({
        limiters: [
          { limiter: ip, key: clientIp },
          { limiter: perPrincipal, key: principal },
        ],
      }))
      .get("/", (c) => c.text("ok"));
    // No principal: only the IP limit counts.
    const anon = await app.request("/", {}, env("10.0.0.1"));
    assert.equal(anon.headers.get("RateLimit"), '"ip";r=2;t=20');
    // No socket address either (e.g. app.request without env): no limit.
    for (let i = 0; i < 10; i++) {
      const res = await app.request("/");
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("RateLimit"), null);
    }
  });
});

Deno.test("http rate limit: a per-request cost, and headersOnSuccess: false", async () => {
  await withKv(async (kv) => {
    const clock = new ManualClock(T0);
    const limiter = createRateLimiter(kv, {
      scope: "ip",
      rate: 10,
      periodMs: 10_000,
      burst: 10,
      clock,
    });
    const app = new Hono()
      .use(rateLimit({
        limiters: [{
          limiter,
          key: clientIp,
          name: "ip-heavy",
          cost: (c) => c.req.method === "POST" ? 4 : 1,
        }],
        headersOnSuccess: false,
      }))
      .all("/", (c) => c.text("ok"));
    const post = () => app.request("/", { method: "POST" }, env("10.0.0.1"));
    const ok = await post();
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("RateLimit"), null);
    assert.equal((await post()).status, 200);
    const limited = await post();
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get("Retry-After"), "2");
    assert.equal(limited.headers.get("RateLimit"), '"ip-heavy";r=2;t=8');
    assert.equal(
      limited.headers.get("RateLimit-Policy"),
      '"ip-heavy";q=10;w=10',
    );
    // What is left still fits two GETs.
    const gets = [];
    for (let i = 0; i < 3; i++) {
      gets.push((await app.request("/", {}, env("10.0.0.1"))).status);
    }
    assert.deepEqual(gets, [200, 200, 429]);
  });
});

Deno.test("http rate limit: WebSocket handshakes have their own limit, and plain requests to the route do not spend it", async () => {
  await withKv(async (kv) => {
    const clock = new ManualClock(T0);
    const handshakes = createRateLimiter(kv, {
      scope: "ws-handshake",
      rate: 2,
      periodMs: 10_000,
      burst: 2,
      clock,
    });
    const refused: string[] = [];
    const app = new Hono()
      .use(
        "/ws/*",
        websocketHandshakeLimit({
          limiter: handshakes,
          onLimited: (_c, r) => refused.push(r.id),
        }),
      )
      .get("/ws/agent", (c) => c.text("upgrade here"));
    const upgrade = {
      headers: { Upgrade: "WebSocket", Connection: "Upgrade" },
    };
    assert.equal(
      (await app.request("/ws/agent", upgrade, env("10.0.0.1"))).status,
      200,
    );
    // Plain GETs pass and spend nothing.
    for (let i = 0; i < 5; i++) {
      const res = await app.request("/ws/agent", {}, env("10.0.0.1"));
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("RateLimit"), null);
    }
    assert.equal(
      (await app.request("/ws/agent", upgrade, env("10.0.0.1"))).status,
      200,
    );
    const limited = await app.request("/ws/agent", upgrade, env("10.0.0.1"));
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get("Retry-After"), "5");
    assert.equal(
      limited.headers.get("RateLimit-Policy"),
      '"ws-handshake";q=2;w=10',
    );
    assert.equal((await limited.json()).error.code, "rate_limited");
    assert.deepEqual(refused, ["10.0.0.1"]);
    assert.equal(
      (await app.request("/ws/agent", upgrade, env("10.0.0.2"))).status,
      200,
    );

    // The framework-free form, for a gateway outside Hono.
    assert.equal(await limitHandshake(handshakes, "agent-7"), null);
    assert.equal(await limitHandshake(handshakes, "agent-7"), null);
    const res = await limitHandshake(handshakes, "agent-7", { name: "agents" });
    assert.equal(res?.status, 429);
    assert.equal(res?.headers.get("RateLimit"), '"agents";r=0;t=10');
    assert.equal((await res?.json()).error.code, "rate_limited");
  });
});

Deno.test("http rate limit: client IPs are ids: IPv6 by /64, IPv4-mapped as IPv4", () => {
  const cases: [string, string][] = [
    ["203.0.113.9", "203.0.113.9"],
    ["::ffff:203.0.113.9", "203.0.113.9"],
    ["0:0:0:0:0:ffff:cb00:7109", "203.0.113.9"],
    ["2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"],
    ["2001:DB8:0001:0002::ffff", "2001:db8:1:2::/64"],
    ["[2001:db8::1]", "2001:db8:0:0::/64"],
    ["fe80::1%eth0", "fe80:0:0:0::/64"],
    ["::1", "0:0:0:0::/64"],
    ["64:ff9b::192.0.2.33", "64:ff9b:0:0::/64"],
    ["not-an-ip:::", "not-an-ip:::"],
    ["1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8:9"],
  ];
  for (const [address, id] of cases) assert.equal(ipKey(address), id, address);
});

Deno.test("http rate limit: bad middleware options are refused", async () => {
  await withKv((kv) => {
    const limiter = createRateLimiter(kv, {
      scope: "ip",
      rate: 1,
      periodMs: 1000,
    });
    const bad: [unknown, ErrorConstructor, RegExp][] = [
      [{ limiters: [] }, TypeError, /non-empty array/],
      [{}, TypeError, /non-empty array/],
      [{ limiters: [{ limiter }] }, TypeError, /\{limiter, key/],
      [{ limiters: [{ key: clientIp }] }, TypeError, /\{limiter, key/],
      [
        { limiters: [{ limiter, key: clientIp, name: 'a"b' }] },
        RangeError,
        /policy name/,
      ],
      [
        {
          limiters: [{ limiter, key: clientIp }, { limiter, key: principal }],
        },
        RangeError,
        /'ip' is used twice/,
      ],
      [
        { limiters: [{ limiter, key: clientIp, cost: 2 }] },
        TypeError,
        /cost of 'ip' must be a function/,
      ],
    ];
    for (const [options, type, message] of bad) {
      assert.throws(
        () => rateLimit(options as Parameters<typeof rateLimit>[0]),
        (err: Error) => err instanceof type && message.test(err.message),
        JSON.stringify(options),
      );
    }
    assert.throws(
      () =>
        websocketHandshakeLimit(
          {} as Parameters<typeof websocketHandshakeLimit>[0],
        ),
      TypeError,
    );
  });
});

Deno.test("http rate limit: two servers over real HTTP sharing one KV file cut a split burst at the shared limit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-rl-http-" });
  const path = join(dir, "shared.kv");
  const clock = new ManualClock(T0);
  const options: RateLimiterOptions = {
    scope: "ip",
    rate: 12,
    periodMs: 60_000,
    burst: 12,
    clock,
  };
  const kvs: Deno.Kv[] = [];
  const servers: Deno.HttpServer<Deno.NetAddr>[] = [];
  try {
    const urls: string[] = [];
    const nodes: RateLimiter[] = [];
    for (const name of ["node-a", "node-b"]) {
      const kv = await openStore(path); // as a node opens it
      kvs.push(kv);
      const limiter = createRateLimiter(kv, options);
      nodes.push(limiter);
      const app = new Hono()
        .use(rateLimit({ limiters: [{ limiter, key: clientIp }] }))
        .get("/api/v1/ping", (c) => c.json({ node: name }));
      const server = Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen: () => {} },
        (req, info) => app.fetch(req, info),
      );
      servers.push(server);
      urls.push(`http://127.0.0.1:${server.addr.port}/api/v1/ping`);
    }
    const call = async (url: string) => {
      const res = await fetch(url);
      const body = await res.json();
      return {
        status: res.status,
        node: body.node as string | undefined,
        retryAfter: res.headers.get("Retry-After"),
        code: body.error?.code as string | undefined,
      };
    };
    // A few in turn (each server admits some), then the rest all at once.
    const responses = [];
    for (let i = 0; i < 4; i++) responses.push(await call(urls[i % 2]));
    responses.push(
      ...await Promise.all(
        Array.from({ length: 36 }, (_, i) => call(urls[i % 2])),
      ),
    );
    const ok = responses.filter((r) => r.status === 200);
    const limited = responses.filter((r) => r.status === 429);
    assert.equal(ok.length, 12);
    assert.equal(limited.length, 28);
    assert.deepEqual(
      responses.slice(0, 4).map((r) => [r.status, r.node]),
      [[200, "node-a"], [200, "node-b"], [200, "node-a"], [200, "node-b"]],
    );
    for (const r of limited) {
      assert.equal(r.code, "rate_limited");
      assert.equal(r.retryAfter, "5");
    }
    assert.equal(nodes[0].stats().admitted + nodes[1].stats().admitted, 12);
    // One emission interval later, one more request passes, on either server.
    await clock.advance(5_000);
    const after = [];
    for (const url of [urls[1], urls[0]]) {
      const res = await fetch(url);
      await res.body?.cancel();
      after.push(res.status);
    }
    assert.deepEqual(after, [200, 429]);
  } finally {
    for (const s of servers) await s.shutdown();
    for (const kv of kvs) kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
