/**
 * Delivery of an agent's durable queues on its connection, and of
 * non-durable pushes.
 *
 * The connection claims from the queues of the durable channels the agent
 * subscribed to (at most `maxInFlight` un-acked messages, highest priority
 * first, then oldest, across channels), pushes each as a `msg` record whose
 * id is the queue message id, and acks the queue message only when the
 * agent acks the record. No ack within `ackTimeoutMs` → nak (retried with
 * backoff; the DLQ after `maxAttempts`). A closed connection naks what it
 * still holds ({@linkcode QueueDelivery.stop}), so nothing is lost. An ack
 * for a message this connection has not pushed (it was pushed in an earlier
 * session) is kept and settles the message when this connection claims it.
 *
 * Nothing is claimed while the socket is congested (flow control, see
 * `sender.ts`). The agent's queue depth gauge is refreshed at most every
 * {@linkcode DEPTH_EVERY_MS}.
 *
 * @module
 */
import { serialPasses } from "./passes.ts";
import type { Logger } from "../../core/observe/logger.ts";
import {
  checkConsumerName,
  type Delivery,
  type DurableQueue,
} from "../../core/state/queue.ts";
import { backoffDelay } from "../../core/resilience/backoff.ts";
import { encodeHeader, type RecordHeader } from "../../sdk/protocol/record.ts";
import { backendChannel, signMessage } from "../../sdk/protocol/channels.ts";
import type { Outbox, OutboxMessage } from "../outbox.ts";
import { channelPolicy, isDurable } from "../policy.ts";
import {
  type RecordFields,
  type SharedRecord,
  sharedRecord,
} from "./sender.ts";
import type { GatewayConfig, GatewayMetrics } from "./types.ts";
import { deleteOldest } from "../../core/oldest.ts";

/** Queue leases outlive the ack timeout by this much, so our nak comes first. */
export const LEASE_SLACK_MS = 5_000;
/** Record ids remembered as pushed (answers "was it pushed now?"). */
export const PUSHED_MEMORY = 1024;
/** The queue depth gauge is refreshed at most this often per agent. */
export const DEPTH_EVERY_MS = 250;

/** What a {@linkcode QueueDelivery} needs from its connection. */
export interface DeliveryHost {
  /** Channel policies, `maxInFlight` and `ackTimeoutMs`. */
  config: Pick<GatewayConfig, "channels" | "maxInFlight" | "ackTimeoutMs">;
  /** The agent's durable queues. */
  outbox: Outbox;
  /** Counts delivery outcomes and sets the queue depth gauge. */
  metrics: Pick<GatewayMetrics, "delivery" | "queueDepth">;
  /** Where failed acks and naks are logged. */
  log: Pick<Logger, "warn">;
  /** The node's Ed25519 key, which signs messages on signed channels. */
  signingKey: CryptoKey;
  /**
   * The lease owner of claims: `{node id}/{connection session}`, at most
   * 256 characters (`MAX_CONSUMER_CHARS`; node ids are at most 64).
   */
  owner: string;
  /** The agent's subscribed backend channel names (read live). */
  subs: ReadonlySet<string>;
  /** The authenticated agent id. */
  agentId(): string;
  /** Whether the connection is authenticated and open. */
  ready(): boolean;
  /** Whether the socket's send buffer is over the limit. */
  congested(): boolean;
  /** The full header of a record the node sends. */
  header(fields: RecordFields): RecordHeader;
  /** Seals and sends a record. */
  send(header: RecordHeader, body: Uint8Array, signature?: Uint8Array): void;
  /** Sends an unsigned record built once for every recipient, on channel `ch` (else `header` + `send`). */
  sendShared?(ch: string, shared: SharedRecord): void;
  /** Runs `fn` after `ms` unless the connection closes first. */
  after(ms: number, fn: () => void): void;
  /** An unexpected error: close the connection. */
  fail(err: unknown): void;
}

