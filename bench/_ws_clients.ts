/**
 * WebSocket client process for bench/log_stream.ts: holds N client
 * connections and counts, per client, the messages of the current run.
 *
 *   deno run -A bench/_ws_clients.ts [--client raw|api]
 *
 * `raw` (default) speaks RFC 6455 over `Deno.connect`: one read returns many
 * frames, which are parsed in place, so the client side costs far less CPU
 * per message than the `WebSocket` API (`api`), whose every message is an
 * event. Commands (JSON lines on stdin, one JSON reply each on stdout):
 * - `{"cmd":"connect","url","n","hub","hello"?,"marker"?}` opens n clients;
 *   with `hub` each waits for the hub's `connection` message, which ends its
 *   replay. A peer server: `hello` is text each client sends once upgraded
 *   (Centrifugo's connect and subscribe commands) and `marker` the start of
 *   the reply line that stands for `connection` (raw clients only).
 *   Replies `{"connected":n,"replayed":...}`.
 * - `{"cmd":"expect","tag","n"}` starts counting messages containing `tag`;
 *   replies `{"armed":true}` at once and `{"done":true,...}` when every
 *   client has received n of them (or `{"error"}` on a duplicate or a drop).
 * - `{"cmd":"close"}` closes every client; replies `{"closed":n}`.
 *
 * @module
 */
import { commands, flag, reply } from "./_util.ts";

const encoder = new TextEncoder();
const clientKind = flag("client") ?? "raw";

interface Run {
  tag: Uint8Array;
  tagText: string;
  n: number;
  done: number;
  bytes: number;
  t0: number;
}

let run: Run | undefined;
let failed = "";

interface Client {
  count: number;
  /** Messages before the hub's `connection` message (replay). */
  replayed: number;
  connected: boolean;
  closeCode?: number;
  close(): void;
}

const clients: Client[] = [];

function finish(): void {
  if (!run) return;
  const r = run;
  run = undefined;
  reply({
    done: true,
    ms: performance.now() - r.t0,
    messages: r.n * clients.length,
    bytes: r.bytes,
    avgBytes: r.bytes / (r.n * clients.length),
  });
}

function failRun(why: string): void {
  if (!run || failed) return;
  failed = why;
  run = undefined;
  reply({ error: why });
}

/** Counts one text message for client `c`; `has(tag)` checks its content. */
function onText(c: Client, size: number, hasTag: (r: Run) => boolean): void {
  const r = run;
  if (!r || !hasTag(r)) return;
  c.count++;
  r.bytes += size;
  if (c.count === r.n) {
    if (++r.done === clients.length) finish();
  } else if (c.count > r.n) {
    failRun(`a client received more than ${r.n} messages tagged ${r.tagText}`);
  }
}

function onClose(c: Client, code: number): void {
  c.closeCode = code;
  if (run) failRun(`a client was closed with code ${code} mid-run`);
}

const CONNECTION_PREFIX = encoder.encode('{"type":"connection"');

function startsWith(buf: Uint8Array, at: number, prefix: Uint8Array): boolean {
  if (at + prefix.length > buf.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    if (buf[at + i] !== prefix[i]) return false;
  }
  return true;
}

/** Whether `needle` occurs in buf[from, to). */
function contains(
  buf: Uint8Array,
  from: number,
  to: number,
  needle: Uint8Array,
): boolean {
  const first = needle[0];
  const last = to - needle.length;
  outer: for (let i = from; i <= last; i++) {
    if (buf[i] !== first) continue;
    for (let j = 1; j < needle.length; j++) {
      if (buf[i + j] !== needle[j]) continue outer;
    }
    return true;
  }
  return false;
}

/** The tag sits in the first bytes of every bench message. */
const TAG_WINDOW = 256;

function maskedFrame(opcode: number, payload: Uint8Array): Uint8Array {
  // Client frames must be masked (RFC 6455 5.3); payloads here are < 126 B.
  const frame = new Uint8Array(6 + payload.length);
  frame[0] = 0x80 | opcode;
  frame[1] = 0x80 | payload.length;
  const mask = crypto.getRandomValues(new Uint8Array(4));
  frame.set(mask, 2);
  for (let i = 0; i < payload.length; i++) {
    frame[6 + i] = payload[i] ^ mask[i & 3];
  }
  return frame;
}

