/**
 * What a ready agent connection does with each record it receives: checks
 * it is addressed within the session, then publishes (`msg`), hands
 * requests to the backend and answers them (`req`), subscribes and
 * unsubscribes (`sub`, `unsub`), settles deliveries (`ack`), answers pings,
 * and hands the agent's answers to the node's own requests (`res`, `err`)
 * to the waiting request.
 *
 * A record that does not open, or is addressed outside the session or the
 * agent's own channels, closes the connection (4403); `auth` or `ready`
 * after the handshake closes it with 4400. A refused message or request is
 * answered with an `err` record and the connection stays open: `forbidden`
 * (the channel policy), `bad_request` (a bad header, body or signature),
 * `unavailable` (too many requests waiting on backend handlers).
 *
 * Order: signature checks are asynchronous, so signed messages go through
 * one chain and keep their order; subscriptions and pongs go through the
 * connection's control chain ({@linkcode DispatchHost.serially}).
 *
 * @module
 */
import type { Envelope } from "../../core/envelope.ts";
import type { Router } from "../../core/router.ts";
import {
  RecordError,
  type RecordHeader,
  type RecordOpener,
} from "../../sdk/protocol/record.ts";
import {
  type Channel,
  parseChannel,
  verifyMessageSignature,
} from "../../sdk/protocol/channels.ts";
import { agentKeyBytes, type AgentRecord } from "../enrolment.ts";
import type { PresenceRecord } from "../presence.ts";
import {
  canPublish,
  canSubscribe,
  channelPolicy,
  isDurable,
} from "../policy.ts";
import type { QueueDelivery } from "./delivery.ts";
import { GatewayRequestError, type PendingAsks } from "./requests.ts";
import type { RecordFields } from "./sender.ts";
import type { AgentRequest, GatewayConfig, GatewayMetrics } from "./types.ts";

/** Agent requests a connection may have waiting on backend handlers. */
export const MAX_PENDING_REQUESTS = 256;
/**
 * Characters of channel names one connection may be subscribed to at once:
 * the presence record lists them in one KV value (64 KiB), and a name may
 * be 519 characters. A `sub` past it gets `err` `bad_request`.
 */
export const MAX_SUBSCRIBED_CHARS = 32_768;

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

/** What a {@linkcode Dispatcher} needs from its (ready) connection. */
export interface DispatchHost {
  /** Channel policies, `requestTimeoutMs` and `maxMessageBytes`. */
  config: Pick<
    GatewayConfig,
    "channels" | "requestTimeoutMs" | "maxMessageBytes"
  >;
  /** Counts refused records. */
  metrics: Pick<GatewayMetrics, "refused">;
  /** Where accepted messages and requests are published. */
  router: Pick<Router, "publish">;
  /** This node's id (the envelopes' `node` header). */
  nodeId: string;
  /** Opens records with the session's agent → node key. */
  opener: RecordOpener;
  /** The session id. */
  sid: string;
  /** The authenticated agent id. */
  agentId: string;
  /** The agent's enrolment as last read (roles may change while connected). */
  agent(): AgentRecord;
  /** Whether the connection is still authenticated and open. */
  ready(): boolean;
  /** The agent's subscribed backend channel names (changed here). */
  subs: Set<string>;
  /** Marks the agent heard from now. */
  heard(): void;
  /** Seals and sends a record to the agent. */
  send(fields: RecordFields, body: Uint8Array | Record<string, unknown>): void;
  /** Runs `task` on the connection's control chain (one at a time, in order). */
  serially(task: () => Promise<unknown>): void;
  /** Writes the presence record if it is still this connection's (closes 4409 otherwise). */
  writePresence(patch: Partial<PresenceRecord>): Promise<boolean>;
  /** Whether the agent already sent a `msg` with this id lately; records it if not. */
  seenInbound(agentId: string, id: string): boolean;
  /**
   * Runs the backend handler of an agent request: its answer, or a promise
   * of it; a failure (thrown or rejected) is answered with an `err` record.
   */
  request(req: AgentRequest): unknown;
  /** The connection's deliveries (acks settle them; a durable subscription sweeps). */
  delivery: Pick<QueueDelivery, "ack" | "sweep">;
  /** The node's requests waiting for the agent's answer. */
  asks: Pick<PendingAsks, "settle">;
  /** Closes the connection. */
  close(code: number, reason: string): void;
  /** An unexpected error: close the connection (1011). */
  fail(err: unknown): void;
}

