/**
 * The agent SDK: a client for the node's agent gateway (`WS /ws/agent`,
 * `docs/protocol.md`). It runs the handshake, keeps the session alive
 * (heartbeats, reconnects with backoff, resumption tokens), and offers
 * publish, subscribe and request/reply over sealed records.
 *
 * Delivery rules, in short:
 *
 * - `publish` is at-least-once: it resolves on the node's `ack`; an
 *   unacknowledged message is sent again (same id) after a reconnect.
 * - `request` is at-most-once: a request whose connection drops before the
 *   answer rejects with code `unavailable` and is not resent.
 * - Sends made while disconnected wait in a bounded queue and go out after
 *   the next handshake, most urgent priority first (9 before 0), oldest first
 *   within a priority.
 * - Incoming backend messages are handled one at a time per channel, then
 *   acknowledged; a handler that throws leaves the message unacknowledged so
 *   the node delivers it again. Message ids are remembered (a bounded LRU),
 *   so a redelivered message reaches its handler once but is acknowledged
 *   each time.
 *
 * The client composes its pieces: `errors.ts` ({@linkcode AgentError},
 * {@linkcode CloseCode}), `keys.ts` (agent keys), `reconnect.ts` (backoff,
 * the retry schedule and the resumption token), `send_queue.ts` (outgoing
 * publishes and requests) and `subscriptions.ts` (handlers, `sub`/`unsub`
 * and their renewal). It keeps the connection: handshake, heartbeats,
 * records in and out. The moved public names are re-exported here too.
 *
 * @module
 */
import {
  agentFinish,
  agentHello,
  b64u,
  ed25519FromSeed,
  type Ephemeral,
  fromB64u,
  HandshakeError,
  type Hello,
} from "./protocol/handshake.ts";
import {
  encodeHeader,
  type OpenedRecord,
  readInnerRecord,
  type RecordHeader,
  RecordOpener,
  RecordSealer,
  type RekeyPolicy,
  SEALED_BATCH_TYPE,
} from "./protocol/record.ts";
import {
  agentChannel,
  backendChannel,
  isAgentId,
  parseChannel,
  signMessage,
  verifyMessageSignature,
} from "./protocol/channels.ts";
import { parseEd25519PublicKey } from "../core/security/ed25519.ts";
import { openWebSocket, type WebSocketLike } from "./ws_client.ts";
import { jsonBody, parseBody } from "./_body.ts";
import { SeenIds } from "./_seen_ids.ts";
import {
  AgentError,
  CloseCode,
  errorFromBody,
  NODE_ERROR_CODES,
} from "./errors.ts";
import {
  type BackoffOptions,
  ReconnectSchedule,
  ResumeTokenSlot,
  type SavedResumeToken,
} from "./reconnect.ts";
import { type Outgoing, SendQueue } from "./send_queue.ts";
import { type ChannelEntry, Subscriptions } from "./subscriptions.ts";

export { AgentError, type AgentErrorCode, CloseCode } from "./errors.ts";
export {
  type AgentKey,
  agentKeyFromSeed,
  generateAgentKey,
  parseAgentKey,
} from "./keys.ts";
export { backoffDelay, type BackoffOptions } from "./reconnect.ts";

/** The priority of a message that names none (0 least urgent, 9 most urgent). */
export const DEFAULT_PRIORITY = 4;

/** Defaults for one channel name (the part after `agent.{id}.`). */
export interface ChannelOptions {
  /** Sign every message on it with the agent key (for audit). @default {false} */
  signed?: boolean;
  /** Priority 0-9 of its messages. @default {4} */
  priority?: number;
}

/** Where the SDK's diagnostics go. */
export type AgentLogger = (
  level: "debug" | "info" | "warn" | "error",
  message: string,
  fields?: Record<string, unknown>,
) => void;

/** Options of {@linkcode AgentClient} and {@linkcode connectAgent}. */
export interface AgentClientOptions {
  /**
   * The gateway, e.g. `ws://127.0.0.1:8086/ws/agent`. A node's base URL
   * (`http://127.0.0.1:8086`) also works: `http(s)` becomes `ws(s)` and an
   * empty path becomes `/ws/agent`.
   */
  url: string | URL;
  /** The enrolled agent id, e.g. the `id` printed by `plexus keygen`. */
  id: string;
  /** The agent's Ed25519 key: its 32-byte seed, or a private CryptoKey. */
  privateKey: Uint8Array | CryptoKey;
  /**
   * Node public keys to accept (base64url, hex, did:key or raw bytes), e.g.
   * the `"kind":"node"` keys of `GET /api/v1/keys`.
   * @default {undefined} any node whose welcome signature verifies
   */
  trustedNodeKeys?: Iterable<string | Uint8Array>;
  /** Per-name defaults of the agent's channels, e.g. `{ audit: { signed: true } }`. @default {{}} */
  channels?: Record<string, ChannelOptions>;
  /** Diagnostics. @default {undefined} silent */
  log?: AgentLogger;
  /** Reconnect delays. @default {{ initialMs: 5000, maxMs: 60000 }} */
  backoff?: BackoffOptions;
  /** Give up on a handshake (and retry) after this long, ms. @default {10000} */
  handshakeTimeoutMs?: number;
  /**
   * Heartbeat period, ms: the agent pings this often and treats twice this
   * long without a frame from the node as a dead connection.
   * @default {undefined} the node's `heartbeatMs` from `ready` (30000)
   */
  heartbeatMs?: number;
  /** How long `publish` waits for its ack, ms; 0 waits forever. @default {60000} */
  ackTimeoutMs?: number;
  /** How long `request`, `subscribe` and `unsubscribe` wait for an answer, ms; 0 waits forever. @default {30000} */
  requestTimeoutMs?: number;
  /** Most publishes and requests outstanding (queued or awaiting an answer). @default {1000} */
  maxQueued?: number;
  /** How many incoming message ids are remembered to drop duplicates. @default {10000} */
  dedupeSize?: number;
  /** Largest message body, bytes (the node refuses bigger frames with 1009). @default {1048576} */
  maxBodyBytes?: number;
  /** How long `close()` waits for outstanding publishes, ms. @default {2000} */
  drainMs?: number;
  /** When the sending key moves to the next epoch. @default {{ afterMessages: 1048576, afterMs: 600000 }} */
  rekey?: RekeyPolicy;
}

/** Per-call options of {@linkcode AgentClient.publish}. */
export interface PublishOptions {
  /** 0-9, 9 most urgent. @default {the channel's, else 4} */
  priority?: number;
  /** Sign the message with the agent key. @default {the channel's, else false} */
  signed?: boolean;
  /** Message type (the `mt` header), e.g. `notification`, `command`. @default {undefined} */
  type?: string;
  /** Correlation id (the `cid` header). @default {undefined} */
  correlationId?: string;
  /** Overrides `ackTimeoutMs` (publish) or `requestTimeoutMs` (request); 0 waits forever. */
  timeoutMs?: number;
}

/** Per-call options of {@linkcode AgentClient.request}. */
export type RequestOptions = PublishOptions;

/** A `msg` or `req` from the backend. */
export interface AgentMessage {
  /** `backend.{id}.{name}`. */
  channel: string;
  /** The channel's name part. */
  name: string;
  /** The message id (stable across redeliveries). */
  id: string;
  /** The message type (`mt` header), when given. */
  type?: string;
  /** 0-9. */
  priority: number;
  /** The correlation id (`cid` header), when given. */
  correlationId?: string;
  /**
   * The W3C `traceparent` of the node's span that sent it (`tp` header;
   * the node runs with OpenTelemetry on), for the agent's own tracing to
   * continue.
   */
  traceparent?: string;
  /** The body parsed as JSON; the text when it is not JSON; undefined when empty. */
  payload: unknown;
  /** The raw body (without the signature). */
  body: Uint8Array;
  /** Whether the node signed it (and the signature verified). */
  signed: boolean;
  /** The full record header. */
  header: RecordHeader;
}

