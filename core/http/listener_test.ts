import assert from "node:assert/strict";
import net from "node:net";
import {
  abortQuietly,
  type ConnectionLimits,
  defaultConnectionLimits,
  type GuardedServer,
  serveGuarded,
  serveOnConnection,
} from "./listener.ts";
import { createLogger, type LogRecord } from "../observe/logger.ts";
import { createMetrics, type MetricsRegistry } from "../observe/metrics.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

interface Rig extends AsyncDisposable {
  server: GuardedServer;
  port: number;
  metrics: MetricsRegistry;
  logs: LogRecord[];
}

function rig(
  limits: Partial<ConnectionLimits>,
  handler: (req: Request) => Response | Promise<Response> = () =>
    new Response("ok"),
): Rig {
  const logs: LogRecord[] = [];
  const metrics = createMetrics("plexus_");
  const server = serveGuarded({
    hostname: "127.0.0.1",
    port: 0,
    limits: {
      maxConnections: 100,
      maxConnectionsPerIp: 100,
      headTimeoutMs: 10_000,
      idleTimeoutMs: 10_000,
      ...limits,
    },
    log: createLogger({ level: "debug", sinks: [(r) => logs.push(r)] }),
    metrics,
  }, handler);
  return {
    server,
    port: server.addr.port,
    metrics,
    logs,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** A raw TCP client that records what it reads and when the server closes. */
class Raw {
  readonly opened = performance.now();
  text = "";
  closedAfterMs: number | undefined;
  readonly closed: Promise<void>;
  constructor(readonly conn: Deno.Conn) {
    this.closed = this.#read();
  }
  static async open(port: number): Promise<Raw> {
    return new Raw(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  async #read() {
    const buf = new Uint8Array(4096);
    try {
      while (true) {
        const n = await this.conn.read(buf);
        if (n === null) break;
        this.text += dec.decode(buf.subarray(0, n));
      }
    } catch { /* reset counts as closed */ }
    this.closedAfterMs = performance.now() - this.opened;
  }
  write(s: string) {
    return this.conn.write(enc.encode(s));
  }
  /** Waits for `n` complete responses' status lines. */
  async responses(n: number, ms = 5000): Promise<string[]> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const lines = this.text.match(/HTTP\/1\.1 \d{3}/g) ?? [];
      if (lines.length >= n) return lines;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`expected ${n} responses, got: ${this.text}`);
  }
  close() {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, rej) =>
      t = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)
    ),
  ]).finally(() => clearTimeout(t));
}

/** Opens a connection from a chosen loopback source address. */
function fromIp(ip: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: "127.0.0.1", port, localAddress: ip });
    s.once("connect", () => resolve(s));
    s.once("error", reject);
  });
}

Deno.test("listener: this Deno has the per-connection server, so the limits are on", async () => {
  assert(serveOnConnection(), "Deno[Deno.internal].serveHttpOnConnection");
  await using r = rig({});
  assert(r.server.guarded);
  const res = await fetch(`http://127.0.0.1:${r.port}/`);
  assert.deepEqual(await res.text(), "ok");
});

Deno.test("listener: defaults follow the open-file limit", () => {
  assert.deepEqual(defaultConnectionLimits(1024).maxConnections, 704);
  assert.deepEqual(defaultConnectionLimits(1024).maxConnectionsPerIp, 176);
  assert.deepEqual(defaultConnectionLimits(1 << 20).maxConnections, 16_384);
  assert.deepEqual(defaultConnectionLimits(64).maxConnections, 16);
  assert.deepEqual(defaultConnectionLimits(null).maxConnections, 4096);
});

Deno.test("listener: a connection that never completes its request head is closed at the head timeout", async () => {
  await using r = rig({ headTimeoutMs: 300 });
  const silent = await Raw.open(r.port);
  const trickle = await Raw.open(r.port);
  // 1 byte every 50 ms: always active, never a whole head.
  const timer = setInterval(() => trickle.write("G").catch(() => {}), 50);
  try {
    await within(
      Promise.all([silent.closed, trickle.closed]),
      3000,
      "head timeout",
    );
  } finally {
    clearInterval(timer);
  }
  assert(silent.closedAfterMs! >= 250, `closed early: ${silent.closedAfterMs}`);
  assert(
    trickle.closedAfterMs! < 2000,
    `trickle kept ${trickle.closedAfterMs}`,
  );
  assert.deepEqual(
    r.metrics.counter("plexus_http_connections_closed_total", "").get({
      reason: "head_timeout",
    }),
    2,
  );
  assert.deepEqual(r.server.connections(), 0);
});

