/**
 * A minimal agent-side protocol client for the gateway tests, built directly
 * on handshake.ts and record.ts (not on the SDK), so tests can craft every
 * malformed, replayed, reordered or re-addressed input they need.
 *
 * Two frame transports: the platform `WebSocket`, and a raw TCP one that
 * can send what a WebSocket API cannot (a text frame that is not UTF-8) and
 * can stop reading (a slow consumer).
 *
 * @module
 */
import {
  agentFinish,
  agentHello,
  b64u,
  type Hello,
  type SessionKeys,
} from "../../sdk/protocol/handshake.ts";
import {
  encodeHeader,
  type OpenedRecord,
  readInnerRecord,
  type RecordHeader,
  RecordOpener,
  RecordSealer,
  SEALED_BATCH_TYPE,
} from "../../sdk/protocol/record.ts";
import { signMessage } from "../../sdk/protocol/channels.ts";
import { ed25519DidKey } from "../../core/security/ed25519.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One received frame. */
export type Frame = { text: string } | { binary: Uint8Array };

/** How a socket ended. */
export interface Closed {
  code: number;
  reason: string;
}

/** A frame-level connection. */
export interface FrameSocket {
  sendText(text: string): void;
  sendBinary(bytes: Uint8Array): void;
  /** The next frame; rejects when the socket closes first or after `ms`. */
  next(ms?: number): Promise<Frame>;
  /** Resolves once closed (code 1006 when the peer vanished without a close frame). */
  readonly closed: Promise<Closed>;
  close(code?: number, reason?: string): void;
}

class Inbox {
  #frames: Frame[] = [];
  #waiters: ((f: Frame | null) => void)[] = [];
  #done = false;
  push(f: Frame) {
    const w = this.#waiters.shift();
    if (w) w(f);
    else this.#frames.push(f);
  }
  end() {
    this.#done = true;
    for (const w of this.#waiters.splice(0)) w(null);
  }
  next(ms: number, closed: Promise<Closed>): Promise<Frame> {
    const f = this.#frames.shift();
    if (f) return Promise.resolve(f);
    if (this.#done) {
      return closed.then((c) => {
        throw new Error(`socket closed (${c.code} ${c.reason})`);
      });
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new Error(`no frame within ${ms} ms`));
      }, ms);
      const waiter = (f: Frame | null) => {
        clearTimeout(timer);
        if (f) resolve(f);
        else {
          closed.then((c) =>
            reject(new Error(`socket closed (${c.code} ${c.reason})`))
          );
        }
      };
      this.#waiters.push(waiter);
    });
  }
}

/** The platform WebSocket as a {@linkcode FrameSocket}. */
export async function openWebSocket(url: string): Promise<FrameSocket> {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const inbox = new Inbox();
  const closed = new Promise<Closed>((resolve) => {
    ws.onclose = (e) => {
      inbox.end();
      resolve({ code: e.code, reason: e.reason });
    };
  });
  ws.onmessage = (e) =>
    inbox.push(
      typeof e.data === "string"
        ? { text: e.data }
        : { binary: new Uint8Array(e.data as ArrayBuffer) },
    );
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`cannot open ${url}`));
  });
  ws.onerror = () => {};
  return {
    sendText: (t) => ws.send(t),
    sendBinary: (b) => ws.send(b),
    next: (ms = 5000) => inbox.next(ms, closed),
    closed,
    close: (code = 1000, reason = "") => {
      try {
        ws.close(code, reason);
      } catch { /* closed */ }
    },
  };
}

/**
 * A WebSocket client over a raw TCP connection: frames are masked and sent
 * as given (so a text frame may hold any bytes), and reading can be paused.
 */
export class TcpFrameSocket implements FrameSocket {
  readonly #conn: Deno.Conn;
  readonly #inbox = new Inbox();
  readonly closed: Promise<Closed>;
  #resolveClosed!: (c: Closed) => void;
  #paused = false;
  #resume?: () => void;

