/**
 * The WebSocket client over real loopback sockets: against `Deno.serve` +
 * `Deno.upgradeWebSocket`, and against a raw TCP server that writes frames
 * by hand where `Deno.serve` cannot misbehave on demand.
 */
import assert from "node:assert/strict";
import {
  DenoWebSocket,
  openWebSocket,
  type WebSocketOptions,
} from "./ws_client.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const latin1 = new TextDecoder("latin1");

/** A client with its events recorded in order. */
function connect(url: string, options: WebSocketOptions = {}) {
  const ws = new DenoWebSocket(url, options);
  ws.binaryType = "arraybuffer";
  const events: string[] = [];
  const messages: (string | ArrayBuffer)[] = [];
  let errorMessage = "";
  const opened = new Promise<void>((resolve) => ws.onopen = () => resolve());
  const closed = new Promise<CloseEvent>((resolve) => {
    ws.onclose = (ev) => {
      events.push("close");
      resolve(ev);
    };
  });
  ws.onerror = (ev) => {
    events.push("error");
    errorMessage = (ev as ErrorEvent).message;
  };
  let waiter: ((data: string | ArrayBuffer) => void) | undefined;
  ws.onmessage = (ev) => {
    events.push("message");
    if (waiter) waiter(ev.data), waiter = undefined;
    else messages.push(ev.data);
  };
  const next = () =>
    messages.length
      ? Promise.resolve(messages.shift()!)
      : new Promise<string | ArrayBuffer>((r) => waiter = r);
  return { ws, events, opened, closed, next, error: () => errorMessage };
}

/** `Deno.serve` echoing every message; `onSocket` may add more handlers. */
function echoServer(onSocket?: (socket: WebSocket) => void) {
  const server = Deno.serve({ port: 0, onListen() {} }, (req) => {
    const { socket, response } = Deno.upgradeWebSocket(req);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (e) => socket.send(e.data);
    onSocket?.(socket);
    return response;
  });
  return Object.assign(server, { url: `ws://127.0.0.1:${server.addr.port}` });
}

/** Buffered reads of a raw connection. */
class Reader {
  #buf = new Uint8Array(0);
  constructor(readonly conn: Deno.Conn) {}