/** Handles backend messages; resolve to acknowledge, throw to have it redelivered. */
export type MessageHandler = (message: AgentMessage) => void | Promise<void>;
/** Answers backend requests; the resolved value (JSON) is the reply, a throw becomes `err`. */
export type RequestHandler = (request: AgentMessage) => unknown;

/** What {@linkcode AgentClient.subscribe} and {@linkcode AgentClient.handle} return. */
export interface Subscription {
  /** The full channel, `backend.{id}.{name}`. */
  channel: string;
  /** Removes this handler (and, when no other is left, unsubscribes at the node). */
  unsubscribe(): Promise<void>;
}

/** The client's connection state. */
export type AgentState =
  | "idle"
  | "connecting"
  | "ready"
  | "disconnected"
  | "closed";

/** Events of {@linkcode AgentClient.on}. */
export interface AgentEvents {
  /** A connection attempt starts. */
  connecting: { attempt: number; url: string; resume: boolean };
  /** The handshake finished: records may flow. */
  ready: {
    node: string;
    sid: string;
    /** The node's Ed25519 public key, base64url. */
    nodeKey: string;
    resumed: boolean;
    heartbeatMs: number;
  };
  /** A connection ended. `retryInMs` is set when the client will reconnect. */
  disconnected: {
    code: number;
    reason: string;
    /** Whether the node closed it (false: the agent gave up on it). */
    byNode: boolean;
    retryInMs?: number;
  };
  /** The client stopped for good: `close()` or a final error (4401, 4409). */
  closed: AgentCloseInfo;
  /** Something went wrong that the client survives (a handler threw, a signature failed, a handshake failed). */
  error: { error: Error; context: string };
}

/** How the client ended. */
export interface AgentCloseInfo {
  /** The WebSocket close code, when a close (by the agent or the node) ended it. */
  code?: number;
  /** The close reason that goes with `code`. */
  reason?: string;
  /** Set when the client stopped because of an error (not `close()`). */
  error?: AgentError;
}

/** Counters since the client was made; see {@linkcode AgentClient.stats}. */
export interface AgentStats {
  /** The connection state now. */
  state: AgentState;
  /** Handshakes that reached `ready`. */
  connects: number;
  /** Of those, resumed with a token. */
  resumed: number;
  /** Connection attempts that ended before `ready`. */
  failedAttempts: number;
  /** Ready connections that ended. */
  disconnects: number;
  /** Connections given up for lack of traffic. */
  deadConnections: number;
  /** Records received from the node (opened). */
  recordsIn: number;
  /** Binary frames received after the welcome (a batched frame holds several records). */
  framesIn: number;
  /** Records sent to the node (sealed). */
  recordsOut: number;
  /** Bytes received in WebSocket messages. */
  bytesIn: number;
  /** Bytes given to the WebSocket to send. */
  bytesOut: number;
  /** Publishes acknowledged by the node. */
  acked: number;
  /** Publishes sent again after a reconnect. */
  resent: number;
  /** Publishes and requests refused or dropped because the queue was full. */
  dropped: number;
  /** Publishes and requests waiting to be sent. */
  queued: number;
  /** Publishes and requests sent and not yet answered. */
  inFlight: number;
  /** Backend messages handled and acknowledged. */
  delivered: number;
  /** Backend messages seen before (acknowledged again, not handled). */
  duplicates: number;
  /** Backend messages whose handler threw (left unacknowledged). */
  handlerErrors: number;
  /** Backend messages held because no handler is registered for their channel. */
  unhandled: number;
  /** Backend requests answered (`res` or `err`). */
  requestsAnswered: number;
  /** Signed records from the node whose signature failed (dropped). */
  badSignatures: number;
  /** Heartbeat pings sent to the node. */
  pingsSent: number;
  /** Pongs received from the node. */
  pongsReceived: number;
}

/**
 * The gateway URL for `url`: `http(s)` becomes `ws(s)`, an empty path
 * becomes `/ws/agent`.
 *
 * @example Usage
 * ```ts
 * import { agentGatewayUrl } from "./client.ts";
 * import assert from "node:assert/strict";
 * assert.equal(agentGatewayUrl("http://127.0.0.1:8086"), "ws://127.0.0.1:8086/ws/agent");
 * assert.equal(agentGatewayUrl("wss://n1.example/ws/agent"), "wss://n1.example/ws/agent");
 * ```
 */
export function agentGatewayUrl(url: string | URL): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TypeError(
      `Cannot use gateway URL: '${String(url).slice(0, 80)}' is not a URL`,
    );
  }
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new TypeError(
      `Cannot use gateway URL: expected ws:, wss:, http: or https:, got '${u.protocol}'`,
    );
  }
  if (u.pathname === "/" || u.pathname === "") u.pathname = "/ws/agent";
  return u.href;
}

// ------------------------------------------------------------ internals

type Timer = ReturnType<typeof setTimeout>;
const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);
/** Most message ids the agent puts in one `ack` record, whatever the node allows. */
const MAX_ACKS = 256;
/** Most acks kept for the next connection when one ends before they are sent. */
const MAX_CARRIED_ACKS = 4096;
/** First byte of a node frame holding several records (docs/protocol.md). */
const BATCH_FRAME_TYPE = 2;
/**
 * The `batch` this client asks for in `auth`: sealed batch frames (a node
 * that knows only `batch: true` sends it a frame per record).
 */
const BATCH_VERSION = 2;
interface Connection {
  ws: WebSocketLike;
  phase: "hello" | "welcome" | "auth" | "ready";
  handshake: { hello: Hello; ephemeral: Ephemeral };
  resumeToken?: string;
  /** The token and its expiry, given back if this attempt ends before sending it. */
  resumeSaved?: SavedResumeToken;
  sid?: string;
  node?: string;
  nodeKey?: Uint8Array;
  nodeKeyText?: string;
  sealer?: RecordSealer;
  opener?: RecordOpener;
  heartbeatMs: number;
  /** Most message ids one `ack` record may carry (`acks` in `ready`); 1 = one each. */
  acks: number;
  lastRx: number;
  lastPing: number;
  timer?: Timer;
  /** Resolves when the socket's close event fired. */
  gone: Promise<void>;
}

function checkPriority(p: number): number {
  if (!Number.isInteger(p) || p < 0 || p > 9) {
    throw new RangeError(
      `Cannot send: priority must be an integer 0-9, got ${p}`,
    );
  }
  return p;
}

// ---------------------------------------------------------------- client

/**
 * A connection to the agent gateway that survives disconnects.
 * {@linkcode connectAgent} makes one and waits for the first handshake.
 *
 * Register handlers before `connect()` when messages may be waiting for the
 * agent (they are delivered right after the handshake); a message that
 * arrives before its channel has a handler is held (unacknowledged) until
 * one is registered.
 *
 * Close codes from the node: 4401 after a resumption token makes the client
 * retry once at once with its signature, and ends it (error `auth_failed`)
 * after a signature; 4409 ends it (error `replaced`); any other close makes
 * it reconnect after {@linkcode backoffDelay}.
 *
 * @example Usage
 * ```ts
 * import { AgentClient, generateAgentKey } from "./client.ts";
 * import { startTestGateway } from "./_test_gateway.ts";
 * import assert from "node:assert/strict";
 *
 * await using gateway = await startTestGateway();
 * const key = await generateAgentKey();
 * gateway.enrol(key.id, key.publicKey);
 *
 * const agent = new AgentClient({
 *   url: gateway.url,
 *   id: key.id,
 *   privateKey: Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" }),
 * });
 * const seen: unknown[] = [];
 * const sub = agent.subscribe("commands", (m) => { seen.push(m.payload); });
 * await agent.connect();
 * await sub;
 * await agent.publish("heartbeat", { uptime: 42 }, { priority: 6 });
 * gateway.send(key.id, "commands", { run: "report" });
 * await gateway.waitFor((r) => r.header.type === "ack");
 * assert.deepEqual(seen, [{ run: "report" }]);
 * await agent.close();
 * ```
 */