  private constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.closed = new Promise((r) => (this.#resolveClosed = r));
  }

  /** Connects to `url` (`ws://host:port/path`) and upgrades. */
  static async open(url: string): Promise<TcpFrameSocket> {
    const u = new URL(url);
    const conn = await Deno.connect({
      hostname: u.hostname,
      port: Number(u.port),
    });
    const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
    await writeAll(
      conn,
      encoder.encode(
        `GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ),
    );
    // Read the response head byte by byte up to the blank line.
    let head = "";
    const one = new Uint8Array(1);
    while (!head.endsWith("\r\n\r\n")) {
      const n = await conn.read(one);
      if (n === null) throw new Error("connection closed during upgrade");
      head += String.fromCharCode(one[0]);
    }
    if (!head.startsWith("HTTP/1.1 101")) {
      conn.close();
      throw new Error(`upgrade refused: ${head.split("\r\n")[0]}`);
    }
    const s = new TcpFrameSocket(conn);
    s.#read();
    return s;
  }

  /** Stops reading from the socket (the peer's send buffer fills up). */
  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    this.#paused = false;
    this.#resume?.();
  }

  async #read(): Promise<void> {
    let buf = new Uint8Array(0);
    const chunk = new Uint8Array(64 * 1024);
    let closeInfo: Closed = { code: 1006, reason: "" };
    try {
      for (;;) {
        if (this.#paused) {
          await new Promise<void>((r) => (this.#resume = r));
        }
        const n = await this.#conn.read(chunk);
        if (n === null) break;
        const next = new Uint8Array(buf.length + n);
        next.set(buf);
        next.set(chunk.subarray(0, n), buf.length);
        buf = next;
        for (;;) {
          const f = parseFrame(buf);
          if (!f) break;
          buf = buf.slice(f.size);
          if (f.opcode === 0x8) {
            const code = f.payload.length >= 2
              ? (f.payload[0] << 8) | f.payload[1]
              : 1005;
            closeInfo = { code, reason: decoder.decode(f.payload.subarray(2)) };
            // Answer it, so the server ends the TCP connection.
            this.#frame(0x8, f.payload.subarray(0, 2));
            throw new Error("closed");
          }
          if (f.opcode === 0x1) {
            this.#inbox.push({ text: decoder.decode(f.payload) });
          } else if (f.opcode === 0x2) {
            this.#inbox.push({ binary: f.payload });
          }
        }
      }
    } catch { /* closed */ }
    try {
      this.#conn.close();
    } catch { /* closed */ }
    this.#inbox.end();
    this.#resolveClosed(closeInfo);
  }

  #frame(opcode: number, payload: Uint8Array): void {
    const mask = crypto.getRandomValues(new Uint8Array(4));
    const len = payload.length;
    const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
    const out = new Uint8Array(head + 4 + len);
    out[0] = 0x80 | opcode;
    if (len < 126) out[1] = 0x80 | len;
    else if (len < 65536) {
      out[1] = 0x80 | 126;
      new DataView(out.buffer).setUint16(2, len);
    } else {
      out[1] = 0x80 | 127;
      new DataView(out.buffer).setBigUint64(2, BigInt(len));
    }
    out.set(mask, head);
    for (let i = 0; i < len; i++) out[head + 4 + i] = payload[i] ^ mask[i & 3];
    writeAll(this.#conn, out).catch(() => {});
  }

  /** Sends a text frame holding exactly `bytes` (which need not be UTF-8). */
  sendTextBytes(bytes: Uint8Array): void {
    this.#frame(0x1, bytes);
  }

  sendText(text: string): void {
    this.#frame(0x1, encoder.encode(text));
  }

  sendBinary(bytes: Uint8Array): void {
    this.#frame(0x2, bytes);
  }

  next(ms = 5000): Promise<Frame> {
    return this.#inbox.next(ms, this.closed);
  }

  close(code = 1000): void {
    const p = new Uint8Array(2);
    new DataView(p.buffer).setUint16(0, code);
    this.#frame(0x8, p);
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

function parseFrame(
  buf: Uint8Array,
): { opcode: number; payload: Uint8Array; size: number } | undefined {
  if (buf.length < 2) return undefined;
  const opcode = buf[0] & 0x0f;
  let len = buf[1] & 0x7f;
  let at = 2;
  if (len === 126) {
    if (buf.length < 4) return undefined;
    len = (buf[2] << 8) | buf[3];
    at = 4;
  } else if (len === 127) {
    if (buf.length < 10) return undefined;
    len = Number(new DataView(buf.buffer, buf.byteOffset).getBigUint64(2));
    at = 10;
  }
  if (buf[1] & 0x80) at += 4; // servers do not mask, but be lenient
  if (buf.length < at + len) return undefined;
  return { opcode, payload: buf.slice(at, at + len), size: at + len };
}

// --------------------------------------------------------------- identity

/** An agent identity: did:key id and Ed25519 keys. */
export interface AgentKey {
  id: string;
  privateKey: CryptoKey;
  publicRaw: Uint8Array;
  /** base64url of the raw public key. */
  publicKey: string;
}

/** A fresh agent key with its did:key id (or `id` when given). */
export async function newAgentKey(id?: string): Promise<AgentKey> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const publicRaw = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  return {
    id: id ?? ed25519DidKey(publicRaw),
    privateKey: pair.privateKey,
    publicRaw,
    publicKey: b64u(publicRaw),
  };
}

// --------------------------------------------------------------- protocol

/** The frames an agent sent during its handshake (to replay them). */
export interface HandshakeCapture {
  hello: string;
  auth: Uint8Array;
}

/** Options for {@linkcode handshake}. */
export interface HandshakeOptions {
  /** Prove the agent with this resumption token instead of a signature. */
  resume?: string;
  /** Signing key (default: the agent key's); a different one = wrong key. */
  signingKey?: CryptoKey;
  /** Answer the node's pings. @default {true} */
  autoPong?: boolean;
  /** Filled with the frames sent. */
  capture?: Partial<HandshakeCapture>;
  /** The `batch` of the `auth` body (`true`: batched frames, 2: sealed batch frames). */
  batch?: boolean | number;
}

/** An authenticated session over a frame socket. */
export class AgentSession {
  readonly socket: FrameSocket;
  readonly agentId: string;
  readonly keys: SessionKeys;
  readonly sealer: RecordSealer;
  readonly opener: RecordOpener;
  readonly ready: {
    sid: string;
    node: string;
    resume: string;
    resumeExpiresAt: number;
    heartbeatMs: number;
    sessionExpiresAt: number;
    /** Most message ids one ack record may carry. */
    acks?: number;
  };
  readonly nodeKey: string;
  /** Every record received (after `ready`), in order. */
  readonly received: OpenedRecord[] = [];
  /** The first byte of every binary frame received (after `ready`), in order. */
  readonly frameTypes: number[] = [];
  #waiters: {
    pred: (r: OpenedRecord) => boolean;
    resolve: (r: OpenedRecord) => void;
  }[] = [];
  #taken = new Set<OpenedRecord>();
  #autoPong: boolean;
  #signingKey?: CryptoKey;

  constructor(
    socket: FrameSocket,
    agentId: string,
    keys: SessionKeys,
    ready: AgentSession["ready"],
    opener: RecordOpener,
    sealer: RecordSealer,
    nodeKey: string,
    options: { autoPong?: boolean; signingKey?: CryptoKey },
  ) {
    this.socket = socket;
    this.agentId = agentId;
    this.keys = keys;
    this.ready = ready;
    this.opener = opener;
    this.sealer = sealer;
    this.nodeKey = nodeKey;
    this.#autoPong = options.autoPong ?? true;
    this.#signingKey = options.signingKey;
    this.#loop();
  }

  async #loop(): Promise<void> {
    for (;;) {
      let f: Frame;
      try {
        f = await this.socket.next(3_600_000);
      } catch {
        return;
      }
      if (!("binary" in f)) continue;
      this.frameTypes.push(f.binary[0]);
      for (const rec of this.#records(f.binary)) this.#onRecord(rec);
    }
  }

  /** The records of a frame (plain, batched or sealed batch); none when refused. */
  #records(frame: Uint8Array): OpenedRecord[] {
    try {
      if (frame[0] === 2) {
        const v = new DataView(frame.buffer, frame.byteOffset, frame.length);
        const out: OpenedRecord[] = [];
        for (let at = 1; at < frame.length;) {
          const len = v.getUint32(at);
          out.push(this.opener.open(frame.subarray(at + 4, at + 4 + len)));
          at += 4 + len;
        }
        return out;
      }
      if (frame[0] === SEALED_BATCH_TYPE) {
        const { plain, epoch, seq } = this.opener.openBatch(frame);
        const context = {
          sid: this.keys.sid,
          from: `node:${this.ready.node}`,
          to: this.agentId,
          epoch,
          seq,
        };
        const out: OpenedRecord[] = [];
        for (let at = 0; at < plain.length;) {
          const r = readInnerRecord(plain, at, context);
          out.push(r.record);
          at = r.next;
        }
        return out;
      }
      return [this.opener.open(frame)];
    } catch {
      return [];
    }
  }

  #onRecord(rec: OpenedRecord): void {
    this.received.push(rec);
    if (this.#autoPong && rec.header.type === "ping") {
      this.send({ type: "pong", ch: "", re: rec.header.id });
    }
    for (const w of [...this.#waiters]) {
      if (!this.#taken.has(rec) && w.pred(rec)) {
        this.#taken.add(rec);
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(rec);
      }
    }
  }

  /** A header from this agent with `sid`, `from`, `to` filled in. */
  header(
    fields: Partial<RecordHeader> & { type: string },
  ): RecordHeader {
    return {
      sid: this.keys.sid,
      from: this.agentId,
      to: "backend",
      ch: "",
      id: crypto.randomUUID(),
      ...fields,
    } as RecordHeader;
  }

  /** Seals a record (not sent). */
  seal(
    fields: Partial<RecordHeader> & { type: string },
    body: unknown = undefined,
    signature?: Uint8Array,
  ): Uint8Array {
    return this.sealer.seal(this.header(fields), bodyBytes(body), signature);
  }

  /** Seals and sends a record; returns its header and frame. */
  send(
    fields: Partial<RecordHeader> & { type: string },
    body: unknown = undefined,
  ): { header: RecordHeader; frame: Uint8Array } {
    const header = this.header(fields);
    const frame = this.sealer.seal(header, bodyBytes(body));
    this.socket.sendBinary(frame);
    return { header, frame };
  }

  /** Sends a record with a per-message signature by the agent key. */
  async sendSigned(
    fields: Partial<RecordHeader> & { type: string },
    body: unknown,
    key = this.#signingKey,
  ): Promise<RecordHeader> {
    const header = this.header(fields);
    const bytes = bodyBytes(body);
    const sig = await signMessage(key!, encodeHeader(header), bytes);
    this.socket.sendBinary(this.sealer.seal(header, bytes, sig));
    return header;
  }

  /** The first record (received before or after the call) matching `pred` not yet taken. */
  recv(
    pred: (r: OpenedRecord) => boolean,
    ms = 5000,
    what = "a record",
  ): Promise<OpenedRecord> {
    const seen = this.received.find((r) => !this.#taken.has(r) && pred(r));
    if (seen) {
      this.#taken.add(seen);
      return Promise.resolve(seen);
    }
    return new Promise((resolve, reject) => {
      const w = {
        pred,
        resolve: (r: OpenedRecord) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        reject(new Error(`no ${what} within ${ms} ms`));
      }, ms);
      this.#waiters.push(w);
    });
  }

  /** The reply (`re` = `id`) to one of our records. */
  reply(id: string, ms = 5000): Promise<OpenedRecord> {
    return this.recv((r) => r.header.re === id, ms, `reply to ${id}`);
  }

  /** Subscribes to `backend.{me}.{name}`; resolves with the `ok`/`err` record. */
  async sub(name: string): Promise<OpenedRecord> {
    const { header } = this.send({
      type: "sub",
      ch: `backend.${this.agentId}.${name}`,
    });
    return await this.reply(header.id);
  }

  /** Publishes on `agent.{me}.{name}`; resolves with the `ack`/`err` record. */
  async publish(name: string, payload: unknown): Promise<OpenedRecord> {
    const { header } = this.send(
      { type: "msg", ch: `agent.${this.agentId}.${name}` },
      payload,
    );
    return await this.reply(header.id);
  }

  /** Sends `req` on `agent.{me}.{name}`; resolves with the `res`/`err` record. */
  async request(name: string, payload: unknown): Promise<OpenedRecord> {
    const { header } = this.send(
      { type: "req", ch: `agent.${this.agentId}.${name}` },
      payload,
    );
    return await this.reply(header.id);
  }

  /** The next `msg` on backend channel `name` (not yet taken). */
  message(name: string, ms = 5000): Promise<OpenedRecord> {
    return this.recv(
      (r) =>
        r.header.type === "msg" &&
        r.header.ch === `backend.${this.agentId}.${name}`,
      ms,
      `a message on ${name}`,
    );
  }

  /** Acks a received message. */
  ack(rec: OpenedRecord): void {
    this.send({ type: "ack", ch: rec.header.ch, re: rec.header.id });
  }

  /** Round trip: ping → pong. */
  async ping(ms = 5000): Promise<void> {
    const { header } = this.send({ type: "ping" });
    await this.reply(header.id, ms);
  }

  close(code = 1000): void {
    this.socket.close(code);
  }
}

/** JSON body bytes (a Uint8Array is sent as is; undefined = empty). */
export function bodyBytes(body: unknown): Uint8Array {
  if (body instanceof Uint8Array) return body;
  return body === undefined ? new Uint8Array(0) : encoder.encode(
    JSON.stringify(body),
  );
}

/** The JSON of a record body. */
export function json(rec: OpenedRecord): unknown {
  return rec.body.length ? JSON.parse(decoder.decode(rec.body)) : undefined;
}

/** Sends the hello, checks the welcome; returns the state to send `auth` with. */
export async function startHandshake(
  socket: FrameSocket,
  agent: AgentKey,
  options: HandshakeOptions = {},
): Promise<
  {
    hello: Hello;
    keys: SessionKeys;
    signature?: Uint8Array;
    welcomeKey: string;
  }
> {
  const state = await agentHello(agent.id, { resume: !!options.resume });
  socket.sendText(state.text);
  if (options.capture) options.capture.hello = state.text;
  const f = await socket.next();
  if (!("text" in f)) throw new Error("expected a text welcome");
  const { keys, signature, welcome } = await agentFinish(state, f.text, {
    signingKey: options.resume
      ? undefined
      : (options.signingKey ?? agent.privateKey),
  });
  return { hello: state.hello, keys, signature, welcomeKey: welcome.key };
}

/** Completes a handshake as `agent` on `socket`; throws if the node refuses. */
export async function handshake(
  socket: FrameSocket,
  agent: AgentKey,
  options: HandshakeOptions = {},
): Promise<AgentSession> {
  const { keys, signature, welcomeKey } = await startHandshake(
    socket,
    agent,
    options,
  );
  const sealer = new RecordSealer(keys.c2s);
  const opener = new RecordOpener(keys.s2c, { maxRecordBytes: 64 << 20 });
  const body = {
    ...(options.resume
      ? { resume: options.resume }
      : { sig: b64u(signature!) }),
    ...(options.batch === undefined ? {} : { batch: options.batch }),
  };
  const auth = sealer.seal(
    {
      sid: keys.sid,
      from: agent.id,
      to: "backend",
      ch: "",
      type: "auth",
      id: "auth",
    },
    encoder.encode(JSON.stringify(body)),
  );
  if (options.capture) options.capture.auth = auth;
  socket.sendBinary(auth);
  const f = await socket.next();
  if (!("binary" in f)) throw new Error("expected the ready record");
  const ready = opener.open(f.binary);
  if (ready.header.type !== "ready") {
    throw new Error(`expected ready, got ${ready.header.type}`);
  }
  return new AgentSession(
    socket,
    agent.id,
    keys,
    JSON.parse(decoder.decode(ready.body)),
    opener,
    sealer,
    welcomeKey,
    { autoPong: options.autoPong, signingKey: agent.privateKey },
  );
}

/** Opens `ws://…/ws/agent` and completes the handshake. */
export async function connect(
  url: string,
  agent: AgentKey,
  options: HandshakeOptions = {},
): Promise<AgentSession> {
  const socket = await openWebSocket(url);
  try {
    return await handshake(socket, agent, options);
  } catch (err) {
    socket.close();
    throw err;
  }
}