/** The fields of a non-durable push. */
export interface EphemeralFields {
  id: string;
  priority: number;
  messageType: string;
  cid?: string;
}

/** The shared part of a push, per fields object (one per broadcast). */
const sharedPushes = new WeakMap<EphemeralFields, SharedRecord>();

/** Ids of recent broadcasts' non-durable pushes remembered in {@linkcode broadcastIds}. */
export const BROADCAST_MEMORY = 4096;

/**
 * The ids of the last {@linkcode BROADCAST_MEMORY} non-durable broadcasts
 * pushed as shared records, once per broadcast for every connection (not
 * once per connection: remembering each id on each of 100 connections was
 * ~9 % of the node's CPU per delivery). An agent's ack of one of them is
 * not kept as an early ack; `pushed()` does not answer for them (nothing
 * asks it about a non-durable message).
 */
const broadcastIds = new Set<string>();
const broadcastRing: string[] = [];
let broadcastAt = 0;

function rememberBroadcast(id: string): void {
  if (broadcastIds.has(id)) return;
  if (broadcastRing.length < BROADCAST_MEMORY) broadcastRing.push(id);
  else {
    broadcastIds.delete(broadcastRing[broadcastAt]);
    broadcastRing[broadcastAt] = id;
    broadcastAt = (broadcastAt + 1) % BROADCAST_MEMORY;
  }
  broadcastIds.add(id);
}

/**
 * The recipient-independent part of a non-durable push of `body` with
 * `fields` (made once per broadcast, see
 * {@linkcode QueueDelivery.pushShared}); its id is remembered as a
 * broadcast's.
 */
export function sharedPush(
  fields: EphemeralFields,
  body: Uint8Array,
): SharedRecord {
  rememberBroadcast(fields.id);
  return sharedRecord({
    type: "msg",
    id: fields.id,
    prio: fields.priority,
    mt: fields.messageType,
    ...(fields.cid ? { cid: fields.cid } : {}),
    ack: 0, // not stored: nothing to acknowledge (docs/protocol.md)
  }, body);
}

interface Claimed {
  name: string;
  queue: DurableQueue<OutboxMessage>;
  delivery: Delivery<OutboxMessage>;
}

interface InFlight extends Claimed {
  timer: ReturnType<typeof setTimeout>;
}

/**
 * One connection's deliveries: what it claimed and pushed and waits to have
 * acked.
 *
 * @example Usage
 * ```ts
 * import { QueueDelivery } from "./delivery.ts";
 * import { Outbox } from "../outbox.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const outbox = new Outbox(kv);
 * const id = await outbox.put("agent-1", "policies", new TextEncoder().encode("{}"));
 * const sent: string[] = [];
 * const { privateKey } = await crypto.subtle.generateKey("Ed25519", false, ["sign"]) as CryptoKeyPair;
 * const delivery = new QueueDelivery({
 *   config: { channels: { policies: { durable: true } }, maxInFlight: 8, ackTimeoutMs: 30_000 },
 *   outbox,
 *   metrics: { delivery: () => {}, queueDepth: () => {} },
 *   log: console,
 *   signingKey: privateKey,
 *   owner: "n1/c1",
 *   subs: new Set(["policies"]),
 *   agentId: () => "agent-1",
 *   ready: () => true,
 *   congested: () => false,
 *   header: (f) => ({ sid: "s1", from: "node:n1", to: "agent-1", ch: "", ...f }),
 *   send: (h) => void sent.push(h.id),
 *   after: () => {},
 *   fail: (err) => { throw err; },
 * });
 * await delivery.pump();
 * assert.deepEqual(sent, [id]);
 * assert.equal(delivery.pushed(id), true);
 * await delivery.stop(1000); // gives the un-acked message back to its queue
 * kv.close();
 * ```
 */
