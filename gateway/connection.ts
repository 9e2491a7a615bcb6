/**
 * One agent's socket on the gateway: the handshake state machine
 * (`docs/protocol.md`), record checks, channel permissions, heartbeats,
 * presence, and the delivery of the agent's durable queue.
 *
 * States: `hello` (waiting for the text hello) → `welcoming` (signing the
 * welcome) → `auth` (waiting for the auth record) → `authenticating`
 * (checking it) → `ready` → `closed`. Any frame in `welcoming` or
 * `authenticating`, a text frame in `auth`, or a record before `ready` is a
 * protocol violation (4400). Frames over the size limit are closed with 1009
 * before anything is parsed or decrypted.
 *
 * Delivery: the connection claims from the queues of the durable channels
 * the agent subscribed to (at most `maxInFlight` un-acked messages, highest
 * priority first), pushes each as a `msg` record whose id is the queue
 * message id, and acks the queue message only when the agent acks the
 * record. No ack within `ackTimeoutMs` → nak (retried with backoff; the
 * DLQ after `maxAttempts`). A closed connection naks what it still holds,
 * so nothing is lost.
 *
 * @module
 */
import type { Config } from "../core/config.ts";
import type { Envelope } from "../core/envelope.ts";
import type { Logger } from "../core/observe/logger.ts";
import type { NodeIdentity } from "../core/plugin.ts";
import type { Router } from "../core/router.ts";
import type { Delivery, DurableQueue } from "../core/state/queue.ts";
import type { SessionStore } from "../core/state/sessions.ts";
import { backoffDelay } from "../core/resilience/backoff.ts";
import {
  HandshakeError,
  type Hello,
  type NodeIdentityKey,
  nodeWelcome,
  type SessionKeys,
  verifyAgentSignature,
} from "../sdk/protocol/handshake.ts";
import {
  encodeHeader,
  MAX_HEADER_BYTES,
  RECORD_PREFIX_BYTES,
  RecordError,
  type RecordHeader,
  RecordOpener,
  RecordSealer,
  TAG_BYTES,
} from "../sdk/protocol/record.ts";
import {
  backendChannel,
  type Channel,
  parseChannel,
  signMessage,
  verifyMessageSignature,
} from "../sdk/protocol/channels.ts";
import { agentKeyBytes, type AgentRecord, getAgent } from "./enrolment.ts";
import type { PresenceRecord, PresenceStore } from "./presence.ts";
import type { Outbox, OutboxMessage } from "./outbox.ts";
import {
  canPublish,
  canSubscribe,
  channelPolicy,
  isDurable,
} from "./policy.ts";

/** The gateway's config block. */
export type GatewayConfig = Config["gateway"];

/** `err` codes (docs/protocol.md). */
export type ErrorCode =
  | "forbidden"
  | "bad_request"
  | "unavailable"
  | "timeout"
  | "no_handler";

/** A request from an agent (`req` on `agent.{id}.{name}`) as a handler sees it. */
export interface AgentRequest {
  agentId: string;
  /** The agent's enrolled roles. */
  roles: readonly string[];
  /** The full channel, `agent.{id}.{name}`. */
  channel: string;
  /** The channel name after `agent.{id}.`. */
  name: string;
  /** The request body (parsed JSON). */
  payload: unknown;
  /** The envelope also published on the router. */
  envelope: Envelope;
}

/** What the gateway counts (prefix `plexus_gateway_`). */
export interface GatewayMetrics {
  handshake(outcome: "ok" | "refused", reason: string): void;
  message(direction: "in" | "out", bytes: number): void;
  refused(reason: string): void;
  closed(code: number): void;
  delivery(outcome: string): void;
  /** Sets (or, with undefined, drops) an agent's queue depth series. */
  queueDepth(agentId: string, depth: number | undefined): void;
}

/** What a connection needs from its gateway. */
export interface ConnectionContext {
  config: GatewayConfig;
  node: NodeIdentity;
  identity: NodeIdentityKey;
  kv: Deno.Kv;
  router: Router;
  log: Logger;
  metrics: GatewayMetrics;
  presence: PresenceStore;
  outbox: Outbox;
  sessions: SessionStore;
  /** Runs the backend handler of an agent's request; rejects with a {@linkcode GatewayRequestError} or any error. */
  request(req: AgentRequest): Promise<unknown>;
  /** The connection authenticated: make it the agent's one connection. */
  attach(conn: AgentConnection, previous: PresenceRecord | null): void;
  /** The connection ended. */
  detach(conn: AgentConnection): void;
  /**
   * Whether `agentId` already sent a `msg` with this id lately (an agent
   * resends un-acked messages after a reconnect); records it if not.
   */
  seenInbound(agentId: string, id: string): boolean;
}

