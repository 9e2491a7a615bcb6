/**
 * Request/reply on NATS (`caps.requestReply`, docs/services.md): what
 * service calls need from a transport — answer a topic on this node, see
 * which nodes answer it, send a request to one chosen node.
 *
 * Core NATS carries it in both modes (no JetStream storage: a request is
 * as durable as a call, which is not at all):
 * - each node answers `{prefix}_rr.req.{node}.{topic}` (`{node}` is the
 *   node id in base64url, so any id fits one subject token), one plain
 *   subscription per answered topic;
 * - the directory travels on `{prefix}_rr.ann`: every node publishes the
 *   whole set of topics it answers every `announceMs`, `{"bye"}` when it
 *   closes, and `{"hello"}` when it starts, which makes every other node
 *   announce at once. A change (a topic answered or no longer) is announced
 *   with a reply subject every node acks once it has applied it, and
 *   `respond` resolves when the nodes in the directory have (or after
 *   `handshakeMs`), as the mesh's does. An entry not
 *   refreshed within 3 announcements expires (a node that died without a
 *   bye); a request NATS answers with "no responders" drops the entry at
 *   once (the node's subscription is gone: it closed or lost its
 *   connection).
 * - a request is `{"b": body}` with the caller's headers and
 *   `plexus-rr-from: <node>`; the reply is `{"ok": true, "v": value}` or
 *   `{"ok": false, "error": message}`.
 *
 * @module
 */
import type * as NatsCore from "@nats-io/transport-node";
import type { Logger } from "../../core/observe/logger.ts";
import {
  type RequestHandler,
  type RequestOptions,
  type Responder,
  TransportError,
} from "../../core/transport.ts";
import { TimeoutError } from "../../core/resilience/errors.ts";
import { checkTopic } from "./wire.ts";

/** Header carrying the requesting node's id. */
export const FROM_HEADER = "plexus-rr-from";

/** Options of {@linkcode natsRequestReply}. */
export interface NatsRequestReplyOptions {
  /** Subject prefix, as the transport's. */
  prefix: string;
  /** This node's id (what other nodes name in `request`). */
  nodeId: string;
  /** Period of the directory announcements, ms. @default {1000} */
  announceMs?: number;
  /** Longest wait for the other nodes to ack a change of what this node answers, ms. @default {1000} */
  handshakeMs?: number;
  /** Told about undecodable announcements and failed replies. */
  log?: Logger;
}

