/**
 * Test scaffolding: a small agent gateway on loopback that follows
 * `docs/protocol.md` (handshake, records, `sub`/`ok`/`err`, `ack`, `req`/
 * `res`, `ping`/`pong`, resumption tokens, 4401/4409), with hooks to
 * misbehave (drop, mute, refuse, skip acks, sign badly). It keeps enrolled
 * keys, tokens and a per-agent outbox of unacknowledged backend messages in
 * memory. Not the real gateway: the SDK tests and examples use it so they do
 * not depend on the node.
 *
 * @module
 */
import {
  b64u,
  ed25519FromSeed,
  HandshakeError,
  type Hello,
  nodeWelcome,
  type SessionKeys,
  verifyAgentSignature,
} from "./protocol/handshake.ts";
import {
  BatchWriter,
  encodeHeader,
  type OpenedRecord,
  type RecordHeader,
  RecordOpener,
  RecordSealer,
} from "./protocol/record.ts";
import {
  backendChannel,
  parseChannel,
  signMessage,
} from "./protocol/channels.ts";
import { parseEd25519PublicKey } from "../core/security/ed25519.ts";

/** Options of {@linkcode startTestGateway}. */
export interface TestGatewayOptions {
  /** @default {"node-test"} */
  nodeId?: string;
  /** The `heartbeatMs` sent in `ready`. @default {30000} */
  heartbeatMs?: number;
  /** Channel names agents may publish/request on; `*` allows all. @default {["*"]} */
  publish?: string[];
  /** Channel names agents may subscribe to; `*` allows all. @default {["*"]} */
  subscribe?: string[];
  /** Acknowledge agent `msg` records. @default {true} */
  ackPublishes?: boolean;
  /**
   * The `acks` sent in `ready`: most message ids one agent `ack` may carry
   * (its `re` and a JSON array of further ids in its body). @default {undefined: one per ack}
   */
  acks?: number;
  /** Answers agent `req` records; a thrown `{code, message}` becomes `err`. */
  onRequest?: (req: ReceivedRecord) => unknown;
  /**
   * Send backend messages to an agent whose `auth` says `batch` ≥ 2 in
   * sealed batch frames, the messages of one microtask turn in one frame
   * (as the node does). @default {true}
   */
  sealedBatches?: boolean;
}

/** A record an agent sent. */
export interface ReceivedRecord {
  agent: string;
  sid: string;
  header: RecordHeader;
  headerBytes: Uint8Array;
  body: Uint8Array;
  /** The body as JSON (undefined when empty, the text when not JSON). */
  payload: unknown;
  signature?: Uint8Array;
}

/** One handshake as the gateway saw it. */
export interface HandshakeLog {
  agent: string;
  resumed: boolean;
  outcome: "ready" | "auth_failed";
}

/** Options of {@linkcode TestGateway.send}. */
export interface TestSendOptions {
  /** @default {a new UUID} */
  id?: string;
  /** @default {4} */
  priority?: number;
  /** The `mt` header. */
  type?: string;
  /** Sign with the node key; `"bad"` attaches a wrong signature. */
  signed?: boolean | "bad";
  /** Keep it until acknowledged and send it again on reconnect. @default {true} */
  durable?: boolean;
  /** Say `"ack": 0` in the header, as a node does for what it did not store. */
  noAck?: boolean;
}

interface Conn {
  ws: WebSocket;
  agent?: string;
  hello?: Hello;
  keys?: SessionKeys;
  sealer?: RecordSealer;
  opener?: RecordOpener;
  ready: boolean;
  muted: boolean;
  timer?: Timer;
  gone: Promise<void>;
  /** Inner records of the sealed batch of this turn (agents that read them). */
  batch?: BatchWriter;
}

interface OutboxEntry {
  header: Omit<RecordHeader, "sid">;
  body: Uint8Array;
  signed?: boolean | "bad";
}