export class AgentClient implements AsyncDisposable {
  readonly #url: string;
  readonly #id: string;
  readonly #privateKey: Uint8Array | CryptoKey;
  readonly #trusted?: ReadonlySet<string>;
  readonly #channelDefaults: Record<string, ChannelOptions>;
  readonly #log: AgentLogger;
  readonly #handshakeTimeoutMs: number;
  readonly #heartbeatMs?: number;
  readonly #ackTimeoutMs: number;
  readonly #requestTimeoutMs: number;
  readonly #maxBodyBytes: number;
  readonly #drainMs: number;
  readonly #rekey?: RekeyPolicy;

  #signingKey?: Promise<CryptoKey>;
  #state: AgentState = "idle";
  #conn?: Connection;
  #closing = false;
  /** When to connect again, after which failures. */
  readonly #reconnect: ReconnectSchedule;
  /** The resumption token of the last `ready`. */
  readonly #resume = new ResumeTokenSlot();
  /** Publishes and requests not yet answered. */
  readonly #sendQueue: SendQueue<Connection>;
  #pumping = false;
  /** Channels sent on, as given → full channel and name (checked once). */
  readonly #channelsSeen = new Map<string, { ch: string; name: string }>();
  /** Backend channels: handlers, `sub`/`unsub`, held messages. */
  readonly #subs: Subscriptions<Connection>;
  /** Per-channel processing chains (one message at a time per channel). */
  readonly #chains = new Map<string, Promise<void>>();
  /** Ids of handled backend messages (LRU). */
  readonly #seen: SeenIds;
  #lastChannel: [string, string | undefined] = ["", undefined];
  /** Acks gathered for one record per channel (nodes that take several ids per ack). */
  readonly #acksDue = new Map<string, string[]>();
  /** Ids in #acksDue waiting for a connection (bounded by MAX_CARRIED_ACKS). */
  #acksCarried = 0;
  #acksTimer?: Timer;
  readonly #listeners = new Map<string, Set<(event: never) => void>>();
  readonly #sockets = new Set<Promise<void>>();
  readonly #firstReady = Promise.withResolvers<void>();
  readonly #closed = Promise.withResolvers<AgentCloseInfo>();
  #drainWaiter?: PromiseWithResolvers<void>;
  readonly #stats: Omit<AgentStats, "state" | "queued" | "inFlight"> = {
    connects: 0,
    resumed: 0,
    failedAttempts: 0,
    disconnects: 0,
    deadConnections: 0,
    recordsIn: 0,
    framesIn: 0,
    recordsOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    acked: 0,
    resent: 0,
    dropped: 0,
    delivered: 0,
    duplicates: 0,
    handlerErrors: 0,
    unhandled: 0,
    requestsAnswered: 0,
    badSignatures: 0,
    pingsSent: 0,
    pongsReceived: 0,
  };

  /** Checks the options; nothing connects before {@linkcode connect}. */
  constructor(options: AgentClientOptions) {
    this.#url = agentGatewayUrl(options.url);
    if (!isAgentId(options.id)) {
      throw new RangeError(
        `Cannot create agent client: id must be 1-128 letters, digits, ':', '_' or '-', got '${
          String(options.id).slice(0, 80)
        }'`,
      );
    }
    this.#id = options.id;
    const key = options.privateKey;
    if (key instanceof Uint8Array) {
      if (key.length !== 32) {
        throw new RangeError(
          `Cannot create agent client: privateKey must be a 32-byte Ed25519 seed, got ${key.length} bytes`,
        );
      }
      this.#privateKey = key.slice();
    } else if (
      key instanceof CryptoKey && key.type === "private" &&
      key.algorithm.name === "Ed25519" && key.usages.includes("sign")
    ) {
      this.#privateKey = key;
    } else {
      throw new TypeError(
        "Cannot create agent client: privateKey must be a 32-byte seed or an Ed25519 private CryptoKey that can sign",
      );
    }
    if (options.trustedNodeKeys !== undefined) {
      this.#trusted = new Set(
        [...options.trustedNodeKeys].map((k) => b64u(parseEd25519PublicKey(k))),
      );
    }
    this.#channelDefaults = { ...options.channels };
    for (const [name, c] of Object.entries(this.#channelDefaults)) {
      agentChannel(this.#id, name);
      if (c.priority !== undefined) checkPriority(c.priority);
    }
    this.#log = options.log ?? (() => {});
    this.#reconnect = new ReconnectSchedule(options.backoff);
    this.#handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
    this.#heartbeatMs = options.heartbeatMs;
    this.#ackTimeoutMs = options.ackTimeoutMs ?? 60_000;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    const maxQueued = options.maxQueued ?? 1000;
    const dedupeSize = options.dedupeSize ?? 10_000;
    this.#maxBodyBytes = options.maxBodyBytes ?? 1 << 20;
    this.#drainMs = options.drainMs ?? 2000;
    this.#rekey = options.rekey;
    if (maxQueued < 1 || dedupeSize < 1) {
      throw new RangeError(
        "Cannot create agent client: maxQueued and dedupeSize must be at least 1",
      );
    }
    this.#seen = new SeenIds(dedupeSize);
    this.#sendQueue = new SendQueue({
      maxQueued,
      onDropped: () => this.#stats.dropped++,
      onIdle: () => this.#drainWaiter?.resolve(),
    });
    this.#subs = new Subscriptions({
      requestTimeoutMs: this.#requestTimeoutMs,
      ready: () => this.#readyConnection(),
      send: (conn, ch, type, id) =>
        this.#write(conn, this.#header(conn, ch, type, {}, id), EMPTY),
      onRefused: (error, ch) =>
        this.#emit("error", { error, context: `subscribe ${ch}` }),
    });
    this.#firstReady.promise.catch(() => {});
  }

  /** The agent id. */
  get id(): string {
    return this.#id;
  }

  /** The current state. */
  get state(): AgentState {
    return this.#state;
  }

  /** The node of the current connection, once ready. */
  get node(): string | undefined {
    return this.#conn?.phase === "ready" ? this.#conn.node : undefined;
  }

  /** The current session id, once ready. */
  get sessionId(): string | undefined {
    return this.#conn?.phase === "ready" ? this.#conn.sid : undefined;
  }

  /** Settles when the client has stopped for good. */
  get closed(): Promise<AgentCloseInfo> {
    return this.#closed.promise;
  }

  /** A snapshot of the counters. */
  stats(): AgentStats {
    return {
      state: this.#state,
      queued: this.#sendQueue.queued,
      inFlight: this.#sendQueue.inFlight(),
      ...this.#stats,
    };
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof AgentEvents>(
    type: K,
    listener: (event: AgentEvents[K]) => void,
  ): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = new Set());
    set.add(listener as (event: never) => void);
    return () => set.delete(listener as (event: never) => void);
  }

  /**
   * Starts connecting (once) and resolves after the first handshake. Keeps
   * retrying through transient failures; rejects with an {@linkcode AgentError}
   * when the client stops first (`close()`, 4401, 4409).
   */
  async connect(): Promise<this> {
    if (this.#state === "closed") {
      throw new AgentError("closed", "Cannot connect: the client is closed");
    }
    if (this.#state === "idle") {
      this.#state = "connecting";
      void this.#open();
    }
    await this.#firstReady.promise;
    return this;
  }

  /**
   * Subscribes to `backend.{id}.{name}` (`channel` is the name or the full
   * channel) and resolves when the node confirms; rejects with an
   * {@linkcode AgentError} (`forbidden`, …) when it refuses. The handler
   * runs for one message at a time per channel; the message is acknowledged
   * after it resolves. A handler that returns nothing (not a promise) is
   * called as the record is read, without a promise per message; one that
   * returns a promise holds its channel until it settles. Subscriptions are
   * renewed after every reconnect.
   * Called before {@linkcode connect}, it settles after the first handshake:
   * start `connect()` before awaiting it.
   */
  async subscribe(
    channel: string,
    handler: MessageHandler,
  ): Promise<Subscription> {
    const ch = this.#backendChannelOf(channel);
    const entry = this.#entry(ch);
    if (entry.onMessage) {
      throw new TypeError(`Cannot subscribe: ${ch} already has a handler`);
    }
    entry.onMessage = handler;
    this.#release(ch);
    try {
      await this.#subs.confirm(entry);
    } catch (err) {
      if (entry.onMessage === handler) entry.onMessage = undefined;
      this.#subs.dropIfUnused(entry);
      throw err;
    }
    return {
      channel: ch,
      unsubscribe: () => this.#subs.removeHandler(ch, "onMessage", handler),
    };
  }

  /**
   * Answers backend requests on `backend.{id}.{name}`: `fn`'s result is sent
   * as `res`; a throw becomes `err` (its `code` when it is an
   * {@linkcode AgentError} with a protocol code, else `unavailable`).
   * Subscribes like {@linkcode subscribe}.
   */
  async handle(channel: string, fn: RequestHandler): Promise<Subscription> {
    const ch = this.#backendChannelOf(channel);
    const entry = this.#entry(ch);
    if (entry.onRequest) {
      throw new TypeError(`Cannot handle: ${ch} already has a request handler`);
    }
    entry.onRequest = fn;
    try {
      await this.#subs.confirm(entry);
    } catch (err) {
      if (entry.onRequest === fn) entry.onRequest = undefined;
      this.#subs.dropIfUnused(entry);
      throw err;
    }
    return {
      channel: ch,
      unsubscribe: () => this.#subs.removeHandler(ch, "onRequest", fn),
    };
  }

  /** Removes every handler of `channel` and unsubscribes at the node. */
  async unsubscribe(channel: string): Promise<void> {
    const entry = this.#subs.get(this.#backendChannelOf(channel));
    if (!entry) return;
    entry.onMessage = undefined;
    entry.onRequest = undefined;
    await this.#subs.unsubscribe(entry);
  }

  /**
   * Publishes `payload` (JSON) on `agent.{id}.{name}` (`channel` is the name
   * or the full channel); resolves when the node acknowledges it. Queued
   * while disconnected and sent again after a reconnect until acknowledged
   * (at-least-once, same message id). Rejects with an {@linkcode AgentError}:
   * `forbidden` (and other `err` codes from the node), `timeout`,
   * `queue_full`, `closed`.
   */
  publish(
    channel: string,
    payload: unknown,
    options: PublishOptions = {},
  ): Promise<void> {
    return this.#send("msg", channel, payload, options) as Promise<void>;
  }

  /**
   * Sends a request on `agent.{id}.{name}`; resolves with the node's `res`
   * body (parsed JSON), rejects with an {@linkcode AgentError} on `err`,
   * `timeout`, or `unavailable` when the connection dropped after it was
   * sent (requests are not resent).
   */
  request(
    channel: string,
    payload: unknown,
    options: RequestOptions = {},
  ): Promise<unknown> {
    return this.#send("req", channel, payload, options);
  }

  /**
   * Asks another agent by capability, through the node: a request on
   * `agent.{id}.requests.route` carrying `{capability, requestId, payload}`,
   * which the node's prompt service routes to an agent offering
   * `capability` (one handling `tasks.{capability}`) as one more hop of
   * prompt `requestId`. Resolves with that agent's answer
   * (`{response, agent, hop}`); rejects like {@linkcode request}.
   *
   * @example Usage
   * ```ts ignore
   * const plan = await agent.ask("plan", { prompt: "2 nights in Lisbon" }, { requestId });
   * ```
   */
  ask(
    capability: string,
    payload: unknown,
    options: RequestOptions & { requestId: string },
  ): Promise<unknown> {
    const { requestId, ...rest } = options;
    return this.#send("req", "requests.route", {
      capability,
      requestId,
      payload,
    }, { correlationId: requestId, ...rest });
  }

  /**
   * Stops: waits up to `drainMs` for outstanding publishes when connected,
   * closes the socket (1000) and rejects whatever is left with `closed`.
   */
  async close(): Promise<void> {
    if (this.#closing || this.#state === "closed") {
      await this.#closed.promise;
      return;
    }
    this.#closing = true;
    this.#reconnect.cancel();
    if (this.#conn?.phase === "ready" && this.#sendQueue.size > 0) {
      const d = this.#drainWaiter = Promise.withResolvers<void>();
      const timer = setTimeout(d.resolve, this.#drainMs);
      await d.promise;
      clearTimeout(timer);
      this.#drainWaiter = undefined;
    }
    this.#flushAcks();
    const conn = this.#conn;
    if (conn) {
      this.#conn = undefined;
      this.#endConnection(conn);
      try {
        conn.ws.close(CloseCode.normal, "agent closing");
      } catch { /* already closed */ }
    }
    this.#finish({ code: CloseCode.normal, reason: "closed by the agent" });
    await this.#settleSockets();
  }

  /** `await using agent = …` closes it. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // -------------------------------------------------------- connection

  #emit<K extends keyof AgentEvents>(type: K, event: AgentEvents[K]): void {
    for (const l of this.#listeners.get(type) ?? []) {
      try {
        (l as (e: AgentEvents[K]) => void)(event);
      } catch (err) {
        this.#log("warn", `agent ${type} listener threw`, {
          error: (err as Error).message,
        });
      }
    }
  }

  #signer(): Promise<CryptoKey> {
    if (!this.#signingKey) {
      const key = this.#privateKey;
      this.#signingKey = key instanceof CryptoKey
        ? Promise.resolve(key)
        : ed25519FromSeed(key).then((k) => k.privateKey);
    }
    return this.#signingKey;
  }

  async #open(): Promise<void> {
    if (this.#closing || this.#state === "closed") return;
    const attempt = this.#reconnect.nextAttempt();
    // Tokens are single-use: taken for this attempt, and given back only if
    // the attempt ends before the auth record carrying it is sent.
    const saved = this.#resume.take();
    const resume = saved?.token;
    this.#state = "connecting";
    this.#emit("connecting", { attempt, url: this.#url, resume: !!resume });
    this.#log("debug", "agent connecting", { url: this.#url, attempt });
    let handshake;
    try {
      handshake = await agentHello(this.#id, { resume: !!resume });
      if (!resume) await this.#signer();
    } catch (err) {
      this.#fail(
        new AgentError("closed", `Cannot connect: ${(err as Error).message}`, {
          cause: err,
        }),
      );
      return;
    }
    if (this.#closing) return;
    let ws: WebSocketLike;
    try {
      // Not `new WebSocket`: it stalls ~44 ms on every frame over 1 KiB.
      ws = openWebSocket(this.#url);
    } catch (err) {
      this.#fail(
        new AgentError("closed", `Cannot connect: ${(err as Error).message}`, {
          cause: err,
        }),
      );
      return;
    }
    ws.binaryType = "arraybuffer";
    const gone = Promise.withResolvers<void>();
    const conn: Connection = {
      ws,
      phase: "hello",
      handshake,
      resumeToken: resume,
      resumeSaved: saved,
      heartbeatMs: 0,
      acks: 1,
      lastRx: Date.now(),
      lastPing: Date.now(),
      gone: gone.promise,
    };
    this.#conn = conn;
    this.#sockets.add(conn.gone);
    conn.gone.then(() => this.#sockets.delete(conn.gone));
    conn.timer = setTimeout(
      () =>
        this.#abandon(
          conn,
          CloseCode.timeout,
          `handshake not finished within ${this.#handshakeTimeoutMs} ms`,
        ),
      this.#handshakeTimeoutMs,
    );
    ws.onopen = () => {
      if (this.#conn === conn) this.#sendRaw(conn, handshake.text);
    };
    ws.onmessage = (ev: MessageEvent) => this.#onFrame(conn, ev.data);
    ws.onerror = (ev) => {
      this.#log("debug", "agent socket error", {
        error: (ev as ErrorEvent).message,
      });
    };
    ws.onclose = (ev: CloseEvent) => {
      gone.resolve();
      this.#onClosed(conn, ev.code, ev.reason, true);
    };
  }

  #sendRaw(conn: Connection, data: string | Uint8Array<ArrayBuffer>): boolean {
    if (conn.ws.readyState !== WebSocket.OPEN) return false;
    conn.ws.send(data);
    this.#stats.bytesOut += typeof data === "string"
      ? encoder.encode(data).length
      : data.length;
    return true;
  }

  /** Seals and sends one record; false when the socket is no longer open. */
  #write(
    conn: Connection,
    header: RecordHeader,
    body: Uint8Array,
    signature?: Uint8Array,
  ): boolean {
    if (conn.ws.readyState !== WebSocket.OPEN || !conn.sealer) return false;
    const frame = conn.sealer.seal(header, body, signature);
    this.#sendRaw(conn, frame);
    this.#stats.recordsOut++;
    return true;
  }

  #header(
    conn: Connection,
    ch: string,
    type: string,
    extra: Record<string, string | number | undefined> = {},
    id: string = crypto.randomUUID(),
  ): RecordHeader {
    const header: RecordHeader = {
      sid: conn.sid!,
      from: this.#id,
      to: "backend",
      ch,
      type,
      id,
    };
    for (const [k, v] of Object.entries(extra)) {
      if (v !== undefined) header[k] = v;
    }
    return header;
  }

  /** The header of a publish or request (`#header` without the loop over extras). */
  #callHeader(conn: Connection, o: Outgoing<Connection>): RecordHeader {
    const header: RecordHeader = {
      sid: conn.sid!,
      from: this.#id,
      to: "backend",
      ch: o.ch,
      type: o.type,
      id: o.id,
      prio: o.prio,
    };
    if (o.mt !== undefined) header.mt = o.mt;
    if (o.cid !== undefined) header.cid = o.cid;
    return header;
  }

  /** Sends a control record on the ready connection, if any. */
  #control(
    ch: string,
    type: string,
    extra: Record<string, string | number | undefined> = {},
    body: Uint8Array = EMPTY,
  ): void {
    const conn = this.#conn;
    if (conn?.phase !== "ready") return;
    this.#write(conn, this.#header(conn, ch, type, extra), body);
  }

  #onFrame(conn: Connection, data: unknown): void {
    if (this.#conn !== conn) return;
    conn.lastRx = Date.now();
    if (typeof data === "string") {
      this.#stats.bytesIn += encoder.encode(data).length;
      if (conn.phase !== "hello") {
        this.#abandon(conn, CloseCode.protocol, "text frame after the welcome");
        return;
      }
      conn.phase = "welcome";
      void this.#finishHandshake(conn, data);
      return;
    }
    if (!(data instanceof ArrayBuffer)) return;
    this.#stats.bytesIn += data.byteLength;
    if (conn.phase !== "auth" && conn.phase !== "ready") {
      this.#abandon(
        conn,
        CloseCode.protocol,
        "binary frame before the welcome",
      );
      return;
    }
    this.#stats.framesIn++;
    const bytes = new Uint8Array(data);
    if (bytes[0] === BATCH_FRAME_TYPE && conn.phase === "ready") {
      // Several records, each a u32 big-endian length and the record.
      const view = new DataView(data);
      for (let at = 1; at < bytes.length && this.#conn === conn;) {
        const len = at + 4 <= bytes.length ? view.getUint32(at) : -1;
        if (len < 0 || at + 4 + len > bytes.length) {
          this.#abandon(conn, CloseCode.recordRefused, "truncated batch frame");
          return;
        }
        this.#onRecordBytes(conn, bytes.subarray(at + 4, at + 4 + len));
        at += 4 + len;
      }
      return;
    }
    if (bytes[0] === SEALED_BATCH_TYPE && conn.phase === "ready") {
      return this.#onSealedBatch(conn, bytes);
    }
    this.#onRecordBytes(conn, bytes);
  }

  /**
   * A sealed batch frame: opened once (window, tag), then its inner records
   * handled in order as they are read; a bad frame or inner length closes
   * 4403.
   */
  #onSealedBatch(conn: Connection, bytes: Uint8Array): void {
    const context = {
      sid: conn.sid!,
      from: `node:${conn.node}`,
      to: this.#id,
      epoch: 0,
      seq: 0,
    };
    let plain: Uint8Array;
    try {
      const opened = conn.opener!.openBatch(bytes);
      plain = opened.plain;
      context.epoch = opened.epoch;
      context.seq = opened.seq;
    } catch (err) {
      return this.#refused(conn, err);
    }
    for (let at = 0; at < plain.length && this.#conn === conn;) {
      let rec: OpenedRecord;
      try {
        ({ record: rec, next: at } = readInnerRecord(plain, at, context));
      } catch (err) {
        return this.#refused(conn, err);
      }
      this.#onOpened(conn, rec);
    }
  }

  /** A record or frame that does not open: the connection closes 4403. */
  #refused(conn: Connection, err: unknown): void {
    this.#abandon(
      conn,
      CloseCode.recordRefused,
      `record refused: ${(err as Error).message}`,
    );
  }

  /** One record of the connection (a frame's, or one of a batched frame's). */
  #onRecordBytes(conn: Connection, bytes: Uint8Array): void {
    let rec: OpenedRecord;
    try {
      rec = conn.opener!.open(bytes);
    } catch (err) {
      return this.#refused(conn, err);
    }
    this.#onOpened(conn, rec);
  }

  /** One opened record: checked for its session and recipient, then handled. */
  #onOpened(conn: Connection, rec: OpenedRecord): void {
    this.#stats.recordsIn++;
    const h = rec.header;
    if (h.sid !== conn.sid || h.to !== this.#id) {
      this.#abandon(
        conn,
        CloseCode.recordRefused,
        "record addressed to another session or agent",
      );
      return;
    }
    if (conn.phase === "auth") {
      if (h.type !== "ready") {
        this.#abandon(conn, CloseCode.protocol, `${h.type} before ready`);
        return;
      }
      this.#onReady(conn, rec);
      return;
    }
    this.#onRecord(conn, rec);
  }

  async #finishHandshake(conn: Connection, text: string): Promise<void> {
    let result;
    try {
      result = await agentFinish(conn.handshake, text, {
        signingKey: conn.resumeToken ? undefined : await this.#signer(),
        trustedNodeKeys: this.#trusted,
      });
    } catch (err) {
      if (this.#conn !== conn) return;
      this.#emit("error", { error: err as Error, context: "handshake" });
      const reason = err instanceof HandshakeError ? err.reason : "error";
      this.#abandon(
        conn,
        reason === "untrusted-node" || reason === "bad-signature"
          ? CloseCode.authFailed
          : CloseCode.protocol,
        `welcome refused (${reason}): ${(err as Error).message}`,
      );
      return;
    }
    if (this.#conn !== conn) return;
    const { keys, welcome, signature } = result;
    conn.sid = keys.sid;
    conn.node = welcome.node;
    conn.nodeKeyText = welcome.key;
    conn.nodeKey = fromB64u(welcome.key, 32, "welcome.key");
    conn.sealer = new RecordSealer(keys.c2s, this.#rekey);
    conn.opener = new RecordOpener(keys.s2c, {
      maxRecordBytes: this.#maxBodyBytes + 64 + 4096 + 16 + 16,
    });
    conn.phase = "auth";
    // `batch`: this client reads sealed batch frames (nodes that do not
    // know it ignore it; nodes that know only `true` send plain frames).
    const body = conn.resumeToken
      ? { resume: conn.resumeToken, batch: BATCH_VERSION }
      : { sig: b64u(signature!), batch: BATCH_VERSION };
    this.#write(
      conn,
      this.#header(conn, "", "auth", {}, "auth"),
      jsonBody(body),
    );
  }

  #onReady(conn: Connection, rec: OpenedRecord): void {
    const body = parseBody(rec.body) as Record<string, unknown> | undefined;
    if (typeof body !== "object" || body === null) {
      this.#abandon(conn, CloseCode.protocol, "ready body is not an object");
      return;
    }
    clearTimeout(conn.timer);
    conn.phase = "ready";
    conn.heartbeatMs = this.#heartbeatMs ??
      (typeof body.heartbeatMs === "number" && body.heartbeatMs > 0
        ? body.heartbeatMs
        : 30_000);
    if (typeof body.resume === "string" && body.resume.length > 0) {
      this.#resume.store({
        token: body.resume,
        expiresAt: typeof body.resumeExpiresAt === "number"
          ? body.resumeExpiresAt
          : Date.now() + 3_600_000,
      });
    }
    if (typeof body.node === "string") conn.node = body.node;
    conn.acks = Number.isInteger(body.acks) && (body.acks as number) > 1
      ? Math.min(body.acks as number, MAX_ACKS)
      : 1;
    this.#state = "ready";
    this.#reconnect.connected();
    this.#stats.connects++;
    if (conn.resumeToken) this.#stats.resumed++;
    conn.lastPing = Date.now();
    const hb = conn.heartbeatMs;
    conn.timer = setInterval(
      () => this.#tick(conn),
      Math.max(5, Math.floor(hb / 4)),
    );
    this.#log("info", "agent ready", {
      node: conn.node,
      sid: conn.sid,
      resumed: !!conn.resumeToken,
    });
    this.#emit("ready", {
      node: conn.node!,
      sid: conn.sid!,
      nodeKey: conn.nodeKeyText!,
      resumed: !!conn.resumeToken,
      heartbeatMs: hb,
    });
    this.#firstReady.resolve();
    // Acks left from the last connection, then subscriptions, so the node
    // knows them before our sends.
    if (this.#acksDue.size > 0) this.#flushAcks();
    this.#subs.renew(conn);
    this.#pump();
  }

  #tick(conn: Connection): void {
    if (this.#conn !== conn) return;
    const now = Date.now();
    const hb = conn.heartbeatMs;
    if (now - conn.lastRx >= 2 * hb) {
      this.#stats.deadConnections++;
      this.#abandon(
        conn,
        CloseCode.timeout,
        `no traffic from the node for ${2 * hb} ms`,
      );
      return;
    }
    if (now - conn.lastPing >= hb) {
      conn.lastPing = now;
      this.#stats.pingsSent++;
      this.#control("", "ping");
    }
  }

  /** The agent gives up on a connection (protocol error, timeout). */
  #abandon(conn: Connection, code: number, reason: string): void {
    if (this.#conn !== conn) return;
    this.#log("warn", "agent dropping connection", { code, reason });
    try {
      conn.ws.close(code, reason.slice(0, 120));
    } catch { /* already closing */ }
    this.#onClosed(conn, code, reason, false);
  }

  /** Stops timers and fails or requeues what depended on `conn`. */
  #endConnection(conn: Connection): void {
    clearTimeout(conn.timer);
    clearInterval(conn.timer);
    this.#sendQueue.connectionLost(conn);
    this.#subs.connectionLost(conn);
  }

  #onClosed(
    conn: Connection,
    code: number,
    reason: string,
    byNode: boolean,
  ): void {
    if (this.#conn !== conn) return;
    this.#conn = undefined;
    const wasReady = conn.phase === "ready";
    if (
      (conn.phase === "hello" || conn.phase === "welcome") &&
      conn.resumeSaved
    ) this.#resume.giveBack(conn.resumeSaved); // never sent: still unused
    this.#endConnection(conn);
    if (wasReady) this.#stats.disconnects++;
    else this.#stats.failedAttempts++;
    this.#log(wasReady ? "info" : "debug", "agent disconnected", {
      code,
      reason,
      byNode,
    });
    if (this.#closing) {
      this.#drainWaiter?.resolve();
      return;
    }
    if (byNode && code === CloseCode.replaced) {
      this.#emit("disconnected", { code, reason, byNode });
      this.#fail(
        new AgentError(
          "replaced",
          `the node closed the connection with 4409 (replaced: ${reason}); not reconnecting`,
          { closeCode: code },
        ),
        code,
        reason,
      );
      return;
    }
    if (byNode && code === CloseCode.authFailed) {
      if (conn.resumeToken) {
        // The token may have expired or been used: prove ourselves once more.
        this.#emit("disconnected", { code, reason, byNode, retryInMs: 0 });
        this.#state = "disconnected";
        this.#reconnect.schedule(() => void this.#open(), 0);
        return;
      }
      this.#emit("disconnected", { code, reason, byNode });
      this.#fail(
        new AgentError(
          "auth_failed",
          `the node refused the agent's signature (4401: ${reason}); check the id, the key and the enrolment`,
          { closeCode: code },
        ),
        code,
        reason,
      );
      return;
    }
    const delay = this.#reconnect.nextDelay();
    this.#state = "disconnected";
    this.#emit("disconnected", { code, reason, byNode, retryInMs: delay });
    this.#reconnect.schedule(() => void this.#open(), delay);
  }

  /** Stops for good because of `error`. */
  #fail(error: AgentError, code?: number, reason?: string): void {
    this.#log("error", "agent stopped", { error: error.message });
    const conn = this.#conn;
    if (conn) {
      this.#conn = undefined;
      this.#endConnection(conn);
      try {
        conn.ws.close(CloseCode.normal, "agent stopping");
      } catch { /* closed */ }
    }
    this.#finish({ code, reason, error });
  }

  #finish(info: AgentCloseInfo): void {
    if (this.#state === "closed") return;
    this.#reconnect.cancel();
    this.#closing = true;
    this.#state = "closed";
    clearTimeout(this.#acksTimer);
    this.#acksTimer = undefined;
    this.#acksDue.clear();
    this.#acksCarried = 0;
    const err = info.error ??
      new AgentError("closed", "the agent client is closed");
    this.#sendQueue.rejectAll(err);
    this.#subs.close(err);
    this.#firstReady.reject(err);
    this.#closed.resolve(info);
    this.#emit("closed", info);
  }

  async #settleSockets(): Promise<void> {
    if (this.#sockets.size === 0) return;
    let timer: Timer | undefined;
    await Promise.race([
      Promise.all([...this.#sockets]),
      new Promise((r) => timer = setTimeout(r, 1000)),
    ]);
    clearTimeout(timer);
  }

  // ------------------------------------------------------------ records

  #onRecord(conn: Connection, rec: OpenedRecord): void {
    const h = rec.header;
    const re = typeof h.re === "string" ? h.re : undefined;
    switch (h.type) {
      case "ping":
        this.#control("", "pong", { re: h.id });
        return;
      case "pong":
        this.#stats.pongsReceived++;
        return;
      case "ack": {
        const o = re === undefined ? undefined : this.#sendQueue.get(re);
        if (o?.type === "msg") {
          this.#stats.acked++;
          this.#sendQueue.settle(o, undefined, undefined);
        }
        return;
      }
      case "res": {
        const o = re === undefined ? undefined : this.#sendQueue.get(re);
        if (o?.type === "req") {
          this.#sendQueue.settle(o, undefined, payloadOf(rec));
        }
        return;
      }
      case "ok":
      case "err": {
        if (re === undefined) return;
        if (this.#subs.answer(re, h.type, rec.body)) return;
        const o = this.#sendQueue.get(re);
        if (o && h.type === "err") {
          this.#sendQueue.settle(
            o,
            errorFromBody(
              rec.body,
              `${o.type === "msg" ? "publish" : "request"} on ${o.ch}`,
            ),
          );
        }
        return;
      }
      case "msg":
      case "req": {
        const name = this.#ownChannelName(h.ch);
        if (name === undefined) {
          this.#log("warn", "agent ignored a record on a foreign channel", {
            ch: h.ch,
            type: h.type,
          });
          if (h.type === "req") {
            this.#answerError(
              conn,
              h,
              "bad_request",
              `not a channel of ${this.#id}`,
            );
          }
          return;
        }
        if (h.type === "req") void this.#onRequest(conn, rec);
        else if (rec.signature === undefined && !this.#chains.has(h.ch)) {
          // Nothing of this channel waits and nothing to verify: handled now,
          // without a promise (a handler that returns one holds the channel).
          const pending = this.#deliver(rec, name);
          if (pending) this.#track(h.ch, pending);
        } else this.#chain(h.ch, () => this.#onMessage(conn, rec, false, name));
        return;
      }
      default:
        this.#log("debug", "agent ignored a record", { type: h.type });
    }
  }

  /**
   * The name of `ch` when it is one of this agent's backend channels
   * (`backend.{id}.{name}`), else undefined. The last answer is kept: a
   * burst is mostly one channel.
   */
  #ownChannelName(ch: string): string | undefined {
    if (ch === this.#lastChannel[0]) return this.#lastChannel[1];
    const parsed = parseChannel(ch);
    const name = parsed?.side === "backend" && parsed.id === this.#id
      ? parsed.name
      : undefined;
    this.#lastChannel = [ch, name];
    return name;
  }

  #chain(ch: string, step: () => Promise<void>): void {
    this.#track(ch, (this.#chains.get(ch) ?? Promise.resolve()).then(step));
  }

  /** Makes `work` the tail of `ch`'s chain: later messages of `ch` wait for it. */
  #track(ch: string, work: Promise<void>): void {
    const next = work.catch(
      (err) =>
        this.#log("error", "agent message processing failed", {
          ch,
          error: (err as Error).message,
        }),
    );
    this.#chains.set(ch, next);
    next.then(() => {
      if (this.#chains.get(ch) === next) this.#chains.delete(ch);
    });
  }

  async #verified(conn: Connection, rec: OpenedRecord): Promise<boolean> {
    if (!rec.signature) return true;
    const ok = await verifyMessageSignature(
      conn.nodeKey!,
      rec.signature,
      rec.headerBytes,
      rec.body,
    );
    if (!ok) {
      this.#stats.badSignatures++;
      const error = new AgentError(
        "bad_request",
        `${rec.header.type} ${rec.header.id} on ${rec.header.ch}: the node's signature does not verify; dropped`,
      );
      this.#log("warn", error.message);
      this.#emit("error", { error, context: "signature" });
    }
    return ok;
  }

  async #onMessage(
    conn: Connection | undefined,
    rec: OpenedRecord,
    verified: boolean,
    name: string,
  ): Promise<void> {
    if (this.#state === "closed") return;
    if (!verified && !await this.#verified(conn!, rec)) return;
    await this.#deliver(rec, name);
  }

  /**
   * Hands a verified message to its subscription's handler and acknowledges
   * it once handled. Synchronous unless the handler returns a promise; then
   * the promise of its outcome.
   */
  #deliver(rec: OpenedRecord, name: string): Promise<void> | undefined {
    if (this.#state === "closed") return;
    const h = rec.header;
    // `"ack": 0`: pushed once and not stored by the node, so never sent
    // again: neither remembered nor acknowledged (docs/protocol.md).
    const once = h.ack === 0;
    if (!once && this.#seen.has(h.id)) {
      this.#stats.duplicates++;
      this.#seen.add(h.id);
      this.#ack(h.ch, h.id);
      return;
    }
    const handler = this.#subs.get(h.ch)?.onMessage;
    if (!handler) {
      this.#hold(rec);
      return;
    }
    let result: void | Promise<void>;
    try {
      result = handler(toMessage(rec, name));
    } catch (err) {
      this.#handlerFailed(h, err as Error);
      return;
    }
    if (typeof (result as Promise<void> | undefined)?.then === "function") {
      return Promise.resolve(result).then(
        () => this.#handled(h),
        (err) => this.#handlerFailed(h, err as Error),
      );
    }
    this.#handled(h);
  }

  #handlerFailed(h: RecordHeader, err: Error): void {
    this.#stats.handlerErrors++;
    this.#log("warn", "agent message handler threw; not acknowledged", {
      ch: h.ch,
      id: h.id,
      error: err?.message,
    });
    this.#emit("error", { error: err, context: `handler ${h.ch}` });
  }

  #handled(h: RecordHeader): void {
    this.#stats.delivered++;
    if (h.ack === 0) return; // see #deliver
    this.#seen.add(h.id);
    // On the current connection: the id is stable across redeliveries.
    this.#ack(h.ch, h.id);
  }

  /**
   * Acknowledges backend message `id` on `ch`. A node that takes several ids
   * per `ack` (`acks` in its `ready`) gets the acks of a burst together: they
   * are gathered until the current task ends (a 0 ms timer, so every record
   * already read has been handled) and sent as one record per channel and
   * `acks` ids. Acks due when the connection ends (the node closed it
   * before the task ended, a handler finished after it) are kept, at most
   * `MAX_CARRIED_ACKS`, and sent first on the next connection: the
   * node settles a message whose ack comes before it is delivered again
   * (docs/protocol.md), so it is not delivered twice.
   */
  #ack(ch: string, id: string): void {
    const conn = this.#conn;
    const ready = conn?.phase === "ready";
    if (ready && conn.acks <= 1) return this.#control(ch, "ack", { re: id });
    if (!ready && this.#acksCarried >= MAX_CARRIED_ACKS) return;
    const due = this.#acksDue.get(ch);
    if (due) due.push(id);
    else this.#acksDue.set(ch, [id]);
    if (!ready) {
      this.#acksCarried++;
      return;
    }
    this.#acksTimer ??= setTimeout(() => this.#flushAcks(), 0);
  }

  #flushAcks(): void {
    clearTimeout(this.#acksTimer);
    this.#acksTimer = undefined;
    const conn = this.#conn;
    if (conn?.phase !== "ready") {
      // Kept for the next connection (bounded: #ack stops adding at the cap).
      let kept = 0;
      for (const ids of this.#acksDue.values()) kept += ids.length;
      this.#acksCarried = kept;
      return;
    }
    const due = [...this.#acksDue];
    this.#acksDue.clear();
    this.#acksCarried = 0;
    const per = conn.acks;
    for (const [ch, ids] of due) {
      for (let i = 0; i < ids.length; i += per) {
        const [re, ...more] = ids.slice(i, i + per);
        this.#write(
          conn,
          this.#header(conn, ch, "ack", { re }),
          more.length ? encoder.encode(JSON.stringify(more)) : EMPTY,
        );
      }
    }
  }

  #hold(rec: OpenedRecord): void {
    this.#stats.unhandled++;
    this.#log("warn", "agent holds a message without a handler", {
      ch: rec.header.ch,
      id: rec.header.id,
    });
    this.#subs.hold(rec);
  }

  /** Hands held messages of `ch` to its new handler. */
  #release(ch: string): void {
    for (const rec of this.#subs.release(ch)) {
      const name = parseChannel(ch)!.name;
      this.#chain(ch, () => this.#onMessage(undefined, rec, true, name));
    }
  }

  async #onRequest(conn: Connection, rec: OpenedRecord): Promise<void> {
    const h = rec.header;
    if (!await this.#verified(conn, rec)) {
      this.#answerError(conn, h, "bad_request", "signature does not verify");
      return;
    }
    const handler = this.#subs.get(h.ch)?.onRequest;
    if (!handler) {
      this.#answerError(conn, h, "no_handler", `no handler for ${h.ch}`);
      return;
    }
    let result: unknown;
    try {
      result = await handler(toMessage(rec));
    } catch (err) {
      const code = err instanceof AgentError && NODE_ERROR_CODES.has(err.code)
        ? err.code
        : "unavailable";
      this.#answerError(conn, h, code, (err as Error).message);
      return;
    }
    if (this.#conn !== conn || conn.phase !== "ready") return;
    this.#stats.requestsAnswered++;
    this.#write(
      conn,
      this.#header(conn, h.ch, "res", { re: h.id }),
      jsonBody(result),
    );
  }

  #answerError(
    conn: Connection,
    h: RecordHeader,
    code: string,
    message: string,
  ): void {
    // An answer belongs to the session the request came on.
    if (this.#conn !== conn || conn.phase !== "ready") return;
    this.#stats.requestsAnswered++;
    this.#write(
      conn,
      this.#header(conn, h.ch, "err", { re: h.id }),
      jsonBody({ code, message: message.slice(0, 500) }),
    );
  }

  // ------------------------------------------------------ subscriptions

  #backendChannelOf(channel: string): string {
    if (channel.startsWith("backend.") || channel.startsWith("agent.")) {
      const parsed = parseChannel(channel);
      if (parsed?.side !== "backend" || parsed.id !== this.#id) {
        throw new RangeError(
          `Cannot subscribe: '${
            channel.slice(0, 80)
          }' is not a backend.${this.#id}.{name} channel`,
        );
      }
      return channel;
    }
    return backendChannel(this.#id, channel);
  }

  #entry(ch: string): ChannelEntry<Connection> {
    if (this.#state === "closed" || this.#closing) {
      throw new AgentError("closed", "Cannot subscribe: the client is closed");
    }
    return this.#subs.entry(ch);
  }

  /** The ready connection of a client not closed, if any. */
  #readyConnection(): Connection | undefined {
    const conn = this.#conn;
    return conn?.phase === "ready" && this.#state !== "closed"
      ? conn
      : undefined;
  }

  // ------------------------------------------------------------ sending

  #agentChannelOf(channel: string): { ch: string; name: string } {
    let known = this.#channelsSeen.get(channel);
    if (!known) {
      known = this.#resolveChannel(channel);
      // Bounded: an agent that makes up channel names forgets them all at once.
      if (this.#channelsSeen.size >= 1000) this.#channelsSeen.clear();
      this.#channelsSeen.set(channel, known);
    }
    return known;
  }

  /** The full channel and name of `channel`; throws RangeError for another agent's or a bad one. */
  #resolveChannel(channel: string): { ch: string; name: string } {
    if (channel.startsWith("agent.") || channel.startsWith("backend.")) {
      const parsed = parseChannel(channel);
      if (parsed?.side !== "agent" || parsed.id !== this.#id) {
        throw new RangeError(
          `Cannot send: '${
            channel.slice(0, 80)
          }' is not an agent.${this.#id}.{name} channel`,
        );
      }
      return { ch: channel, name: parsed.name };
    }
    return { ch: agentChannel(this.#id, channel), name: channel };
  }

  #send(
    type: "msg" | "req",
    channel: string,
    payload: unknown,
    options: PublishOptions,
  ): Promise<unknown> {
    let sent: Promise<unknown>;
    try {
      if (this.#closing || this.#state === "closed") {
        throw new AgentError("closed", "Cannot send: the client is closed");
      }
      const { ch, name } = this.#agentChannelOf(channel);
      const defaults = this.#channelDefaults[name] ?? {};
      const prio = checkPriority(
        options.priority ?? defaults.priority ?? DEFAULT_PRIORITY,
      );
      const body = jsonBody(payload);
      const signed = options.signed ?? defaults.signed ?? false;
      if (body.length + (signed ? 64 : 0) > this.#maxBodyBytes) {
        throw new RangeError(
          `Cannot send on ${ch}: body of ${body.length} bytes is over the limit of ${this.#maxBodyBytes}`,
        );
      }
      const timeoutMs = options.timeoutMs ??
        (type === "msg" ? this.#ackTimeoutMs : this.#requestTimeoutMs);
      sent = this.#sendQueue.add({
        type,
        ch,
        prio,
        mt: options.type,
        cid: options.correlationId,
        body,
        signed,
      }, timeoutMs);
    } catch (err) {
      return Promise.reject(err);
    }
    this.#pump();
    return sent;
  }

  /**
   * Sends queued publishes and requests while connected, at once (no
   * promise) until a signed one, whose signature is made asynchronously;
   * the pump stays busy until it is written, so the order holds.
   */
  #pump(): void {
    if (this.#pumping) return;
    this.#pumping = true;
    let signing = false;
    try {
      for (;;) {
        const conn = this.#conn;
        if (conn?.phase !== "ready") return;
        const o = this.#sendQueue.next();
        if (!o) return;
        const header = this.#callHeader(conn, o);
        if (o.signed) {
          signing = true;
          this.#signAndWrite(conn, o, header).finally(() => {
            this.#pumping = false;
            this.#pump();
          });
          return;
        }
        if (!this.#writeCall(conn, o, header)) return;
      }
    } finally {
      if (!signing) this.#pumping = false;
    }
  }

  async #signAndWrite(
    conn: Connection,
    o: Outgoing<Connection>,
    header: RecordHeader,
  ): Promise<void> {
    let signature: Uint8Array;
    try {
      signature = await signMessage(
        await this.#signer(),
        encodeHeader(header),
        o.body,
      );
    } catch (err) {
      this.#sendQueue.settle(o, err as Error);
      return;
    }
    if (o.done) return;
    if (this.#conn !== conn || conn.phase !== "ready") {
      this.#sendQueue.requeue(o);
      return;
    }
    this.#writeCall(conn, o, header, signature);
  }

  /** Writes call `o`; false (and `o` back in line) when the socket is closed. */
  #writeCall(
    conn: Connection,
    o: Outgoing<Connection>,
    header: RecordHeader,
    signature?: Uint8Array,
  ): boolean {
    try {
      if (!this.#write(conn, header, o.body, signature)) {
        this.#sendQueue.requeue(o);
        return false;
      }
    } catch (err) {
      this.#sendQueue.settle(o, err as Error);
      return true;
    }
    if (o.sends++ > 0) this.#stats.resent++;
    o.sentOn = conn;
    return true;
  }
}