Deno.test("listener: a keep-alive connection is served many requests, then closed when idle", async () => {
  await using r = rig({ headTimeoutMs: 200, idleTimeoutMs: 400 });
  const c = await Raw.open(r.port);
  // Requests 100 ms apart outlive the head timeout: only idleness closes.
  for (let i = 0; i < 5; i++) {
    await c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    await c.responses(i + 1);
    await new Promise((res) => setTimeout(res, 100));
  }
  const idleFrom = performance.now();
  await within(c.closed, 3000, "idle close");
  const idle = performance.now() - idleFrom;
  assert(idle >= 250 && idle < 2000, `closed after ${idle} ms idle`);
  assert.deepEqual(
    r.metrics.counter("plexus_http_connections_closed_total", "").get({
      reason: "idle_timeout",
    }),
    1,
  );
});

Deno.test("listener: a slow response is not cut by the idle or head timeout", async () => {
  await using r = rig(
    { headTimeoutMs: 100, idleTimeoutMs: 100 },
    async () => {
      await new Promise((res) => setTimeout(res, 500));
      return new Response("late");
    },
  );
  const res = await fetch(`http://127.0.0.1:${r.port}/`);
  assert.deepEqual(await res.text(), "late");
});

for (const later of [false, true]) {
  Deno.test(
    `listener: an answer that leaves a chunked body unread closes the connection (${
      later ? "a later" : "the first"
    } request)`,
    async () => {
      await using r = rig({}, () => new Response("too big", { status: 413 }));
      const c = await Raw.open(r.port);
      if (later) {
        await c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        await c.responses(1);
      }
      await c.write(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
      );
      await within(c.closed, 3000, "close after 413");
      assert.match(c.text, /HTTP\/1\.1 413/);
      assert.match(c.text, /connection: close/i);
      assert.deepEqual(
        r.metrics.counter("plexus_http_connections_closed_total", "").get({
          reason: "unread_body",
        }),
        1,
      );
    },
  );
}

Deno.test("listener: one IP over its budget gets 503 with Retry-After; other IPs are served", async () => {
  await using r = rig({ maxConnectionsPerIp: 3 });
  const held = await Promise.all(
    [1, 2, 3].map(() => fromIp("127.0.0.2", r.port)),
  );
  await new Promise((res) => setTimeout(res, 50));
  const extra = await Raw.open(r.port); // 127.0.0.1: its own budget
  await extra.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.deepEqual(await extra.responses(1), ["HTTP/1.1 200"]);
  const refused = await fromIp("127.0.0.2", r.port);
  const text = await new Promise<string>((resolve) => {
    let t = "";
    refused.on("data", (d) => (t += d));
    refused.on("close", () => resolve(t));
  });
  assert.match(text, /^HTTP\/1\.1 503/);
  assert.match(text, /retry-after: 1/);
  assert.match(text, /"code":"overloaded"/);
  assert.deepEqual(
    r.metrics.counter("plexus_http_connections_refused_total", "").get({
      budget: "ip",
    }),
    1,
  );
  assert(r.logs.some((l) => l.msg.includes("ip connection budget full")));
  for (const s of held) s.destroy();
  extra.close();
});

Deno.test("listener: at the node budget a new client evicts the oldest connection that sent nothing; busy ones are kept", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  await using r = rig(
    { maxConnections: 3 },
    async (req) => {
      if (new URL(req.url).pathname === "/slow") await gate;
      return new Response("ok");
    },
  );
  const busy = await Raw.open(r.port);
  await busy.write("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  await new Promise((res) => setTimeout(res, 50));
  const idle1 = await Raw.open(r.port);
  await new Promise((res) => setTimeout(res, 20));
  const idle2 = await Raw.open(r.port);
  await new Promise((res) => setTimeout(res, 50));
  const fresh = await Raw.open(r.port);
  await fresh.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.deepEqual(await fresh.responses(1), ["HTTP/1.1 200"]);
  await within(idle1.closed, 2000, "oldest idle evicted");
  assert.deepEqual(idle2.closedAfterMs, undefined);
  release();
  assert.deepEqual(await busy.responses(1), ["HTTP/1.1 200"]);
  assert.deepEqual(
    r.metrics.counter("plexus_http_connections_closed_total", "").get({
      reason: "evicted",
    }),
    1,
  );
  // Everything busy: the next one is refused rather than evicting work.
  for (const c of [idle2, fresh, busy]) c.close();
});

