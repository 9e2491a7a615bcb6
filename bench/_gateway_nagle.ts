/**
 * Which side stalls large WebSocket frames on loopback (bench/gateway.ts,
 * 16 KiB cases): milliseconds per echo of one binary frame, one at a time,
 * for three client/server pairs.
 *
 *   deno run -A bench/_gateway_nagle.ts [--size 16384 (126-65535)] [--n 20]
 *
 * - `new WebSocket` → `Deno.serve` + `Deno.upgradeWebSocket` echo;
 * - `new WebSocket` → a raw `Deno.listen` echo (`setNoDelay(true)`, each
 *   frame in one write);
 * - a raw TCP client (each frame in one write, Nagle left on) → the same
 *   `Deno.serve` echo.
 *
 * About 40 ms in the first two and well under 1 ms in the third means the
 * `new WebSocket` client splits the frame into several writes with Nagle
 * on, and the server's delayed ACK holds the rest.
 *
 * @module
 */
import { numFlag } from "./_util.ts";

const size = numFlag("size", 16 * 1024);
const n = numFlag("n", 20);
if (size < 126 || size > 65535) {
  throw new RangeError(`--size must be 126-65535 bytes, got ${size}`);
}
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const served = Deno.serve({ port: 0, onListen() {} }, (req) => {
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (e) => socket.send(e.data);
  return response;
});

/** Reads until `buf[0..have)` contains a blank line; returns bytes read. */
async function readHead(conn: Deno.Conn, buf: Uint8Array): Promise<number> {
  let have = 0;
  while (!decoder.decode(buf.subarray(0, have)).includes("\r\n\r\n")) {
    const r = await conn.read(buf.subarray(have));
    if (r === null) throw new Error("closed during the upgrade");
    have += r;
  }
  return have;
}

/** Server frame header (unmasked, binary) for a payload of `len` < 64 KiB. */
function frameHead(len: number, masked: boolean): Uint8Array {
  const h = new Uint8Array(masked ? 8 : 4);
  h[0] = 0x82;
  h[1] = (masked ? 0x80 : 0) | 126;
  h[2] = len >> 8;
  h[3] = len & 255; // mask bytes (if any) stay zero: payload as is
  return h;
}

const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
(async () => {
  for await (const conn of listener) {
    conn.setNoDelay(true);
    (async () => {
      const buf = new Uint8Array(1 << 20);
      await readHead(conn, buf);
      const head = decoder.decode(buf);
      const key = head.match(/sec-websocket-key: *(\S+)/i)![1];
      const digest = await crypto.subtle.digest(
        "SHA-1",
        encoder.encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
      );
      await conn.write(encoder.encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
          "Connection: Upgrade\r\nSec-WebSocket-Accept: " +
          `${new Uint8Array(digest).toBase64()}\r\n\r\n`,
      ));
      let have = 0;
      while (true) {
        const r = await conn.read(buf.subarray(have));
        if (r === null) return;
        have += r;
        while (have >= 8) {
          const len = (buf[2] << 8) | buf[3];
          if (have < 8 + len) break;
          const mask = buf.slice(4, 8);
          const out = new Uint8Array(4 + len);
          out.set(frameHead(len, false));
          for (let i = 0; i < len; i++) out[4 + i] = buf[8 + i] ^ mask[i & 3];
          await conn.write(out);
          buf.copyWithin(0, 8 + len, have);
          have -= 8 + len;
        }
      }
    })().catch(() => {});
  }
})();

async function viaWebSocket(url: string): Promise<number> {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((r) => ws.onopen = r);
  const payload = new Uint8Array(size).fill(120);
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const echoed = new Promise((r) => ws.onmessage = r);
    ws.send(payload);
    await echoed;
  }
  const ms = (performance.now() - t0) / n;
  ws.close();
  return ms;
}

async function viaRawClient(port: number): Promise<number> {
  const conn = await Deno.connect({ port, hostname: "127.0.0.1" });
  await conn.write(encoder.encode(
    "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  ));
  const buf = new Uint8Array(1 << 20);
  const extra = (await readHead(conn, buf)) -
    (decoder.decode(buf).indexOf("\r\n\r\n") + 4);
  const frame = new Uint8Array(8 + size);
  frame.set(frameHead(size, true));
  const t0 = performance.now();
  let pending = extra;
  for (let i = 0; i < n; i++) {
    await conn.write(frame);
    while (pending < 4 + size) pending += (await conn.read(buf))!;
    pending -= 4 + size;
  }
  const ms = (performance.now() - t0) / n;
  conn.close();
  return ms;
}

const port = (listener.addr as Deno.NetAddr).port;
const rows: [string, number][] = [
  [
    "new WebSocket -> Deno.serve",
    await viaWebSocket(`ws://127.0.0.1:${served.addr.port}`),
  ],
  [
    "new WebSocket -> raw echo, setNoDelay(true)",
    await viaWebSocket(`ws://127.0.0.1:${port}`),
  ],
  [
    "raw client, one write per frame -> Deno.serve",
    await viaRawClient(served.addr.port),
  ],
];
for (const [label, ms] of rows) {
  console.log(`${label.padEnd(48)} ${ms.toFixed(2)} ms per ${size} B echo`);
}
Deno.exit(0);
