/**
 * A {@linkcode Transport} over WebSocket links between nodes: a full mesh,
 * no broker, nothing stored.
 *
 * - Each node accepts links (its own listener, or `handleUpgrade` mounted on
 *   the node's HTTP server) and dials the peer URLs it is given, redialing a
 *   lost link every `reconnectMs`. Two nodes that dial each other keep the
 *   link dialed by the smaller node id and close the other with 4009.
 * - A link starts with `hello {node, nonce}` both ways, then `auth {mac,
 *   subs}`: HMAC-SHA256 under the cluster `secret` of the other side's nonce
 *   and the sender's id, and the sender's subscriptions. A wrong MAC closes
 *   the link with 4003; nothing else is accepted before it.
 * - Subscriptions are announced to every peer (`sub`, acknowledged with
 *   `suback` before `subscribe` resolves; `unsub` on close). The publisher
 *   picks the receivers: every subscription without a group, and for each
 *   group one member (round robin over the group's members on reachable
 *   nodes), and sends each node one `msg` frame naming its subscriptions.
 * - Deliveries run on the receiving node with the contract's verbs: `nak`
 *   and failures are retried there after their delay, up to the envelope's
 *   `maxAttempts`; then (or on `term`) the message goes to that node's
 *   in-memory dead-letter list.
 *
 * Capabilities, honestly: `durable: false` (a message in flight or waiting
 * for a retry is lost when its node stops or a link drops; nothing survives
 * a restart), `ordering: "none"`, `groups: true`. Frames above
 * `maxMessageBytes` plus 64 KiB close the link with 1009.
 *
 * @module
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { Envelope } from "../../core/envelope.ts";
import { validateTopic } from "../../core/router.ts";
import {
  assertFits,
  type AttemptError,
  backoffDelay,
  type DeadLetter,
  type Delivery,
  type DeliveryHandler,
  type PublishOptions,
  type RequestHandler,
  type RequestOptions,
  type Responder,
  type SubscribeOptions,
  type Subscription,
  type Transport,
  type TransportCaps,
  TransportError,
} from "../../core/transport.ts";
import { openWebSocket, type WebSocketLike } from "../../sdk/ws_client.ts";
import { upgradeOriginGuard } from "../../core/http/origin.ts";
import type { Logger } from "../../core/observe/logger.ts";
import type { MetricsRegistry } from "../../core/observe/metrics.ts";
import { transportTelemetry } from "../_telemetry.ts";
import { TimeoutError } from "../../core/resilience/errors.ts";
import { type Deadline, Deadlines } from "../../core/resilience/deadlines.ts";

/** Options of {@linkcode startMesh}. */
export interface MeshOptions {
  /** This node's id in the mesh. @default {a random id} */
  nodeId?: string;
  /** Listen for links on `hostname:port`; false when mounted with `handleUpgrade`. @default {true} */
  listen?: boolean;
  /** @default {"127.0.0.1"} */
  hostname?: string;
  /** 0 picks a free port. @default {0} */
  port?: number;
  /** `ws://` URLs of peers to dial. @default {[]} */
  peers?: string[];
  /** Cluster secret every link must prove; without it links are not authenticated (tests only). */
  secret?: string;
  /** @default {1048576} */
  maxMessageBytes?: number;
  /** Base of the envelope's backoff after a handler failure. @default {1000} */
  retryBaseMs?: number;
  /** Cap of that backoff. @default {60000} */
  retryMaxMs?: number;
  /** Redial period of a lost link. @default {500} */
  reconnectMs?: number;
  /** Longest wait for a link's handshake or a peer's `suback`. @default {5000} */
  handshakeTimeoutMs?: number;
  /** Dead letters kept per topic (oldest dropped). @default {1000} */
  maxDeadLetters?: number;
  /** Warnings for failed handlers and dead letters. */
  log?: Logger;
  /** Counts failed handlers and dead letters. */
  metrics?: MetricsRegistry;
}

