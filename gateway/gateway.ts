/**
 * The agent gateway on a node: accepts `WS /ws/agent` sockets (each one an
 * {@linkcode AgentConnection}), keeps one connection per agent (a newer one
 * replaces an older one, on this node or another), delivers backend →
 * agent messages (durable queue first, then a push to wherever the agent is
 * connected) and runs backend handlers for agents' requests.
 *
 * Plugins reach it as the kernel capability `gateway:agents`
 * ({@linkcode AgentGateway}):
 *
 * ```ts ignore
 * const agents = ctx.kernel.get<AgentGateway>("gateway:agents");
 * ctx.router.subscribe("agent.*.heartbeat", (env) => seen((env as Envelope).source));
 * agents.onRequest("agent.*.requests", ({ agentId, payload }) => ({ ok: true }));
 * await agents.send("agent-1", "policies", { v: 2 }, { priority: 7 });
 * ```
 *
 * Across nodes (one shared KV), presence says which node holds an agent;
 * that node is woken with a signed node-to-node call
 * (`POST /api/v1/gateway/wake|push|kick`) so it pushes at once.
 *
 * @module
 */
import type { Logger } from "../core/observe/logger.ts";
import type { MetricsRegistry } from "../core/observe/metrics.ts";
import {
  currentTraceparent,
  Kind,
  otelEnabled,
  span,
  timed,
} from "../core/observe/otel.ts";
import type { NodeIdentity } from "../core/plugin.ts";
import { type Router, topicMatches, validateTopic } from "../core/router.ts";
import type { NodeKey } from "../core/security/node_key.ts";
import {
  createSessionStore,
  type SessionStore,
} from "../core/state/sessions.ts";
import type { NodeFetch } from "../core/http/node_client.ts";
import { Deadlines } from "../core/resilience/deadlines.ts";
import { PlexusError } from "../core/errors.ts";
import { statusCode } from "../core/http/errors.ts";
import {
  CHANNEL_NAME_RE,
  isAgentId,
  parseChannel,
} from "../sdk/protocol/channels.ts";
import {
  AgentConnection,
  type AgentRequest,
  type ConnectionContext,
  type GatewayConfig,
  type GatewayMetrics,
  GatewayRequestError,
} from "./connection.ts";
import {
  type AgentEnrolment,
  type AgentRecord,
  enrolAgent,
  EnrolmentError,
  getAgent,
  getAgents,
  listAgents,
  removeAgent,
} from "./enrolment.ts";
import { sharedPush } from "./connection/delivery.ts";
import { Outbox } from "./outbox.ts";
import {
  createPresence,
  isLive,
  type PresenceRecord,
  type PresenceStore,
} from "./presence.ts";
import { canSubscribe, channelPolicy, isDurable } from "./policy.ts";
import type { NodeEvents } from "../core/events.ts";
import { deleteOldest } from "../core/oldest.ts";

export { type AgentRequest, GatewayRequestError } from "./connection.ts";

/** Options of {@linkcode AgentGateway.send} and {@linkcode AgentGateway.broadcast}. */
export interface SendOptions {
  /** The `mt` header. @default {"notification"} */
  messageType?: string;
  /** 0-9, 9 most urgent. @default {4} */
  priority?: number;
  /** Queued messages older than this are dead-lettered. @default {gateway.messageTtlMs} */
  ttlMs?: number;
  /** The `cid` header. */
  correlationId?: string;
  /** Who is sending (kept with the message for audit). @default {"plugin"} */
  sender?: string;
  /** Message id. @default {a random UUID} */
  id?: string;
}

/** What became of one send. */
export interface SendResult {
  messageId: string;
  /** `sent`: pushed to a live connection now; `queued`: stored, the agent is offline or busy; `failed`: not stored. */
  status: "sent" | "queued" | "failed";
  /** Why it failed. */
  error?: string;
}

/** What became of one broadcast. */
export interface BroadcastResult {
  messageId: string;
  /** Agents it was pushed to now. */
  sentTo: string[];
  /** Agents it was stored for but not pushed now (their node did not answer, or they are busy). */
  queued: string[];
  /** Agents it could not be stored (durable) or pushed (non-durable) for. */
  failed: string[];
}

/** `GET /api/v1/agents/{id}/status` (CONTRACTS.md). */
export interface AgentStatus {
  agent_id: string;
  connected: boolean;
  /** ISO 8601, or null when never connected. */
  last_seen: string | null;
  /** Subscribed backend channel names (empty when not connected). */
  channels: string[];
  /** ISO 8601 end of the current session, or null when not connected. */
  session_expires: string | null;
}

/** A backend handler of agents' requests; its return value is the reply. */
export type RequestHandler = (req: AgentRequest) => unknown;