/**
 * Most message ids one `ack` record acknowledges (its `re` and the ids in its
 * body); the node says so in `ready` (`acks`), and an agent that read it may
 * acknowledge a burst with one record (docs/protocol.md, "Record types").
 */
export const MAX_ACKS_PER_RECORD = 256;

/**
 * The further message ids an `ack` record's body lists (a JSON array of
 * strings besides its `re`), or null when the body is not one or lists more
 * than {@linkcode MAX_ACKS_PER_RECORD} − 1.
 *
 * @example Usage
 * ```ts
 * import { moreAcked } from "./dispatch.ts";
 * import assert from "node:assert/strict";
 * const bytes = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
 * assert.deepEqual(moreAcked(bytes(["m-2", "m-3"])), ["m-2", "m-3"]);
 * assert.equal(moreAcked(bytes([1])), null);
 * assert.equal(moreAcked(new TextEncoder().encode("{")), null);
 * ```
 */
export function moreAcked(body: Uint8Array): string[] | null {
  let ids: unknown;
  try {
    ids = JSON.parse(decoder.decode(body));
  } catch {
    return null;
  }
  if (
    !Array.isArray(ids) || ids.length >= MAX_ACKS_PER_RECORD ||
    !ids.every((id) => typeof id === "string")
  ) return null;
  return ids;
}

/** What {@linkcode inboundEnvelope} fills in besides the record. */
export interface InboundOptions {
  /** The sending agent. */
  agentId: string;
  /** This node's id. */
  nodeId: string;
  /** The session id. */
  sid: string;
  /** The delivery timeout of the envelope. */
  requestTimeoutMs: number;
  /** The signature algorithm the message was verified with, if signed. */
  signed?: string;
}

/**
 * The router envelope of an agent's `msg` or `req` record, or the `problem`
 * that refuses it (`bad_request`): the id, `prio` (0-9, default 4), `mt`
 * and `cid` checked, the body parsed as JSON (empty: null).
 *
 * @example Usage
 * ```ts
 * import { inboundEnvelope } from "./dispatch.ts";
 * import assert from "node:assert/strict";
 * const opts = { agentId: "a1", nodeId: "n1", sid: "s1", requestTimeoutMs: 5000 };
 * const header = { sid: "s1", from: "a1", to: "backend", ch: "agent.a1.status", type: "msg", id: "m1" };
 * const out = inboundEnvelope(header, new TextEncoder().encode('{"up":true}'), opts);
 * assert.ok("envelope" in out);
 * assert.equal(out.envelope.type, "event");
 * assert.deepEqual(out.envelope.payload, { up: true });
 * assert.deepEqual(inboundEnvelope({ ...header, prio: 12 }, new Uint8Array(0), opts), {
 *   problem: "prio must be an integer 0-9",
 * });
 * ```
 */
export function inboundEnvelope(
  h: RecordHeader,
  body: Uint8Array,
  options: InboundOptions,
): { envelope: Envelope } | { problem: string } {
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
  if (problem) return { problem };
  const envelope: Envelope = {
    id: h.id,
    type: h.type === "req"
      ? "request"
      : ENVELOPE_TYPES.has(mt as string)
      ? mt as Envelope["type"]
      : "event",
    topic: h.ch,
    source: options.agentId,
    timestamp: Date.now(),
    priority: prio as number,
    headers: {
      "agent-id": options.agentId,
      "message-type": mt as string,
      node: options.nodeId,
      sid: options.sid,
      ...(options.signed ? { signature: options.signed } : {}),
    },
    payload,
    delivery: {
      guarantee: "at-most-once",
      maxAttempts: 1,
      backoff: "none",
      timeoutMs: options.requestTimeoutMs,
      persistent: false,
    },
    ...(h.cid !== undefined ? { correlationId: String(h.cid) } : {}),
  };
  return { envelope };
}

/**
 * Dispatches the records of one ready connection (see the module doc).
 * Made once the connection is authenticated.
 */
