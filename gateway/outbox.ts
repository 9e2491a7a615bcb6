/**
 * Backend → agent messages at rest: one durable queue per agent and backend
 * channel name, so messages on a channel the agent has not subscribed to
 * simply wait (a claim is a delivery attempt, and claiming what cannot be
 * delivered would burn attempts). The queue name is derived from a hash of
 * the agent id and channel name (queue names are short and plain).
 *
 * A body larger than fits in one KV value next to the message record is
 * stored in chunks (`["gateway", "body", queue, id, i]`) that the queue
 * message references; they go when the message is acked or dead-lettered
 * (and expire on their own past the message's TTL as a backstop).
 *
 * No commit here outgrows Deno KV's limits, however large the body or the
 * backlog: chunks are written, and keys deleted (a discard, a purge), in
 * as many commits as fit (`CommitSize`). Only the enqueue of the message
 * is atomic: its chunks are all written before it (and deleted if any
 * write fails), so a reader finds a whole body or no message; a discard or
 * a purge cut short leaves keys that the next one (or, for chunks, their
 * expiry) removes.
 *
 * Each message carries its deadline (`expiresAt`): the consumer checks it
 * at delivery and dead-letters expired ones.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { type Clock, systemClock } from "../core/clock.ts";
import { DurableQueue } from "../core/state/queue.ts";
import {
  gatewayBodyKey,
  gatewayOutboxKey,
  queueKeys,
} from "../core/state/keys.ts";
import { CommitSize } from "../core/state/commit_size.ts";

/** The payload of an outbox queue message. */
export interface OutboxMessage {
  /** Backend channel name (after `backend.{id}.`). */
  ch: string;
  /** Message type (`mt` header), e.g. `notification`, `command`. */
  mt: string;
  /** Correlation id, when the sender gave one. */
  cid?: string;
  /** Wall-clock ms after which the message is dead-lettered instead of delivered. */
  expiresAt: number;
  /** Body length in bytes. */
  bytes: number;
  /** The body, when it fits inline. */
  body?: Uint8Array;
  /** Number of stored chunks, when it does not. */
  chunks?: number;
  /** Who sent it (principal or plugin), for audit. */
  sender: string;
}

/** Options for {@linkcode Outbox.put}. */
export interface PutOptions {
  /** Message id (also the record id the agent sees). @default {a random UUID} */
  id?: string;
  /** 0-9, 9 most urgent. @default {4} */
  priority?: number;
  /** @default {"notification"} */
  messageType?: string;
  /** @default {the outbox's ttlMs} */
  ttlMs?: number;
  correlationId?: string;
  /** @default {"unknown"} */
  sender?: string;
}

/** Options for {@linkcode Outbox}. */
export interface OutboxOptions {
  /** Deliveries before the DLQ. @default {3} */
  maxAttempts?: number;
  /** Default message TTL. @default {3600000} */
  ttlMs?: number;
  clock?: Clock;
}

/** Bodies up to this size are stored inside the queue message. */
export const INLINE_BODY_BYTES = 32 * 1024;
/** Chunk size of larger bodies (below KV's 64 KiB value limit). */
export const CHUNK_BYTES = 60 * 1024;
/** Keys listed per round of a deletion (then deleted in commits that fit). */
const DELETE_LIST = 500;
/** Orphaned chunks outlive their message's TTL by this much at most. */
const CHUNK_SLACK_MS = 3_600_000;

/**
 * The queue name of `agentId`'s channel `channel`: `gw.` + 40 hex digits of
 * SHA-256(agentId ‖ 0x00 ‖ channel).
 *
 * @example Usage
 * ```ts
 * import { outboxQueueName } from "./outbox.ts";
 * import assert from "node:assert/strict";
 * assert.match(outboxQueueName("agent-1", "policies"), /^gw\.[0-9a-f]{40}$/);
 * ```
 */