/** A refused agent request, with the `err` code the agent receives. */
export class GatewayRequestError extends Error {
  override name = "GatewayRequestError";
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

type State =
  | "hello"
  | "welcoming"
  | "auth"
  | "authenticating"
  | "ready"
  | "closed";

interface InFlight {
  name: string;
  queue: DurableQueue<OutboxMessage>;
  delivery: Delivery<OutboxMessage>;
  timer: ReturnType<typeof setTimeout>;
}

interface Claimed {
  name: string;
  queue: DurableQueue<OutboxMessage>;
  delivery: Delivery<OutboxMessage>;
}

/** The reason text of every authentication failure (no oracle). */
export const AUTH_FAILED = "authentication failed";
/** A signed record carries a 64-byte Ed25519 signature before its body. */
const SIGNATURE_BYTES = 64;
/** Queue leases outlive the ack timeout by this much, so our nak comes first. */
const LEASE_SLACK_MS = 5_000;
/** Agent requests a connection may have waiting on backend handlers. */
const MAX_PENDING_REQUESTS = 256;
/** Record ids remembered as pushed (answers "was it pushed now?"). */
const PUSHED_MEMORY = 1024;
/** A slow consumer is closed once over the limit this long (as the log stream does). */
const SLOW_CHECK_MS = 100;
/** The queue depth gauge is refreshed at most this often per agent. */
const DEPTH_EVERY_MS = 250;
const RECORD_ID_RE = /^[\x21-\x7e]{1,128}$/;
const MESSAGE_TYPE_RE = /^[A-Za-z0-9._-]{1,64}$/;
const ENVELOPE_TYPES = new Set([
  "command",
  "event",
  "request",
  "response",
  "notification",
]);

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const EMPTY = new Uint8Array(0);

/** One agent's WebSocket, from upgrade to close. */
export class AgentConnection {
  readonly socket: WebSocket;
  /** Random id of this connection (the presence record's `session`). */
  readonly session: string = crypto.randomUUID();
  /** The authenticated agent id (set once ready). */
  agentId = "";
  /** Resolves once the connection is closed and cleaned up. */
  readonly closed: Promise<void>;

  readonly #ctx: ConnectionContext;
  readonly #maxFrame: number;
  #state: State = "hello";
  #hello?: Hello;
  #keys?: SessionKeys;
  #sealer?: RecordSealer;
  #opener?: RecordOpener;
  #agent?: AgentRecord;
  #from: string;
  #subs = new Set<string>();
  #inflight = new Map<string, InFlight>();
  #pushed = new Set<string>();
  /** Acks for messages not (yet) pushed on this connection (acks may come in a later session). */
  #earlyAcks = new Set<string>();
  #registered = false;
  #sessionExpires = 0;
  #lastHeard = Date.now();
  #lastWritten = 0;
  #pendingRequests = 0;
  #invalidUtf8 = false;
  #control: Promise<unknown> = Promise.resolve();
  #verifying: Promise<unknown> = Promise.resolve();
  #pumping?: Promise<void>;
  #pumpAgain = false;
  #sweepNext = true;
  #slowSince?: number;
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #intervals = new Set<ReturnType<typeof setInterval>>();
  #slowTimer?: ReturnType<typeof setInterval>;
  #depthTimer?: ReturnType<typeof setTimeout>;
  #resolveClosed!: () => void;
  #cleaning = false;
  /** The node's own requests to the agent, by record id. */
  #asked = new Map<
    string,
    {
      resolve: (v: unknown) => void;
      reject: (e: Error) => void;
      timer: ReturnType<typeof setTimeout>;
    }
  >();