/** The `gateway:agents` capability. */
export interface AgentGateway {
  /**
   * Sends `message` (JSON) to one agent on backend channel `channel` (a
   * name, or `backend.{id}.{name}`). A caller that awaits one send after
   * another without letting the event loop turn waits for a turn about
   * once per 5 ms, so the frames are written as it goes.
   */
  send(
    agentId: string,
    channel: string,
    message: unknown,
    options?: SendOptions,
  ): Promise<SendResult>;
  /**
   * Sends `message` to every connected agent subscribed to channel name
   * `channel`. A loop of awaited broadcasts that does not let the event
   * loop turn waits for a turn about once per 5 ms, so its frames are
   * written as it goes, not once it ends.
   */
  broadcast(
    channel: string,
    message: unknown,
    options?: SendOptions,
  ): Promise<BroadcastResult>;
  /** Where the agent is; null when it is not enrolled. */
  status(agentId: string): Promise<AgentStatus | null>;
  /**
   * Answers agents' `req` records on channels matching `pattern`
   * (`agent.*.requests`); throw a {@linkcode GatewayRequestError} to pick
   * the `err` code. Returns the function that removes the handler. Requests
   * no handler matches go to the router (`router.request`), then `no_handler`.
   */
  onRequest(pattern: string, handler: RequestHandler): () => void;
  /**
   * Asks an agent connected to this node on its backend channel `channel`
   * (which it handles, e.g. with the SDK's `handle`) and resolves with its
   * answer; a {@linkcode GatewayRequestError} on its `err`, `timeout`, or
   * `unavailable` when it is not connected here.
   */
  request(
    agentId: string,
    channel: string,
    body: unknown,
    options?: { timeoutMs?: number },
  ): Promise<unknown>;
  /**
   * Capabilities of the agents connected here: an agent that handles
   * backend channel `tasks.X` offers capability `X`. Capability → agent ids.
   */
  capabilities(): Record<string, string[]>;
  /** Enrols an agent (see `POST /api/v1/agents`). */
  enrol(
    input: AgentEnrolment,
    by?: string,
  ): Promise<{ record: AgentRecord; replaced: boolean }>;
  /** Disconnects (4401) and removes an agent, its tokens and queued messages. */
  remove(agentId: string): Promise<boolean>;
  get(agentId: string): Promise<AgentRecord | null>;
  list(limit?: number): Promise<AgentRecord[]>;
}

/** One item of a node-to-node wake call. */
export interface WakeItem {
  agentId: string;
  messageId: string;
}

/** One item of a node-to-node push call (non-durable channels). */
export interface PushItem {
  agentId: string;
  channel: string;
  /** The message as JSON text. */
  body: string;
  id: string;
  priority: number;
  messageType: string;
  correlationId?: string;
}

/** The node's gateway. */
export interface Gateway extends AgentGateway {
  /** The plugin-facing part, registered as `gateway:agents`. */
  readonly api: AgentGateway;
  /** Upgrades `WS /ws/agent` (a {@linkcode GatewayError} 400 when the request cannot be upgraded). */
  accept(req: Request): Response;
  /** Pushes queued messages to agents connected here; says which ids went out. */
  wakeLocal(items: WakeItem[]): Promise<(WakeItem & { pushed: boolean })[]>;
  /** Pushes non-durable messages to agents connected here. */
  pushLocal(items: PushItem[]): Promise<{ agentId: string; pushed: boolean }[]>;
  /** Closes the agent's connection here (only connection `session`, when given). */
  kickLocal(
    agentId: string,
    session: string | undefined,
    code: number,
    reason: string,
  ): AgentConnection | undefined;
  /** Authenticated connections on this node. */
  readonly connections: number;
  /** Closes every socket (1001) and returns un-acked messages to their queues. */
  stop(): Promise<void>;
}

/** A refused gateway call, with its HTTP status. */
export class GatewayError extends PlexusError {
  override name = "GatewayError";
  declare readonly status: 400 | 404 | 409 | 413 | 503;
  /** The code is the status's usual one; a 503 is retryable. */
  constructor(status: 400 | 404 | 409 | 413 | 503, message: string) {
    super(statusCode(status), message, { status, retryable: status === 503 });
  }
}

/** Options for {@linkcode createGateway}. */
export interface GatewayOptions {
  kv: Deno.Kv;
  /** This node (its `address` is read when agents connect). */
  node: NodeIdentity;
  nodeKey: NodeKey;
  router: Router;
  metrics: MetricsRegistry;
  log: Logger;
  config: GatewayConfig;
  /** Signed node-to-node fetch (`nodeClient(security)`). */
  nodeFetch: NodeFetch;
  /** Resumption tokens. @default {sessions in `kv`} */
  sessions?: SessionStore;
  /** Where agent.connected/disconnected are emitted (`events:local`). */
  events?: NodeEvents;
}