export function outboxQueueName(agentId: string, channel: string): string {
  const h = createHash("sha256").update(`${agentId}\0${channel}`).digest(
    "hex",
  );
  return `gw.${h.slice(0, 40)}`;
}

/**
 * Every agent's durable backend → agent messages.
 *
 * @example Usage
 * ```ts
 * import { Outbox } from "./outbox.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const outbox = new Outbox(kv);
 * await outbox.put("agent-1", "policies", new TextEncoder().encode('{"v":1}'));
 * const [d] = await outbox.queue("agent-1", "policies").claim(1, 1000);
 * const body = await outbox.body(outbox.queue("agent-1", "policies").name, d.id, d.payload);
 * assert.equal(new TextDecoder().decode(body!), '{"v":1}');
 * kv.close();
 * ```
 */
export class Outbox {
  readonly #kv: Deno.Kv;
  readonly #clock: Clock;
  readonly #maxAttempts: number;
  readonly #ttlMs: number;
  readonly #queues = new Map<string, DurableQueue<OutboxMessage>>();

  constructor(kv: Deno.Kv, options: OutboxOptions = {}) {
    this.#kv = kv;
    this.#clock = options.clock ?? systemClock;
    this.#maxAttempts = options.maxAttempts ?? 3;
    this.#ttlMs = options.ttlMs ?? 3_600_000;
  }

