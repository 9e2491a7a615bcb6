/**
 * A WebSocket client (RFC 6455) over `Deno.connect`, for the agent SDK.
 *
 * Deno's built-in `new WebSocket` writes a frame over 1 KiB in several TCP
 * writes with Nagle's algorithm on, so the peer's delayed ACK stalls every
 * such frame by ~40 ms (bench/_gateway_nagle.ts). This client sets
 * `TCP_NODELAY` and writes each frame (header and masked payload) in one
 * write, coalescing frames queued while a write is in flight. It offers the
 * subset of the browser `WebSocket` interface the SDK uses; where
 * `Deno.connect` does not exist (a browser bundle) {@linkcode openWebSocket}
 * returns the global `WebSocket` instead.
 *
 * Differences from the browser's: a connection the client fails (protocol
 * error 1002, invalid UTF-8 1007, message too big 1009) reports the code it
 * sent in `close` rather than 1006; no subprotocols or extensions.
 *
 * @module
 */

/** The part of the browser `WebSocket` the agent SDK uses. */
export interface WebSocketLike {
  readonly url: string;
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  binaryType: BinaryType;
  /** Bytes given to `send` and not yet written to the socket. */
  readonly bufferedAmount: number;
  onopen: ((ev: Event) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
  onclose: ((ev: CloseEvent) => unknown) | null;
  send(data: string | ArrayBufferLike | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
}

/** Options of {@linkcode openWebSocket}. */
export interface WebSocketOptions {
  /** Extra root certificates (PEM) to trust for `wss:`. @default {undefined} */
  caCerts?: string[];
  /** Largest incoming message (all its fragments), bytes; a bigger one closes with 1009. @default {16777216} */
  maxMessageBytes?: number;
  /** How long a closing handshake may take before the socket is dropped (1006), ms. @default {5000} */
  closeTimeoutMs?: number;
}

/**
 * Opens a WebSocket: a {@linkcode DenoWebSocket} under Deno, else the
 * global `WebSocket` (options then do not apply).
 *
 * @example Usage
 * ```ts
 * import { openWebSocket } from "./ws_client.ts";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve({ port: 0, onListen() {} }, (req) => {
 *   const { socket, response } = Deno.upgradeWebSocket(req);
 *   socket.onmessage = (e) => socket.send(e.data);
 *   return response;
 * });
 * const ws = openWebSocket(`ws://127.0.0.1:${server.addr.port}/echo`);
 * const echoed = new Promise<MessageEvent>((r) => ws.onmessage = r);
 * ws.onopen = () => ws.send("hello");
 * assert.equal((await echoed).data, "hello");
 * const closed = new Promise<CloseEvent>((r) => ws.onclose = r);
 * ws.close(1000, "done");
 * assert.equal((await closed).code, 1000);
 * ```
 */
export function openWebSocket(
  url: string | URL,
  options: WebSocketOptions = {},
): WebSocketLike {
  if (typeof Deno === "undefined" || typeof Deno.connect !== "function") {
    return new WebSocket(url);
  }
  return new DenoWebSocket(url, options);
}

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const CONNECTING = 0, OPEN = 1, CLOSING = 2, CLOSED = 3;
const encoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });
const lenient = new TextDecoder();
// Single-byte decoding keeps string indices equal to byte offsets.
const latin1 = new TextDecoder("latin1");

/** The client fails the connection with this close code. */
class ProtocolError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** 4-byte masks cut from one bulk draw of random bytes (as words). */
let maskPool = new Uint32Array(0);
let maskAt = 0;
function nextMask(): number {
  if (maskAt === maskPool.length) {
    maskPool = crypto.getRandomValues(new Uint32Array(1024));
    maskAt = 0;
  }
  return maskPool[maskAt++];
}

/** Frames up to this size are cut from a shared slab. */
const SLAB_FRAME_BYTES = 4096;
const SLAB_BYTES = 64 * 1024;
let slab = new ArrayBuffer(SLAB_BYTES);
let slabWords = new Uint32Array(slab);
let slabAt = 0;

/**
 * A masked client frame, its payload 4-byte aligned so masking XORs words.
 * Small frames are views of a shared 64 KiB slab (never handed out twice):
 * no buffer of their own and no typed-array views made per frame.
 */