Deno.test("listener: when every held connection is busy, a new one is refused with 503", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  await using r = rig({ maxConnections: 2 }, async () => {
    await gate;
    return new Response("ok");
  });
  const busy = await Promise.all([Raw.open(r.port), Raw.open(r.port)]);
  for (const b of busy) await b.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  await new Promise((res) => setTimeout(res, 100));
  const c = await Raw.open(r.port);
  await within(c.closed, 2000, "refusal");
  assert.match(c.text, /^HTTP\/1\.1 503/);
  assert.deepEqual(
    r.metrics.counter("plexus_http_connections_refused_total", "").get({
      budget: "node",
    }),
    1,
  );
  release();
  for (const b of busy) {
    assert.deepEqual(await b.responses(1), ["HTTP/1.1 200"]);
  }
  for (const b of busy) b.close();
});

Deno.test("listener: an upgraded WebSocket outlives the idle timeout", async () => {
  await using r = rig({ idleTimeoutMs: 150, headTimeoutMs: 150 }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.onmessage = (e) => socket.send(e.data);
    return response;
  });
  const ws = new WebSocket(`ws://127.0.0.1:${r.port}/`);
  await new Promise((res, rej) => {
    ws.onopen = res;
    ws.onerror = rej;
  });
  await new Promise((res) => setTimeout(res, 600));
  const echoed = new Promise((res) => (ws.onmessage = (e) => res(e.data)));
  ws.send("still here");
  assert.deepEqual(await within(echoed, 2000, "echo"), "still here");
  const closed = new Promise((res) => (ws.onclose = res));
  ws.close();
  await closed;
});

Deno.test("listener: shutdown lets a request in flight finish, then ends", async () => {
  let started!: () => void;
  const inHandler = new Promise<void>((r) => (started = r));
  const r = rig({}, async () => {
    started();
    await new Promise((res) => setTimeout(res, 200));
    return new Response("finished");
  });
  const res = fetch(`http://127.0.0.1:${r.port}/`);
  await inHandler;
  const down = r.server.shutdown();
  assert.deepEqual(await (await res).text(), "finished");
  await within(down, 3000, "shutdown");
  await within(r.server.finished, 100, "finished");
  assert.deepEqual(r.server.connections(), 0);
});