/** Node-to-node calls give up after this long (the message stays queued). */
const NODE_CALL_TIMEOUT_MS = 3000;
/** How long `stop()` waits for sockets to close and messages to go back. */
const STOP_TIMEOUT_MS = 5000;
const MESSAGE_TYPE_RE = /^[A-Za-z0-9._-]{1,64}$/;
/** Agents whose recent inbound message ids are remembered (duplicate drops). */
const INBOUND_AGENTS = 10_000;
/** Inbound message ids remembered per agent. */
const INBOUND_IDS = 256;
/** Request channels whose handler is remembered (then forgotten all at once). */
const MAX_HANDLER_CACHE = 10_000;
const encoder = new TextEncoder();
/** The pending {@linkcode writesTurn}: a 0 ms timer, and when it was set. */
let turn: Promise<void> | undefined;
let turnSince = 0;
/** How long frames may wait for a turn of the event loop before a send waits for one. */
const WRITE_TURN_MS = 5;
/** How old a broadcast's presence list may be when nobody connected, left or changed channels. */
const PRESENCE_LIST_MAX_AGE_MS = 1000;

/**
 * Makes sure the event loop turns soon after a send or broadcast, without
 * making every caller wait for it. Deno writes a WebSocket frame in a task
 * of its own that runs only when JavaScript gives the event loop a turn; a
 * plugin that awaits broadcasts or sends one after another may never do so
 * (each await a KV operation or a microtask), and then its frames waited
 * unwritten until its loop ended (30 awaited broadcasts: 5 reached the agent
 * before the last had resolved; bench/peers/centrifugo.ts: the node made
 * every frame before the agents got the second) while the send buffers
 * grew toward the slow-consumer cap with the agents idle.
 *
 * So each call sets a 0 ms timer if none is pending and goes on; the timer
 * fires at the loop's next turn. A caller waits for it only if it has been
 * pending {@linkcode WRITE_TURN_MS} or more, i.e. the loop has not turned
 * since: a producer that gives the loop turns anyway never waits, and one
 * that does not waits once per {@linkcode WRITE_TURN_MS} (a turn costs ~1-2
 * ms here: waiting on every call would cap a loop of awaited sends near
 * 500/s).
 */
const writesTurn = (): Promise<void> | undefined => {
  const now = performance.now();
  if (turn !== undefined && now - turnSince < WRITE_TURN_MS) return undefined;
  // None pending, or one overdue: a timer due by now fires without the loop
  // going idle, which is what lets Deno's write tasks run; a fresh one makes
  // it wait (~1 ms).
  const overdue = turn !== undefined;
  turnSince = now;
  const fresh = new Promise<void>((resolve) =>
    setTimeout(() => {
      if (turn === fresh) turn = undefined;
      resolve();
    }, 0)
  );
  turn = fresh;
  return overdue ? fresh : undefined;
};

function isPromiseLike(v: unknown): v is PromiseLike<unknown> {
  return typeof (v as PromiseLike<unknown> | null)?.then === "function";
}

function gatewayMetrics(
  metrics: MetricsRegistry,
  connections: () => number,
): GatewayMetrics {
  const conns = metrics.gauge(
    "plexus_gateway_connections",
    "Authenticated agent connections on this node",
    () => conns.set(connections()),
  );
  const handshakes = metrics.counter(
    "plexus_gateway_handshakes_total",
    "Agent handshakes by outcome (ok, refused) and reason",
  );
  const messages = metrics.counter(
    "plexus_gateway_messages_total",
    "Sealed agent records by direction (in: agent to node, out: node to agent)",
  );
  const bytes = metrics.counter(
    "plexus_gateway_bytes_total",
    "Sealed agent record bytes by direction",
  );
  const refused = metrics.counter(
    "plexus_gateway_records_refused_total",
    "Agent records refused, by reason",
  );
  const closes = metrics.counter(
    "plexus_gateway_closes_total",
    "Agent sockets closed, by close code",
  );
  const deliveries = metrics.counter(
    "plexus_gateway_deliveries_total",
    "Queued backend-to-agent messages by outcome (pushed, acked, ack_timeout, expired, dead)",
  );
  const depth = metrics.gauge(
    "plexus_gateway_queue_depth",
    "Messages waiting for each agent connected to this node",
  );
  const dir = {
    in: {
      m: messages.labels({ direction: "in" }),
      b: bytes.labels({ direction: "in" }),
    },
    out: {
      m: messages.labels({ direction: "out" }),
      b: bytes.labels({ direction: "out" }),
    },
  };
  return {
    handshake: (outcome, reason) => handshakes.inc({ outcome, reason }),
    message(direction, n) {
      dir[direction].m.inc();
      dir[direction].b.inc(n);
    },
    refused: (reason) => refused.inc({ reason }),
    closed: (code) => closes.inc({ code: String(code) }),
    delivery: (outcome) => deliveries.inc({ outcome }),
    queueDepth(agent, n) {
      if (n === undefined) depth.remove({ agent });
      else depth.set(n, { agent });
    },
  };
}