function encodeFrame(opcode: number, payload: Uint8Array): Uint8Array {
  const len = payload.length;
  const ext = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const at = 2 + ext + 4;
  const pad = (4 - at % 4) % 4;
  const size = pad + at + len;
  let buffer: ArrayBuffer, words: Uint32Array, base: number;
  if (size <= SLAB_FRAME_BYTES) {
    if (slabAt + size > SLAB_BYTES) {
      slab = new ArrayBuffer(SLAB_BYTES);
      slabWords = new Uint32Array(slab);
      slabAt = 0;
    }
    buffer = slab, words = slabWords, base = slabAt;
    slabAt += (size + 7) & ~7;
  } else {
    buffer = new ArrayBuffer(size);
    words = new Uint32Array(buffer, 0, size >> 2);
    base = 0;
  }
  const buf = new Uint8Array(buffer, base, size);
  buf[pad] = 0x80 | opcode;
  buf[pad + 1] = 0x80 | (ext === 0 ? len : ext === 2 ? 126 : 127);
  if (ext === 2) buf[pad + 2] = len >>> 8, buf[pad + 3] = len & 0xff;
  if (ext === 8) {
    new DataView(buffer, base + pad + 2, 8).setBigUint64(0, BigInt(len));
  }
  // The mask word is written and XORed in the platform's byte order: the
  // bytes on the wire are its bytes, and a word XOR is the byte-wise XOR.
  const m = nextMask();
  const first = (base + pad + at) >> 2; // word index of the payload
  words[first - 1] = m;
  buf.set(payload, pad + at);
  const n = len >> 2;
  for (let i = first; i < first + n; i++) words[i] ^= m;
  if (len & 3) {
    const mask = buf.subarray(pad + at - 4, pad + at);
    for (let i = n * 4; i < len; i++) buf[pad + at + i] ^= mask[i & 3];
  }
  return buf.subarray(pad);
}

function concat(parts: Uint8Array[], total: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
}

async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    encoder.encode(key + GUID),
  );
  return new Uint8Array(digest).toBase64();
}

/**
 * A WebSocket client over `Deno.connect` / `Deno.startTls` with
 * `TCP_NODELAY` and one write per frame; see the module doc.
 *
 * @example Usage
 * ```ts
 * import { DenoWebSocket } from "./ws_client.ts";
 * import assert from "node:assert/strict";
 *
 * await using server = Deno.serve({ port: 0, onListen() {} }, (req) => {
 *   const { socket, response } = Deno.upgradeWebSocket(req);
 *   socket.onopen = () => socket.close(4000, "bye");
 *   return response;
 * });
 * const ws = new DenoWebSocket(`ws://127.0.0.1:${server.addr.port}`);
 * const closed = await new Promise<CloseEvent>((r) => ws.onclose = r);
 * assert.deepEqual([closed.code, closed.reason, closed.wasClean], [4000, "bye", true]);
 * ```
 */
export class DenoWebSocket extends EventTarget implements WebSocketLike {
  static readonly CONNECTING = CONNECTING;
  static readonly OPEN = OPEN;
  static readonly CLOSING = CLOSING;
  static readonly CLOSED = CLOSED;
  readonly CONNECTING = CONNECTING;
  readonly OPEN = OPEN;
  readonly CLOSING = CLOSING;
  readonly CLOSED = CLOSED;

  readonly url: string;
  readonly #origin: string;
  binaryType: BinaryType = "blob";
  onopen: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;

  #state = CONNECTING;
  #conn?: Deno.Conn;
  #maxMessageBytes: number;
  #closeTimeoutMs: number;
  #closeTimer?: ReturnType<typeof setTimeout>;
  #closeSent = false;
  #closeReceived?: { code: number; reason: string };
  // Read buffer: bytes [start, end) are received and not yet parsed.
  #rbuf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  // Frames waiting to be written; `#flushing` settles when they are.
  #queue: Uint8Array[] = [];
  #queued = 0;
  #flushing?: Promise<void>;

  constructor(url: string | URL, options: WebSocketOptions = {}) {
    super();
    const u = new URL(url);
    if (u.protocol !== "ws:" && u.protocol !== "wss:") {
      throw new DOMException(
        `Cannot open WebSocket: the URL scheme must be ws: or wss:, got '${u.protocol}'`,
        "SyntaxError",
      );
    }
    u.hash = "";
    this.url = u.href;
    this.#origin = u.origin;
    this.#maxMessageBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
    this.#closeTimeoutMs = options.closeTimeoutMs ?? 5000;
    for (const type of ["open", "message", "error", "close"] as const) {
      this.addEventListener(type, (ev) => {
        (this[`on${type}`] as ((ev: Event) => unknown) | null)?.call(this, ev);
      });
    }
    void this.#run(u, options.caCerts);
  }