export class Dispatcher {
  readonly #host: DispatchHost;
  #verifying: Promise<unknown> = Promise.resolve();
  #pendingRequests = 0;

  constructor(host: DispatchHost) {
    this.#host = host;
  }

  /** Opens and dispatches one binary frame. */
  record(frame: Uint8Array): void {
    const host = this.#host;
    let rec;
    try {
      rec = host.opener.open(frame);
    } catch (err) {
      if (!(err instanceof RecordError)) throw err;
      host.metrics.refused(err.reason);
      return host.close(4403, `record refused: ${err.reason}`);
    }
    const h = rec.header;
    if (h.sid !== host.sid || h.from !== host.agentId || h.to !== "backend") {
      host.metrics.refused("readdressed");
      return host.close(4403, "record refused: header does not match session");
    }
    host.heard();
    switch (h.type) {
      case "msg":
      case "req": {
        const ch = parseChannel(h.ch);
        if (ch?.side !== "agent" || ch.id !== host.agentId) {
          host.metrics.refused("readdressed");
          return host.close(
            4403,
            "record refused: not on the agent's own channel",
          );
        }
        return this.#onPublish(h, rec.body, rec.signature, rec.headerBytes, ch);
      }
      case "sub":
      case "unsub": {
        const ch = parseChannel(h.ch);
        if (ch?.side !== "backend" || ch.id !== host.agentId) {
          host.metrics.refused("readdressed");
          return host.close(
            4403,
            "record refused: not on the agent's own channel",
          );
        }
        host.serially(() =>
          h.type === "sub" ? this.#subscribe(h, ch) : this.#unsubscribe(h, ch)
        );
        return;
      }
      case "ack": {
        if (typeof h.re === "string") host.delivery.ack(h.re);
        if (rec.body.length === 0) return;
        const more = moreAcked(rec.body);
        if (!more) {
          return this.#reply(h, "err", {
            code: "bad_request",
            message:
              `an ack's body lists at most ${MAX_ACKS_PER_RECORD} message ids (a JSON array of strings)`,
          });
        }
        for (const re of more) host.delivery.ack(re);
        return;
      }
      case "ping":
        host.send({ type: "pong", id: crypto.randomUUID(), re: h.id }, EMPTY);
        return;
      case "pong":
        host.serially(() => this.#touch());
        return;
      case "res":
      case "err":
        return host.asks.settle(h.re, h.type, rec.body, host.agentId);
      case "auth":
      case "ready":
        return host.close(4400, `unexpected ${h.type} record`);
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
    const host = this.#host;
    const policy = channelPolicy(host.config.channels, ch.name);
    if (!canPublish(policy, host.agent().roles)) {
      host.metrics.refused("forbidden");
      return this.#reply(h, "err", {
        code: "forbidden",
        message: `roles [${
          host.agent().roles.join(", ")
        }] may not publish on '${ch.name}'`,
      });
    }
    if (!policy?.signed) return this.#accept(h, body, ch, undefined);
    if (!signature) {
      host.metrics.refused("unsigned");
      return this.#reply(h, "err", {
        code: "bad_request",
        message: `channel '${ch.name}' needs a signed message`,
      });
    }
    // Verification is asynchronous: keep this channel's messages in order.
    this.#verifying = this.#verifying.then(async () => {
      const ok = await verifyMessageSignature(
        agentKeyBytes(host.agent()),
        signature,
        headerBytes,
        body,
      );
      if (!host.ready()) return;
      if (!ok) {
        host.metrics.refused("bad_signature");
        return this.#reply(h, "err", {
          code: "bad_request",
          message: `message signature does not verify`,
        });
      }
      this.#accept(h, body, ch, "ed25519");
    }).catch((err) => host.fail(err));
  }

  #accept(
    h: RecordHeader,
    body: Uint8Array,
    ch: Channel,
    signed: string | undefined,
  ): void {
    const host = this.#host;
    const checked = inboundEnvelope(h, body, {
      agentId: host.agentId,
      nodeId: host.nodeId,
      sid: host.sid,
      requestTimeoutMs: host.config.requestTimeoutMs,
      signed,
    });
    if ("problem" in checked) {
      host.metrics.refused("bad_request");
      return this.#reply(h, "err", {
        code: "bad_request",
        message: checked.problem,
      });
    }
    const { envelope } = checked;
    if (h.type === "msg") {
      if (!host.seenInbound(host.agentId, h.id)) {
        host.router.publish(h.ch, envelope);
      }
      return this.#reply(h, "ack", undefined);
    }
    if (this.#pendingRequests >= MAX_PENDING_REQUESTS) {
      return this.#reply(h, "err", {
        code: "unavailable",
        message: "too many requests in flight",
      });
    }
    let out: unknown;
    try {
      out = host.request({
        agentId: host.agentId,
        roles: host.agent().roles,
        channel: h.ch,
        name: ch.name,
        payload: envelope.payload,
        envelope,
      });
    } catch (err) {
      return this.#failed(h, err);
    }
    if (typeof (out as PromiseLike<unknown> | null)?.then !== "function") {
      return this.#answered(h, out);
    }
    this.#pendingRequests++;
    (out as PromiseLike<unknown>).then(
      (reply) => {
        this.#pendingRequests--;
        this.#answered(h, reply);
      },
      (err) => {
        this.#pendingRequests--;
        this.#failed(h, err);
      },
    );
  }

  /** Answers request `h` with its handler's reply. */
  #answered(h: RecordHeader, reply: unknown): void {
    let bytes: Uint8Array;
    try {
      bytes = encoder.encode(JSON.stringify(reply ?? null));
    } catch (err) {
      return this.#failed(
        h,
        new Error(`the reply is not JSON: ${(err as Error).message}`),
      );
    }
    if (bytes.length > this.#host.config.maxMessageBytes) {
      return this.#reply(h, "err", {
        code: "unavailable",
        message: "reply over the size limit",
      });
    }
    this.#reply(h, "res", bytes);
  }

  /** Answers request `h` with its handler's failure. */
  #failed(h: RecordHeader, err: unknown): void {
    const code = err instanceof GatewayRequestError ? err.code : "unavailable";
    this.#reply(h, "err", {
      code,
      message: String((err as Error)?.message ?? err).slice(0, 200),
    });
  }

  async #subscribe(h: RecordHeader, ch: Channel): Promise<void> {
    const host = this.#host;
    if (!host.ready()) return;
    const policy = channelPolicy(host.config.channels, ch.name);
    if (!canSubscribe(policy, host.agent().roles)) {
      host.metrics.refused("forbidden");
      return this.#reply(h, "err", {
        code: "forbidden",
        message: `roles [${
          host.agent().roles.join(", ")
        }] may not subscribe to '${ch.name}'`,
      });
    }
    if (!host.subs.has(ch.name)) {
      let chars = ch.name.length;
      for (const s of host.subs) chars += s.length;
      if (chars > MAX_SUBSCRIBED_CHARS) {
        return this.#reply(h, "err", {
          code: "bad_request",
          message:
            `subscribed channel names would be ${chars} characters, over the limit of ${MAX_SUBSCRIBED_CHARS}: unsubscribe some first`,
        });
      }
    }
    host.subs.add(ch.name);
    if (!await host.writePresence({ channels: [...host.subs] })) return;
    this.#reply(h, "ok", undefined);
    if (isDurable(policy)) host.delivery.sweep();
  }

  async #unsubscribe(h: RecordHeader, ch: Channel): Promise<void> {
    const host = this.#host;
    if (!host.ready()) return;
    host.subs.delete(ch.name);
    if (!await host.writePresence({ channels: [...host.subs] })) return;
    this.#reply(h, "ok", undefined);
  }

  async #touch(): Promise<void> {
    if (this.#host.ready()) await this.#host.writePresence({});
  }

  /** Answers record `h` (nothing once the connection is no longer ready). */
  #reply(
    h: RecordHeader,
    type: "ack" | "ok" | "err" | "res",
    body: Uint8Array | Record<string, unknown> | undefined,
  ): void {
    if (!this.#host.ready()) return;
    this.#host.send(
      { type, id: crypto.randomUUID(), ch: h.ch, re: h.id },
      body ?? EMPTY,
    );
  }
}