export class QueueDelivery {
  readonly #host: DeliveryHost;
  readonly #inflight = new Map<string, InFlight>();
  readonly #pushed = new Set<string>();
  /** #pushed's ids in the order they came, a ring of PUSHED_MEMORY (the oldest goes first). */
  readonly #pushedRing: string[] = [];
  readonly #channels = new Map<string, string>();
  #pushedAt = 0;
  /** Acks for messages not (yet) pushed on this connection (acks may come in a later session). */
  readonly #earlyAcks = new Set<string>();
  readonly #passes: { request(): Promise<void>; settled(): Promise<void> };
  #sweepNext = true;
  #depthTimer?: ReturnType<typeof setTimeout>;

  constructor(host: DeliveryHost) {
    // Refused here, once, rather than by every claim of every pass.
    checkConsumerName(host.owner, "deliver an agent's queues");
    this.#host = host;
    this.#passes = serialPasses(() => this.#pass(), {
      more: () => host.ready(),
      fail: (err) => host.fail(err),
    });
  }

  /** Whether queue message `id` was pushed on this connection (recently). */
  pushed(id: string): boolean {
    return this.#pushed.has(id);
  }

  /**
   * Pushes what the agent's subscribed durable queues hold, up to
   * `maxInFlight` un-acked. Resolves after a full pass that started after
   * this call (so a caller that just enqueued knows whether it went out).
   */
  pump(): Promise<void> {
    return this.#passes.request();
  }

  /**
   * Pumps with a sweep of the queues first (expired leases and due delayed
   * messages become ready): on the poll interval, after a subscription to a
   * durable channel and once a nak's delay is over.
   */
  sweep(): void {
    this.#sweepNext = true;
    this.pump();
  }

  async #pass(): Promise<void> {
    const host = this.#host;
    if (!host.ready()) return;
    const cfg = host.config;
    const names = [...host.subs].filter((n) =>
      isDurable(channelPolicy(cfg.channels, n))
    );
    const free = cfg.maxInFlight - this.#inflight.size;
    if (names.length === 0 || free <= 0 || host.congested()) return;
    const sweep = this.#sweepNext;
    this.#sweepNext = false;
    const queues = names.map((name) => ({
      name,
      queue: host.outbox.queue(host.agentId(), name),
    }));
    if (sweep) await Promise.all(queues.map((q) => q.queue.sweep()));
    // The `free` messages that come first across the agent's channels
    // (highest priority, then oldest), read without claiming: each queue
    // then claims exactly its share, from the same head, so at most
    // `maxInFlight` are in flight whatever the number of channels. One
    // channel needs no look: its claim takes its head.
    const share = new Map<(typeof queues)[number], number>();
    const rank = new Map<string, number>();
    if (queues.length === 1) share.set(queues[0], free);
    else {
      const heads = (await Promise.all(
        queues.map(async (q) =>
          (await q.queue.peek(free)).map((r) => ({ ...r, q }))
        ),
      )).flat().sort((a, b) =>
        b.priority - a.priority ||
        (a.readySince < b.readySince ? -1 : a.readySince > b.readySince ? 1 : 0)
      ).slice(0, free);
      heads.forEach((h, i) => {
        share.set(h.q, (share.get(h.q) ?? 0) + 1);
        rank.set(`${h.q.name}\0${h.id}`, i);
      });
    }
    const claimed: Claimed[] = (await Promise.all(
      [...share].map(async ([q, n]) =>
        (await q.queue.claim(n, cfg.ackTimeoutMs + LEASE_SLACK_MS, host.owner))
          .map((delivery) => ({ ...q, delivery }))
      ),
    )).flat();
    // In that order (one that came first since the look: by its priority).
    const rankOf = (c: Claimed) =>
      rank.get(`${c.name}\0${c.delivery.id}`) ?? free;
    claimed.sort((a, b) =>
      b.delivery.message.priority - a.delivery.message.priority ||
      rankOf(a) - rankOf(b)
    );
    for (const c of claimed) await this.#push(c);
    if (sweep || claimed.length) this.refreshDepth();
  }

  async #push(c: Claimed): Promise<void> {
    const { delivery: d, queue, name } = c;
    const host = this.#host;
    const m = d.payload;
    if (!host.ready() || !host.subs.has(name)) {
      return await this.#giveBack(c, 0, "not delivered: connection closed");
    }
    if (this.#earlyAcks.delete(d.id)) {
      // Processed in an earlier session; its ack arrived before this claim.
      await d.ack();
      await host.outbox.discard(queue.name, d.id, m);
      host.metrics.delivery("acked");
      return;
    }
    if (m.expiresAt <= Date.now()) {
      await d.term("expired before delivery (ttl)");
      await host.outbox.discard(queue.name, d.id, m);
      host.metrics.delivery("expired");
      return;
    }
    const body = await host.outbox.body(queue.name, d.id, m);
    if (!body) {
      await d.term("body chunks missing");
      host.metrics.delivery("lost_body");
      return;
    }
    const policy = channelPolicy(host.config.channels, name);
    const header = host.header({
      type: "msg",
      id: d.id,
      ch: backendChannel(host.agentId(), name),
      prio: d.message.priority,
      mt: m.mt,
      att: d.attempts,
      ...(m.cid ? { cid: m.cid } : {}),
    });
    const signature = policy?.signed
      ? await signMessage(host.signingKey, encodeHeader(header), body)
      : undefined;
    if (!host.ready()) {
      return await this.#giveBack(c, 0, "not delivered: connection closed");
    }
    host.send(header, body, signature);
    this.#rememberPushed(d.id);
    host.metrics.delivery("pushed");
    const timer = setTimeout(
      () => this.#ackTimeout(d.id),
      host.config.ackTimeoutMs,
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
    fields: EphemeralFields,
  ): Promise<boolean> {
    const host = this.#host;
    if (!host.ready() || !host.subs.has(name)) return false;
    const policy = channelPolicy(host.config.channels, name);
    if (!policy?.signed && host.sendShared) {
      // A broadcast hands every connection the same fields and body: the
      // record's recipient-independent part is made once for all of them.
      let shared = sharedPushes.get(fields);
      if (shared?.body !== body) {
        shared = sharedPush(fields, body);
        sharedPushes.set(fields, shared);
      }
      host.sendShared(this.#channel(name), shared);
      return true;
    }
    const header = host.header({
      type: "msg",
      id: fields.id,
      ch: this.#channel(name),
      prio: fields.priority,
      mt: fields.messageType,
    });
    if (fields.cid) header.cid = fields.cid;
    header.ack = 0; // not stored: nothing to acknowledge (docs/protocol.md)
    const signature = policy?.signed
      ? await signMessage(host.signingKey, encodeHeader(header), body)
      : undefined;
    if (!host.ready()) return false;
    host.send(header, body, signature);
    this.#rememberPushed(fields.id);
    return true;
  }

  /**
   * {@linkcode QueueDelivery.pushEphemeral} of a record made by
   * {@linkcode sharedPush} on a channel that is not signed, without a
   * promise: what a broadcast does for each of its connections. False when
   * the connection is not ready, not subscribed, or cannot send shared
   * records.
   */
  pushShared(name: string, shared: SharedRecord): boolean {
    const host = this.#host;
    if (!host.ready() || !host.subs.has(name) || !host.sendShared) {
      return false;
    }
    host.sendShared(this.#channel(name), shared);
    return true;
  }

  /**
   * `backend.{agent}.{name}`, checked once per name (a broadcast pushes to
   * the same few channels on every connection).
   */
  #channel(name: string): string {
    let ch = this.#channels.get(name);
    if (ch === undefined) {
      ch = backendChannel(this.#host.agentId(), name);
      if (this.#channels.size >= 256) this.#channels.clear();
      this.#channels.set(name, ch);
    }
    return ch;
  }

  /** #remember for #pushed (every push but a shared broadcast record): no iterator per call. */
  #rememberPushed(id: string): void {
    if (this.#pushed.has(id)) return;
    const ring = this.#pushedRing;
    if (ring.length < PUSHED_MEMORY) ring.push(id);
    else {
      this.#pushed.delete(ring[this.#pushedAt]);
      ring[this.#pushedAt] = id;
      this.#pushedAt = (this.#pushedAt + 1) % PUSHED_MEMORY;
    }
    this.#pushed.add(id);
  }

  #remember(id: string, set: Set<string>): void {
    set.add(id);
    if (set.size > PUSHED_MEMORY) deleteOldest(set);
  }

  /** The agent acked record `re`: ack its queue message (now, or once claimed). */
  ack(re: string): void {
    const host = this.#host;
    const f = this.#inflight.get(re);
    if (!f) {
      // A duplicate, an ephemeral message, or one from an earlier session
      // that this connection has not claimed yet: ack it when it does.
      if (!this.#pushed.has(re) && !broadcastIds.has(re)) {
        this.#remember(re, this.#earlyAcks);
      }
      return;
    }
    this.#inflight.delete(re);
    clearTimeout(f.timer);
    // One handler for the ack and the clean-up after it: the node may close
    // its KV between the two (an ack racing shutdown), which must be logged,
    // not left as an unhandled rejection.
    f.delivery.ack().then(async () => {
      host.metrics.delivery("acked");
      await host.outbox.discard(f.queue.name, re, f.delivery.payload);
      this.refreshDepth();
      this.pump();
    }).catch((err) =>
      host.log.warn("queue ack failed", {
        agent: host.agentId(),
        id: re,
        error: err,
      })
    );
  }

  #ackTimeout(id: string): void {
    const host = this.#host;
    const f = this.#inflight.get(id);
    if (!f) return;
    this.#inflight.delete(id);
    host.metrics.delivery("ack_timeout");
    // The queue's default backoff (1 s doubling to 60 s).
    const delay = backoffDelay(f.delivery.attempts);
    this.#giveBack(
      f,
      delay,
      `no ack within ${host.config.ackTimeoutMs} ms`,
    ).then(() => {
      if (!host.ready()) return;
      host.after(delay + 20, () => this.sweep());
    });
  }

  /** Returns a claimed message to its queue (dead-lettered after the last attempt). */
  async #giveBack(
    c: Claimed,
    delayMs: number,
    why: string,
  ): Promise<void> {
    const host = this.#host;
    const d = c.delivery;
    try {
      await d.nak(delayMs, why);
      if (d.attempts >= d.message.maxAttempts) {
        host.metrics.delivery("dead");
        await host.outbox.discard(c.queue.name, d.id, d.payload);
      }
    } catch (err) {
      host.log.warn("queue nak failed", {
        agent: host.agentId(),
        id: d.id,
        error: err,
      });
    }
  }

  /** Updates this agent's queue depth gauge soon (at most every DEPTH_EVERY_MS). */
  refreshDepth(): void {
    const host = this.#host;
    if (this.#depthTimer !== undefined || !host.ready()) return;
    this.#depthTimer = setTimeout(() => {
      this.#depthTimer = undefined;
      if (!host.ready()) return;
      host.outbox.depth(host.agentId()).then(
        (n) => {
          if (host.ready()) host.metrics.queueDepth(host.agentId(), n);
        },
        (err) =>
          host.log.warn("queue depth not read", {
            agent: host.agentId(),
            error: err,
          }),
      );
    }, DEPTH_EVERY_MS);
  }

  /**
   * The connection closed with `code`: stops the timers at once, then (after
   * a pass still claiming has finished) gives every un-acked message back to
   * its queue. Never rejects.
   */
  async stop(code: number): Promise<void> {
    clearTimeout(this.#depthTimer);
    const held = [...this.#inflight.values()];
    this.#inflight.clear();
    for (const f of held) clearTimeout(f.timer);
    // Let a pass that is still claiming finish, so what it claimed goes back too.
    await this.#passes.settled();
    await Promise.all(
      held.map((f) => this.#giveBack(f, 0, `connection closed (${code})`)),
    );
  }
}