/** The mesh transport. */
export interface MeshTransport extends Transport {
  readonly nodeId: string;
  /** `ws://` URL of this node's listener ("" when not listening). */
  readonly url: string;
  /** Ids of peers with an authenticated link. */
  connectedPeers(): string[];
  /** Accepts a link on a node's own HTTP server (a WebSocket upgrade request). */
  handleUpgrade(req: Request): Response;
}

interface SubInfo {
  sid: string;
  topic: string;
  group?: string;
}

type Frame =
  | { t: "hello"; node: string; nonce: string }
  | { t: "auth"; mac: string; subs: SubInfo[]; serves?: string[] }
  | { t: "sub"; sub: SubInfo; req: number }
  | { t: "suback"; req: number }
  | { t: "unsub"; sid: string }
  | { t: "msg"; sids: string[]; topic: string; key?: string; env: Envelope }
  | { t: "srv"; topic: string; req: number }
  | { t: "unsrv"; topic: string }
  | {
    t: "req";
    id: number;
    topic: string;
    body: unknown;
    h?: Record<string, string>;
  }
  | { t: "res"; id: number; body?: unknown; err?: string; none?: true };

interface Link {
  ws: WebSocketLike | WebSocket;
  /** Resolves when the socket has closed. */
  closed: Promise<void>;
  dialer: string;
  peer?: string;
  ready: boolean;
  subs: Map<string, SubInfo>;
  /** Topics the peer answers requests on. */
  serves: Set<string>;
  /**
   * Whether the peer knows request/reply frames (its `auth` carried
   * `serves`): an older node would close the link on them, so it gets none.
   */
  requestReply: boolean;
  /** Request and reply frames (JSON) waiting to go out as one batch. */
  out: string[];
  outChars: number;
}

interface LocalSub extends SubInfo {
  handler: DeliveryHandler;
  maxInFlight: number;
  inFlight: number;
  queue: {
    env: Envelope;
    key?: string;
    attempts: number;
    errors: AttemptError[];
  }[];
  closed: boolean;
  idle?: () => void;
}

const encoder = new TextEncoder();
/** Request/reply frames sent in one WebSocket message at most. */
const MAX_BATCH = 512;
const randomId = () => crypto.randomUUID().slice(0, 12);

function checkTopic(topic: string): void {
  try {
    validateTopic(topic);
  } catch (err) {
    throw new TransportError("invalid_argument", (err as Error).message);
  }
}

/**
 * Starts a mesh node.
 *
 * @example Two nodes
 * ```ts
 * import { startMesh } from "./mesh.ts";
 * import { createEnvelope } from "../../core/envelope.ts";
 * const a = await startMesh({ secret: "s3cret" });
 * const b = await startMesh({ secret: "s3cret", peers: [a.url] });
 * const got = Promise.withResolvers<unknown>();
 * await a.subscribe("orders", async (d) => { got.resolve(d.envelope.payload); await d.ack(); });
 * await b.publish("orders", createEnvelope({ type: "event", topic: "orders", source: "b", payload: 7 }));
 * await got.promise; // 7
 * await Promise.all([a.close(), b.close()]);
 * ```
 */