async function connectRaw(
  url: URL,
  hub: boolean,
  peer?: { hello: string; marker: string },
): Promise<Client> {
  const lines = url.searchParams.get("batch") === "1" || peer !== undefined;
  const marker = peer ? encoder.encode(peer.marker) : CONNECTION_PREFIX;
  const conn = await Deno.connect({
    hostname: url.hostname,
    port: Number(url.port || 80),
  });
  conn.setNoDelay(true);
  const key = btoa(
    String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
  );
  await conn.write(encoder.encode(
    `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
      `Upgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  ));
  let buf = new Uint8Array(256 * 1024);
  let start = 0;
  let end = 0;
  const fill = async (): Promise<boolean> => {
    if (end === buf.length) {
      if (start > 0) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      } else {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = bigger;
      }
    }
    const n = await conn.read(buf.subarray(end));
    if (n === null) return false;
    end += n;
    return true;
  };
  // Handshake response.
  let headEnd = -1;
  while (headEnd === -1) {
    if (!await fill()) throw new Error("closed during the handshake");
    for (let i = start; i + 3 < end; i++) {
      if (
        buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 &&
        buf[i + 3] === 10
      ) {
        headEnd = i;
        break;
      }
    }
  }
  const head = new TextDecoder().decode(buf.subarray(start, headEnd));
  if (!head.startsWith("HTTP/1.1 101")) {
    throw new Error(`upgrade refused: ${head.split("\r\n")[0]}`);
  }
  start = headEnd + 4;

  let closed = false;
  let onConnected: () => void = () => {};
  let onRefused: (err: Error) => void = () => {};
  const connected = new Promise<void>((resolve, reject) => {
    onConnected = resolve;
    onRefused = reject;
  });
  const c: Client = {
    count: 0,
    replayed: 0,
    connected: !hub,
    close() {
      if (closed) return;
      closed = true;
      const code = new Uint8Array([0x03, 0xe8]); // 1000
      conn.write(maskedFrame(0x8, code)).catch(() => {}).finally(() => {
        try {
          conn.close();
        } catch {
          // already closed
        }
      });
    },
  };
  if (!hub) onConnected();
  if (peer) await conn.write(maskedFrame(0x1, encoder.encode(peer.hello)));

  const pump = async () => {
    try {
      while (true) {
        // Parse every complete frame in the buffer.
        while (end - start >= 2) {
          const b0 = buf[start];
          const b1 = buf[start + 1];
          let len = b1 & 0x7f;
          let hdr = 2;
          if (len === 126) {
            if (end - start < 4) break;
            len = (buf[start + 2] << 8) | buf[start + 3];
            hdr = 4;
          } else if (len === 127) {
            if (end - start < 10) break;
            len = (buf[start + 6] * 2 ** 24) +
              ((buf[start + 7] << 16) | (buf[start + 8] << 8) |
                buf[start + 9]);
            hdr = 10;
          }
          if (b1 & 0x80) hdr += 4; // servers must not mask, but be lenient
          if (end - start < hdr + len) {
            if (hdr + len > buf.length) {
              const bigger = new Uint8Array((hdr + len) * 2);
              bigger.set(buf.subarray(start, end));
              end -= start;
              start = 0;
              buf = bigger;
            }
            break;
          }
          const p = start + hdr;
          const opcode = b0 & 0x0f;
          if (opcode === 0x1 || opcode === 0x2) {
            // `?batch=1`: several messages a frame, one per line.
            for (let q = p, frameEnd = p + len; q < frameEnd;) {
              let e = frameEnd;
              if (lines) {
                for (let i = q; i < frameEnd; i++) {
                  if (buf[i] === 0x0a) {
                    e = i;
                    break;
                  }
                }
              }
              if (!c.connected) {
                if (startsWith(buf, q, marker)) {
                  c.connected = true;
                  onConnected();
                } else c.replayed++;
              } else {
                const from = q;
                const window = Math.min(e, q + TAG_WINDOW);
                onText(c, e - q, (r) => contains(buf, from, window, r.tag));
              }
              q = e + 1;
            }
          } else if (opcode === 0x8) {
            const code = len >= 2 ? (buf[p] << 8) | buf[p + 1] : 1005;
            if (!c.connected) {
              const reason = new TextDecoder().decode(
                buf.subarray(p + 2, p + len),
              );
              onRefused(
                new Error(
                  `closed with ${code} (${reason}) after ${c.replayed} replayed messages, before the connection message`,
                ),
              );
            }
            if (!closed) onClose(c, code);
            closed = true;
            conn.close();
            return;
          } else if (opcode === 0x9) {
            conn.write(maskedFrame(0xa, buf.slice(p, p + len))).catch(
              () => {},
            );
          }
          start += hdr + len;
        }
        if (start === end) start = end = 0;
        if (!await fill()) break;
      }
      if (!closed) onClose(c, 1006);
      onRefused(new Error("connection closed before the connection message"));
    } catch (err) {
      onRefused(err as Error);
      if (!closed) onClose(c, 1006);
      if (!closed) failRun(`client read failed: ${(err as Error).message}`);
    }
  };
  pump();
  await connected;
  return c;
}