/** The request/reply half of a NATS transport. */
export interface NatsRequestReply {
  respond(topic: string, handler: RequestHandler): Promise<Responder>;
  responders(topic: string): readonly string[];
  listResponders(): Map<string, readonly string[]>;
  request(
    node: string,
    topic: string,
    body: unknown,
    opts: RequestOptions,
  ): Promise<unknown>;
  /** Ids of the nodes in the directory (up, as far as this node knows), itself included, sorted. */
  nodes(): string[];
  /** Says bye and stops answering. */
  close(): Promise<void>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes of a message's `max_payload` kept for its headers. */
const HEADER_ROOM = 4096;

/**
 * Whether `text` encodes to more than `limit` UTF-8 bytes; encodes only when
 * its length cannot settle it (a UTF-16 unit is 1 to 3 bytes).
 */
function over(text: string, limit: number): number | false {
  if (text.length * 3 <= limit) return false;
  const n = encoder.encode(text).length;
  return n > limit ? n : false;
}

/** A node id as one subject token. */
function nodeToken(node: string): string {
  return btoa(String.fromCharCode(...encoder.encode(node)))
    .replaceAll("+", "-").replaceAll("/", "_").replaceAll("=", "");
}

interface Entry {
  topics: Set<string>;
  expiresAt: number;
}

/**
 * Starts request/reply on the connection `nc`: subscribes to the directory
 * and says hello.
 *
 * @example Usage
 * ```ts ignore
 * const rr = await natsRequestReply(nc, core, { prefix: "plexus.", nodeId: "a" });
 * await rr.respond("orders.get", (body) => Promise.resolve({ body }));
 * await rr.request("a", "orders.get", { id: 1 }, { timeoutMs: 1000 });
 * ```
 */
export async function natsRequestReply(
  nc: NatsCore.NatsConnection,
  core: typeof NatsCore,
  options: NatsRequestReplyOptions,
): Promise<NatsRequestReply> {
  const me = options.nodeId;
  const announceMs = options.announceMs ?? 1000;
  const handshakeMs = options.handshakeMs ?? 1000;
  const annSubject = `${options.prefix}_rr.ann`;
  const reqSubject = (node: string, topic: string) =>
    `${options.prefix}_rr.req.${nodeToken(node)}.${topic}`;
  const served = new Map<string, { sub: NatsCore.Subscription }>();
  const directory = new Map<string, Entry>();
  let closed = false;

  const announcement = () =>
    JSON.stringify({
      node: me,
      topics: [...served.keys()],
      ttlMs: 3 * announceMs,
    });
  const announce = () => {
    if (!closed) nc.publish(annSubject, announcement());
  };
  /**
   * Announces a change and waits until every node in the directory has
   * applied it (each acks on the reply subject), or `handshakeMs`.
   */
  const announceAndWait = async () => {
    const left = new Set(live().map(([n]) => n).filter((n) => n !== me));
    if (left.size === 0) {
      announce();
      await nc.flush();
      return;
    }
    const inbox = core.createInbox();
    let done!: () => void;
    const all = new Promise<void>((r) => (done = r));
    const acks = nc.subscribe(inbox, {
      callback: (err, m) => {
        if (err) return;
        left.delete(decoder.decode(m.data));
        if (left.size === 0) done();
      },
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      nc.publish(annSubject, announcement(), { reply: inbox });
      await Promise.race([
        all,
        new Promise((r) => (timer = setTimeout(r, handshakeMs))),
      ]);
    } finally {
      clearTimeout(timer);
      acks.unsubscribe();
    }
  };
  const drop = (node: string, topic: string) => {
    directory.get(node)?.topics.delete(topic);
  };
  /** Rejecters of the requests waiting on each node. */
  const waiting = new Map<string, Set<(err: Error) => void>>();
  const gone = (node: string, why: string) => {
    directory.delete(node);
    const list = waiting.get(node);
    if (!list) return;
    waiting.delete(node);
    const err = new TransportError(
      "unavailable",
      `node '${node}' ${why} before answering (the request may or may not have run)`,
      { data: { node } },
    );
    for (const reject of list) reject(err);
  };
  const live = (now = Date.now()) => {
    const out: [string, Entry][] = [];
    for (const [node, e] of directory) {
      if (node !== me && e.expiresAt < now) {
        gone(node, "went silent (no announcement within its ttl)");
        continue;
      }
      out.push([node, e]);
    }
    return out;
  };

  const ann = nc.subscribe(annSubject, {
    callback: (err, msg) => {
      if (err || closed) return;
      let m: {
        node?: unknown;
        topics?: unknown;
        ttlMs?: unknown;
        bye?: unknown;
        hello?: unknown;
      };
      try {
        m = JSON.parse(decoder.decode(msg.data));
      } catch {
        options.log?.warn("nats request/reply: undecodable announcement");
        return;
      }
      if (typeof m.hello === "string") {
        if (m.hello === me) return;
        if (!directory.has(m.hello)) {
          directory.set(m.hello, {
            topics: new Set(),
            expiresAt: Date.now() + 3 * announceMs,
          });
        }
        announce();
        return;
      }
      if (typeof m.node !== "string" || m.node === me) return;
      if (m.bye === true) {
        gone(m.node, "closed");
        return;
      }
      if (!Array.isArray(m.topics)) return;
      const ttl = typeof m.ttlMs === "number" && m.ttlMs > 0 ? m.ttlMs : 3000;
      directory.set(m.node, {
        topics: new Set(m.topics.filter((t) => typeof t === "string")),
        expiresAt: Date.now() + ttl,
      });
      if (msg.reply) msg.respond(me);
    },
  });
  directory.set(me, { topics: new Set(), expiresAt: Infinity });
  // Each tick also expires silent nodes, failing the requests they hold.
  const heartbeat = setInterval(() => {
    announce();
    live();
  }, announceMs);
  nc.publish(annSubject, JSON.stringify({ hello: me }));
  await nc.flush();

  /** Largest request or reply body, bytes. */
  const limit = () => (nc.info?.max_payload ?? 1024 * 1024) - HEADER_ROOM;
  const answer =
    (topic: string, handler: RequestHandler) => async (msg: NatsCore.Msg) => {
      const headers: Record<string, string> = {};
      let from = "";
      for (const [k, vs] of msg.headers ?? []) {
        if (k === FROM_HEADER) from = vs[0] ?? "";
        else headers[k] = vs[0] ?? "";
      }
      let reply: string;
      try {
        const { b } = JSON.parse(decoder.decode(msg.data));
        const v = await handler(b, { from, headers });
        reply = JSON.stringify(
          v === undefined ? { ok: true } : { ok: true, v },
        );
        // NATS would refuse to send it and the caller would wait for its
        // deadline: tell it now instead.
        const n = over(reply, limit());
        if (n !== false) {
          reply = JSON.stringify({
            ok: false,
            error:
              `the reply is ${n} bytes, over the ${limit()} a message may carry here (the NATS server's max_payload less ${HEADER_ROOM} for headers)`,
          });
        }
      } catch (err) {
        reply = JSON.stringify({
          ok: false,
          error: err instanceof Error ? err.message : String(err),
        });
      }
      if (!msg.respond(reply)) {
        options.log?.warn(
          "nats request/reply: a request had no reply subject",
          {
            topic,
          },
        );
      }
    };

  return {
    async respond(topic, handler) {
      if (closed) throw new TransportError("closed", "transport is closed");
      checkTopic(topic);
      if (served.has(topic)) {
        throw new TransportError(
          "invalid_argument",
          `Cannot answer '${topic}': this node answers it already`,
        );
      }
      const handle = answer(topic, handler);
      const sub = nc.subscribe(reqSubject(me, topic), {
        callback: (err, msg) => {
          if (!err) void handle(msg);
        },
      });
      served.set(topic, { sub });
      directory.get(me)!.topics.add(topic);
      await announceAndWait();
      let open = true;
      return {
        topic,
        async close() {
          if (!open || served.get(topic)?.sub !== sub) return;
          open = false;
          served.delete(topic);
          directory.get(me)!.topics.delete(topic);
          sub.unsubscribe();
          if (!closed) await announceAndWait().catch(() => {});
        },
      };
    },
    nodes() {
      return live().map(([n]) => n).sort();
    },
    responders(topic) {
      return live().filter(([, e]) => e.topics.has(topic)).map(([n]) => n)
        .sort();
    },
    listResponders() {
      const out = new Map<string, string[]>();
      for (const [node, e] of live()) {
        for (const t of e.topics) {
          const list = out.get(t);
          if (list) list.push(node);
          else out.set(t, [node]);
        }
      }
      for (const list of out.values()) list.sort();
      return out;
    },
    async request(node, topic, body, opts) {
      if (closed) throw new TransportError("closed", "transport is closed");
      checkTopic(topic);
      if (node === me) {
        const local = served.get(topic);
        if (!local) {
          throw new TransportError(
            "unavailable",
            `node '${me}' does not answer '${topic}'`,
          );
        }
      }
      let payload: string;
      try {
        payload = JSON.stringify({ b: body });
      } catch (err) {
        throw new TransportError(
          "invalid_argument",
          `Cannot send a request on '${topic}': its body is not JSON: ${
            (err as Error).message
          }`,
        );
      }
      const n = over(payload, limit());
      if (n !== false) {
        throw new TransportError(
          "too_large",
          `Cannot send a request on '${topic}': it is ${n} bytes, over the ${limit()} a message may carry here (the NATS server's max_payload less ${HEADER_ROOM} for headers)`,
          { data: { node, topic } },
        );
      }
      const headers = core.headers();
      headers.set(FROM_HEADER, me);
      for (const [k, v] of Object.entries(opts.headers ?? {})) {
        headers.set(k, v);
      }
      let msg: NatsCore.Msg;
      try {
        let reject!: (err: Error) => void;
        const left = new Promise<never>((_, r) => (reject = r));
        const list = waiting.get(node) ?? new Set();
        waiting.set(node, list);
        list.add(reject);
        const sent = nc.request(reqSubject(node, topic), payload, {
          timeout: opts.timeoutMs,
          headers,
        });
        sent.catch(() => {}); // when `left` wins, this rejects later
        try {
          msg = await Promise.race([sent, left]);
        } finally {
          list.delete(reject);
          if (list.size === 0 && waiting.get(node) === list) {
            waiting.delete(node);
          }
        }
      } catch (err) {
        if (err instanceof TransportError) throw err;
        const e = err as Error & { isNoResponders?: () => boolean };
        const cause = (e as { cause?: Error }).cause;
        if (
          e.name === "NoRespondersError" || e.isNoResponders?.() ||
          cause?.name === "NoRespondersError"
        ) {
          drop(node, topic);
          throw new TransportError(
            "unavailable",
            `node '${node}' does not answer '${topic}' (no responder on NATS)`,
            { data: { node, topic } },
          );
        }
        if (e.name === "TimeoutError" || cause?.name === "TimeoutError") {
          throw new TimeoutError(
            `request '${topic}' to node '${node}'`,
            opts.timeoutMs,
          );
        }
        throw new TransportError(
          "unavailable",
          `Cannot send a request on '${topic}' to node '${node}': ${e.message}`,
          { cause: err, data: { node, topic } },
        );
      }
      let reply: { ok?: unknown; v?: unknown; error?: unknown };
      try {
        reply = JSON.parse(decoder.decode(msg.data));
      } catch {
        throw new TransportError(
          "bad_message",
          `the reply of node '${node}' on '${topic}' is not JSON`,
        );
      }
      if (reply.ok === true) return reply.v;
      throw new TransportError(
        "bad_message",
        `the responder of '${topic}' on node '${node}' failed: ${
          String(reply.error ?? "no reason given")
        }`,
        { data: { node, topic } },
      );
    },
    async close() {
      if (closed) return;
      clearInterval(heartbeat);
      for (const { sub } of served.values()) sub.unsubscribe();
      served.clear();
      if (!nc.isClosed()) {
        nc.publish(annSubject, JSON.stringify({ node: me, bye: true }));
        await nc.flush().catch(() => {});
      }
      closed = true;
      ann.unsubscribe();
    },
  };
}