  async take(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) {
      const chunk = new Uint8Array(65536);
      const r = await this.conn.read(chunk);
      if (r === null) throw new Error("the client closed the connection");
      const joined = new Uint8Array(this.#buf.length + r);
      joined.set(this.#buf);
      joined.set(chunk.subarray(0, r), this.#buf.length);
      this.#buf = joined;
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  async head(): Promise<string> {
    let text = "";
    while (!text.endsWith("\r\n\r\n")) {
      text += latin1.decode(await this.take(1));
    }
    return text;
  }

  /** One client frame, unmasked; checks that the client masked it. */
  async frame(): Promise<{ op: number; payload: Uint8Array }> {
    const [b0, b1] = await this.take(2);
    assert.equal(b1 & 0x80, 0x80, "client frames are masked");
    let len = b1 & 0x7f;
    if (len === 126) {
      len = new DataView((await this.take(2)).buffer).getUint16(0);
    }
    const mask = await this.take(4);
    const payload = await this.take(len);
    for (let i = 0; i < len; i++) payload[i] ^= mask[i & 3];
    return { op: b0 & 0x0f, payload };
  }
}

/** A server frame: `b0` is FIN/RSV/opcode; `mask` sets the mask bit. */
function frame(
  b0: number,
  payload: Uint8Array | string,
  mask = false,
): Uint8Array {
  const body = typeof payload === "string" ? encoder.encode(payload) : payload;
  const n = body.length;
  const head = n < 126
    ? [b0, n]
    : n < 65536
    ? [b0, 126, n >> 8, n & 255]
    : [b0, 127, 0, 0, 0, 0, n >>> 24, (n >> 16) & 255, (n >> 8) & 255, n & 255];
  if (mask) head[1] |= 0x80, head.push(0, 0, 0, 0);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

/**
 * A one-connection TCP server: answers the upgrade with `answer` (a valid
 * 101 by default), then hands the connection to `script`.
 */
function rawServer(
  script: (reader: Reader, head: string) => Promise<void>,
  answer = (accept: string) =>
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
    `Connection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const conn = await listener.accept();
    try {
      const reader = new Reader(conn);
      const head = await reader.head();
      const key = head.match(/sec-websocket-key: *(\S+)/i)![1];
      const accept = new Uint8Array(
        await crypto.subtle.digest(
          "SHA-1",
          encoder.encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
        ),
      ).toBase64();
      await conn.write(encoder.encode(answer(accept)));
      await script(reader, head);
    } finally {
      conn.close();
    }
  })();
  return {
    url: `ws://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/path?q=1`,
    done,
    async [Symbol.asyncDispose]() {
      listener.close();
      await done;
    },
  };
}

/** Reads client frames until its close frame; returns the close code. */
async function clientCloseCode(reader: Reader): Promise<number> {
  for (;;) {
    const { op, payload } = await reader.frame();
    if (op === 8) return new DataView(payload.buffer).getUint16(0);
  }
}

Deno.test("ws_client: text and binary messages of 0 B to 1 MiB echo intact", async () => {
  await using server = echoServer();
  const c = connect(server.url);
  await c.opened;
  for (const size of [0, 125, 126, 65535, 65536, 1 << 20]) {
    const bytes = Uint8Array.from({ length: size }, (_, i) => (i * 7919) % 251);
    c.ws.send(bytes);
    assert.deepEqual(
      new Uint8Array(await c.next() as ArrayBuffer),
      bytes,
      `binary ${size}`,
    );
    const text = Array.from(bytes, (b) => String.fromCharCode(97 + b % 26))
      .join("");
    c.ws.send(text);
    assert.equal(await c.next(), text, `text ${size}`);
  }
  c.ws.send(new Uint8Array([1, 2, 3, 4, 5]).subarray(1, 4));
  assert.deepEqual(
    new Uint8Array(await c.next() as ArrayBuffer),
    new Uint8Array([2, 3, 4]),
  );
  assert.equal(c.ws.bufferedAmount, 0);
  c.ws.close();
  assert.equal((await c.closed).wasClean, true);
});

Deno.test("ws_client: a 16 KiB echo round trip takes well under the 44 ms Nagle stall", async () => {
  await using server = echoServer();
  const c = connect(server.url);
  await c.opened;
  const payload = new Uint8Array(16 * 1024).fill(120);
  const times: number[] = [];
  for (let i = 0; i < 23; i++) {
    const t0 = performance.now();
    c.ws.send(payload);
    await c.next();
    if (i >= 3) times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const median = times[times.length >> 1];
  // The stall was ~44 ms; a loaded 2-core machine still stays far below 25.
  assert.ok(median < 25, `median round trip ${median.toFixed(2)} ms`);
  c.ws.close();
  await c.closed;
});

Deno.test("ws_client: 3,000 small messages sent at once (over several shared frame buffers) echo intact and in order, the caller's bytes untouched", async () => {
  await using server = echoServer();
  const c = connect(server.url);
  await c.opened;
  const sent = Array.from(
    { length: 3000 },
    (_, i) => new Uint8Array(i % 301).map((_, j) => (i + j * 7) & 0xff),
  );
  const copies = sent.map((b) => b.slice());
  for (const b of sent) c.ws.send(b);
  // A corrupt frame makes the server close: fail then, not wait forever.
  const ended = c.closed.then((ev) => {
    throw new Error(`closed (${ev.code}) before every message echoed`);
  });
  for (const [i, b] of copies.entries()) {
    const got = await Promise.race([c.next(), ended]);
    assert.deepEqual(new Uint8Array(got as ArrayBuffer), b, `#${i}`);
  }
  assert.deepEqual(sent, copies, "masking never writes the caller's bytes");
  ended.catch(() => {});
  c.ws.close();
  await c.closed;
});

Deno.test("ws_client: a server close with code and reason reaches onclose, cleanly", async () => {
  await using server = echoServer((socket) => {
    socket.onopen = () => socket.close(4001, "session expired");
  });
  const c = connect(server.url);
  const ev = await c.closed;
  assert.deepEqual([ev.code, ev.reason, ev.wasClean], [
    4001,
    "session expired",
    true,
  ]);
  assert.equal(c.ws.readyState, WebSocket.CLOSED);
  assert.deepEqual(c.events, ["close"]);
});

Deno.test("ws_client: close() runs the closing handshake and the server sees its code and reason", async () => {
  let serverSaw: Promise<CloseEvent> | undefined;
  await using server = echoServer((socket) => {
    serverSaw = new Promise((r) => socket.onclose = r);
  });
  const c = connect(server.url);
  await c.opened;
  c.ws.close(1000, "agent closing");
  assert.equal(c.ws.readyState, WebSocket.CLOSING);
  c.ws.send("dropped while closing");
  const ev = await c.closed;
  assert.deepEqual([ev.code, ev.reason, ev.wasClean], [
    1000,
    "agent closing",
    true,
  ]);
  const seen = await serverSaw!;
  assert.deepEqual([seen.code, seen.reason], [1000, "agent closing"]);
  assert.deepEqual(c.events, ["close"]);
});

Deno.test("ws_client: a ping is answered with a pong carrying its payload", async () => {
  await using server = rawServer(async (reader) => {
    await reader.conn.write(frame(0x89, "are you there"));
    const pong = await reader.frame();
    assert.equal(pong.op, 10);
    assert.equal(decoder.decode(pong.payload), "are you there");
    await reader.conn.write(frame(0x88, new Uint8Array([0x03, 0xe8])));
    assert.equal(await clientCloseCode(reader), 1000);
  });
  const c = connect(server.url);
  const ev = await c.closed;
  assert.deepEqual([ev.code, ev.wasClean], [1000, true]);
  await server.done;
});

Deno.test("ws_client: fragmented messages are reassembled, with a ping between fragments", async () => {
  await using server = rawServer(async (reader) => {
    await reader.conn.write(frame(0x01, "hé"));
    await reader.conn.write(frame(0x89, "p"));
    // The "é" of "wörld" is split across frames: UTF-8 is checked on the whole.
    const world = encoder.encode("llo wörld");
    await reader.conn.write(frame(0x00, world.subarray(0, 6)));
    await reader.conn.write(frame(0x80, world.subarray(6)));
    await reader.conn.write(frame(0x02, new Uint8Array([1, 2])));
    await reader.conn.write(frame(0x80, new Uint8Array([3])));
    assert.equal((await reader.frame()).op, 10);
    assert.equal(await clientCloseCode(reader), 1000);
    await reader.conn.write(frame(0x88, new Uint8Array([0x03, 0xe8])));
  });
  const c = connect(server.url);
  assert.equal(await c.next(), "héllo wörld");
  assert.deepEqual(
    new Uint8Array(await c.next() as ArrayBuffer),
    new Uint8Array([1, 2, 3]),
  );
  c.ws.close(1000);
  assert.deepEqual([(await c.closed).code, (await c.closed).wasClean], [
    1000,
    true,
  ]);
  await server.done;
});

Deno.test("ws_client: frames that arrive in one write, or split anywhere, are each delivered intact and in order", async () => {
  // 7-bit, 16-bit and 64-bit lengths, a ping and an empty message among them.
  const sizes = [0, 5, 125, 126, 300, 65535, 65536, 70_000, 3];
  const payload = (n: number, i: number) =>
    new Uint8Array(n).map((_, j) => (i * 31 + j) & 0xff);
  const wire = sizes.flatMap((n, i) => [
    ...(i === 4 ? frame(0x89, "p") : []),
    ...frame(0x82, payload(n, i)),
  ]);
  const bytes = new Uint8Array(wire);
  await using server = rawServer(async (reader) => {
    const write = async (b: Uint8Array) => {
      for (let at = 0; at < b.length;) {
        at += await reader.conn.write(b.subarray(at));
      }
    };
    await write(bytes); // all at once
    // Then again, cut every 7 bytes over the first 2 KiB (inside headers
    // and lengths), then in two big pieces.
    for (let at = 0; at < 2048; at += 7) {
      await write(bytes.subarray(at, Math.min(at + 7, 2048)));
    }
    await write(bytes.subarray(2048, 100_000));
    await write(bytes.subarray(100_000));
    assert.equal((await reader.frame()).op, 10);
    assert.equal((await reader.frame()).op, 10);
    assert.equal(await clientCloseCode(reader), 1000);
    await reader.conn.write(frame(0x88, new Uint8Array([0x03, 0xe8])));
  });
  const c = connect(server.url);
  for (let pass = 0; pass < 2; pass++) {
    for (const [i, n] of sizes.entries()) {
      const got = new Uint8Array(await c.next() as ArrayBuffer);
      assert.equal(got.length, n, `pass ${pass}, message ${i}`);

      assert.deepEqual(got, payload(n, i), `pass ${pass}, message ${i}`);
    }
  }
  c.ws.close(1000);
  assert.equal((await c.closed).code, 1000);
  await server.done;
});

for (
  const [name, bytes, code] of [
    ["a masked server frame", frame(0x81, "hi", true), 1002],
    ["reserved bits set", frame(0xc1, "hi"), 1002],
    ["an unknown opcode", frame(0x83, "hi"), 1002],
    ["a continuation without a message", frame(0x80, "hi"), 1002],
    [
      "invalid UTF-8 in a text message",
      frame(0x81, new Uint8Array([0x68, 0xc3, 0x28])),
      1007,
    ],
    ["a message over maxMessageBytes", frame(0x82, new Uint8Array(1001)), 1009],
    ["fragments adding up over maxMessageBytes", [
      ...frame(0x02, new Uint8Array(600)),
      ...frame(0x80, new Uint8Array(600)),
    ], 1009],
  ] as const
) {
  Deno.test(`ws_client: ${name} fails the connection with ${code}`, async () => {
    await using server = rawServer(async (reader) => {
      await reader.conn.write(new Uint8Array(bytes));
      assert.equal(await clientCloseCode(reader), code);
    });
    const c = connect(server.url, { maxMessageBytes: 1000 });
    const ev = await c.closed;
    assert.deepEqual([ev.code, ev.wasClean], [code, false]);
    assert.deepEqual(c.events, ["error", "close"]);
    await server.done;
  });
}

Deno.test("ws_client: a 429 answer to the upgrade is an error with the status, then close 1006", async () => {
  await using server = Deno.serve(
    { port: 0, onListen() {} },
    () => new Response("rate limited", { status: 429 }),
  );
  const c = connect(`ws://127.0.0.1:${server.addr.port}/ws/agent`);
  const ev = await c.closed;
  assert.deepEqual([ev.code, ev.wasClean], [1006, false]);
  assert.deepEqual(c.events, ["error", "close"]);
  assert.match(c.error(), /answered 429 Too Many Requests: rate limited/);
});

for (
  const [name, answer, error] of [
    [
      "a wrong Sec-WebSocket-Accept",
      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=",
      /wrong Sec-WebSocket-Accept/,
    ],
    [
      "no Upgrade header",
      "Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}",
      /without 'Upgrade: websocket'/,
    ],
  ] as const
) {
  Deno.test(`ws_client: a 101 with ${name} is refused`, async () => {
    await using server = rawServer(
      async () => {},
      (accept) =>
        `HTTP/1.1 101 Switching Protocols\r\n${
          answer.replace("{accept}", accept)
        }\r\n\r\n`,
    );
    const c = connect(server.url);
    assert.equal((await c.closed).code, 1006);
    assert.deepEqual(c.events, ["error", "close"]);
    assert.match(c.error(), error);
  });
}

Deno.test("ws_client: the upgrade request carries path, query and Host with port", async () => {
  let head = "";
  await using server = rawServer(async (reader, h) => {
    head = h;
    await reader.conn.write(frame(0x88, new Uint8Array([0x03, 0xe8])));
    await clientCloseCode(reader);
  });
  const c = connect(`${server.url}#fragment`);
  assert.equal((await c.closed).code, 1000);
  await server.done;
  const { port } = new URL(server.url);
  assert.match(head, /^GET \/path\?q=1 HTTP\/1\.1\r\n/);
  assert.match(head, new RegExp(`\r\nHost: 127\\.0\\.0\\.1:${port}\r\n`));
  assert.match(head, /\r\nSec-WebSocket-Version: 13\r\n/);
});

Deno.test("ws_client: a refused connection is an error, then close 1006", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const c = connect(`ws://127.0.0.1:${port}`);
  const ev = await c.closed;
  assert.deepEqual([ev.code, ev.wasClean], [1006, false]);
  assert.deepEqual(c.events, ["error", "close"]);
  assert.match(c.error(), /Cannot open WebSocket/);
});

Deno.test("ws_client: a connection ended without a close frame closes with 1006", async () => {
  await using server = rawServer(async () => {});
  const c = connect(server.url);
  await c.opened;
  assert.deepEqual([(await c.closed).code, c.events], [1006, [
    "error",
    "close",
  ]]);
});

Deno.test("ws_client: send before open throws; bad close codes and URLs throw", async () => {
  await using server = echoServer();
  const c = connect(server.url);
  assert.throws(() => c.ws.send("early"), { name: "InvalidStateError" });
  assert.throws(() => c.ws.close(1001), { name: "InvalidAccessError" });
  assert.throws(() => c.ws.close(1000, "x".repeat(124)), {
    name: "SyntaxError",
  });
  assert.throws(() => new DenoWebSocket("http://127.0.0.1:1"), {
    name: "SyntaxError",
  });
  await c.opened;
  c.ws.close();
  await c.closed;
});

Deno.test("ws_client: openWebSocket gives a DenoWebSocket under Deno", async () => {
  await using server = echoServer();
  const ws = openWebSocket(server.url);
  assert.ok(ws instanceof DenoWebSocket);
  const closed = new Promise((r) => ws.onclose = r);
  ws.close();
  await closed;
});

// A self-signed P-256 certificate for localhost and 127.0.0.1, valid to 2126
// (test only: the key is public).
const TEST_CERT = `-----BEGIN CERTIFICATE-----
MIIBmDCCAT6gAwIBAgIUVwoT2SgkWkNSnqavDr23dODfP1MwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMjA0MzUzNVoYDzIxMjYxMDI5
MDQzNTM1WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASeeKCEsw54S9Y9rznrt5YZXph+Hlv90k+rgSqm/iOPxtVp+73BVRWX
d/RyC/V+T+WIYlUY2JEIGozeNcJjEKVJo2wwajAdBgNVHQ4EFgQUtyFFOuiiUNNQ
KgYOcoaAzX/p0q8wHwYDVR0jBBgwFoAUtyFFOuiiUNNQKgYOcoaAzX/p0q8wGgYD
VR0RBBMwEYIJbG9jYWxob3N0hwR/AAABMAwGA1UdEwEB/wQCMAAwCgYIKoZIzj0E
AwIDSAAwRQIgT3uxxcnjvgrsUGnZXimqf28M8HRLBho8FzYmIN8iQYUCIQCXoyNo
voQ7I55TzYT40jazwLjphSv7XEf1d//+JHeqgQ==
-----END CERTIFICATE-----`;
const TEST_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+oZ16emOk1LT9jUw
lemDoe2t5aHSVXa0tPGKqQCyG7ehRANCAASeeKCEsw54S9Y9rznrt5YZXph+Hlv9
0k+rgSqm/iOPxtVp+73BVRWXd/RyC/V+T+WIYlUY2JEIGozeNcJjEKVJ
-----END PRIVATE KEY-----`;

Deno.test("ws_client: wss: trusts the caCerts given and refuses an unknown issuer", async () => {
  await using server = Deno.serve(
    {
      port: 0,
      hostname: "127.0.0.1",
      cert: TEST_CERT,
      key: TEST_KEY,
      onListen() {},
    },
    (req) => {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(e.data);
      return response;
    },
  );
  const url = `wss://localhost:${server.addr.port}/ws/agent`;
  const c = connect(url, { caCerts: [TEST_CERT] });
  await c.opened;
  const text = "x".repeat(20_000);
  c.ws.send(text);
  assert.equal(await c.next(), text);
  c.ws.close(1000);
  assert.deepEqual([(await c.closed).code, (await c.closed).wasClean], [
    1000,
    true,
  ]);

  const untrusted = connect(url);
  assert.equal((await untrusted.closed).code, 1006);
  assert.match(untrusted.error(), /certificate/);
});

Deno.test("ws_client: close() while connecting gives error then close 1006 and leaks no socket", async () => {
  await using server = echoServer();
  const c = connect(server.url);
  c.ws.close(1000);
  const ev = await c.closed;
  assert.deepEqual([ev.code, ev.wasClean, c.events], [1006, false, [
    "error",
    "close",
  ]]);
  // The connect still in flight ends on its own; the sanitizers check it.
  await new Promise((r) => setTimeout(r, 50));
});