  constructor(socket: WebSocket, ctx: ConnectionContext) {
    this.socket = socket;
    this.#ctx = ctx;
    this.#from = `node:${ctx.node.id}`;
    this.#maxFrame = ctx.config.maxMessageBytes + RECORD_PREFIX_BYTES +
      MAX_HEADER_BYTES + TAG_BYTES + SIGNATURE_BYTES;
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    socket.binaryType = "arraybuffer";
    socket.onmessage = (e) => {
      try {
        this.#onFrame(e.data);
      } catch (err) {
        this.#fail(err);
      }
    };
    socket.onerror = (e) => {
      // Deno refuses a text frame that is not UTF-8 itself and drops the
      // TCP connection without a close frame; all we learn is this event.
      if (/utf-?8/i.test((e as ErrorEvent).message ?? "")) {
        this.#invalidUtf8 = true;
      }
    };
    socket.onclose = (e) => this.#onPeerClose(e.code);
    this.#after(ctx.config.handshakeTimeoutMs, () => {
      if (this.#state !== "ready" && this.#state !== "closed") {
        this.close(
          4408,
          `handshake not finished within ${ctx.config.handshakeTimeoutMs} ms`,
          "timeout",
        );
      }
    });
  }

  /** Whether the connection is authenticated and open. */
  get ready(): boolean {
    return this.#state === "ready";
  }

  /** Subscribed backend channel names. */
  get channels(): string[] {
    return [...this.#subs];
  }

  /** Wall-clock ms the session ends. */
  get sessionExpires(): number {
    return this.#sessionExpires;
  }

  /** Whether queue message `id` was pushed on this connection (recently). */
  pushed(id: string): boolean {
    return this.#pushed.has(id);
  }

  // ------------------------------------------------------------- timers

  #after(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
  }

  #every(ms: number, fn: () => void): void {
    this.#intervals.add(setInterval(fn, ms));
  }

  // ------------------------------------------------------------- frames

  #onFrame(data: string | ArrayBuffer): void {
    if (this.#state === "closed") return;
    const text = typeof data === "string" ? data : undefined;
    let size: number;
    if (text === undefined) size = (data as ArrayBuffer).byteLength;
    else {
      size = text.length * 3 <= this.#maxFrame
        ? text.length
        : encoder.encode(text).length;
    }
    if (size > this.#maxFrame) {
      return this.close(
        1009,
        `frame over the size limit (${this.#maxFrame} bytes)`,
        "oversize",
      );
    }
    switch (this.#state) {
      case "hello":
        if (text === undefined) {
          return this.close(1003, "the hello must be a text frame", "binary");
        }
        return this.#onHello(text);
      case "welcoming":
      case "authenticating":
        return this.close(
          4400,
          text === undefined ? "record before ready" : "second hello",
          text === undefined ? "premature_record" : "second_hello",
        );
      case "auth":
        if (text !== undefined) {
          return this.close(4400, "second hello", "second_hello");
        }
        return this.#onAuth(new Uint8Array(data as ArrayBuffer));
      case "ready":
        if (text !== undefined) {
          return looksLikeHello(text)
            ? this.close(4400, "second hello")
            : this.close(1003, "text frame after the handshake");
        }
        this.#ctx.metrics.message("in", size);
        return this.#onRecord(new Uint8Array(data as ArrayBuffer));
    }
  }

  // ---------------------------------------------------------- handshake

  #onHello(text: string): void {
    this.#state = "welcoming";
    nodeWelcome(text, this.#ctx.identity).then(
      ({ hello, text: welcome, keys }) => {
        if (this.#state !== "welcoming") return;
        this.#hello = hello;
        this.#keys = keys;
        this.#opener = new RecordOpener(keys.c2s, {
          maxRecordBytes: this.#maxFrame,
        });
        this.#sealer = new RecordSealer(keys.s2c);
        this.#state = "auth";
        this.socket.send(welcome);
      },
      (err) => {
        if (err instanceof HandshakeError) {
          this.close(4400, err.message.slice(0, 120), err.reason);
        } else this.#fail(err);
      },
    );
  }

  #onAuth(frame: Uint8Array): void {
    this.#state = "authenticating";
    const hello = this.#hello!;
    const keys = this.#keys!;
    let body: Record<string, unknown> | undefined;
    let refused: string | undefined;
    try {
      const rec = this.#opener!.open(frame);
      const h = rec.header;
      if (h.type !== "auth") {
        // An authentic record, but not the auth the handshake needs first.
        return this.close(4400, "record before ready", "premature_record");
      }
      if (
        h.sid !== keys.sid || h.from !== hello.agent || h.to !== "backend" ||
        h.ch !== "" || rec.signature
      ) refused = "bad_auth_header";
      else body = parseObject(rec.body);
      if (!refused && !body) refused = "bad_auth_body";
    } catch (err) {
      if (!(err instanceof RecordError)) throw err;
      refused = `auth_record_${err.reason}`;
    }
    if (refused) return this.close(4401, AUTH_FAILED, refused);
    this.#authenticate(hello, keys, body!).catch((err) => this.#fail(err));
  }

  async #authenticate(
    hello: Hello,
    keys: SessionKeys,
    body: Record<string, unknown>,
  ): Promise<void> {
    const ctx = this.#ctx;
    const agent = await getAgent(ctx.kv, hello.agent);
    const now = Date.now();
    let authAt = now;
    let sessionExpires = now + ctx.config.maxSessionAgeMs;
    let reason: string | undefined;
    if (!hello.resume) {
      // Unknown agents cost a verification too, so timing tells nothing.
      const ok = await verifyAgentSignature(
        agent ? agentKeyBytes(agent) : DUMMY_KEY,
        keys.th2,
        body.sig,
      );
      if (!agent) reason = "unknown_agent";
      else if (!ok) reason = "bad_signature";
    } else {
      const token = body.resume;
      const s = typeof token === "string"
        ? await ctx.sessions.get(token)
        : null;
      const data = s?.data as
        | { authAt?: number; sessionExpires?: number; key?: string }
        | undefined;
      if (!agent) reason = "unknown_agent";
      else if (
        !s || s.kind !== "agent" || s.subject !== `agent:${hello.agent}` ||
        data?.key !== agent.publicKey || typeof data.authAt !== "number" ||
        typeof data.sessionExpires !== "number" || data.sessionExpires <= now
      ) reason = "bad_token";
      // Single use: of two racing resumptions only one revokes the token.
      else if (!await ctx.sessions.revoke(token as string)) {
        reason = "bad_token";
      } else {
        authAt = data.authAt!;
        sessionExpires = data.sessionExpires!;
      }
    }
    if (this.#state !== "authenticating") return;
    if (reason || !agent) return this.close(4401, AUTH_FAILED, reason);
    await this.#establish(agent, authAt, sessionExpires, !!hello.resume);
  }

  async #establish(
    agent: AgentRecord,
    authAt: number,
    sessionExpires: number,
    resumed: boolean,
  ): Promise<void> {
    const ctx = this.#ctx;
    const cfg = ctx.config;
    const now = Date.now();
    this.#agent = agent;
    this.agentId = agent.agentId;
    this.#sessionExpires = sessionExpires;
    const { token, session } = await ctx.sessions.create({
      subject: `agent:${agent.agentId}`,
      kind: "agent",
      ttlMs: Math.max(1000, Math.min(cfg.resumeTtlMs, sessionExpires - now)),
      data: { authAt, sessionExpires, key: agent.publicKey },
      node: ctx.node.id,
    });
    if (this.#state !== "authenticating") {
      await ctx.sessions.revoke(token);
      return;
    }
    const previous = await ctx.presence.claim({
      agentId: agent.agentId,
      connected: true,
      nodeId: ctx.node.id,
      address: ctx.node.address,
      session: this.session,
      sid: this.#keys!.sid,
      connectedAt: now,
      lastSeen: now,
      channels: [],
      sessionExpires,
      heartbeatMs: cfg.heartbeatMs,
    });
    this.#registered = true;
    if (this.#state !== "authenticating") {
      await ctx.presence.release(agent.agentId, this.session, now);
      return;
    }
    ctx.attach(this, previous);
    this.#send({ type: "ready", id: "ready" }, {
      sid: this.#keys!.sid,
      node: ctx.node.id,
      resume: token,
      resumeExpiresAt: session.expiresAt,
      heartbeatMs: cfg.heartbeatMs,
      sessionExpiresAt: sessionExpires,
    });
    this.#state = "ready";
    this.#lastHeard = now;
    this.#lastWritten = now;
    ctx.metrics.handshake("ok", resumed ? "resumed" : "signature");
    ctx.log.info("agent connected", {
      agent: agent.agentId,
      session: this.session,
      resumed,
      sessionExpires: new Date(sessionExpires).toISOString(),
    });
    this.#refreshDepth();
    this.#every(cfg.heartbeatMs, () => this.#heartbeat());
    this.#every(cfg.pollMs, () => {
      this.#sweepNext = true;
      this.pump();
    });
    this.#after(
      Math.max(0, Math.min(sessionExpires - now, 2 ** 31 - 1)),
      () => this.close(4001, "session expired"),
    );
  }

  // ------------------------------------------------------------ records

  #onRecord(frame: Uint8Array): void {
    let rec;
    try {
      rec = this.#opener!.open(frame);
    } catch (err) {
      if (!(err instanceof RecordError)) throw err;
      this.#ctx.metrics.refused(err.reason);
      return this.close(4403, `record refused: ${err.reason}`);
    }
    const h = rec.header;
    if (
      h.sid !== this.#keys!.sid || h.from !== this.agentId ||
      h.to !== "backend"
    ) {
      this.#ctx.metrics.refused("readdressed");
      return this.close(4403, "record refused: header does not match session");
    }
    this.#lastHeard = Date.now();
    switch (h.type) {
      case "msg":
      case "req": {
        const ch = parseChannel(h.ch);
        if (ch?.side !== "agent" || ch.id !== this.agentId) {
          this.#ctx.metrics.refused("readdressed");
          return this.close(
            4403,
            "record refused: not on the agent's own channel",
          );
        }
        return this.#onPublish(h, rec.body, rec.signature, rec.headerBytes, ch);
      }
      case "sub":
      case "unsub": {
        const ch = parseChannel(h.ch);
        if (ch?.side !== "backend" || ch.id !== this.agentId) {
          this.#ctx.metrics.refused("readdressed");
          return this.close(
            4403,
            "record refused: not on the agent's own channel",
          );
        }
        this.#control = this.#control.then(() =>
          h.type === "sub" ? this.#subscribe(h, ch) : this.#unsubscribe(h, ch)
        ).catch((err) => this.#fail(err));
        return;
      }
      case "ack":
        if (typeof h.re === "string") this.#onAck(h.re);
        return;
      case "ping":
        this.#send({ type: "pong", id: crypto.randomUUID(), re: h.id }, EMPTY);
        return;
      case "pong":
        this.#control = this.#control.then(() => this.#touch()).catch((
          err,
        ) => this.#fail(err));
        return;
      case "res":
      case "err": {
        const waiting = typeof h.re === "string" && this.#asked.get(h.re);
        if (!waiting) return; // late (timed out) or not ours
        this.#asked.delete(h.re as string);
        clearTimeout(waiting.timer);
        let body: unknown = null;
        try {
          body = rec.body.length ? JSON.parse(decoder.decode(rec.body)) : null;
        } catch {
          return waiting.reject(
            new GatewayRequestError(
              "bad_request",
              "the agent's answer is not JSON",
            ),
          );
        }
        if (h.type === "res") return waiting.resolve(body);
        const e = body as { code?: string; message?: string } | null;
        return waiting.reject(
          new GatewayRequestError(
            (e?.code ?? "unavailable") as ErrorCode,
            `agent ${this.agentId} answered ${e?.code ?? "err"}: ${
              e?.message ?? ""
            }`,
          ),
        );
      }
      case "auth":
      case "ready":
        return this.close(4400, `unexpected ${h.type} record`);
      default:
        this.#reply(h, "err", {
          code: "bad_request",
          message: `unknown record type '${String(h.type).slice(0, 32)}'`,
        });
    }
  }

  #onPublish(
    h: RecordHeader,
    body: Uint8Array,
    signature: Uint8Array | undefined,
    headerBytes: Uint8Array,
    ch: Channel,
  ): void {
    const policy = channelPolicy(this.#ctx.config.channels, ch.name);
    if (!canPublish(policy, this.#agent!.roles)) {
      this.#ctx.metrics.refused("forbidden");
      return this.#reply(h, "err", {
        code: "forbidden",
        message: `roles [${
          this.#agent!.roles.join(", ")
        }] may not publish on '${ch.name}'`,
      });
    }
    if (!policy?.signed) return this.#accept(h, body, ch, undefined);
    if (!signature) {
      this.#ctx.metrics.refused("unsigned");
      return this.#reply(h, "err", {
        code: "bad_request",
        message: `channel '${ch.name}' needs a signed message`,
      });
    }
    // Verification is asynchronous: keep this channel's messages in order.
    this.#verifying = this.#verifying.then(async () => {
      const ok = await verifyMessageSignature(
        agentKeyBytes(this.#agent!),
        signature,
        headerBytes,
        body,
      );
      if (this.#state !== "ready") return;
      if (!ok) {
        this.#ctx.metrics.refused("bad_signature");
        return this.#reply(h, "err", {
          code: "bad_request",
          message: `message signature does not verify`,
        });
      }
      this.#accept(h, body, ch, "ed25519");
    }).catch((err) => this.#fail(err));
  }

  #accept(
    h: RecordHeader,
    body: Uint8Array,
    ch: Channel,
    signed: string | undefined,
  ): void {
    const prio = h.prio ?? 4;
    const mt = h.mt ?? (h.type === "req" ? "request" : "event");
    let payload: unknown;
    let problem: string | undefined;
    if (!RECORD_ID_RE.test(h.id)) problem = "id must be 1-128 printable ASCII";
    else if (!Number.isInteger(prio) || +prio < 0 || +prio > 9) {
      problem = "prio must be an integer 0-9";
    } else if (typeof mt !== "string" || !MESSAGE_TYPE_RE.test(mt)) {
      problem = "mt must be 1-64 letters, digits, '.', '_', '-'";
    } else if (h.cid !== undefined && !RECORD_ID_RE.test(String(h.cid))) {
      problem = "cid must be 1-128 printable ASCII";
    } else {
      try {
        payload = body.length ? JSON.parse(decoder.decode(body)) : null;
      } catch {
        problem = "body is not UTF-8 JSON";
      }
    }
    if (problem) {
      this.#ctx.metrics.refused("bad_request");
      return this.#reply(h, "err", { code: "bad_request", message: problem });
    }
    const envelope: Envelope = {
      id: h.id,
      type: h.type === "req"
        ? "request"
        : ENVELOPE_TYPES.has(mt as string)
        ? mt as Envelope["type"]
        : "event",
      topic: h.ch,
      source: this.agentId,
      timestamp: Date.now(),
      priority: prio as number,
      headers: {
        "agent-id": this.agentId,
        "message-type": mt as string,
        node: this.#ctx.node.id,
        sid: this.#keys!.sid,
        ...(signed ? { signature: signed } : {}),
      },
      payload,
      delivery: {
        guarantee: "at-most-once",
        maxAttempts: 1,
        backoff: "none",
        timeoutMs: this.#ctx.config.requestTimeoutMs,
        persistent: false,
      },
      ...(h.cid !== undefined ? { correlationId: String(h.cid) } : {}),
    };
    if (h.type === "msg") {
      if (!this.#ctx.seenInbound(this.agentId, h.id)) {
        this.#ctx.router.publish(h.ch, envelope);
      }
      return this.#reply(h, "ack", undefined);
    }
    if (this.#pendingRequests >= MAX_PENDING_REQUESTS) {
      return this.#reply(h, "err", {
        code: "unavailable",
        message: "too many requests in flight",
      });
    }
    this.#pendingRequests++;
    this.#ctx.request({
      agentId: this.agentId,
      roles: this.#agent!.roles,
      channel: h.ch,
      name: ch.name,
      payload,
      envelope,
    }).then(
      (reply) => {
        const bytes = encoder.encode(JSON.stringify(reply ?? null));
        if (bytes.length > this.#ctx.config.maxMessageBytes) {
          return this.#reply(h, "err", {
            code: "unavailable",
            message: "reply over the size limit",
          });
        }
        this.#reply(h, "res", bytes);
      },
      (err) => {
        const code = err instanceof GatewayRequestError
          ? err.code
          : "unavailable";
        this.#reply(h, "err", {
          code,
          message: String((err as Error)?.message ?? err).slice(0, 200),
        });
      },
    ).finally(() => this.#pendingRequests--);
  }

  async #subscribe(h: RecordHeader, ch: Channel): Promise<void> {
    if (this.#state !== "ready") return;
    const policy = channelPolicy(this.#ctx.config.channels, ch.name);
    if (!canSubscribe(policy, this.#agent!.roles)) {
      this.#ctx.metrics.refused("forbidden");
      return this.#reply(h, "err", {
        code: "forbidden",
        message: `roles [${
          this.#agent!.roles.join(", ")
        }] may not subscribe to '${ch.name}'`,
      });
    }
    this.#subs.add(ch.name);
    if (!await this.#writePresence({ channels: [...this.#subs] })) return;
    this.#reply(h, "ok", undefined);
    if (isDurable(policy)) {
      this.#sweepNext = true;
      this.pump();
    }
  }

  async #unsubscribe(h: RecordHeader, ch: Channel): Promise<void> {
    if (this.#state !== "ready") return;
    this.#subs.delete(ch.name);
    if (!await this.#writePresence({ channels: [...this.#subs] })) return;
    this.#reply(h, "ok", undefined);
  }

  /** Writes presence if it is still this connection's; closes 4409 otherwise. */
  async #writePresence(patch: Partial<PresenceRecord>): Promise<boolean> {
    const mine = await this.#ctx.presence.update(this.agentId, this.session, {
      ...patch,
      lastSeen: this.#lastHeard,
    });
    this.#lastWritten = this.#lastHeard;
    if (!mine && this.#state === "ready") {
      this.close(4409, "replaced by a newer connection");
    }
    return mine && this.#state === "ready";
  }

  async #touch(): Promise<void> {
    if (this.#state === "ready") await this.#writePresence({});
  }

  #heartbeat(): void {
    if (this.#state !== "ready") return;
    const cfg = this.#ctx.config;
    if (Date.now() - this.#lastHeard > 2 * cfg.heartbeatMs) {
      return this.close(4002, "heartbeat timeout");
    }
    this.#send({ type: "ping", id: crypto.randomUUID() }, EMPTY);
    this.#control = this.#control.then(async () => {
      if (this.#state !== "ready") return;
      const agent = await getAgent(this.#ctx.kv, this.agentId);
      if (!agent || agent.publicKey !== this.#agent!.publicKey) {
        return this.close(4401, "agent is no longer enrolled");
      }
      this.#agent = agent; // roles may have changed
      if (this.#lastHeard > this.#lastWritten) await this.#writePresence({});
      this.#refreshDepth();
    }).catch((err) => this.#fail(err));
  }

  /** Updates this agent's queue depth gauge soon (at most every DEPTH_EVERY_MS). */
  #refreshDepth(): void {
    if (this.#depthTimer !== undefined || this.#state !== "ready") return;
    this.#depthTimer = setTimeout(() => {
      this.#depthTimer = undefined;
      if (this.#state !== "ready") return;
      this.#ctx.outbox.depth(this.agentId).then(
        (n) => {
          if (this.#state === "ready") {
            this.#ctx.metrics.queueDepth(this.agentId, n);
          }
        },
        (err) =>
          this.#ctx.log.warn("queue depth not read", {
            agent: this.agentId,
            error: err,
          }),
      );
    }, DEPTH_EVERY_MS);
  }

  // ----------------------------------------------------------- sending

  /** Seals and sends one record from the node (`sid`, `from`, `to` filled in). */
  #send(
    fields:
      & { type: string; id: string; ch?: string }
      & Record<
        string,
        string | number | boolean | undefined
      >,
    body: Uint8Array | Record<string, unknown>,
    signature?: Uint8Array,
  ): void {
    this.#sendHeader(this.#header(fields), body, signature);
  }

  #header(
    fields:
      & { type: string; id: string; ch?: string }
      & Record<
        string,
        string | number | boolean | undefined
      >,
  ): RecordHeader {
    return {
      sid: this.#keys!.sid,
      from: this.#from,
      to: this.#hello!.agent,
      ch: "",
      ...fields,
    };
  }

  #sendHeader(
    header: RecordHeader,
    body: Uint8Array | Record<string, unknown>,
    signature?: Uint8Array,
  ): void {
    if (this.socket.readyState !== WebSocket.OPEN) return;
    const bytes = body instanceof Uint8Array
      ? body
      : encoder.encode(JSON.stringify(body));
    const frame = this.#sealer!.seal(header, bytes, signature);
    this.socket.send(frame);
    this.#ctx.metrics.message("out", frame.length);
    this.#checkBuffer();
  }

  #reply(
    h: RecordHeader,
    type: "ack" | "ok" | "err" | "res",
    body: Uint8Array | Record<string, unknown> | undefined,
  ): void {
    if (this.#state !== "ready") return;
    this.#send(
      { type, id: crypto.randomUUID(), ch: h.ch, re: h.id },
      body ?? EMPTY,
    );
  }

  #congested(): boolean {
    return this.socket.bufferedAmount > this.#ctx.config.sendBufferBytes;
  }

  /**
   * A slow consumer: over the limit for SLOW_CHECK_MS, or at once over the
   * hard cap. Un-acked queue messages go back to the queue on close.
   */
  #checkBuffer(): void {
    const limit = this.#ctx.config.sendBufferBytes;
    const buffered = this.socket.bufferedAmount;
    if (buffered <= limit || this.#slowSince !== undefined) return;
    if (buffered > Math.max(limit * 8, limit + 2 * this.#maxFrame)) {
      return this.close(4008, `slow consumer: over ${limit} bytes unsent`);
    }
    this.#slowSince = performance.now();
    this.#slowTimer = setInterval(() => {
      if (this.#state === "closed") return this.#clearSlow();
      if (this.socket.bufferedAmount <= limit) {
        this.#clearSlow();
        this.pump();
      } else if (performance.now() - this.#slowSince! >= SLOW_CHECK_MS) {
        this.close(4008, `slow consumer: over ${limit} bytes unsent`);
      }
    }, SLOW_CHECK_MS / 2);
  }

  #clearSlow(): void {
    clearInterval(this.#slowTimer);
    this.#slowTimer = undefined;
    this.#slowSince = undefined;
  }

  // ----------------------------------------------------------- delivery

  /**
   * Pushes what the agent's subscribed durable queues hold, up to
   * `maxInFlight` un-acked. Resolves after a full pass that started after
   * this call (so a caller that just enqueued knows whether it went out).
   */
  pump(): Promise<void> {
    if (this.#pumping) {
      this.#pumpAgain = true;
      return this.#pumping;
    }
    this.#pumping = (async () => {
      do {
        this.#pumpAgain = false;
        await this.#pass();
      } while (this.#pumpAgain && this.#state === "ready");
    })().catch((err) => this.#fail(err)).finally(() =>
      this.#pumping = undefined
    );
    return this.#pumping;
  }

  async #pass(): Promise<void> {
    if (this.#state !== "ready") return;
    const cfg = this.#ctx.config;
    const names = [...this.#subs].filter((n) =>
      isDurable(channelPolicy(cfg.channels, n))
    );
    const free = cfg.maxInFlight - this.#inflight.size;
    if (names.length === 0 || free <= 0 || this.#congested()) return;
    const sweep = this.#sweepNext;
    this.#sweepNext = false;
    const claimed: Claimed[] = [];
    for (const name of names) {
      const queue = this.#ctx.outbox.queue(this.agentId, name);
      if (sweep) await queue.sweep();
      for (
        const delivery of await queue.claim(
          free,
          cfg.ackTimeoutMs + LEASE_SLACK_MS,
          `${this.#ctx.node.id}/${this.session}`,
        )
      ) claimed.push({ name, queue, delivery });
    }
    // Highest priority first, then oldest, across the agent's channels.
    claimed.sort((a, b) =>
      b.delivery.message.priority - a.delivery.message.priority ||
      a.delivery.message.enqueuedAt - b.delivery.message.enqueuedAt
    );
    for (const c of claimed) await this.#push(c);
    if (sweep || claimed.length) this.#refreshDepth();
  }

  async #push(c: Claimed): Promise<void> {
    const { delivery: d, queue, name } = c;
    const ctx = this.#ctx;
    const m = d.payload;
    if (this.#state !== "ready" || !this.#subs.has(name)) {
      return await this.#giveBack(c, 0, "not delivered: connection closed");
    }
    if (this.#earlyAcks.delete(d.id)) {
      // Processed in an earlier session; its ack arrived before this claim.
      await d.ack();
      await ctx.outbox.discard(queue.name, d.id, m);
      ctx.metrics.delivery("acked");
      return;
    }
    if (m.expiresAt <= Date.now()) {
      await d.term("expired before delivery (ttl)");
      await ctx.outbox.discard(queue.name, d.id, m);
      ctx.metrics.delivery("expired");
      return;
    }
    const body = await ctx.outbox.body(queue.name, d.id, m);
    if (!body) {
      await d.term("body chunks missing");
      ctx.metrics.delivery("lost_body");
      return;
    }
    const policy = channelPolicy(ctx.config.channels, name);
    const header = this.#header({
      type: "msg",
      id: d.id,
      ch: backendChannel(this.agentId, name),
      prio: d.message.priority,
      mt: m.mt,
      att: d.attempts,
      ...(m.cid ? { cid: m.cid } : {}),
    });
    const signature = policy?.signed
      ? await signMessage(
        ctx.identity.privateKey,
        encodeHeader(header),
        body,
      )
      : undefined;
    if (this.#state !== "ready") {
      return await this.#giveBack(c, 0, "not delivered: connection closed");
    }
    this.#sendHeader(header, body, signature);
    this.#remember(d.id);
    ctx.metrics.delivery("pushed");
    const timer = setTimeout(
      () => this.#ackTimeout(d.id),
      ctx.config.ackTimeoutMs,
    );
    this.#inflight.set(d.id, { name, queue, delivery: d, timer });
  }

  /**
   * Pushes a message on a non-durable channel (not stored, not tracked):
   * true when the agent is subscribed and it was sent.
   */
  async pushEphemeral(
    name: string,
    body: Uint8Array,
    fields: { id: string; priority: number; messageType: string; cid?: string },
  ): Promise<boolean> {
    if (this.#state !== "ready" || !this.#subs.has(name)) return false;
    const policy = channelPolicy(this.#ctx.config.channels, name);
    const header = this.#header({
      type: "msg",
      id: fields.id,
      ch: backendChannel(this.agentId, name),
      prio: fields.priority,
      mt: fields.messageType,
      ...(fields.cid ? { cid: fields.cid } : {}),
    });
    const signature = policy?.signed
      ? await signMessage(
        this.#ctx.identity.privateKey,
        encodeHeader(header),
        body,
      )
      : undefined;
    if (this.#state !== "ready") return false;
    this.#sendHeader(header, body, signature);
    this.#remember(fields.id);
    return true;
  }

  #remember(id: string, set = this.#pushed): void {
    set.add(id);
    if (set.size > PUSHED_MEMORY) set.delete(set.values().next().value!);
  }

  #onAck(re: string): void {
    const f = this.#inflight.get(re);
    if (!f) {
      // A duplicate, an ephemeral message, or one from an earlier session
      // that this connection has not claimed yet: ack it when it does.
      if (!this.#pushed.has(re)) this.#remember(re, this.#earlyAcks);
      return;
    }
    this.#inflight.delete(re);
    clearTimeout(f.timer);
    f.delivery.ack().then(
      async () => {
        this.#ctx.metrics.delivery("acked");
        await this.#ctx.outbox.discard(f.queue.name, re, f.delivery.payload);
        this.#refreshDepth();
        this.pump();
      },
      (err) =>
        this.#ctx.log.warn("queue ack failed", {
          agent: this.agentId,
          id: re,
          error: err,
        }),
    );
  }

  #ackTimeout(id: string): void {
    const f = this.#inflight.get(id);
    if (!f) return;
    this.#inflight.delete(id);
    this.#ctx.metrics.delivery("ack_timeout");
    // The queue's default backoff (1 s doubling to 60 s).
    const delay = backoffDelay(f.delivery.attempts);
    this.#giveBack(
      f,
      delay,
      `no ack within ${this.#ctx.config.ackTimeoutMs} ms`,
    ).then(() => {
      if (this.#state !== "ready") return;
      this.#after(delay + 20, () => {
        this.#sweepNext = true;
        this.pump();
      });
    });
  }

  /** Returns a claimed message to its queue (dead-lettered after the last attempt). */
  async #giveBack(
    c: Claimed,
    delayMs: number,
    why: string,
  ): Promise<void> {
    const d = c.delivery;
    try {
      await d.nak(delayMs, why);
      if (d.attempts >= d.message.maxAttempts) {
        this.#ctx.metrics.delivery("dead");
        await this.#ctx.outbox.discard(c.queue.name, d.id, d.payload);
      }
    } catch (err) {
      this.#ctx.log.warn("queue nak failed", {
        agent: this.agentId,
        id: d.id,
        error: err,
      });
    }
  }

  /**
   * Sends the agent a request on its backend channel `name` (it must have
   * subscribed, e.g. with the SDK's `handle`) and resolves with its `res`
   * body; rejects with a {@linkcode GatewayRequestError}: the agent's `err`
   * code, `timeout`, or `unavailable` when the connection is not ready or
   * closes first.
   */
  ask(name: string, body: unknown, timeoutMs: number): Promise<unknown> {
    if (this.#state !== "ready") {
      return Promise.reject(
        new GatewayRequestError(
          "unavailable",
          `agent ${this.agentId} is not connected here`,
        ),
      );
    }
    if (!this.#subs.has(name)) {
      return Promise.reject(
        new GatewayRequestError(
          "no_handler",
          `agent ${this.agentId} is not subscribed to backend channel '${name}'`,
        ),
      );
    }
    const id = crypto.randomUUID();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#asked.delete(id);
        reject(
          new GatewayRequestError(
            "timeout",
            `agent ${this.agentId} did not answer on '${name}' within ${timeoutMs} ms`,
          ),
        );
      }, timeoutMs);
      this.#asked.set(id, { resolve, reject, timer });
      this.#send(
        { type: "req", id, ch: `backend.${this.agentId}.${name}` },
        encoder.encode(JSON.stringify(body ?? null)),
      );
    });
  }

  // ------------------------------------------------------------ closing

  /** Closes with `code` (once) and cleans up; `reason` goes to the peer. */
  close(code: number, reason: string, handshakeReason?: string): void {
    if (this.#state === "closed") return;
    const wasReady = this.#state === "ready";
    this.#state = "closed";
    if (!wasReady) {
      this.#ctx.metrics.handshake(
        "refused",
        handshakeReason ?? `close_${code}`,
      );
      this.#ctx.log.debug("agent handshake refused", {
        code,
        reason,
        detail: handshakeReason,
        agent: this.#hello?.agent,
      });
    }
    try {
      this.socket.close(code, reason);
    } catch { /* already closed */ }
    this.#ctx.metrics.closed(code);
    this.#cleanup(code, reason);
  }

  #onPeerClose(code: number): void {
    if (this.#state === "closed") return;
    const wasReady = this.#state === "ready";
    this.#state = "closed";
    const seen = this.#invalidUtf8 ? 1007 : code;
    if (!wasReady) {
      this.#ctx.metrics.handshake(
        "refused",
        this.#invalidUtf8 ? "invalid_utf8" : "peer_closed",
      );
    }
    this.#ctx.metrics.closed(seen);
    this.#cleanup(seen, this.#invalidUtf8 ? "invalid UTF-8" : "peer closed");
  }

  #fail(err: unknown): void {
    this.#ctx.log.error("agent connection failed", {
      agent: this.agentId || this.#hello?.agent,
      error: err,
    });
    this.close(1011, "internal error", "internal");
  }

  #cleanup(code: number, reason: string): void {
    if (this.#cleaning) return;
    this.#cleaning = true;
    for (const [id, w] of this.#asked) {
      clearTimeout(w.timer);
      w.reject(
        new GatewayRequestError(
          "unavailable",
          `agent ${this.agentId} disconnected (${code}) before answering`,
        ),
      );
      this.#asked.delete(id);
    }
    for (const t of this.#timers) clearTimeout(t);
    for (const i of this.#intervals) clearInterval(i);
    this.#timers.clear();
    this.#intervals.clear();
    this.#clearSlow();
    clearTimeout(this.#depthTimer);
    const held = [...this.#inflight.values()];
    this.#inflight.clear();
    for (const f of held) clearTimeout(f.timer);
    const ctx = this.#ctx;
    (async () => {
      // Let a pass that is still claiming finish, so what it claimed goes back too.
      await this.#pumping;
      await Promise.all(
        held.map((f) => this.#giveBack(f, 0, `connection closed (${code})`)),
      );
      if (this.#registered) {
        ctx.detach(this);
        ctx.metrics.queueDepth(this.agentId, undefined);
        await ctx.presence.release(this.agentId, this.session, this.#lastHeard);
        ctx.log.info("agent disconnected", {
          agent: this.agentId,
          session: this.session,
          code,
          reason,
        });
      }
    })().catch((err) =>
      ctx.log.warn("agent cleanup failed", { agent: this.agentId, error: err })
    ).finally(() => this.#resolveClosed());
  }
}

/** A valid Ed25519 public key (the base point) used to verify for unknown agents. */
const DUMMY_KEY = Uint8Array.fromHex(
  "5866666666666666666666666666666666666666666666666666666666666666",
);

function parseObject(body: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(decoder.decode(body));
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? v
      : undefined;
  } catch {
    return undefined;
  }
}

function looksLikeHello(text: string): boolean {
  if (text.length > 4096) return false;
  try {
    return (JSON.parse(text) as { t?: unknown })?.t === "hello";
  } catch {
    return false;
  }
}