/**
 * Creates the node's gateway.
 *
 * @example Usage
 * ```ts ignore
 * const gateway = createGateway({ kv, node, nodeKey, router, metrics, log, config: config.gateway, nodeFetch: nodeClient(security) });
 * app.get("/ws/agent", (c) => gateway.accept(c.req.raw));
 * ```
 */
export function createGateway(options: GatewayOptions): Gateway {
  const { kv, node, router, log, config } = options;
  const nodeFetch = options.nodeFetch;
  const presence: PresenceStore = createPresence(kv, options.events);
  const outbox = new Outbox(kv, {
    maxAttempts: config.maxAttempts,
    ttlMs: config.messageTtlMs,
  });
  const sessions = options.sessions ?? createSessionStore(kv);
  /** Every socket, authenticated or not. */
  const sockets = new Set<AgentConnection>();
  /** The authenticated connection of each agent on this node. */
  const local = new Map<string, AgentConnection>();
  const handlers: { pattern: string; fn: RequestHandler }[] = [];
  /**
   * The handler of each request channel seen (null: none, the router's),
   * so a request does not match every pattern; cleared when handlers change.
   */
  const handlerOf = new Map<string, RequestHandler | null>();
  const handlerFor = (channel: string): RequestHandler | null => {
    let fn = handlerOf.get(channel);
    if (fn === undefined) {
      fn = handlers.find((h) => topicMatches(h.pattern, channel))?.fn ?? null;
      if (handlerOf.size >= MAX_HANDLER_CACHE) handlerOf.clear();
      handlerOf.set(channel, fn);
    }
    return fn;
  };
  /** Deadlines of backend handlers still running (5 ms buckets, one timer). */
  const deadlines = new Deadlines();
  /** Recent inbound `msg` ids per agent (oldest agents and ids dropped first). */
  const inbound = new Map<string, Set<string>>();
  const metrics = gatewayMetrics(options.metrics, () => local.size);
  let stopping = false;

  const call = async (
    address: string,
    path: string,
    body: unknown,
  ): Promise<unknown> => {
    try {
      const res = await nodeFetch(new URL(path, address), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(NODE_CALL_TIMEOUT_MS),
      });
      if (!res.ok) {
        log.warn("gateway node call refused", {
          address,
          path,
          status: res.status,
          body: (await res.text()).slice(0, 200),
        });
        return undefined;
      }
      return await res.json();
    } catch (err) {
      log.warn("gateway node call failed", { address, path, error: err });
      return undefined;
    }
  };

  const kickRemote = (
    p: PresenceRecord,
    code: number,
    reason: string,
  ): Promise<unknown> =>
    call(p.address, "/api/v1/gateway/kick", {
      agentId: p.agentId,
      session: p.session,
      code,
      reason,
    });

  /** A request no handler here takes goes to the router's responders. */
  const routed = async (req: AgentRequest, ms: number): Promise<unknown> => {
    try {
      return await router.request(req.channel, req.envelope, {
        timeoutMs: ms,
      });
    } catch (err) {
      const m = (err as Error).message;
      if (/No subscriber/.test(m)) {
        throw new GatewayRequestError(
          "no_handler",
          `no handler for requests on '${req.name}'`,
        );
      }
      if (/timed out/.test(m)) throw new GatewayRequestError("timeout", m);
      throw err;
    }
  };

  const ctx: ConnectionContext = {
    config,
    node,
    identity: {
      nodeId: node.id,
      privateKey: options.nodeKey.privateKey,
      publicRaw: Uint8Array.fromBase64(options.nodeKey.publicJwk.x, {
        alphabet: "base64url",
      }),
    },
    kv,
    router,
    log,
    metrics,
    presence,
    outbox,
    sessions,
    request(req) {
      const ms = config.requestTimeoutMs;
      const fn = handlerFor(req.channel);
      if (fn) {
        // A handler that answers at once is answered at once: no promise,
        // no timer. One that returns a promise gets the deadline.
        const out = fn(req);
        if (!isPromiseLike(out)) return out;
        return new Promise((resolve, reject) => {
          const d = deadlines.add(ms, () =>
            reject(
              new GatewayRequestError(
                "timeout",
                `request on '${req.name}' timed out after ${ms} ms`,
              ),
            ));
          out.then((v) => {
            deadlines.cancel(d);
            resolve(v);
          }, (err) => {
            deadlines.cancel(d);
            reject(err);
          });
        });
      }
      return routed(req, ms);
    },
    attach(conn, previous) {
      const old = local.get(conn.agentId);
      local.set(conn.agentId, conn);
      if (old && old !== conn) {
        old.close(4409, "replaced by a newer connection");
      }
      if (
        previous && previous.session !== conn.session &&
        previous.nodeId !== node.id && isLive(previous, Date.now())
      ) {
        kickRemote(previous, 4409, "replaced by a newer connection");
      }
    },
    detach(conn) {
      if (local.get(conn.agentId) === conn) local.delete(conn.agentId);
    },
    seenInbound(agentId, id) {
      let ids = inbound.get(agentId);
      if (ids) inbound.delete(agentId); // re-insert: most recent last
      else ids = new Set();
      inbound.set(agentId, ids);
      if (inbound.size > INBOUND_AGENTS) {
        deleteOldest(inbound);
      }
      if (ids.has(id)) return true;
      ids.add(id);
      if (ids.size > INBOUND_IDS) deleteOldest(ids);
      return false;
    },
  };

  /** The channel name of `channel` for `agentId`: a bare name or `backend.{agentId}.{name}`. */
  const channelName = (agentId: string, channel: unknown): string => {
    if (typeof channel !== "string") {
      throw new GatewayError(400, "channel must be a string");
    }
    if (channel.startsWith("backend.")) {
      const ch = parseChannel(channel);
      if (!ch || ch.id !== agentId) {
        throw new GatewayError(
          400,
          `channel '${
            channel.slice(0, 80)
          }' is not a backend channel of agent '${agentId}'`,
        );
      }
      return ch.name;
    }
    if (!CHANNEL_NAME_RE.test(channel)) {
      throw new GatewayError(
        400,
        `channel '${
          channel.slice(0, 80)
        }' is neither a channel name nor backend.{id}.{name}`,
      );
    }
    return channel;
  };

  const encodeMessage = (message: unknown): Uint8Array => {
    let text: string | undefined;
    try {
      text = JSON.stringify(message);
    } catch (err) {
      throw new GatewayError(
        400,
        `message is not JSON-serialisable: ${(err as Error).message}`,
      );
    }
    if (text === undefined) {
      throw new GatewayError(400, "message must be a JSON value");
    }
    const body = encoder.encode(text);
    if (body.length > config.maxMessageBytes) {
      throw new GatewayError(
        413,
        `message of ${body.length} bytes is over the limit of ${config.maxMessageBytes}`,
      );
    }
    return body;
  };

  /**
   * Stores a durable message in `agentId`'s outbox; the error's message
   * (logged) if it could not be stored.
   */
  const store = async (
    agentId: string,
    channel: string,
    body: Uint8Array,
    opts: SendOptions,
    fields: { id: string; priority: number; messageType: string },
  ): Promise<string | undefined> => {
    try {
      await outbox.put(agentId, channel, body, {
        ...fields,
        ttlMs: opts.ttlMs,
        correlationId: opts.correlationId,
        sender: opts.sender ?? "plugin",
      });
      return undefined;
    } catch (err) {
      log.error("agent message not stored", { agent: agentId, error: err });
      return (err as Error).message;
    }
  };

  const checkOptions = (o: SendOptions) => {
    if (
      o.priority !== undefined &&
      (!Number.isInteger(o.priority) || o.priority < 0 || o.priority > 9)
    ) throw new GatewayError(400, "priority must be an integer 0-9");
    if (
      o.messageType !== undefined && !MESSAGE_TYPE_RE.test(o.messageType)
    ) {
      throw new GatewayError(
        400,
        "message_type must be 1-64 letters, digits, '.', '_', '-'",
      );
    }
    if (o.ttlMs !== undefined && !(o.ttlMs > 0)) {
      throw new GatewayError(400, "ttl must be > 0");
    }
  };

  /** Which of `ids` (queued for `agentId`) went out to a live connection now. */
  const deliverNow = async (
    agentId: string,
    ids: string[],
  ): Promise<boolean[]> => {
    const conn = local.get(agentId);
    if (conn?.ready) {
      await conn.pump();
      return ids.map((id) => conn.pushed(id));
    }
    const p = await presence.get(agentId);
    if (!p || p.nodeId === node.id || !isLive(p, Date.now())) {
      return ids.map(() => false);
    }
    const r = await call(p.address, "/api/v1/gateway/wake", {
      items: ids.map((messageId) => ({ agentId, messageId })),
    }) as { results?: { messageId: string; pushed: boolean }[] } | undefined;
    return ids.map((id) =>
      !!r?.results?.some((x) => x.messageId === id && x.pushed === true)
    );
  };

  /**
   * Every presence record: one version read per burst of broadcasts, the
   * whole list re-read only when someone connected, left or changed
   * channels, or at least once a second (`lastSeen` is then at most that
   * old; liveness allows three heartbeats). Broadcasts that ask while a
   * read is under way share it.
   */
  const presenceNow = () => presence.snapshot(PRESENCE_LIST_MAX_AGE_MS);

  /**
   * Who a broadcast on `channel` goes to. `here`: the ready connections on
   * this node whose agent subscribed to it and whose roles (the enrolment
   * the connection holds, re-read every heartbeat and at once on a
   * re-enrolment through this node) allow it: no KV read. `elsewhere`: the
   * agents presence says are live and subscribed but not connected here,
   * whose roles allow it by their enrolment read now.
   */
  const broadcastTargets = async (
    channel: string,
    policy: ReturnType<typeof channelPolicy>,
  ): Promise<{ here: AgentConnection[]; elsewhere: string[] }> => {
    const listed = await presenceNow();
    // Connections here are looked at after the read, so the two views are
    // of one moment; broadcasts sharing a read continue in call order.
    const here: AgentConnection[] = [];
    for (const conn of local.values()) {
      if (
        conn.ready && conn.subscribed(channel) &&
        canSubscribe(policy, conn.agent!.roles)
      ) here.push(conn);
    }
    const now = Date.now();
    const others = listed.filter((p) =>
      !local.get(p.agentId)?.ready && isLive(p, now) &&
      p.channels.includes(channel)
    ).map((p) => p.agentId);
    if (others.length === 0) return { here, elsewhere: [] };
    const agents = await getAgents(kv, others);
    const elsewhere = others.filter((_, i) => {
      const agent = agents[i];
      return agent !== null && canSubscribe(policy, agent.roles);
    });
    return { here, elsewhere };
  };

  const api: AgentGateway = {
    request(agentId, channel, body, opts = {}) {
      const conn = local.get(agentId);
      if (!conn?.ready) {
        return Promise.reject(
          new GatewayRequestError(
            "unavailable",
            `agent ${agentId} is not connected to this node`,
          ),
        );
      }
      return conn.ask(
        channel,
        body,
        opts.timeoutMs ?? config.requestTimeoutMs,
        currentTraceparent(),
      );
    },
    capabilities() {
      const out: Record<string, string[]> = {};
      for (const [id, conn] of local) {
        if (!conn.ready) continue;
        for (const ch of conn.channels) {
          if (!ch.startsWith("tasks.")) continue;
          const cap = ch.slice("tasks.".length);
          (out[cap] ??= []).push(id);
        }
      }
      return out;
    },
    async send(agentId, channel, message, opts = {}) {
      checkOptions(opts);
      const agent = isAgentId(agentId) ? await getAgent(kv, agentId) : null;
      if (!agent) {
        throw new GatewayError(
          404,
          `no agent '${String(agentId).slice(0, 80)}'`,
        );
      }
      const name = channelName(agentId, channel);
      const policy = channelPolicy(config.channels, name);
      if (!canSubscribe(policy, agent.roles)) {
        throw new GatewayError(
          400,
          `agent '${agentId}' (roles [${
            agent.roles.join(", ")
          }]) may not subscribe to channel '${name}'`,
        );
      }
      const body = encodeMessage(message);
      const id = opts.id ?? crypto.randomUUID();
      const priority = opts.priority ?? 4;
      const messageType = opts.messageType ?? "notification";
      if (!isDurable(policy)) {
        const [r] = await pushTo([{
          agentId,
          channel: name,
          body: new TextDecoder().decode(body),
          id,
          priority,
          messageType,
          ...(opts.correlationId ? { correlationId: opts.correlationId } : {}),
        }]);
        await writesTurn();
        return { messageId: id, status: r ? "sent" : "failed" };
      }
      const error = await store(agentId, name, body, opts, {
        id,
        priority,
        messageType,
      });
      if (error !== undefined) {
        return { messageId: id, status: "failed", error };
      }
      const [pushed] = await deliverNow(agentId, [id]);
      await writesTurn();
      return { messageId: id, status: pushed ? "sent" : "queued" };
    },

    async broadcast(channel, message, opts = {}) {
      checkOptions(opts);
      if (typeof channel !== "string" || !CHANNEL_NAME_RE.test(channel)) {
        throw new GatewayError(400, "channel must be a channel name");
      }
      const policy = channelPolicy(config.channels, channel);
      const body = encodeMessage(message);
      const id = opts.id ?? crypto.randomUUID();
      const priority = opts.priority ?? 4;
      const messageType = opts.messageType ?? "notification";
      const { here, elsewhere } = await broadcastTargets(channel, policy);
      const result: BroadcastResult = {
        messageId: id,
        sentTo: [],
        queued: [],
        failed: [],
      };
      if (!isDurable(policy)) {
        const fields = { id, priority, messageType };
        // Unsigned: one shared record, pushed to each connection at once
        // (no promise per connection); signed: each push signs its own.
        const shared = policy?.signed ? undefined : sharedPush(fields, body);
        const [pushedHere, pushedThere] = await Promise.all([
          shared
            ? here.map((conn) => conn.pushShared(channel, shared))
            : Promise.all(
              here.map((conn) => conn.pushEphemeral(channel, body, fields)),
            ),
          elsewhere.length === 0 ? [] : pushTo(elsewhere.map((agentId) => ({
            agentId,
            channel,
            body: new TextDecoder().decode(body),
            id,
            priority,
            messageType,
          }))),
        ]);
        here.forEach((conn, i) =>
          (pushedHere[i] ? result.sentTo : result.failed).push(conn.agentId)
        );
        elsewhere.forEach((agentId, i) =>
          (pushedThere[i] ? result.sentTo : result.failed).push(agentId)
        );
        result.sentTo.sort();
        result.failed.sort();
        await writesTurn();
        return result;
      }
      const stored: string[] = [];
      await Promise.all(
        [...here.map((c) => c.agentId), ...elsewhere].map(async (agentId) => {
          const error = await store(agentId, channel, body, opts, {
            id,
            priority,
            messageType,
          });
          (error === undefined ? stored : result.failed).push(agentId);
        }),
      );
      const pushed = await wakeAll(stored, id);
      stored.forEach((agentId, i) =>
        (pushed[i] ? result.sentTo : result.queued).push(agentId)
      );
      for (const list of [result.sentTo, result.queued, result.failed]) {
        list.sort();
      }
      await writesTurn();
      return result;
    },

    async status(agentId) {
      const agent = isAgentId(agentId) ? await getAgent(kv, agentId) : null;
      if (!agent) return null;
      const p = await presence.get(agentId);
      const live = isLive(p, Date.now());
      return {
        agent_id: agentId,
        connected: live,
        last_seen: p ? new Date(p.lastSeen).toISOString() : null,
        channels: live ? [...p!.channels] : [],
        session_expires: live
          ? new Date(p!.sessionExpires).toISOString()
          : null,
      };
    },

    onRequest(pattern, fn) {
      validateTopic(pattern, true);
      const h = { pattern, fn };
      handlers.push(h);
      handlerOf.clear();
      return () => {
        const i = handlers.indexOf(h);
        if (i >= 0) handlers.splice(i, 1);
        handlerOf.clear();
      };
    },

    async enrol(input, by = "plugin") {
      try {
        const out = await enrolAgent(kv, input, by);
        // A connection here takes new roles at once (others at their next heartbeat).
        if (out.replaced) local.get(out.record.agentId)?.reenrolled(out.record);
        return out;
      } catch (err) {
        if (err instanceof EnrolmentError) {
          throw new GatewayError(err.status, err.message);
        }
        throw err;
      }
    },

    async remove(agentId) {
      const existed = await removeAgent(kv, agentId);
      if (existed) {
        const conn = gateway.kickLocal(
          agentId,
          undefined,
          4401,
          "agent removed",
        );
        if (conn) await conn.closed;
        const p = await presence.get(agentId);
        if (p && p.nodeId !== node.id && isLive(p, Date.now())) {
          await kickRemote(p, 4401, "agent removed");
        }
      }
      // Also when it was gone already: a removal cut short (a crash after
      // the enrolment went) is finished by the next one, which answers 404.
      // A connection without an enrolment cannot authenticate again.
      await sessions.revokeSubject(`agent:${agentId}`);
      await presence.remove(agentId);
      await outbox.purge(agentId);
      return existed;
    },

    get: (agentId) => getAgent(kv, agentId),
    list: (limit) => listAgents(kv, limit),
  };
  if (otelEnabled) {
    // Requests and sends to agents as spans of whatever asked for them.
    const { request, send, broadcast } = api;
    const attrs = (channel: string, agentId?: string) => ({
      "plexus.channel": channel,
      ...(agentId === undefined ? {} : { "plexus.agent": agentId }),
    });
    // Active while the request is sent, so its record carries the span's
    // traceparent (`tp`) to the agent.
    api.request = (agentId, channel, body, opts) =>
      span(
        "gateway.request",
        attrs(channel, agentId),
        () => request(agentId, channel, body, opts),
        { kind: Kind.CLIENT },
      );
    api.send = (agentId, channel, message, opts) =>
      timed(
        "gateway.send",
        attrs(channel, agentId),
        send(agentId, channel, message, opts),
      );
    api.broadcast = (channel, message, opts) =>
      timed(
        "gateway.broadcast",
        attrs(channel),
        broadcast(channel, message, opts),
      );
  }

  /** Pushes queued message `id` to each agent; true where it went out now. */
  const wakeAll = async (agents: string[], id: string): Promise<boolean[]> => {
    const out = agents.map(() => false);
    const remote = new Map<string, number[]>();
    await Promise.all(agents.map(async (agentId, i) => {
      const conn = local.get(agentId);
      if (conn?.ready) {
        await conn.pump();
        out[i] = conn.pushed(id);
        return;
      }
      const p = await presence.get(agentId);
      if (p && p.nodeId !== node.id && isLive(p, Date.now())) {
        remote.set(p.address, [...remote.get(p.address) ?? [], i]);
      }
    }));
    await Promise.all([...remote].map(async ([address, idx]) => {
      const r = await call(address, "/api/v1/gateway/wake", {
        items: idx.map((i) => ({ agentId: agents[i], messageId: id })),
      }) as { results?: (WakeItem & { pushed: boolean })[] } | undefined;
      for (const i of idx) {
        out[i] = !!r?.results?.some((x) =>
          x.agentId === agents[i] && x.pushed === true
        );
      }
    }));
    return out;
  };

  /** Pushes non-durable messages wherever the agents are connected. */
  const pushTo = async (items: PushItem[]): Promise<boolean[]> => {
    const out = items.map(() => false);
    const remote = new Map<string, number[]>();
    await Promise.all(items.map(async (item, i) => {
      if (local.get(item.agentId)?.ready) {
        [out[i]] = (await gateway.pushLocal([item])).map((r) => r.pushed);
        return;
      }
      const p = await presence.get(item.agentId);
      if (p && p.nodeId !== node.id && isLive(p, Date.now())) {
        remote.set(p.address, [...remote.get(p.address) ?? [], i]);
      }
    }));
    await Promise.all([...remote].map(async ([address, idx]) => {
      const r = await call(address, "/api/v1/gateway/push", {
        items: idx.map((i) => items[i]),
      }) as { results?: { agentId: string; pushed: boolean }[] } | undefined;
      idx.forEach((i, k) => (out[i] = r?.results?.[k]?.pushed === true));
    }));
    return out;
  };

  const gateway: Gateway = {
    ...api,
    api,
    accept(req) {
      let upgraded: ReturnType<typeof Deno.upgradeWebSocket>;
      try {
        upgraded = Deno.upgradeWebSocket(req, { idleTimeout: 0 });
      } catch (err) {
        throw new GatewayError(
          400,
          `not a WebSocket upgrade: ${(err as Error).message}`,
        );
      }
      const { socket, response } = upgraded;
      const conn = new AgentConnection(socket, ctx);
      sockets.add(conn);
      conn.closed.then(() => sockets.delete(conn));
      if (stopping) conn.close(1001, "node shutting down");
      return response;
    },
    async wakeLocal(items) {
      const byAgent = new Map<string, WakeItem[]>();
      for (const it of items) {
        byAgent.set(it.agentId, [...byAgent.get(it.agentId) ?? [], it]);
      }
      const pushed = new Map<WakeItem, boolean>();
      await Promise.all([...byAgent].map(async ([agentId, its]) => {
        const conn = local.get(agentId);
        if (!conn?.ready) return;
        await conn.pump();
        for (const it of its) pushed.set(it, conn.pushed(it.messageId));
      }));
      return items.map((it) => ({ ...it, pushed: pushed.get(it) ?? false }));
    },
    async pushLocal(items) {
      return await Promise.all(items.map(async (it) => {
        const conn = local.get(it.agentId);
        const ok = conn?.ready
          ? await conn.pushEphemeral(it.channel, encoder.encode(it.body), {
            id: it.id,
            priority: it.priority,
            messageType: it.messageType,
            cid: it.correlationId,
          })
          : false;
        return { agentId: it.agentId, pushed: ok };
      }));
    },
    kickLocal(agentId, session, code, reason) {
      const conn = local.get(agentId);
      if (!conn || (session !== undefined && conn.session !== session)) {
        return undefined;
      }
      conn.close(code, reason);
      return conn;
    },
    get connections() {
      return local.size;
    },
    async stop() {
      stopping = true;
      const all = [...sockets];
      for (const conn of all) conn.close(1001, "node shutting down");
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(all.map((c) => c.closed)),
        new Promise((r) => (timer = setTimeout(r, STOP_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
      // Handlers still running answer no one now: their deadlines go too.
      deadlines.clear();
    },
  };
  return gateway;
}