  get readyState(): number {
    return this.#state;
  }

  get bufferedAmount(): number {
    return this.#queued;
  }

  /** Queues one message; dropped once the socket is closing. */
  send(data: string | ArrayBufferLike | ArrayBufferView): void {
    if (this.#state === CONNECTING) {
      throw new DOMException(
        "Cannot send: still connecting",
        "InvalidStateError",
      );
    }
    if (this.#state !== OPEN) return;
    if (typeof data === "string") {
      this.#enqueue(encodeFrame(1, encoder.encode(data)));
    } else if (ArrayBuffer.isView(data)) {
      const bytes = new Uint8Array(
        data.buffer,
        data.byteOffset,
        data.byteLength,
      );
      this.#enqueue(encodeFrame(2, bytes));
    } else {
      this.#enqueue(encodeFrame(2, new Uint8Array(data)));
    }
  }

  /** Starts the closing handshake (or abandons a connection still opening). */
  close(code?: number, reason = ""): void {
    if (code !== undefined && code !== 1000 && (code < 3000 || code > 4999)) {
      throw new DOMException(
        `Cannot close: the code must be 1000 or 3000-4999, got ${code}`,
        "InvalidAccessError",
      );
    }
    const bytes = encoder.encode(reason);
    if (bytes.length > 123) {
      throw new DOMException(
        `Cannot close: the reason is ${bytes.length} bytes, over 123`,
        "SyntaxError",
      );
    }
    if (this.#state === CONNECTING) {
      this.#finish(1006, "", false, "closed before the connection opened");
    } else if (this.#state === OPEN) {
      this.#sendClose(code, bytes);
    }
  }

  async #run(url: URL, caCerts?: string[]): Promise<void> {
    try {
      await this.#connect(url, caCerts);
      if (this.#state !== CONNECTING) return;
      this.#state = OPEN;
      this.dispatchEvent(new Event("open"));
      await this.#readFrames();
      const { code, reason } = this.#closeReceived!;
      this.#finish(code, reason, true);
    } catch (err) {
      if (err instanceof ProtocolError && this.#state !== CLOSED) {
        this.#sendClose(err.code, encoder.encode(err.message.slice(0, 120)));
        await this.#flushing;
        this.#finish(err.code, err.message, false, err.message);
      } else if (this.#closeReceived) {
        const { code, reason } = this.#closeReceived;
        this.#finish(code, reason, true);
      } else {
        const why = (err as Error).message;
        const message = this.#state === CONNECTING
          ? `Cannot open WebSocket ${this.url}: ${why}`
          : `WebSocket ${this.url} closed abnormally: ${why}`;
        this.#finish(1006, "", false, message);
      }
    } finally {
      // close() during the opening handshake may race a connect or startTls.
      if (this.#state === CLOSED) this.#closeConn();
    }
  }

  async #connect(url: URL, caCerts?: string[]): Promise<void> {
    const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
    const tls = url.protocol === "wss:";
    const port = Number(url.port || (tls ? 443 : 80));
    const tcp = this.#conn = await Deno.connect({ hostname, port });
    tcp.setNoDelay(true);
    if (tls && this.#state === CONNECTING) {
      this.#conn = await Deno.startTls(tcp, { hostname, caCerts });
    }
    if (this.#state !== CONNECTING) return;
    const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
    await this.#writeAll(encoder.encode(
      `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
        "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    ));
    const [statusLine, ...lines] = (await this.#readHead()).split("\r\n");
    const status = statusLine.match(/^HTTP\/1\.[01] (\d{3}) ?(.*)$/);
    if (!status) {
      throw new Error(`not an HTTP answer: '${statusLine.slice(0, 80)}'`);
    }
    if (status[1] !== "101") {
      const body = lenient.decode(this.#rbuf.subarray(this.#start, this.#end));
      throw new Error(
        `the server answered ${status[1]} ${status[2]}`.trimEnd() +
          (body.trim() ? `: ${body.trim().slice(0, 200)}` : ""),
      );
    }
    const headers = new Headers();
    for (const line of lines) {
      const colon = line.indexOf(":");
      headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
    }
    const upgrade = headers.get("upgrade") ?? "";
    const connection = headers.get("connection") ?? "";
    if (
      upgrade.toLowerCase() !== "websocket" ||
      !/(^|,)\s*upgrade\s*(,|$)/i.test(connection)
    ) {
      throw new Error(
        `101 without 'Upgrade: websocket' and 'Connection: Upgrade' ` +
          `(got '${upgrade}', '${connection}')`,
      );
    }
    if (headers.get("sec-websocket-accept") !== await acceptKey(key)) {
      throw new Error("101 with a wrong Sec-WebSocket-Accept");
    }
    if (headers.has("sec-websocket-extensions")) {
      throw new Error("101 with extensions the client did not offer");
    }
  }

  /** Reads the HTTP answer's head; what follows stays in the read buffer. */
  async #readHead(): Promise<string> {
    for (;;) {
      const at = latin1.decode(this.#rbuf.subarray(0, this.#end)).indexOf(
        "\r\n\r\n",
      );
      if (at >= 0) {
        this.#start = at + 4;
        return latin1.decode(this.#rbuf.subarray(0, at));
      }
      if (this.#end === this.#rbuf.length) {
        throw new Error(`the answer's head is over ${this.#end} bytes`);
      }
      const n = await this.#conn!.read(this.#rbuf.subarray(this.#end));
      if (n === null) {
        throw new Error("the server closed the connection during the upgrade");
      }
      this.#end += n;
    }
  }

