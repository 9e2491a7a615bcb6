/**
 * One agent's socket on the gateway: the composition of the handshake state
 * machine (`connection/handshake_state.ts`, `docs/protocol.md`), the
 * dispatch of the agent's records (`connection/dispatch.ts`), the sealed
 * sending and flow control (`connection/sender.ts`), the delivery of the
 * agent's durable queue (`connection/delivery.ts`) and the node's requests
 * to the agent (`connection/requests.ts`). Kept here: the state itself and
 * its transitions, liveness (heartbeats, the enrolment re-check and the
 * presence writes, which tie the other parts together) and closing.
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
import type { NodeIdentity } from "../core/plugin.ts";
import type { Logger } from "../core/observe/logger.ts";
import type { Router } from "../core/router.ts";
import type { SessionStore } from "../core/state/sessions.ts";
import {
  HandshakeError,
  type Hello,
  type NodeIdentityKey,
  nodeWelcome,
  type SessionKeys,
} from "../sdk/protocol/handshake.ts";
import {
  MAX_HEADER_BYTES,
  RECORD_PREFIX_BYTES,
  RecordOpener,
  RecordSealer,
  TAG_BYTES,
} from "../sdk/protocol/record.ts";
import { type AgentRecord, getAgent } from "./enrolment.ts";
import type { AgentHealth, PresenceRecord, PresenceStore } from "./presence.ts";
import type { Outbox } from "./outbox.ts";
import {
  AUTH_FAILED,
  authenticate,
  type HandshakeState,
  openAuth,
  routeFrame,
} from "./connection/handshake_state.ts";
import { Dispatcher, MAX_ACKS_PER_RECORD } from "./connection/dispatch.ts";
import { QueueDelivery } from "./connection/delivery.ts";
import { GatewayRequestError, PendingAsks } from "./connection/requests.ts";
import {
  type RecordFields,
  RecordSender,
  type SharedRecord,
} from "./connection/sender.ts";
import type {
  AgentRequest,
  GatewayConfig,
  GatewayMetrics,
} from "./connection/types.ts";

export type {
  AgentRequest,
  ErrorCode,
  GatewayConfig,
  GatewayMetrics,
} from "./connection/types.ts";
export { GatewayRequestError } from "./connection/requests.ts";
export { AUTH_FAILED } from "./connection/handshake_state.ts";

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
  /**
   * Runs the backend handler of an agent's request: its answer, or a
   * promise of it when the handler is asynchronous. Fails (throws or
   * rejects) with a {@linkcode GatewayRequestError} or any error.
   */
  request(req: AgentRequest): unknown;
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

/** A signed record carries a 64-byte Ed25519 signature before its body. */
const SIGNATURE_BYTES = 64;

const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);

/**
 * The frames an agent's `auth` says it reads (docs/protocol.md): `batch:
 * true` frames of sealed records (1), a number from 2 up sealed batch
 * frames (2, the highest this node writes), anything else a frame per
 * record (0).
 */