  /** The durable queue of `agentId`'s channel `channel`. */
  queue(agentId: string, channel: string): DurableQueue<OutboxMessage> {
    const name = outboxQueueName(agentId, channel);
    let q = this.#queues.get(name);
    if (!q) {
      q = new DurableQueue<OutboxMessage>(this.#kv, name, {
        clock: this.#clock,
        // Acked messages are not looked up again.
        doneRetentionMs: 60_000,
      });
      this.#queues.set(name, q);
    }
    return q;
  }

  /** Persists one message for `agentId` on `channel`; resolves with its id once stored. */
  async put(
    agentId: string,
    channel: string,
    body: Uint8Array,
    options: PutOptions = {},
  ): Promise<string> {
    const q = this.queue(agentId, channel);
    const id = options.id ?? crypto.randomUUID();
    const ttlMs = options.ttlMs ?? this.#ttlMs;
    const msg: OutboxMessage = {
      ch: channel,
      mt: options.messageType ?? "notification",
      expiresAt: this.#clock.now() + ttlMs,
      bytes: body.length,
      sender: options.sender ?? "unknown",
      ...(options.correlationId ? { cid: options.correlationId } : {}),
    };
    const chunks = body.length > INLINE_BODY_BYTES
      ? Math.ceil(body.length / CHUNK_BYTES)
      : 0;
    if (chunks === 0) msg.body = body;
    else {
      msg.chunks = chunks;
      await this.#writeChunks(q.name, id, body, chunks, ttlMs);
    }
    await this.#kv.set(gatewayOutboxKey(agentId, channel), { queue: q.name });
    try {
      await q.enqueue(msg, {
        id,
        priority: options.priority ?? 4,
        maxAttempts: this.#maxAttempts,
      });
    } catch (err) {
      if (chunks) await this.#deleteChunks(q.name, id).catch(() => {});
      throw err;
    }
    return id;
  }

  /**
   * Writes `body`'s chunks, as many a commit as fit KV's limits (the keys
   * end in the message id, which a sender may choose); if one commit
   * fails, those written go again and the error is thrown.
   */
  async #writeChunks(
    queue: string,
    id: string,
    body: Uint8Array,
    chunks: number,
    ttlMs: number,
  ): Promise<void> {
    const expireIn = ttlMs + CHUNK_SLACK_MS;
    const chunk = (k: number) =>
      body.subarray(k * CHUNK_BYTES, (k + 1) * CHUNK_BYTES);
    try {
      for (let i = 0; i < chunks;) {
        const size = new CommitSize();
        let end = i;
        while (end < chunks) {
          size.set(gatewayBodyKey(queue, id, end), chunk(end));
          if (end > i && !size.fits()) break;
          end++;
        }
        const op = this.#kv.atomic();
        for (let k = i; k < end; k++) {
          op.set(gatewayBodyKey(queue, id, k), chunk(k).slice(), {
            expireIn,
          });
        }
        await op.commit();
        i = end;
      }
    } catch (err) {
      await this.#deleteChunks(queue, id).catch(() => {});
      throw err;
    }
  }

  /** The body of message `id` of queue `queue`, or null when its chunks are gone. */
  async body(
    queue: string,
    id: string,
    msg: OutboxMessage,
  ): Promise<Uint8Array | null> {
    if (msg.body) return msg.body;
    const n = msg.chunks ?? 0;
    const out = new Uint8Array(msg.bytes);
    let at = 0;
    for (let i = 0; i < n; i += 10) {
      const keys = Array.from(
        { length: Math.min(10, n - i) },
        (_, k) => gatewayBodyKey(queue, id, i + k),
      );
      for (const e of await this.#kv.getMany<Uint8Array[]>(keys)) {
        if (!(e.value instanceof Uint8Array)) return null;
        if (at + e.value.length > out.length) return null;
        out.set(e.value, at);
        at += e.value.length;
      }
    }
    return at === msg.bytes ? out : null;
  }

  /** Drops a settled (acked or dead-lettered) message's stored chunks. */
  async discard(queue: string, id: string, msg: OutboxMessage): Promise<void> {
    if (msg.chunks) await this.#deleteChunks(queue, id);
  }

  async #deleteChunks(queue: string, id: string): Promise<void> {
    await this.#deletePrefix(gatewayBodyKey(queue, id));
  }

  /**
   * Deletes every key under `prefix`, in commits that fit KV's limits:
   * keys may end in a sender's message id of up to ~2 KiB, and 500 such
   * deletes are over KV's 819,200 bytes a commit.
   */
  async #deletePrefix(prefix: Deno.KvKey): Promise<void> {
    for (;;) {
      const keys: Deno.KvKey[] = [];
      for await (
        const e of this.#kv.list({ prefix }, { limit: DELETE_LIST })
      ) keys.push(e.key);
      if (keys.length === 0) return;
      for (let i = 0; i < keys.length;) {
        const size = new CommitSize();
        let end = i;
        while (end < keys.length) {
          size.delete(keys[end]);
          if (end > i && !size.fits()) break;
          end++;
        }
        const op = this.#kv.atomic();
        for (let k = i; k < end; k++) op.delete(keys[k]);
        await op.commit();
        i = end;
      }
    }
  }

  /** The channel names `agentId` has (or had) queued messages on. */
  async channels(agentId: string): Promise<string[]> {
    const out: string[] = [];
    for await (
      const e of this.#kv.list({ prefix: gatewayOutboxKey(agentId) })
    ) out.push(e.key[e.key.length - 1] as string);
    return out;
  }

  /** Messages waiting for `agentId` (ready, delayed or un-acked), all channels. */
  async depth(agentId: string): Promise<number> {
    let n = 0;
    for (const ch of await this.channels(agentId)) {
      const s = await this.queue(agentId, ch).stats();
      n += s.ready + s.delayed + s.inflight;
    }
    return n;
  }

  /**
   * Deletes every queued message of `agentId` (an agent being removed):
   * each channel's queue keys and chunks, then the channel index, in
   * commits that fit KV's limits (not one atomic step: a purge cut short
   * leaves the rest for the next).
   */
  async purge(agentId: string): Promise<void> {
    for (const ch of await this.channels(agentId)) {
      const name = outboxQueueName(agentId, ch);
      await this.#deletePrefix(queueKeys(name).all);
      await this.#deletePrefix(gatewayBodyKey(name));
      this.#queues.delete(name);
    }
    await this.#deletePrefix(gatewayOutboxKey(agentId));
  }
}