  /** The next `n` bytes, in a buffer of their own. */
  async #take(n: number): Promise<Uint8Array<ArrayBuffer>> {
    const out = new Uint8Array(n);
    let got = 0;
    for (;;) {
      const k = Math.min(n - got, this.#end - this.#start);
      out.set(this.#rbuf.subarray(this.#start, this.#start + k), got);
      this.#start += k;
      got += k;
      if (got === n) return out;
      // The buffer is empty: a big remainder is read straight into `out`.
      const direct = n - got >= this.#rbuf.length;
      const r = await this.#conn!.read(direct ? out.subarray(got) : this.#rbuf);
      if (r === null) {
        throw new Error("the connection ended without a close frame");
      }
      if (direct) got += r;
      else [this.#start, this.#end] = [0, r];
    }
  }

  /**
   * The next `n` bytes when they are already buffered (in a buffer of their
   * own), else undefined: frames that arrived together are parsed without
   * an await each.
   */
  #takeBuffered(n: number): Uint8Array<ArrayBuffer> | undefined {
    if (this.#end - this.#start < n) return undefined;
    const out = this.#rbuf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  async #readFrames(): Promise<void> {
    const parts: Uint8Array<ArrayBuffer>[] = [];
    let opcode = 0; // of the message being reassembled; 0 between messages
    let size = 0;
    while (!this.#closeReceived) {
      let b0: number, b1: number;
      if (this.#end - this.#start >= 2) {
        b0 = this.#rbuf[this.#start];
        b1 = this.#rbuf[this.#start + 1];
        this.#start += 2;
      } else [b0, b1] = await this.#take(2);
      const fin = (b0 & 0x80) !== 0;
      const op = b0 & 0x0f;
      if (b0 & 0x70) throw new ProtocolError(1002, "reserved bits set");
      if (b1 & 0x80) throw new ProtocolError(1002, "masked server frame");
      let len = b1 & 0x7f;
      if (len === 126) {
        const ext = this.#takeBuffered(2) ?? await this.#take(2);
        len = (ext[0] << 8) | ext[1];
      } else if (len === 127) {
        const ext = this.#takeBuffered(8) ?? await this.#take(8);
        const big = new DataView(ext.buffer).getBigUint64(0);
        len = big > BigInt(this.#maxMessageBytes) ? Infinity : Number(big);
      }
      if (op >= 8) {
        if (!fin || len > 125) {
          throw new ProtocolError(1002, "fragmented or long control frame");
        }
        this.#onControl(op, this.#takeBuffered(len) ?? await this.#take(len));
        continue;
      }
      if (op > 2) throw new ProtocolError(1002, `unknown opcode ${op}`);
      // A continuation exactly when a fragmented message is under way.
      if ((op === 0) !== (opcode !== 0)) {
        throw new ProtocolError(1002, `unexpected frame of opcode ${op}`);
      }
      const max = this.#maxMessageBytes;
      if (size + len > max) {
        throw new ProtocolError(1009, `message over ${max} bytes`);
      }
      if (op !== 0) opcode = op;
      parts.push(this.#takeBuffered(len) ?? await this.#take(len));
      size += len;
      if (!fin) continue;
      const data = parts.length === 1 ? parts[0] : concat(parts, size);
      const text = opcode === 1;
      parts.length = opcode = size = 0;
      this.#deliver(text, data);
    }
    // Closing handshake done: the server ends TCP first, so it keeps TIME_WAIT.
    while (await this.#conn!.read(this.#rbuf) !== null);
  }

  #deliver(text: boolean, data: Uint8Array<ArrayBuffer>): void {
    let payload: string | ArrayBuffer | Blob;
    if (text) {
      try {
        payload = utf8.decode(data);
      } catch {
        throw new ProtocolError(1007, "text message is not valid UTF-8");
      }
    } else {
      payload = this.binaryType === "blob" ? new Blob([data]) : data.buffer;
    }
    if (this.#state !== OPEN) return;
    this.dispatchEvent(
      new MessageEvent("message", { data: payload, origin: this.#origin }),
    );
  }

  #onControl(op: number, payload: Uint8Array): void {
    if (op === 9) {
      if (!this.#closeSent) this.#enqueue(encodeFrame(10, payload));
    } else if (op === 8) {
      if (payload.length === 1) throw new ProtocolError(1002, "1-byte close");
      const code = payload.length ? (payload[0] << 8) | payload[1] : 1005;
      const reserved = code < 1000 || code >= 5000 ||
        [1004, 1005, 1006, 1015].includes(code);
      if (payload.length && reserved) {
        throw new ProtocolError(1002, `invalid close code ${code}`);
      }
      let reason: string;
      try {
        reason = utf8.decode(payload.subarray(2));
      } catch {
        throw new ProtocolError(1007, "close reason is not valid UTF-8");
      }
      this.#closeReceived = { code, reason };
      this.#sendClose(code === 1005 ? undefined : code, new Uint8Array(0));
    } else if (op !== 10) {
      throw new ProtocolError(1002, `unknown control opcode ${op}`);
    }
  }

  #sendClose(code: number | undefined, reason: Uint8Array): void {
    if (this.#closeSent || !this.#conn) return;
    this.#closeSent = true;
    this.#state = CLOSING;
    const payload = new Uint8Array(code === undefined ? 0 : 2 + reason.length);
    if (code !== undefined) {
      new DataView(payload.buffer).setUint16(0, code);
      payload.set(reason, 2);
    }
    this.#enqueue(encodeFrame(8, payload));
    this.#closeTimer = setTimeout(() => {
      // A server that sent its close frame but keeps TCP open closed cleanly.
      const got = this.#closeReceived;
      const error = `no close frame within ${this.#closeTimeoutMs} ms`;
      if (got) this.#finish(got.code, got.reason, true);
      else this.#finish(1006, "", false, error);
    }, this.#closeTimeoutMs);
  }

  #enqueue(frame: Uint8Array): void {
    this.#queue.push(frame);
    this.#queued += frame.length;
    this.#flushing ??= this.#flush();
  }

  /** Writes queued frames, several small ones per write. */
  async #flush(): Promise<void> {
    try {
      while (this.#queue.length) {
        let n = 1, total = this.#queue[0].length;
        while (
          n < this.#queue.length && total + this.#queue[n].length <= 65536
        ) {
          total += this.#queue[n++].length;
        }
        const parts = this.#queue.splice(0, n);
        await this.#writeAll(n === 1 ? parts[0] : concat(parts, total));
        if (this.#state === CLOSED) return;
        this.#queued -= total;
      }
    } catch (err) {
      const error = `WebSocket ${this.url}: ${(err as Error).message}`;
      this.#finish(1006, "", false, error);
    } finally {
      // Cleared in the same tick as the last empty-queue check: no lost frame.
      this.#flushing = undefined;
    }
  }

  async #writeAll(bytes: Uint8Array): Promise<void> {
    for (let at = 0; at < bytes.length;) {
      at += await this.#conn!.write(bytes.subarray(at));
    }
  }

  #closeConn(): void {
    try {
      this.#conn?.close();
    } catch { /* already closed */ }
  }

  #finish(
    code: number,
    reason: string,
    wasClean: boolean,
    error?: string,
  ): void {
    if (this.#state === CLOSED) return;
    this.#state = CLOSED;
    clearTimeout(this.#closeTimer);
    this.#queue.length = this.#queued = 0;
    this.#closeConn();
    if (error) this.dispatchEvent(new ErrorEvent("error", { message: error }));
    this.dispatchEvent(new CloseEvent("close", { code, reason, wasClean }));
  }
}