type Timer = ReturnType<typeof setTimeout>;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function payloadOf(body: Uint8Array): unknown {
  if (body.length === 0) return undefined;
  const text = decoder.decode(body);
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function allowed(list: string[], name: string): boolean {
  return list.includes("*") || list.includes(name);
}

/** A running test gateway; see {@linkcode startTestGateway}. */
export class TestGateway implements AsyncDisposable {
  /** `ws://127.0.0.1:PORT/ws/agent`. */
  readonly url: string;
  /** The node's Ed25519 public key, base64url. */
  readonly nodeKey: string;
  readonly nodeId: string;
  /** Every record agents sent after their handshake, in order. */
  readonly received: ReceivedRecord[] = [];
  readonly handshakes: HandshakeLog[] = [];
  /** Granted permissions (mutable). */
  publish: string[];
  subscribe: string[];
  ackPublishes: boolean;
  heartbeatMs: number;
  readonly #acks?: number;
  readonly #sealedBatches: boolean;
  /** Refuse new WebSocket upgrades (503) while true. */
  refusing = false;

  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  readonly #node: {
    nodeId: string;
    privateKey: CryptoKey;
    publicRaw: Uint8Array;
  };
  readonly #onRequest?: (req: ReceivedRecord) => unknown;
  readonly #enrolled = new Map<string, Uint8Array>();
  readonly #tokens = new Map<string, string>();
  readonly #conns = new Set<Conn>();
  readonly #byAgent = new Map<string, Conn>();
  readonly #outbox = new Map<string, Map<string, OutboxEntry>>();
  readonly #waiters = new Set<() => void>();
  readonly #pending = new Map<
    string,
    (r: { type: string; payload: unknown }) => void
  >();

  constructor(
    server: Deno.HttpServer<Deno.NetAddr>,
    node: { nodeId: string; privateKey: CryptoKey; publicRaw: Uint8Array },
    options: TestGatewayOptions,
    setHandler: (h: (req: Request) => Response) => void,
  ) {
    this.#server = server;
    this.#node = node;
    this.nodeId = node.nodeId;
    this.nodeKey = b64u(node.publicRaw);
    this.url = `ws://127.0.0.1:${server.addr.port}/ws/agent`;
    this.publish = options.publish ?? ["*"];
    this.subscribe = options.subscribe ?? ["*"];
    this.ackPublishes = options.ackPublishes ?? true;
    this.heartbeatMs = options.heartbeatMs ?? 30_000;
    this.#acks = options.acks;
    this.#sealedBatches = options.sealedBatches ?? true;
    this.#onRequest = options.onRequest;
    setHandler((req) => this.#upgrade(req));
  }

  /** Enrols an agent id with its public key (any form `parseEd25519PublicKey` takes). */
  enrol(id: string, publicKey: string | Uint8Array): void {
    this.#enrolled.set(id, parseEd25519PublicKey(publicKey));
  }

  /** Invalidates every resumption token issued so far. */
  forgetResumeTokens(): void {
    this.#tokens.clear();
  }

  /** Whether `agent` has a ready connection. */
  connected(agent: string): boolean {
    return this.#byAgent.get(agent)?.ready ?? false;
  }

  /** The session id of `agent`'s ready connection. */
  sessionOf(agent: string): string | undefined {
    return this.#byAgent.get(agent)?.keys?.sid;
  }

  /** Closes `agent`'s connection with `code`. */
  kick(agent: string, code = 1011, reason = "kicked by the test"): void {
    const c = this.#byAgent.get(agent);
    if (!c) throw new Error(`${agent} is not connected`);
    this.#byAgent.delete(agent);
    c.ws.close(code, reason);
  }

  /**
   * Sends `agent` one frame that `build` makes with its connection's
   * node → agent sealer (a sealed batch, a tampered or replayed frame);
   * returns the frame.
   */
  sendFrame(
    agent: string,
    build: (
      sealer: RecordSealer,
      address: { sid: string; from: string; to: string },
    ) => Uint8Array,
  ): Uint8Array {
    const c = this.#byAgent.get(agent);
    if (!c?.ready) throw new Error(`${agent} is not connected`);
    this.#flush(c);
    const frame = build(c.sealer!, {
      sid: c.keys!.sid,
      from: `node:${this.nodeId}`,
      to: agent,
    });
    c.ws.send(frame);
    return frame;
  }

  /** From now on `agent`'s connection gets nothing and its records are ignored. */
  mute(agent: string): void {
    const c = this.#byAgent.get(agent);
    if (!c) throw new Error(`${agent} is not connected`);
    c.muted = true;
  }

  /**
   * Sends a backend `msg` on `backend.{agent}.{name}`; returns its id.
   * Durable messages are kept until acknowledged and sent again, by
   * priority, after each handshake of that agent.
   */
  send(
    agent: string,
    name: string,
    payload: unknown,
    options: TestSendOptions = {},
  ): string {
    const id = options.id ?? crypto.randomUUID();
    const header: Omit<RecordHeader, "sid"> = {
      from: `node:${this.nodeId}`,
      to: agent,
      ch: backendChannel(agent, name),
      type: "msg",
      id,
      prio: options.priority ?? 4,
      ...(options.type ? { mt: options.type } : {}),
      ...(options.noAck ? { ack: 0 } : {}),
    };
    const entry: OutboxEntry = {
      header,
      body: encoder.encode(JSON.stringify(payload)),
      signed: options.signed,
    };
    if (options.durable ?? true) {
      let box = this.#outbox.get(agent);
      if (!box) this.#outbox.set(agent, box = new Map());
      box.set(id, entry);
    }
    const c = this.#byAgent.get(agent);
    if (c?.ready) void this.#deliver(c, entry);
    return id;
  }

  /** Unacknowledged durable messages for `agent`. */
  outbox(agent: string): string[] {
    return [...this.#outbox.get(agent)?.keys() ?? []];
  }

  /** Sends a backend `req` and resolves with the agent's `res`/`err`. */
  request(
    agent: string,
    name: string,
    payload: unknown,
    options: { signed?: boolean | "bad"; timeoutMs?: number } = {},
  ): Promise<{ type: string; payload: unknown }> {
    const c = this.#byAgent.get(agent);
    if (!c?.ready) throw new Error(`${agent} is not connected`);
    const id = crypto.randomUUID();
    const answer = new Promise<{ type: string; payload: unknown }>(
      (resolve) => this.#pending.set(id, resolve),
    );
    void this.#deliver(c, {
      header: {
        from: `node:${this.nodeId}`,
        to: agent,
        ch: backendChannel(agent, name),
        type: "req",
        id,
      },
      body: encoder.encode(JSON.stringify(payload)),
      signed: options.signed,
    });
    return deadline(answer, options.timeoutMs ?? 5000, `answer to ${id}`)
      .finally(() => this.#pending.delete(id));
  }

  /** Pings `agent` and resolves on its pong. */
  ping(agent: string): Promise<unknown> {
    const c = this.#byAgent.get(agent);
    if (!c?.ready) throw new Error(`${agent} is not connected`);
    const id = crypto.randomUUID();
    const answer = new Promise<{ type: string; payload: unknown }>(
      (resolve) => this.#pending.set(id, resolve),
    );
    this.#seal(c, {
      from: `node:${this.nodeId}`,
      to: c.agent!,
      ch: "",
      type: "ping",
      id,
    }, new Uint8Array(0));
    return deadline(answer, 5000, "pong").finally(() =>
      this.#pending.delete(id)
    );
  }

  /** Resolves with the first (past or future) received record matching `pred`. */
  async waitFor(
    pred: (r: ReceivedRecord) => boolean,
    what = "a matching record",
    timeoutMs = 5000,
  ): Promise<ReceivedRecord> {
    return await this.until(() => this.received.find(pred), what, timeoutMs);
  }

  /** Resolves when `check` returns a value, re-checked on every gateway event. */
  until<T>(
    check: () => T | undefined | false,
    what: string,
    timeoutMs = 5000,
  ): Promise<T> {
    const now = check();
    if (now) return Promise.resolve(now);
    let waiter!: () => void;
    const p = new Promise<T>((resolve) => {
      waiter = () => {
        const v = check();
        if (v) resolve(v);
      };
      this.#waiters.add(waiter);
    });
    return deadline(p, timeoutMs, what).finally(() =>
      this.#waiters.delete(waiter)
    );
  }

  #changed(): void {
    for (const w of [...this.#waiters]) w();
  }

  /** Closes every connection and the server. */
  async close(): Promise<void> {
    for (const c of this.#conns) {
      clearTimeout(c.timer);
      try {
        c.ws.close(1001, "gateway stopping");
      } catch { /* closed */ }
    }
    await Promise.all([...this.#conns].map((c) => c.gone));
    await this.#server.shutdown();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ----------------------------------------------------------- protocol

  #upgrade(req: Request): Response {
    if (new URL(req.url).pathname !== "/ws/agent") {
      return new Response("not found", { status: 404 });
    }
    if (this.refusing) return new Response("refusing", { status: 503 });
    const { socket, response } = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
    socket.binaryType = "arraybuffer";
    const gone = Promise.withResolvers<void>();
    const conn: Conn = {
      ws: socket,
      ready: false,
      muted: false,
      gone: gone.promise,
    };
    this.#conns.add(conn);
    conn.timer = setTimeout(
      () => socket.close(4408, "handshake timeout"),
      5000,
    );
    let chain = Promise.resolve();
    socket.onmessage = (ev) => {
      chain = chain.then(() => this.#onFrame(conn, ev.data)).catch((err) => {
        try {
          socket.close(4400, String((err as Error).message).slice(0, 100));
        } catch { /* closed */ }
      });
    };
    socket.onclose = () => {
      clearTimeout(conn.timer);
      this.#conns.delete(conn);
      if (conn.agent && this.#byAgent.get(conn.agent) === conn) {
        this.#byAgent.delete(conn.agent);
      }
      gone.resolve();
      this.#changed();
    };
    return response;
  }

  async #onFrame(c: Conn, data: unknown): Promise<void> {
    if (c.muted) return;
    if (!c.hello) {
      if (typeof data !== "string") {
        c.ws.close(1003, "binary frame before the welcome");
        return;
      }
      let r;
      try {
        r = await nodeWelcome(data, this.#node);
      } catch (err) {
        if (err instanceof HandshakeError) {
          c.ws.close(4400, err.message.slice(0, 100));
          return;
        }
        throw err;
      }
      c.hello = r.hello;
      c.keys = r.keys;
      c.sealer = new RecordSealer(r.keys.s2c);
      c.opener = new RecordOpener(r.keys.c2s);
      c.ws.send(r.text);
      return;
    }
    if (typeof data === "string") {
      c.ws.close(1003, "text frame after the welcome");
      return;
    }
    let rec: OpenedRecord;
    try {
      rec = c.opener!.open(new Uint8Array(data as ArrayBuffer));
    } catch (err) {
      c.ws.close(4403, (err as Error).message.slice(0, 100));
      return;
    }
    const h = rec.header;
    if (!c.ready) {
      if (h.type !== "auth") {
        c.ws.close(4400, "record before ready");
        return;
      }
      await this.#auth(c, rec);
      return;
    }
    if (h.sid !== c.keys!.sid || h.from !== c.agent || h.to !== "backend") {
      c.ws.close(4403, "re-addressed record");
      return;
    }
    const got: ReceivedRecord = {
      agent: c.agent!,
      sid: h.sid,
      header: h,
      headerBytes: rec.headerBytes,
      body: rec.body,
      payload: payloadOf(rec.body),
      signature: rec.signature,
    };
    this.received.push(got);
    this.#onRecord(c, got);
    this.#changed();
  }

  async #auth(c: Conn, rec: OpenedRecord): Promise<void> {
    const agent = c.hello!.agent;
    const resumed = !!c.hello!.resume;
    const body = payloadOf(rec.body) as Record<string, unknown> | undefined;
    let ok = false;
    const key = this.#enrolled.get(agent);
    if (key && body && typeof body === "object") {
      if (resumed) {
        const token = body.resume;
        ok = typeof token === "string" && this.#tokens.get(token) === agent;
        if (typeof token === "string") this.#tokens.delete(token);
      } else {
        ok = await verifyAgentSignature(key, c.keys!.th2, body.sig);
      }
    }
    this.handshakes.push({
      agent,
      resumed,
      outcome: ok ? "ready" : "auth_failed",
    });
    this.#changed();
    if (!ok) {
      c.ws.close(4401, "authentication failed");
      return;
    }
    clearTimeout(c.timer);
    if (
      this.#sealedBatches && typeof body?.batch === "number" && body.batch >= 2
    ) c.batch = new BatchWriter();
    const previous = this.#byAgent.get(agent);
    if (previous) previous.ws.close(4409, "replaced");
    c.agent = agent;
    c.ready = true;
    this.#byAgent.set(agent, c);
    const token = b64u(crypto.getRandomValues(new Uint8Array(24)));
    this.#tokens.set(token, agent);
    this.#seal(
      c,
      {
        from: `node:${this.nodeId}`,
        to: agent,
        ch: "",
        type: "ready",
        id: crypto.randomUUID(),
      },
      encoder.encode(JSON.stringify({
        sid: c.keys!.sid,
        node: this.nodeId,
        resume: token,
        resumeExpiresAt: Date.now() + 86_400_000,
        heartbeatMs: this.heartbeatMs,
        ...(this.#acks === undefined ? {} : { acks: this.#acks }),
      })),
    );
    const waiting = [...this.#outbox.get(agent)?.values() ?? []]
      .sort((a, b) => (b.header.prio as number) - (a.header.prio as number));
    for (const e of waiting) await this.#deliver(c, e);
    this.#changed();
  }

  #onRecord(c: Conn, r: ReceivedRecord): void {
    const h = r.header;
    const reply = (type: string, body?: unknown) =>
      this.#seal(
        c,
        {
          from: `node:${this.nodeId}`,
          to: c.agent!,
          ch: h.ch,
          type,
          id: crypto.randomUUID(),
          re: h.id,
        },
        body === undefined
          ? new Uint8Array(0)
          : encoder.encode(JSON.stringify(body)),
      );
    const ch = parseChannel(h.ch);
    switch (h.type) {
      case "ping":
        this.#seal(c, {
          from: `node:${this.nodeId}`,
          to: c.agent!,
          ch: "",
          type: "pong",
          id: crypto.randomUUID(),
          re: h.id,
        }, new Uint8Array(0));
        return;
      case "msg":
      case "req": {
        if (ch?.side !== "agent" || ch.id !== c.agent) {
          c.ws.close(4403, "not the agent's own channel");
          return;
        }
        if (!allowed(this.publish, ch.name)) {
          reply("err", { code: "forbidden", message: `may not use ${h.ch}` });
          return;
        }
        if (h.type === "msg") {
          if (this.ackPublishes) reply("ack");
          return;
        }
        if (!this.#onRequest) {
          reply("err", { code: "no_handler", message: "no backend handler" });
          return;
        }
        Promise.resolve().then(() => this.#onRequest!(r)).then(
          (v) => reply("res", v ?? null),
          (err) =>
            reply("err", {
              code: typeof err?.code === "string" ? err.code : "unavailable",
              message: String(err?.message ?? err),
            }),
        );
        return;
      }
      case "sub":
        if (
          ch?.side !== "backend" || ch.id !== c.agent ||
          !allowed(this.subscribe, ch.name)
        ) {
          reply("err", {
            code: "forbidden",
            message: `may not subscribe to ${h.ch}`,
          });
        } else reply("ok");
        return;
      case "unsub":
        reply("ok");
        return;
      case "ack": {
        const box = this.#outbox.get(c.agent!);
        box?.delete(String(h.re));
        if (Array.isArray(r.payload)) {
          for (const re of r.payload) box?.delete(String(re));
        }
        return;
      }
      case "pong":
      case "res":
      case "err":
        this.#pending.get(String(h.re))?.({ type: h.type, payload: r.payload });
        return;
    }
  }

  async #deliver(c: Conn, e: OutboxEntry): Promise<void> {
    if (!c.ready || c.muted) return;
    const header = { sid: c.keys!.sid, ...e.header } as RecordHeader;
    let signature: Uint8Array | undefined;
    if (e.signed === "bad") {
      signature = crypto.getRandomValues(new Uint8Array(64));
    } else if (e.signed) {
      signature = await signMessage(
        this.#node.privateKey,
        encodeHeader(header),
        e.body,
      );
    }
    if (c.ws.readyState !== WebSocket.OPEN) return;
    if (c.batch) {
      if (c.batch.count === 0) queueMicrotask(() => this.#flush(c));
      c.batch.add(header, e.body, signature);
      return;
    }
    c.ws.send(c.sealer!.seal(header, e.body, signature));
  }

  /** Sends the sealed batch of this turn, if any. */
  #flush(c: Conn): void {
    if (!c.batch || c.batch.count === 0) return;
    const frame = c.sealer!.sealBatch(c.batch.bytes());
    c.batch.clear();
    if (c.ws.readyState === WebSocket.OPEN) c.ws.send(frame);
  }

  #seal(
    c: Conn,
    fields: Omit<RecordHeader, "sid">,
    body: Uint8Array,
  ): void {
    if (c.muted || c.ws.readyState !== WebSocket.OPEN) return;
    this.#flush(c); // what waits for a batch goes first
    c.ws.send(
      c.sealer!.seal({ sid: c.keys!.sid, ...fields } as RecordHeader, body),
    );
  }
}

function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Starts a {@linkcode TestGateway} on a free loopback port. */
export async function startTestGateway(
  options: TestGatewayOptions = {},
): Promise<TestGateway> {
  const seed = crypto.getRandomValues(new Uint8Array(32));
  const { privateKey, publicRaw } = await ed25519FromSeed(seed);
  let handler: (req: Request) => Response = () =>
    new Response("starting", { status: 503 });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => handler(req),
  );
  return new TestGateway(
    server,
    { nodeId: options.nodeId ?? "node-test", privateKey, publicRaw },
    options,
    (h) => handler = h,
  );
}