export async function startMesh(
  options: MeshOptions = {},
): Promise<MeshTransport> {
  const o = {
    nodeId: `mesh-${randomId()}`,
    listen: true,
    hostname: "127.0.0.1",
    port: 0,
    peers: [] as string[],
    maxMessageBytes: 1024 * 1024,
    retryBaseMs: 1000,
    retryMaxMs: 60_000,
    reconnectMs: 500,
    handshakeTimeoutMs: 5000,
    maxDeadLetters: 1000,
    ...options,
  };
  const me = o.nodeId;
  const report = transportTelemetry("websocket-mesh", o);
  const caps: TransportCaps = {
    durable: false,
    ordering: "none",
    groups: true,
    maxMessageBytes: o.maxMessageBytes,
    requestReply: true,
  };
  const maxFrame = o.maxMessageBytes + 64 * 1024;
  const links = new Map<string, Link>(); // by peer id, authenticated
  const allLinks = new Set<Link>();
  const local = new Map<string, LocalSub>();
  const dead = new Map<string, DeadLetter[]>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const rr = new Map<string, number>();
  const pendingAcks = new Map<
    number,
    { left: Set<string>; done: () => void }
  >();
  let reqs = 0;
  let closed = false;
  // Request/reply: what this node answers, who answers what, calls waiting.
  const served = new Map<string, RequestHandler>();
  let responderIndex = new Map<string, string[]>();
  const pending = new Map<number, {
    node: string;
    topic: string;
    resolve: (v: unknown) => void;
    reject: (e: unknown) => void;
    /** Its timeout (see `deadlines`). */
    deadline: Deadline;
  }>();
  let nextRequest = 0;
  // Request deadlines in coarse buckets under one timer, instead of a timer
  // per request (a third of the caller's CPU per call went to creating and
  // clearing timers); a request times out up to one tick (5 ms) late.
  const deadlines = new Deadlines();
  const settle = (id: number) => {
    const p = pending.get(id);
    if (!p) return undefined;
    pending.delete(id);
    deadlines.cancel(p.deadline);
    return p;
  };
  const reindex = () => {
    const index = new Map<string, string[]>();
    const add = (topic: string, node: string) => {
      const nodes = index.get(topic);
      if (nodes) nodes.push(node);
      else index.set(topic, [node]);
    };
    for (const topic of served.keys()) add(topic, me);
    for (const [node, link] of links) {
      for (const topic of link.serves) add(topic, node);
    }
    for (const nodes of index.values()) nodes.sort();
    responderIndex = index;
  };

  const later = (ms: number, fn: () => void) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  const mac = (nonce: string, node: string) =>
    createHmac("sha256", o.secret ?? "").update(`plexus-mesh|${nonce}|${node}`)
      .digest("base64url");
  const send = (link: Link, f: Frame) => {
    if (link.ws.readyState === 1) link.ws.send(JSON.stringify(f));
  };
  // Requests and replies made while one batch of frames is handled leave
  // as one message (a JSON array of frames), flushed in a microtask: under
  // load the per-message cost of a WebSocket send and receive, not the
  // JSON, is what limits a link. Measured in one process, 256 B at
  // concurrency 100: 23k calls/s one frame a message, 106k batched; a
  // timer flush (setTimeout 0) costs ~4 ms a sequential call.
  const flush = (link: Link) => {
    const out = link.out;
    if (out.length === 0) return;
    link.out = [];
    link.outChars = 0;
    if (link.ws.readyState !== 1) return;
    link.ws.send(out.length === 1 ? out[0] : `[${out.join(",")}]`);
  };
  const sendBatched = (link: Link, frame: string) => {
    if (
      link.out.length >= MAX_BATCH ||
      link.outChars + frame.length > o.maxMessageBytes
    ) flush(link);
    link.out.push(frame);
    link.outChars += frame.length;
    if (link.out.length === 1) queueMicrotask(() => flush(link));
  };

  const dropLink = (link: Link) => {
    allLinks.delete(link);
    if (link.peer && links.get(link.peer) === link) {
      links.delete(link.peer);
      if (link.serves.size > 0) reindex();
      for (const [id, p] of pending) {
        if (p.node !== link.peer) continue;
        settle(id);
        p.reject(
          new TransportError(
            "unavailable",
            `link to node '${link.peer}' closed before it answered request ${id} on '${p.topic}' (it may or may not have run)`,
            { data: { node: link.peer, topic: p.topic } },
          ),
        );
      }
      for (const [req, p] of pendingAcks) {
        if (p.left.delete(link.peer) && p.left.size === 0) {
          pendingAcks.delete(req);
          p.done();
        }
      }
    }
  };

  /** Wires a socket (dialed or accepted) into the mesh. */
  const attach = (ws: WebSocketLike | WebSocket, dialed: boolean): Link => {
    const gone = Promise.withResolvers<void>();
    const link: Link = {
      ws,
      closed: gone.promise,
      dialer: dialed ? me : "",
      ready: false,
      subs: new Map(),
      serves: new Set(),
      requestReply: false,
      out: [],
      outChars: 0,
    };
    allLinks.add(link);
    const nonce = randomId() + randomId();
    let peerNonce = "";
    const fail = (code: number, reason: string) => {
      try {
        ws.close(code, reason);
      } catch { /* already closing */ }
    };
    const handshake = setTimeout(() => {
      if (!link.ready) fail(4408, "mesh handshake timed out");
    }, o.handshakeTimeoutMs);
    const hello = () => send(link, { t: "hello", node: me, nonce });
    if (ws.readyState === 1) hello();
    else ws.onopen = hello;
    ws.onclose = (ev: CloseEvent) => {
      clearTimeout(handshake);
      if (link.ready && !closed) {
        o.log?.warn("mesh link closed", {
          peer: link.peer,
          code: ev.code,
          reason: ev.reason,
          pending: [...pending.values()].filter((p) => p.node === link.peer)
            .length,
        });
      }
      dropLink(link);
      gone.resolve();
    };
    ws.onerror = () => {};
    ws.onmessage = (ev: MessageEvent) => {
      const data = ev.data;
      if (typeof data !== "string") return fail(1003, "text frames only");
      if (data.length > maxFrame) return fail(1009, "frame too large");
      let parsed: Frame | Frame[];
      try {
        parsed = JSON.parse(data);
      } catch {
        return fail(1007, "frame is not JSON");
      }
      if (!Array.isArray(parsed)) return handle(parsed);
      if (!link.ready) return fail(1002, "not authenticated");
      for (const f of parsed) {
        if (f?.t !== "req" && f?.t !== "res") {
          return fail(1002, "only requests and replies come batched");
        }
        handle(f);
      }
    };
    const handle = (f: Frame) => {
      if (f.t === "hello") {
        if (link.peer !== undefined || typeof f.node !== "string") {
          return fail(1002, "unexpected hello");
        }
        link.peer = f.node;
        peerNonce = String(f.nonce);
        if (!dialed) link.dialer = f.node;
        send(link, {
          t: "auth",
          mac: mac(peerNonce, me),
          subs: [...local.values()].map(({ sid, topic, group }) => ({
            sid,
            topic,
            group,
          })),
          serves: [...served.keys()],
        });
        return;
      }
      if (f.t === "auth") {
        if (link.peer === undefined || link.ready) {
          return fail(1002, "unexpected auth");
        }
        const want = encoder.encode(mac(nonce, link.peer));
        const got = encoder.encode(String(f.mac));
        if (want.length !== got.length || !timingSafeEqual(want, got)) {
          return fail(4003, "mesh authentication failed");
        }
        clearTimeout(handshake);
        const existing = links.get(link.peer);
        if (existing && existing.dialer <= link.dialer) {
          return fail(4009, "duplicate link");
        }
        if (existing) {
          try {
            existing.ws.close(4009, "duplicate link");
          } catch { /* closing */ }
          dropLink(existing);
        }
        link.ready = true;
        for (const s of f.subs ?? []) link.subs.set(s.sid, s);
        link.requestReply = Array.isArray(f.serves);
        for (const topic of f.serves ?? []) link.serves.add(String(topic));
        links.set(link.peer, link);
        reindex();
        return;
      }
      if (!link.ready) return fail(1002, "not authenticated");
      switch (f.t) {
        case "sub":
          link.subs.set(f.sub.sid, f.sub);
          send(link, { t: "suback", req: f.req });
          return;
        case "unsub":
          link.subs.delete(f.sid);
          return;
        case "suback": {
          const p = pendingAcks.get(f.req);
          if (p && p.left.delete(link.peer!) && p.left.size === 0) {
            pendingAcks.delete(f.req);
            p.done();
          }
          return;
        }
        case "msg":
          for (const sid of f.sids ?? []) {
            const sub = local.get(sid);
            if (sub && sub.topic === f.topic) enqueue(sub, f.env, f.key, 1, []);
          }
          return;
        case "srv":
          link.serves.add(String(f.topic));
          reindex();
          send(link, { t: "suback", req: f.req });
          return;
        case "unsrv":
          if (link.serves.delete(String(f.topic))) reindex();
          return;
        case "req":
          answer(link, f);
          return;
        case "res": {
          const p = pending.get(f.id);
          if (!p || p.node !== link.peer) return;
          settle(f.id);
          if (f.err === undefined) p.resolve(f.body);
          else {
            p.reject(
              new TransportError(
                f.none ? "unavailable" : "bad_message",
                f.none
                  ? `node '${link.peer}' does not answer '${p.topic}'`
                  : `responder for '${p.topic}' on node '${link.peer}' failed: ${f.err}`,
                { data: { node: link.peer, topic: p.topic } },
              ),
            );
          }
          return;
        }
        default:
          return fail(1002, `unknown frame type`);
      }
    };
    return link;
  };

  // --- requests answered here ---------------------------------------------
  const reply = (link: Link, res: Extract<Frame, { t: "res" }>) => {
    let frame: string;
    try {
      frame = JSON.stringify(res);
    } catch (err) {
      frame = JSON.stringify({
        t: "res",
        id: res.id,
        err: `reply is not JSON: ${(err as Error).message}`,
      });
    }
    if (frame.length > o.maxMessageBytes) {
      frame = JSON.stringify({
        t: "res",
        id: res.id,
        err:
          `reply is ${frame.length} characters; the limit is ${o.maxMessageBytes} bytes`,
      });
    }
    sendBatched(link, frame);
  };
  const answer = (link: Link, f: Extract<Frame, { t: "req" }>) => {
    const handler = served.get(f.topic);
    if (!handler) {
      return reply(link, { t: "res", id: f.id, err: "", none: true });
    }
    let result: Promise<unknown>;
    try {
      result = handler(f.body, { from: link.peer!, headers: f.h ?? {} });
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      (body) => reply(link, { t: "res", id: f.id, body }),
      (err) =>
        reply(link, {
          t: "res",
          id: f.id,
          err: err instanceof Error ? err.message : String(err),
        }),
    );
  };

  // --- deliveries on this node ---------------------------------------------
  const deadLetter = (
    sub: LocalSub,
    env: Envelope,
    reason: string,
    attempts: number,
    errors: AttemptError[],
  ) => {
    const list = dead.get(sub.topic) ?? [];
    list.push({
      envelope: env,
      topic: sub.topic,
      group: sub.group,
      reason,
      attempts,
      errors,
      deadAt: Date.now(),
    });
    if (list.length > o.maxDeadLetters) list.shift();
    dead.set(sub.topic, list);
    report.deadLettered({
      topic: sub.topic,
      messageId: env.id,
      reason,
      attempts,
      group: sub.group,
    });
  };

  const enqueue = (
    sub: LocalSub,
    env: Envelope,
    key: string | undefined,
    attempts: number,
    errors: AttemptError[],
  ) => {
    if (sub.closed) return;
    sub.queue.push({ env, key, attempts, errors });
    pump(sub);
  };

  const pump = (sub: LocalSub) => {
    while (!sub.closed && sub.inFlight < sub.maxInFlight && sub.queue.length) {
      const item = sub.queue.shift()!;
      sub.inFlight++;
      run(sub, item).finally(() => {
        sub.inFlight--;
        if (sub.inFlight === 0) sub.idle?.();
        pump(sub);
      });
    }
  };

  const run = async (sub: LocalSub, item: LocalSub["queue"][number]) => {
    const { env, key, attempts, errors } = item;
    const max = env.delivery.maxAttempts;
    let settled = false;
    const fail = (delayMs: number | undefined, error: string) => {
      const history = [...errors, {
        at: Date.now(),
        attempt: attempts,
        error,
        consumer: me,
      }].slice(-20);
      if (attempts >= max) {
        deadLetter(
          sub,
          env,
          `max attempts (${max}) reached`,
          attempts,
          history,
        );
        return;
      }
      const wait = delayMs ??
        backoffDelay(env.delivery.backoff, attempts, {
          baseMs: o.retryBaseMs,
          maxMs: o.retryMaxMs,
        });
      later(wait, () => enqueue(sub, env, key, attempts + 1, history));
    };
    const delivery: Delivery = {
      envelope: env,
      topic: sub.topic,
      key,
      attempts,
      get settled() {
        return settled;
      },
      ack() {
        settled = true;
        return Promise.resolve();
      },
      nak(delayMs?: number, error = "nak") {
        if (!settled) {
          settled = true;
          fail(delayMs, error);
        }
        return Promise.resolve();
      },
      inProgress: () => Promise.resolve(),
      term(reason: string) {
        if (!settled) {
          settled = true;
          deadLetter(sub, env, reason, attempts, errors);
        }
        return Promise.resolve();
      },
    };
    try {
      await sub.handler(delivery);
      settled = true;
    } catch (err) {
      report.handlerFailed({
        topic: sub.topic,
        messageId: env.id,
        attempt: attempts,
        error: err,
        group: sub.group,
      });
      await delivery.nak(
        undefined,
        err instanceof Error ? err.message : String(err),
      );
    }
  };

  // --- listener and dialers ------------------------------------------------
  // Peers send no Origin; a browser page may not link (nor probe the secret).
  const refuseOrigin = upgradeOriginGuard();
  const handleUpgrade = (req: Request): Response => {
    if (closed) return new Response("mesh closed", { status: 503 });
    if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("expected a WebSocket upgrade", { status: 426 });
    }
    const refused = refuseOrigin(req);
    if (refused) return refused;
    const { socket, response } = Deno.upgradeWebSocket(req, {
      idleTimeout: 30,
    });
    attach(socket, false);
    return response;
  };
  let server: Deno.HttpServer<Deno.NetAddr> | undefined;
  let url = "";
  if (o.listen) {
    const ready = Promise.withResolvers<void>();
    server = Deno.serve({
      hostname: o.hostname,
      port: o.port,
      onListen: () => ready.resolve(),
    }, handleUpgrade);
    await ready.promise;
    url = `ws://${o.hostname}:${server.addr.port}/mesh`;
  }

  const dialers = o.peers.map((peerUrl) => {
    let current: Link | undefined;
    let peerId: string | undefined;
    const dial = () => {
      if (closed) return;
      const linked = peerId !== undefined && links.has(peerId);
      const open = current && allLinks.has(current);
      if (!linked && !open) {
        try {
          current = attach(
            openWebSocket(peerUrl, { maxMessageBytes: maxFrame }),
            true,
          );
        } catch {
          current = undefined;
        }
      }
      if (current?.peer) peerId = current.peer;
      later(o.reconnectMs, dial);
    };
    dial();
    return () => current && allLinks.has(current) && !current.ready;
  });
  // Give the first dials their handshakes before returning.
  const until = Date.now() + o.handshakeTimeoutMs;
  while (dialers.some((pending) => pending()) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 5));
  }

  const transport: MeshTransport = {
    name: "websocket-mesh",
    caps,
    nodeId: me,
    get url() {
      return url;
    },
    connectedPeers: () => [...links.keys()].sort(),
    handleUpgrade,
    publish(topic: string, envelope: Envelope, opts: PublishOptions = {}) {
      if (closed) {
        return Promise.reject(
          new TransportError("closed", "transport is closed"),
        );
      }
      try {
        checkTopic(topic);
        assertFits(envelope, caps.maxMessageBytes);
      } catch (err) {
        return Promise.reject(err);
      }
      const targets: { node: string; sid: string; group?: string }[] = [];
      for (const s of local.values()) {
        if (s.topic === topic) targets.push({ node: me, ...s });
      }
      for (const [node, link] of links) {
        for (const s of link.subs.values()) {
          if (s.topic === topic) targets.push({ node, ...s });
        }
      }
      const chosen: typeof targets = targets.filter((t) => !t.group);
      const groups = new Map<string, typeof targets>();
      for (const t of targets) {
        if (t.group) groups.set(t.group, [...groups.get(t.group) ?? [], t]);
      }
      for (const [group, members] of groups) {
        members.sort((a, b) =>
          a.node === b.node
            ? (a.sid < b.sid ? -1 : 1)
            : a.node < b.node
            ? -1
            : 1
        );
        const k = `${topic}|${group}`;
        const i = rr.get(k) ?? 0;
        rr.set(k, i + 1);
        chosen.push(members[i % members.length]);
      }
      const byNode = new Map<string, string[]>();
      for (const t of chosen) {
        byNode.set(t.node, [...byNode.get(t.node) ?? [], t.sid]);
      }
      for (const [node, sids] of byNode) {
        if (node === me) {
          for (const sid of sids) {
            const sub = local.get(sid);
            if (sub) enqueue(sub, envelope, opts.key, 1, []);
          }
        } else {
          const link = links.get(node);
          if (link) {
            send(link, { t: "msg", sids, topic, key: opts.key, env: envelope });
          }
        }
      }
      return Promise.resolve();
    },
    async subscribe(
      topic: string,
      handler: DeliveryHandler,
      opts: SubscribeOptions = {},
    ): Promise<Subscription> {
      if (closed) throw new TransportError("closed", "transport is closed");
      checkTopic(topic);
      const sub: LocalSub = {
        sid: `${me}/${randomId()}`,
        topic,
        group: opts.group,
        handler,
        maxInFlight: Math.max(1, opts.maxInFlight ?? 1),
        inFlight: 0,
        queue: [],
        closed: false,
      };
      local.set(sub.sid, sub);
      const info: SubInfo = { sid: sub.sid, topic, group: opts.group };
      const peers = [...links.entries()];
      if (peers.length > 0) {
        const req = ++reqs;
        const acked = new Promise<void>((done) =>
          pendingAcks.set(req, { left: new Set(peers.map(([p]) => p)), done })
        );
        for (const [, link] of peers) send(link, { t: "sub", sub: info, req });
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          acked,
          new Promise((r) => (timer = setTimeout(r, o.handshakeTimeoutMs))),
        ]);
        clearTimeout(timer);
        pendingAcks.delete(req);
      }
      return {
        topic,
        group: opts.group,
        async close() {
          if (sub.closed) return;
          sub.closed = true;
          sub.queue.length = 0;
          local.delete(sub.sid);
          for (const link of links.values()) {
            send(link, { t: "unsub", sid: sub.sid });
          }
          if (sub.inFlight > 0) {
            await new Promise<void>((r) => (sub.idle = r));
          }
        },
      };
    },
    async respond(topic: string, handler: RequestHandler): Promise<Responder> {
      if (closed) throw new TransportError("closed", "transport is closed");
      checkTopic(topic);
      if (served.has(topic)) {
        throw new TransportError(
          "invalid_argument",
          `Cannot answer '${topic}': this node answers it already`,
        );
      }
      served.set(topic, handler);
      reindex();
      const peers = [...links.entries()].filter(([, l]) => l.requestReply);
      if (peers.length > 0) {
        const req = ++reqs;
        const acked = new Promise<void>((done) =>
          pendingAcks.set(req, { left: new Set(peers.map(([p]) => p)), done })
        );
        for (const [, link] of peers) send(link, { t: "srv", topic, req });
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          acked,
          new Promise((r) => (timer = setTimeout(r, o.handshakeTimeoutMs))),
        ]);
        clearTimeout(timer);
        pendingAcks.delete(req);
      }
      let open = true;
      return {
        topic,
        close() {
          if (open && served.get(topic) === handler) {
            served.delete(topic);
            reindex();
            for (const link of links.values()) {
              if (link.requestReply) send(link, { t: "unsrv", topic });
            }
          }
          open = false;
          return Promise.resolve();
        },
      };
    },
    responders: (topic: string) => responderIndex.get(topic) ?? [],
    listResponders: () => new Map(responderIndex),
    request(
      node: string,
      topic: string,
      body: unknown,
      opts: RequestOptions,
    ): Promise<unknown> {
      if (closed) {
        return Promise.reject(
          new TransportError("closed", "transport is closed"),
        );
      }
      if (node === me) {
        const handler = served.get(topic);
        if (!handler) {
          return Promise.reject(
            new TransportError(
              "unavailable",
              `node '${me}' does not answer '${topic}'`,
            ),
          );
        }
        return handler(body, { from: me, headers: opts.headers ?? {} });
      }
      const link = links.get(node);
      if (!link) {
        return Promise.reject(
          new TransportError(
            "unavailable",
            `no link to node '${node}' (linked: ${
              [...links.keys()].join(", ") || "none"
            })`,
            { data: { node, topic } },
          ),
        );
      }
      if (!link.requestReply) {
        return Promise.reject(
          new TransportError(
            "unavailable",
            `node '${node}' runs a mesh without request/reply (an older version)`,
            { data: { node, topic } },
          ),
        );
      }
      const id = ++nextRequest;
      let frame: string;
      try {
        frame = JSON.stringify(
          opts.headers
            ? { t: "req", id, topic, body, h: opts.headers }
            : { t: "req", id, topic, body },
        );
      } catch (err) {
        return Promise.reject(
          new TransportError(
            "invalid_argument",
            `Cannot send a request on '${topic}': its body is not JSON: ${
              (err as Error).message
            }`,
          ),
        );
      }
      const bytes = frame.length * 3 > o.maxMessageBytes
        ? encoder.encode(frame).length
        : frame.length;
      if (bytes > o.maxMessageBytes) {
        return Promise.reject(
          new TransportError(
            "too_large",
            `Cannot send a request on '${topic}': it is ${bytes} bytes; the limit is ${o.maxMessageBytes} bytes`,
            { data: { bytes, limit: o.maxMessageBytes } },
          ),
        );
      }
      return new Promise((resolve, reject) => {
        const timeoutMs = opts.timeoutMs;
        const deadline = deadlines.add(timeoutMs, () => {
          settle(id)?.reject(
            new TimeoutError(`request '${topic}' to node '${node}'`, timeoutMs),
          );
        });
        pending.set(id, { node, topic, resolve, reject, deadline });
        sendBatched(link, frame);
      });
    },
    deadLetters(topic: string, opts: { limit?: number } = {}) {
      return Promise.resolve(
        (dead.get(topic) ?? []).slice(0, opts.limit ?? o.maxDeadLetters),
      );
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const id of [...pending.keys()]) {
        settle(id)?.reject(
          new TransportError("closed", "transport is closed"),
        );
      }
      served.clear();
      const subs = [...local.values()];
      for (const s of subs) {
        s.closed = true;
        s.queue.length = 0;
      }
      await Promise.all(
        subs.filter((s) => s.inFlight > 0).map((s) =>
          new Promise<void>((r) => (s.idle = r))
        ),
      );
      local.clear();
      await Promise.all([...allLinks].map(async (l) => {
        try {
          l.ws.close(1001, "node leaving");
        } catch {
          // A dialed link's client accepts only 1000 and 3000-4999.
          try {
            l.ws.close(1000, "node leaving");
          } catch { /* already closed */ }
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          l.closed,
          new Promise((r) => (timer = setTimeout(r, 1000))),
        ]);
        clearTimeout(timer);
      }));
      await server?.shutdown();
    },
  };
  return transport;
}