function batchVersion(batch: unknown): 0 | 1 | 2 {
  if (batch === true || batch === 1) return 1;
  return typeof batch === "number" && batch >= 2 ? 2 : 0;
}

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
  #state: HandshakeState = "hello";
  #hello?: Hello;
  #keys?: SessionKeys;
  #opener?: RecordOpener;
  #sender?: RecordSender;
  #dispatch?: Dispatcher;
  readonly #delivery: QueueDelivery;
  readonly #asks = new PendingAsks();
  #agent?: AgentRecord;
  #from: string;
  #subs = new Set<string>();
  #registered = false;
  #sessionExpires = 0;
  #lastHeard = Date.now();
  #lastWritten = 0;
  /** From `ready` on: emits `agent.health.changed` (rules in presence.ts). */
  #health?: AgentHealth;
  #invalidUtf8 = false;
  #control: Promise<unknown> = Promise.resolve();
  #timers = new Set<ReturnType<typeof setTimeout>>();
  #intervals = new Set<ReturnType<typeof setInterval>>();
  #resolveClosed!: () => void;
  #cleaning = false;

  constructor(socket: WebSocket, ctx: ConnectionContext) {
    this.socket = socket;
    this.#ctx = ctx;
    this.#from = `node:${ctx.node.id}`;
    this.#maxFrame = ctx.config.maxMessageBytes + RECORD_PREFIX_BYTES +
      MAX_HEADER_BYTES + TAG_BYTES + SIGNATURE_BYTES;
    this.closed = new Promise((r) => (this.#resolveClosed = r));
    this.#delivery = new QueueDelivery({
      config: ctx.config,
      outbox: ctx.outbox,
      metrics: ctx.metrics,
      log: ctx.log,
      signingKey: ctx.identity.privateKey,
      owner: `${ctx.node.id}/${this.session}`,
      subs: this.#subs,
      agentId: () => this.agentId,
      ready: () => this.#state === "ready",
      congested: () => this.#sender!.congested,
      header: (fields) => this.#sender!.header(fields),
      sendShared: (ch, shared) => this.#sender!.sendShared(ch, shared),
      send: (header, body, signature) =>
        this.#sender!.sendHeader(header, body, signature),
      after: (ms, fn) => this.#after(ms, fn),
      fail: (err) => this.#fail(err),
    });
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

  /** Whether the agent subscribed to backend channel name `name`. */
  subscribed(name: string): boolean {
    return this.#subs.has(name);
  }

  /**
   * The agent's enrolment (roles included) as this connection last read it:
   * at authentication, then at every heartbeat, or at once when the agent
   * is enrolled again through this node ({@linkcode reenrolled}). Undefined
   * before `ready`.
   */
  get agent(): AgentRecord | undefined {
    return this.#agent;
  }

  /**
   * The agent was enrolled again through this node: its new roles hold at
   * once; a new key closes the connection (4401), as the heartbeat's check
   * would.
   */
  reenrolled(record: AgentRecord): void {
    if (this.#state !== "ready" || record.agentId !== this.agentId) return;
    if (record.publicKey !== this.#agent!.publicKey) {
      return this.close(4401, "agent is no longer enrolled");
    }
    this.#agent = record;
  }

  /** Wall-clock ms the session ends. */
  get sessionExpires(): number {
    return this.#sessionExpires;
  }

  /** Whether queue message `id` was pushed on this connection (recently). */
  pushed(id: string): boolean {
    return this.#delivery.pushed(id);
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

  /** Runs `task` after the control tasks before it; a failure closes (1011). */
  #serially(task: () => Promise<unknown>): void {
    this.#control = this.#control.then(task).catch((err) => this.#fail(err));
  }

  // ------------------------------------------------------------- frames

  #onFrame(data: string | ArrayBuffer): void {
    const action = routeFrame(this.#state, data, this.#maxFrame);
    switch (action.do) {
      case "ignore":
        return;
      case "close":
        return this.close(action.code, action.reason, action.detail);
      case "hello":
        return this.#onHello(action.text);
      case "auth":
        return this.#onAuth(action.frame);
      case "record":
        this.#ctx.metrics.message("in", action.bytes);
        return this.#dispatch!.record(action.frame);
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
        this.#sender = new RecordSender({
          socket: this.socket,
          sealer: new RecordSealer(keys.s2c),
          sid: keys.sid,
          from: this.#from,
          to: hello.agent,
          config: this.#ctx.config,
          maxFrame: this.#maxFrame,
          metrics: this.#ctx.metrics,
          closed: () => this.#state === "closed",
          slow: (reason) => this.close(4008, reason),
          drained: () => this.pump(),
        });
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
    const auth = openAuth(this.#opener!, frame, hello, keys);
    if (!auth.ok) {
      return auth.premature
        ? this.close(4400, "record before ready", "premature_record")
        : this.close(4401, AUTH_FAILED, auth.refused);
    }
    authenticate(this.#ctx, hello, keys, auth.body).then(async (out) => {
      if (this.#state !== "authenticating") return;
      if (!out.ok) return this.close(4401, AUTH_FAILED, out.reason);
      await this.#establish(
        out.agent,
        out.authAt,
        out.sessionExpires,
        !!hello.resume,
        batchVersion(auth.body.batch),
      );
    }).catch((err) => this.#fail(err));
  }

  async #establish(
    agent: AgentRecord,
    authAt: number,
    sessionExpires: number,
    resumed: boolean,
    batch: 0 | 1 | 2,
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
    this.#dispatch = new Dispatcher({
      config: cfg,
      metrics: ctx.metrics,
      router: ctx.router,
      nodeId: ctx.node.id,
      opener: this.#opener!,
      sid: this.#keys!.sid,
      agentId: this.agentId,
      agent: () => this.#agent!,
      ready: () => this.#state === "ready",
      subs: this.#subs,
      heard: () => {
        this.#lastHeard = Date.now();
        this.#health?.heard(this.#lastHeard);
      },
      send: (fields, body) => this.#send(fields, body),
      serially: (task) => this.#serially(task),
      writePresence: (patch) => this.#writePresence(patch),
      seenInbound: (agentId, id) => ctx.seenInbound(agentId, id),
      request: (req) => ctx.request(req),
      delivery: this.#delivery,
      asks: this.#asks,
      close: (code, reason) => this.close(code, reason),
      fail: (err) => this.#fail(err),
    });
    ctx.attach(this, previous);
    this.#send({ type: "ready", id: "ready" }, {
      sid: this.#keys!.sid,
      node: ctx.node.id,
      resume: token,
      resumeExpiresAt: session.expiresAt,
      heartbeatMs: cfg.heartbeatMs,
      sessionExpiresAt: sessionExpires,
      acks: MAX_ACKS_PER_RECORD,
    });
    this.#state = "ready";
    // After `ready`, which leaves alone: the agent asked for batched frames.
    if (batch !== 0) this.#sender!.batchFrames(batch);
    this.#lastHeard = now;
    this.#lastWritten = now;
    ctx.metrics.handshake("ok", resumed ? "resumed" : "signature");
    ctx.log.info("agent connected", {
      agent: agent.agentId,
      session: this.session,
      resumed,
      sessionExpires: new Date(sessionExpires).toISOString(),
    });
    this.#delivery.refreshDepth();
    this.#health = ctx.presence.health(agent.agentId, cfg.heartbeatMs);
    this.#every(cfg.heartbeatMs, () => this.#heartbeat());
    // Quarter-interval looks, off the 1.5 and 2 interval edges, so a late
    // heartbeat shows as degraded, then unhealthy, before the 4002 close.
    this.#every(cfg.heartbeatMs / 4, () => {
      if (this.#state === "ready") this.#health?.check(Date.now());
    });
    this.#every(cfg.pollMs, () => this.#delivery.sweep());
    this.#after(
      Math.max(0, Math.min(sessionExpires - now, 2 ** 31 - 1)),
      () => this.close(4001, "session expired"),
    );
  }

  // ----------------------------------------------------------- liveness

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

  #heartbeat(): void {
    if (this.#state !== "ready") return;
    const cfg = this.#ctx.config;
    if (Date.now() - this.#lastHeard > 2 * cfg.heartbeatMs) {
      this.#health?.check(Date.now()); // unhealthy, then closed
      return this.close(4002, "heartbeat timeout");
    }
    this.#send({ type: "ping", id: crypto.randomUUID() }, EMPTY);
    this.#serially(async () => {
      if (this.#state !== "ready") return;
      const agent = await getAgent(this.#ctx.kv, this.agentId);
      if (!agent || agent.publicKey !== this.#agent!.publicKey) {
        return this.close(4401, "agent is no longer enrolled");
      }
      this.#agent = agent; // roles may have changed
      if (this.#lastHeard > this.#lastWritten) await this.#writePresence({});
      this.#delivery.refreshDepth();
    });
  }

  /** Seals and sends one record from the node (`sid`, `from`, `to` filled in). */
  #send(
    fields: RecordFields,
    body: Uint8Array | Record<string, unknown>,
  ): void {
    this.#sender!.send(fields, body);
  }

  // ----------------------------------------------------------- delivery

  /**
   * Pushes what the agent's subscribed durable queues hold, up to
   * `maxInFlight` un-acked. Resolves after a full pass that started after
   * this call (so a caller that just enqueued knows whether it went out).
   */
  pump(): Promise<void> {
    return this.#delivery.pump();
  }

  /**
   * Pushes a message on a non-durable channel (not stored, not tracked):
   * true when the agent is subscribed and it was sent.
   */
  pushEphemeral(
    name: string,
    body: Uint8Array,
    fields: { id: string; priority: number; messageType: string; cid?: string },
  ): Promise<boolean> {
    return this.#delivery.pushEphemeral(name, body, fields);
  }

  /**
   * A broadcast's push on a non-durable channel that is not signed: the
   * record `sharedPush` made once for every connection, sent at once.
   * True when the agent is subscribed and it was sent.
   */
  pushShared(name: string, shared: SharedRecord): boolean {
    return this.#delivery.pushShared(name, shared);
  }

  /**
   * Sends the agent a request on its backend channel `name` (it must have
   * subscribed, e.g. with the SDK's `handle`) and resolves with its `res`
   * body; rejects with a {@linkcode GatewayRequestError}: the agent's `err`
   * code, `timeout`, or `unavailable` when the connection is not ready or
   * closes first.
   */
  ask(
    name: string,
    body: unknown,
    timeoutMs: number,
    traceparent?: string,
  ): Promise<unknown> {
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
    const message =
      `agent ${this.agentId} did not answer on '${name}' within ${timeoutMs} ms`;
    const asked = this.#asks.ask(
      id,
      timeoutMs,
      message,
      () =>
        this.#send(
          traceparent
            ? {
              type: "req",
              id,
              ch: `backend.${this.agentId}.${name}`,
              tp: traceparent,
            }
            : { type: "req", id, ch: `backend.${this.agentId}.${name}` },
          encoder.encode(JSON.stringify(body ?? null)),
        ),
    );
    // Its handler answering (even with an error) or not feeds its health.
    asked.then(() => this.#health?.answered(Date.now()), (err) => {
      if (!(err instanceof GatewayRequestError)) return;
      if (err.code === "timeout") this.#health?.timedOut(Date.now(), message);
      else if (err.code !== "unavailable") this.#health?.answered(Date.now());
    });
    return asked;
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
    // Records still waiting for a batched frame go before the close frame.
    this.#sender?.flush();
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
    this.#asks.rejectAll(
      `agent ${this.agentId} disconnected (${code}) before answering`,
    );
    for (const t of this.#timers) clearTimeout(t);
    for (const i of this.#intervals) clearInterval(i);
    this.#timers.clear();
    this.#intervals.clear();
    this.#sender?.stop();
    // Un-acked messages go back to their queues (after a pass still claiming).
    const released = this.#delivery.stop(code);
    const ctx = this.#ctx;
    (async () => {
      await released;
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