Deno.test("listener: a WebSocket upgrade on a later request of a connection is refused with 400", async () => {
  await using r = rig({});
  const c = await Raw.open(r.port);
  await c.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  await c.responses(1);
  await c.write(
    "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  );
  await within(c.closed, 3000, "close");
  assert.match(c.text, /HTTP\/1\.1 400[^]*first request on its connection/);
});

Deno.test("listener: the first request's body arrives whole, by length, chunked and after 100-continue", async () => {
  await using r = rig(
    {},
    async (req) =>
      new Response(
        `${req.method} ${new URL(req.url).pathname} ${await req.text()}`,
      ),
  );
  const cases: [string, string][] = [
    [
      "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
      "POST /a hello",
    ],
    [
      "PUT /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
      "PUT /b abcde",
    ],
  ];
  for (const [request, expected] of cases) {
    const c = await Raw.open(r.port);
    await c.write(request);
    await c.responses(1);
    await within(
      (async () => {
        while (!c.text.includes(expected)) {
          await new Promise((res) => setTimeout(res, 10));
        }
      })(),
      3000,
      expected,
    );
    c.close();
  }
  // Expect: 100-continue: the client waits for 100 before sending the body.
  const c = await Raw.open(r.port);
  await c.write(
    "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
  );
  await within(
    (async () => {
      while (!c.text.includes("100 Continue")) {
        await new Promise((res) => setTimeout(res, 10));
      }
    })(),
    3000,
    "100 Continue",
  );
  await c.write("xyz");
  await within(
    (async () => {
      while (!c.text.includes("POST /c xyz")) {
        await new Promise((res) => setTimeout(res, 10));
      }
    })(),
    3000,
    "body after 100",
  );
  // The connection is then served by Deno's server.
  await c.write("GET /d HTTP/1.1\r\nHost: x\r\n\r\n");
  assert.equal((await c.responses(3)).length, 3);
  c.close();
});

Deno.test("listener: malformed and ambiguous heads get 400/431/501 and a closed connection; the node serves on", async () => {
  await using r = rig({ maxHeadBytes: 1024 });
  const bad: [string, RegExp][] = [
    ["GARBAGE\r\n\r\n", /^HTTP\/1\.1 400/],
    ["GET / HTTP/1.1\r\n\r\n", /^HTTP\/1\.1 400[^]*missing host/],
    [
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      /^HTTP\/1\.1 400[^]*both/,
    ],
    [
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
      /^HTTP\/1\.1 400[^]*conflicting/,
    ],
    [
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
      /^HTTP\/1\.1 501/,
    ],
    [
      "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
      /^HTTP\/1\.1 400[^]*folding/,
    ],
    [
      `GET / HTTP/1.1\r\nHost: x\r\nX: ${"a".repeat(2000)}\r\n\r\n`,
      /^HTTP\/1\.1 431/,
    ],
    ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", /^HTTP\/1\.1 505/],
    ["TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", /^HTTP\/1\.1 400/],
  ];
  for (const [request, expected] of bad) {
    const c = await Raw.open(r.port);
    await c.write(request).catch(() => {});
    await within(c.closed, 3000, JSON.stringify(request.slice(0, 40)));
    assert.match(c.text, expected, JSON.stringify(request.slice(0, 60)));
  }
  const ok = await fetch(`http://127.0.0.1:${r.port}/`);
  assert.equal(await ok.text(), "ok");
  // Only fetch's keep-alive connection is left.
  assert.equal(r.server.connections(), 1);
});

Deno.test("listener: HTTP/1.0 and Connection: close are answered once and closed; HEAD has no body", async () => {
  await using r = rig({});
  for (
    const request of [
      "GET / HTTP/1.0\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
  ) {
    const c = await Raw.open(r.port);
    await c.write(request);
    await within(c.closed, 3000, "close");
    assert.match(
      c.text,
      /^HTTP\/1\.1 200 OK\r\n[^]*content-length: 2\r\n\r\nok$/,
    );
  }
  const c = await Raw.open(r.port);
  await c.write("HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  await within(c.closed, 3000, "close");
  assert.match(c.text, /content-length: 2\r\n/);
  assert.ok(c.text.endsWith("\r\n\r\n"));
});

Deno.test("listener: a streamed first response is sent chunked, and the client sees every piece", async () => {
  await using r = rig({}, () => {
    let n = 0;
    return new Response(
      new ReadableStream({
        async pull(ctl) {
          await new Promise((res) => setTimeout(res, 20));
          ctl.enqueue(new TextEncoder().encode(`part${n}.`));
          if (++n === 3) ctl.close();
        },
      }),
    );
  });
  const res = await fetch(`http://127.0.0.1:${r.port}/`);
  assert.equal(await res.text(), "part0.part1.part2.");
});

Deno.test("listener: header values keep their bytes (Latin-1), as Deno's own server gives them", async () => {
  await using r = rig(
    {},
    (req) => new Response(req.headers.get("x-name") ?? ""),
  );
  const c = await Raw.open(r.port);
  await c.conn.write(
    new Uint8Array([
      ...new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf"),
      0xe9,
      ...new TextEncoder().encode("\r\nConnection: close\r\n\r\n"),
    ]),
  );
  await within(c.closed, 3000, "close");
  assert.match(c.text, /^HTTP\/1\.1 200/);
  assert.ok(c.text.endsWith("caf\u00e9"), c.text);
  c.close();
});

Deno.test("listener: the handler sees the client's address and a completed promise", async () => {
  let seen: Deno.NetAddr | undefined;
  let done: Promise<void> | undefined;
  const logs: unknown[] = [];
  const server = serveGuarded({
    hostname: "127.0.0.1",
    port: 0,
    limits: defaultConnectionLimits(1024),
    log: createLogger({ level: "error", sinks: [(x) => logs.push(x)] }),
    metrics: createMetrics("plexus_"),
  }, (_req, info) => {
    seen = info.remoteAddr;
    done = info.completed;
    return new Response("ok");
  });
  try {
    const s = await fromIp("127.0.0.3", server.addr.port);
    s.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.resume();
    await new Promise((res) => s.on("close", res));
    assert.equal(seen?.hostname, "127.0.0.3");
    await within(done!, 1000, "completed");
  } finally {
    await server.shutdown();
  }
});

Deno.test("listener: closing a connection whose Deno server has just ended on its own does not end the process", () => {
  // What Deno's one-connection server does on abort once its resource is gone.
  const ac = new AbortController();
  ac.signal.addEventListener("abort", () => {
    throw new Deno.errors.BadResource("Bad resource ID");
  });
  abortQuietly(ac);
  assert.ok(ac.signal.aborted);
});