/**
 * A record's body as {@linkcode parseBody} gives it, from the text
 * {@linkcode readInnerRecord} decoded when it has it (no decoding of its own).
 */
function payloadOf(rec: OpenedRecord): unknown {
  const text = rec.text;
  if (text === undefined) return parseBody(rec.body);
  if (text.length === 0) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function toMessage(
  rec: OpenedRecord,
  name = parseChannel(rec.header.ch)!.name,
): AgentMessage {
  const h = rec.header;
  const prio = typeof h.prio === "number" ? h.prio : DEFAULT_PRIORITY;
  return {
    channel: h.ch,
    name,
    id: h.id,
    type: typeof h.mt === "string" ? h.mt : undefined,
    priority: prio,
    correlationId: typeof h.cid === "string" ? h.cid : undefined,
    traceparent: typeof h.tp === "string" ? h.tp : undefined,
    payload: payloadOf(rec),
    body: rec.body,
    signed: rec.signature !== undefined,
    header: h,
  };
}

/**
 * Makes an {@linkcode AgentClient} and waits for its first handshake.
 *
 * @example Usage
 * ```ts
 * import { connectAgent, generateAgentKey } from "./client.ts";
 * import { startTestGateway } from "./_test_gateway.ts";
 * import assert from "node:assert/strict";
 *
 * await using gateway = await startTestGateway({
 *   onRequest: (req) => ({ echo: req.payload }),
 * });
 * const key = await generateAgentKey();
 * gateway.enrol(key.id, key.publicKey);
 * await using agent = await connectAgent({
 *   url: gateway.url,
 *   id: key.id,
 *   privateKey: Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" }),
 * });
 * assert.deepEqual(await agent.request("config", { v: 1 }), { echo: { v: 1 } });
 * ```
 */
export async function connectAgent(
  options: AgentClientOptions,
): Promise<AgentClient> {
  const agent = new AgentClient(options);
  try {
    return await agent.connect();
  } catch (err) {
    await agent.close();
    throw err;
  }
}
