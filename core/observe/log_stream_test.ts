import assert from "node:assert/strict";
import {
  createLogStream,
  type LogStreamOptions,
  SLOW_CONSUMER_CLOSE_CODE,
  type StreamMessage,
} from "./log_stream.ts";
import { createLogger } from "./logger.ts";

/** A real server whose only route attaches sockets to a hub. */
function serveHub(options: LogStreamOptions) {
  const hub = createLogStream(options);
  const server = Deno.serve({
    port: 0,
    hostname: "127.0.0.1",
    onListen: () => {},
  }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    hub.attach(socket, { batch: new URL(req.url).searchParams.has("batch") });
    return response;
  });
  return {
    hub,
    url: `ws://127.0.0.1:${server.addr.port}/ws`,
    port: server.addr.port,
    async [Symbol.asyncDispose]() {
      hub.close();
      await server.shutdown();
    },
  };
}

/** A client that collects messages; `until(n)` waits for n of them. */
function client(url: string) {
  const ws = new WebSocket(url);
  const got: StreamMessage[] = [];
  /** Messages per frame received. */
  const frames: number[] = [];
  let closed: CloseEvent | undefined;
  let wake = () => {};
  ws.onmessage = (e) => {
    // A batched client's frame holds one message per line.
    const lines = (e.data as string).split("\n");
    for (const line of lines) got.push(JSON.parse(line));
    frames.push(lines.length);
    wake();
  };
  ws.onclose = (e) => {
    closed = e;
    wake();
  };
  const until = async (pred: () => boolean, what: string) => {
    const deadline = Date.now() + 10_000;
    while (!pred()) {
      if (Date.now() > deadline) {
        throw new Error(`timed out waiting for ${what}`);
      }
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
  };
  return {
    ws,
    got,
    frames,
    closed: () => closed,
    until,
    count: (n: number) => until(() => got.length >= n, `${n} messages`),
    async [Symbol.asyncDispose]() {
      if (ws.readyState !== WebSocket.CLOSED) {
        ws.close();
        await until(() => closed !== undefined, "close");
      }
    },
  };
}

Deno.test("log stream: a new client gets the last 100 messages in order, a connection marker, then live ones", async () => {
  await using s = serveHub({ heartbeatMs: 0 });
  const log = createLogger({ sinks: [s.hub.sink] });
  for (let i = 0; i < 130; i++) log.info(`line ${i}`, { i });
  log.error("bad thing");
  await using c = client(s.url);
  await c.count(101);
  const replay = c.got.slice(0, 100);
  assert.deepEqual(
    replay.map((m) => (m.payload as { msg: string }).msg),
    [...Array.from({ length: 99 }, (_, k) => `line ${31 + k}`), "bad thing"],
  );
  assert.equal(replay[99].type, "error");
  assert.ok(
    replay.every((m) =>
      typeof m.messageId === "string" && !Number.isNaN(Date.parse(m.timestamp))
    ),
  );
  assert.equal(c.got[100].type, "connection");
  assert.deepEqual(c.got[100].payload, { replayed: 100, clients: 1 });
  s.hub.publish("status", { plugin: "x", state: "running" });
  await c.count(102);
  assert.deepEqual(c.got[101], {
    ...c.got[101],
    type: "status",
    payload: { plugin: "x", state: "running" },
  });
  assert.equal(s.hub.stats().clients, 1);
  assert.equal(s.hub.stats().bufferSize, 100);
});

Deno.test("log stream: messages kept while no client was attached and those sent live replay alike, in order, to a later client", async () => {
  await using s = serveHub({ heartbeatMs: 0 });
  for (let i = 0; i < 3; i++) s.hub.publish("log", { msg: `before ${i}` });
  await using a = client(s.url);
  await a.count(4); // 3 replayed (serialized on join) and the marker
  for (let i = 0; i < 2; i++) s.hub.publish("log", { msg: `live ${i}` });
  await a.count(6);
  await using b = client(s.url);
  await b.count(6);
  const logs = (got: typeof a.got) => got.filter((m) => m.type === "log");
  assert.deepEqual(
    logs(b.got).map((m) => (m.payload as { msg: string }).msg),
    ["before 0", "before 1", "before 2", "live 0", "live 1"],
  );
  // The same messages, ids and timestamps included, whichever way they were kept.
  assert.deepEqual(logs(b.got), logs(a.got));
});

Deno.test("log stream: heartbeats reach clients but are not replayed", async () => {
  await using s = serveHub({ heartbeatMs: 30 });
  await using c = client(s.url);
  await c.until(() => c.got.some((m) => m.type === "heartbeat"), "a heartbeat");
  assert.equal(s.hub.stats().bufferSize, 0);
});

Deno.test("log stream: a client that stops reading is closed with 4008 and the others keep receiving", async () => {
  await using s = serveHub({
    heartbeatMs: 0,
    maxBufferedBytes: 4 * 1024 * 1024,
  });
  // A raw TCP client that completes the handshake and then never reads.
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
  await conn.write(new TextEncoder().encode(
    `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  ));
  const buf = new Uint8Array(512);
  const n = await conn.read(buf);
  assert.match(
    new TextDecoder().decode(buf.subarray(0, n ?? 0)),
    /^HTTP\/1\.1 101/,
  );
  await using fast = client(s.url);
  await fast.until(() => s.hub.stats().clients === 2, "both clients attached");
  const big = "x".repeat(64 * 1024);
  const total = 400; // 25 MiB: far more than the kernel's socket buffers hold
  for (let i = 0; i < total; i++) {
    s.hub.publish("log", { i, big });
    // Keep the reading client's lag bounded so only the stalled one overflows.
    if (i % 10 === 9) {
      await fast.until(
        () => fast.got.length >= i - 20,
        "the fast client to catch up",
      );
    }
  }
  await fast.count(total + 1);
  // The stalled client is closed once it has stayed over the limit a while.
  await fast.until(
    () => s.hub.stats().slowConsumersClosed === 1,
    "the stalled client to be closed",
  );
  assert.equal(s.hub.stats().clients, 1);
  const live = fast.got.filter((m) => m.type === "log").map((m) =>
    (m.payload as { i: number }).i
  );
  assert.deepEqual(live, Array.from({ length: total }, (_, i) => i));
  conn.close();
});

Deno.test("log stream: an oversized inbound message closes that client with 1009", async () => {
  await using s = serveHub({ heartbeatMs: 0, maxInboundBytes: 16 });
  await using c = client(s.url);
  await c.count(1);
  c.ws.send("y".repeat(100));
  await c.until(() => c.closed() !== undefined, "close");
  assert.equal(c.closed()!.code, 1009);
});

Deno.test("log stream: close() sends 1001 to every client and refuses new ones", async () => {
  await using s = serveHub({ heartbeatMs: 0 });
  await using c = client(s.url);
  await c.count(1);
  s.hub.close();
  await c.until(() => c.closed() !== undefined, "close");
  assert.equal(c.closed()!.code, 1001);
  assert.equal(SLOW_CONSUMER_CLOSE_CODE, 4008);
});

Deno.test("log stream: a burst sent in one tick does not get a reading client closed", async () => {
  await using s = serveHub({ heartbeatMs: 0, maxBufferedBytes: 1024 });
  await using c = client(s.url);
  await c.count(1);
  const line = "y".repeat(250);
  for (let i = 0; i < 300; i++) s.hub.publish("log", { i, line });
  await c.count(301);
  assert.equal(c.closed(), undefined);
  assert.equal(s.hub.stats().slowConsumersClosed, 0);
});

Deno.test("log stream: a batched client gets a burst in one frame, one message per line, in order; a plain client one per frame", async () => {
  await using s = serveHub({ heartbeatMs: 0 });
  const log = createLogger({ sinks: [s.hub.sink] });
  for (let i = 0; i < 5; i++) log.info(`early ${i}`);
  await using batched = client(`${s.url}?batch=1`);
  await using plain = client(s.url);
  await batched.count(6);
  await plain.count(6);
  // Replay and its connection marker: one frame for the batched client.
  assert.deepEqual(batched.frames, [6]);
  assert.equal(plain.frames.length, 6);
  for (let i = 0; i < 300; i++) log.info(`burst ${i}`, { i });
  await batched.count(306);
  await plain.count(306);
  const texts = (c: typeof batched) =>
    c.got.slice(6).map((m) => (m.payload as { msg: string }).msg);
  const expected = Array.from({ length: 300 }, (_, i) => `burst ${i}`);
  assert.deepEqual(texts(batched), expected);
  assert.deepEqual(texts(plain), expected);
  assert.equal(plain.frames.length, 306);
  // 300 messages of ~200 bytes in one turn: a few frames of at most 64 KiB.
  const burstFrames = batched.frames.slice(1);
  assert.ok(burstFrames.length <= 2, JSON.stringify(burstFrames));
  assert.equal(burstFrames.reduce((a, b) => a + b, 0), 300);
  // Messages published in separate turns still go out one by one.
  s.hub.publish("status", { n: 1 });
  await batched.count(307);
  s.hub.publish("status", { n: 2 });
  await batched.count(308);
  assert.deepEqual(batched.frames.slice(-2), [1, 1]);
});