async function connectApi(url: URL, hub: boolean): Promise<Client> {
  const ws = new WebSocket(url);
  let closedByUs = false;
  const c: Client = {
    count: 0,
    replayed: 0,
    connected: !hub,
    close() {
      closedByUs = true;
      ws.close(1000);
    },
  };
  let onConnected: () => void = () => {};
  let reject: (err: Error) => void = () => {};
  const connected = new Promise<void>((resolve, fail) => {
    onConnected = resolve;
    reject = fail;
    ws.onerror = () => fail(new Error("websocket error"));
  });
  ws.onopen = () => {
    if (!hub) onConnected();
  };
  ws.onclose = (ev) => {
    if (!c.connected) {
      reject(
        new Error(
          `closed with ${ev.code} (${ev.reason}) after ${c.replayed} replayed messages, before the connection message`,
        ),
      );
    }
    if (!closedByUs) onClose(c, ev.code);
  };
  ws.onmessage = (ev) => {
    for (const text of (ev.data as string).split("\n")) {
      if (!c.connected) {
        if (text.startsWith('{"type":"connection"')) {
          c.connected = true;
          onConnected();
        } else c.replayed++;
        continue;
      }
      onText(c, text.length, (r) => text.indexOf(r.tagText) !== -1);
    }
  };
  await connected;
  return c;
}

for await (const cmd of commands()) {
  try {
    if (cmd.cmd === "connect") {
      const url = new URL(String(cmd.url));
      const n = Number(cmd.n);
      const hub = Boolean(cmd.hub);
      const peer = typeof cmd.hello === "string"
        ? { hello: cmd.hello, marker: String(cmd.marker) }
        : undefined;
      const connect = clientKind === "api" ? connectApi : connectRaw;
      // Connect in small waves so the accept queue never overflows.
      for (let i = 0; i < n; i += 10) {
        const wave = Math.min(10, n - i);
        clients.push(
          ...await Promise.all(
            Array.from(
              { length: wave },
              () => peer ? connectRaw(url, hub, peer) : connect(url, hub),
            ),
          ),
        );
      }
      reply({
        connected: clients.length,
        replayed: clients.reduce((a, c) => a + c.replayed, 0) /
          clients.length,
      });
    } else if (cmd.cmd === "expect") {
      failed = "";
      for (const c of clients) c.count = 0;
      run = {
        tag: encoder.encode(String(cmd.tag)),
        tagText: String(cmd.tag),
        n: Number(cmd.n),
        done: 0,
        bytes: 0,
        t0: performance.now(),
      };
      reply({ armed: true });
    } else if (cmd.cmd === "close") {
      run = undefined;
      const n = clients.length;
      for (const c of clients.splice(0)) c.close();
      reply({ closed: n });
    } else {
      reply({ error: `unknown command ${JSON.stringify(cmd)}` });
    }
  } catch (err) {
    reply({ error: String((err as Error)?.stack ?? err) });
  }
}
for (const c of clients) c.close();
