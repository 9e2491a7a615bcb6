/**
 * A {@linkcode Transport} on Redis Streams (ioredis).
 *
 * - One stream per topic (`plexus:{topic}`), one consumer group per
 *   subscription group (`XGROUP CREATE … MKSTREAM`); a subscription without a
 *   group gets its own group, destroyed on close.
 * - `XREADGROUP … BLOCK` on a connection of its own per subscription, asking
 *   for at most the free `maxInFlight` slots; `XACK` after the handler. That
 *   connection is `resp.ts`, not ioredis: one blocking command at a time
 *   needs none of a client's queues, and its replies are decoded from one
 *   reused buffer (Sentinel, and TLS options `Deno.connectTls` cannot
 *   honour, keep ioredis: `respTlsOf`). A read unanswered
 *   10 s past its `BLOCK` time drops the connection and reads again.
 * - Attempts are Redis's delivery count. `nak(delay)` keeps the entry pending
 *   on this consumer (touched with `XCLAIM … JUSTID` so nobody else takes it)
 *   and `XCLAIM`s it back after the delay, which counts the attempt. Errors
 *   are kept in the hash `plexus:errors:{topic}` until ack or dead letter.
 * - `XAUTOCLAIM` every `claimIntervalMs` takes over entries idle longer than
 *   `ackWaitMs` (a dead or stuck consumer's); `inProgress` resets the idle time.
 * - After `maxAttempts` (or `term`) the entry is copied to `plexus:dlq:{topic}`
 *   with `dlq.*` fields (reason, attempts, error history) and acked, in one
 *   MULTI.
 * - `XADD … MAXLEN ~ maxLen`; publishing uses ioredis auto-pipelining, so
 *   publishes issued in one tick go out as one pipeline.
 * - ioredis reconnects (retryStrategy); commands wait through a restart, and
 *   a group lost with the data (NOGROUP) is re-created from `0`.
 * - Consumer names are stable: `consumerName` (the plugin passes the node
 *   id), `~n` added for a second live subscription of the same topic and
 *   group. A restart reuses the name, so its pending entries stay under it
 *   and `XINFO CONSUMERS` does not grow; `close` deletes the consumer
 *   (`XGROUP DELCONSUMER`, atomically only when it has nothing pending).
 * - An entry that cannot be an envelope (a field that is not JSON or not
 *   UTF-8, a member of the wrong type, values over `maxMessageBytes`) is
 *   dead-lettered at once as `bad_message: …`, its bytes kept as they came.
 * - A handler that throws and a dead-lettered message are logged and counted
 *   (`../_telemetry.ts`).
 * - Per-key order: a message published with a key goes to partition stream
 *   `{topic}#{n}` (n = FNV-1a(key) mod `partitions`). Within a group each
 *   partition has one owner at a time (leases, `partitions.ts`), which runs
 *   a key's messages one at a time in stream order, retrying a failed one in
 *   place before the key's next. Messages without a key keep the topic
 *   stream and no order.
 *
 * @module
 */
import { Redis } from "ioredis";
import type { Envelope } from "../../core/envelope.ts";
import type { Logger } from "../../core/observe/logger.ts";
import type { MetricsRegistry } from "../../core/observe/metrics.ts";
import { transportTelemetry } from "../_telemetry.ts";
import {
  assertFits,
  type AttemptError,
  backoffDelay,
  type DeadLetter,
  type Delivery,
  type DeliveryHandler,
  type PublishOptions,
  type SubscribeOptions,
  type Subscription,
  type Transport,
  type TransportCaps,
  TransportError,
} from "../../core/transport.ts";
import { validateTopic } from "../../core/router.ts";
import { PartitionOwner } from "./partitions.ts";
import { RespConnection } from "./resp.ts";
import {
  deadLetterFields,
  decodeDeadLetter,
  decodeFields,
  dlqKey,
  encodeFields,
  entryTooLarge,
  fieldMap,
  mayHideBadBytes,
  notUtf8,
  partitionKey,
  partitionOf,
  streamKey,
} from "./wire.ts";

/** Options of {@linkcode connectRedisStreams}. */
export interface RedisStreamsOptions {
  /** @default {Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379"} */
  url?: string;
  /** Key prefix of streams, DLQs and error hashes. @default {"plexus:"} */
  prefix?: string;
  /** Approximate MAXLEN of each stream (and DLQ); 0 = no trimming. @default {100000} */
  maxLen?: number;
  /** @default {1048576} */
  maxMessageBytes?: number;
  /** Idle time after which another consumer takes a pending entry over. @default {30000} */
  ackWaitMs?: number;
  /** How often to look for such entries. @default {1000} */
  claimIntervalMs?: number;
  /** XREADGROUP BLOCK time. @default {1000} */
  blockMs?: number;
  /** Base of the envelope's backoff after a handler failure. @default {1000} */
  retryBaseMs?: number;
  /** Cap of that backoff. @default {60000} */
  retryMaxMs?: number;
  /** Where a new group starts: new messages only, or the whole stream. @default {"new"} */
  startFrom?: "new" | "all";
  /**
   * This node's consumer name in every group, kept across restarts (the
   * plugin passes the node id); two live transports must not share it.
   * @default {a random name}
   */
  consumerName?: string;
  /** Longest wait for the first connection. @default {5000} */
  connectTimeoutMs?: number;
  /**
   * Partition streams per topic for keyed messages; every publisher and
   * subscriber of a topic must agree on it. @default {8}
   */
  partitions?: number;
  /** Warnings for failed handlers and dead letters. */
  log?: Logger;
  /** Counts failed handlers and dead letters. */
  metrics?: MetricsRegistry;
}

/** The Redis Streams transport, with its client for diagnostics. */
export interface RedisStreamsTransport extends Transport {
  readonly redis: Redis;
}

type Entry = [id: string, fields: string[] | null];

/** A stream the subscription reads: the topic's, or one of its partitions. */
interface Source {
  stream: string;
  partition?: number;
}

/** Topics as the router takes them, minus `#` (partition streams use it). */
function checkTopic(topic: string): void {
  try {
    validateTopic(topic);
  } catch (err) {
    throw new TransportError("invalid_argument", (err as Error).message);
  }
  if (topic.includes("#")) {
    throw new TransportError(
      "invalid_argument",
      `Cannot use topic '${topic}': '#' is reserved for partition streams`,
    );
  }
}

/**
 * Deletes a group's consumer only when it has nothing pending (a restart
 * under the same name takes those over); -1 when it was kept.
 */
const DELETE_IDLE_CONSUMER = `
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return -1
end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])`;

/**
 * How long past its `BLOCK` time a read may go unanswered before its
 * connection is taken for dead and opened again.
 */
const READ_GRACE_MS = 10_000;

/** A subscription's own connection, for its `XREADGROUP … BLOCK`. */
interface Reader {
  /** With `timeoutMs`, a reply not in by then fails (a half-open connection). */
  call(args: (string | number)[], timeoutMs?: number): Promise<unknown>;
  disconnect(): void;
}

/**
 * How a subscription's reading connection does ioredis's `tls` option:
 * `null` without TLS, `{ caCerts }` where `Deno.connectTls` can do the same
 * (TLS on, or with `ca` alone), `undefined` where it cannot (a client
 * certificate, `rejectUnauthorized: false`, another `servername`…): the
 * reader is then an ioredis connection too.
 *
 * @example Usage
 * ```ts
 * import { respTlsOf } from "./transport.ts";
 * respTlsOf(undefined); // null
 * respTlsOf(true); // {}
 * respTlsOf({ rejectUnauthorized: false }); // undefined
 * ```
 */
export function respTlsOf(
  tls: unknown,
  host?: string,
): { caCerts?: string[] } | null | undefined {
  if (!tls) return null;
  if (tls === true) return {};
  if (typeof tls !== "object") return undefined;
  const t = tls as Record<string, unknown>;
  for (const k in t) {
    if (t[k] === undefined) continue;
    if (k === "servername" && t[k] === host) continue;
    if (k !== "ca") return undefined;
  }
  if (t.ca === undefined) return {};
  const cas = Array.isArray(t.ca) ? t.ca : [t.ca];
  const caCerts: string[] = [];
  for (const ca of cas) {
    if (typeof ca === "string") caCerts.push(ca);
    else if (ca instanceof Uint8Array) {
      caCerts.push(new TextDecoder().decode(ca));
    } else return undefined;
  }
  return { caCerts };
}

/**
 * Our RESP connection (`resp.ts`, cheaper per entry read than ioredis), or
 * an ioredis duplicate where that one cannot go (Sentinel, TLS options
 * `Deno.connectTls` has no equivalent for).
 */
function readerFor(redis: Redis): Reader {
  const o = redis.options;
  const tls = respTlsOf(o.tls, o.host);
  if (tls === undefined || o.sentinels?.length) {
    const d = redis.duplicate();
    d.on("error", () => {});
    return {
      call: ([cmd, ...args]) => d.call(String(cmd), ...args),
      disconnect: () => d.disconnect(),
    };
  }
  const c = new RespConnection({
    host: o.host,
    port: o.port,
    path: o.path,
    username: o.username || undefined,
    password: o.password || undefined,
    db: o.db,
    connectTimeoutMs: o.connectTimeout,
    tls: tls ?? undefined,
  });
  return {
    call: (args, timeoutMs) => c.command(args, timeoutMs),
    disconnect: () => c.close(),
  };
}

function isNoGroup(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith("NOGROUP");
}

/**
 * Connects and returns the transport.
 *
 * @example Usage
 * ```ts ignore
 * import { connectRedisStreams } from "./transport.ts";
 * const t = await connectRedisStreams({ url: "redis://127.0.0.1:6379" });
 * await t.subscribe("orders", async (d) => await d.ack(), { group: "billing" });
 * await t.close();
 * ```
 */
export async function connectRedisStreams(
  options: RedisStreamsOptions = {},
): Promise<RedisStreamsTransport> {
  const o = {
    url: Deno.env.get("REDIS_URL") ?? "redis://127.0.0.1:6379",
    prefix: "plexus:",
    maxLen: 100_000,
    maxMessageBytes: 1024 * 1024,
    ackWaitMs: 30_000,
    claimIntervalMs: 1000,
    blockMs: 1000,
    retryBaseMs: 1000,
    retryMaxMs: 60_000,
    startFrom: "new" as const,
    consumerName: `c-${crypto.randomUUID().slice(0, 8)}`,
    connectTimeoutMs: 5000,
    partitions: 8,
    ...options,
  };
  const clientOptions = {
    enableAutoPipelining: true,
    maxRetriesPerRequest: null,
    retryStrategy: (times: number) => Math.min(50 * times, 1000),
  };
  const redis = new Redis(o.url, clientOptions);
  redis.on("error", () => {}); // reconnects on its own; commands wait
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      redis.ping(),
      new Promise((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new TransportError(
                "unavailable",
                `Cannot connect to Redis at ${o.url} within ${o.connectTimeoutMs} ms`,
              ),
            ),
          o.connectTimeoutMs,
        );
      }),
    ]);
  } catch (err) {
    redis.disconnect();
    throw err;
  } finally {
    clearTimeout(timer);
  }

  const caps: TransportCaps = {
    durable: true,
    ordering: "per-key",
    groups: true,
    maxMessageBytes: o.maxMessageBytes,
  };
  const trim = (): (string | number)[] =>
    o.maxLen > 0 ? ["MAXLEN", "~", o.maxLen] : [];
  const subs = new Set<Subscription>();
  let closed = false;
  const report = transportTelemetry("redis-streams", o);
  /** Name suffixes in use per topic and group (`~n` for a second one). */
  const liveNames = new Map<string, Set<number>>();

  async function subscribe(
    topic: string,
    handler: DeliveryHandler,
    opts: SubscribeOptions = {},
  ): Promise<Subscription> {
    if (closed) throw new TransportError("closed", "transport is closed");
    checkTopic(topic);
    const main: Source = { stream: streamKey(o.prefix, topic) };
    const parts: Source[] = Array.from({ length: o.partitions }, (_, n) => ({
      stream: partitionKey(o.prefix, topic, n),
      partition: n,
    }));
    const byStream = new Map([main, ...parts].map((s) => [s.stream, s]));
    const errorsKey = `${o.prefix}errors:${topic}`;
    const dlq = dlqKey(o.prefix, topic);
    const ephemeral = opts.group === undefined;
    const nameKey = `${topic}\n${opts.group ?? ""}`;
    const taken = liveNames.get(nameKey) ?? new Set<number>();
    liveNames.set(nameKey, taken);
    let slot = 0;
    while (taken.has(slot)) slot++;
    taken.add(slot);
    const consumer = slot === 0 ? o.consumerName : `${o.consumerName}~${slot}`;
    const releaseName = () => {
      taken.delete(slot);
      if (taken.size === 0) liveNames.delete(nameKey);
    };
    // A group of its own starts at the end each time: never a crashed run's.
    const group = opts.group ??
      `~${consumer}.${crypto.randomUUID().slice(0, 8)}`;
    const maxInFlight = Math.max(1, opts.maxInFlight ?? 1);
    const lowWater = Math.max(1, Math.floor(maxInFlight / 4));
    const reader = readerFor(redis);
    const held = new Set<string>();
    const timers = new Set<ReturnType<typeof setTimeout>>();
    const running = new Set<Promise<void>>();
    // Slots: main-stream entries being handled plus keyed entries accepted
    // and not finished (queued behind their key or running).
    let inFlight = 0;
    const keyedByPartition = new Map<number, number>();
    const chains = new Map<string, Promise<void>>();
    // Newly held partitions whose pending entries are still being claimed:
    // not read until then, so their new entries queue behind the old.
    const recovering = new Set<number>();
    // Partitions in the XREADGROUP now in flight: not handed over until it
    // returns, or entries read for them would be stranded here.
    let reading = new Set<number>();
    // Keyed entries accepted here and not finished, by `${partition}|${id}`.
    const keyedIds = new Set<string>();
    let stopped = false;
    let wake: (() => void) | undefined;
    let onStop = () => {};
    const stoppedP = new Promise<void>((r) => (onStop = r));

    const createGroup = async (stream: string, from: string) => {
      try {
        await redis.xgroup("CREATE", stream, group, from, "MKSTREAM");
      } catch (err) {
        if (!(err instanceof Error && err.message.startsWith("BUSYGROUP"))) {
          throw err;
        }
      }
    };
    const ensureGroups = (from: string) =>
      Promise.all([...byStream.keys()].map((s) => createGroup(s, from)));
    try {
      await ensureGroups(ephemeral || o.startFrom === "new" ? "$" : "0");
    } catch (err) {
      releaseName();
      throw err;
    }

    const errKey = (src: Source, id: string) =>
      src.partition === undefined
        ? `${group}|${id}`
        : `${group}|#${src.partition}|${id}`;
    // First deliveries' acks made in one turn go as one XACK per stream (a
    // command each cost the consumer ~1 KB and a reply to parse); each
    // delivery's ack() still resolves only once Redis has its XACK.
    const acking = new Map<
      string,
      { ids: string[]; done: PromiseWithResolvers<void> }
    >();
    const ackLater = (stream: string, id: string): Promise<void> => {
      let batch = acking.get(stream);
      if (!batch) {
        const b = { ids: [] as string[], done: Promise.withResolvers<void>() };
        acking.set(stream, batch = b);
        queueMicrotask(() => {
          acking.delete(stream);
          redis.xack(stream, group, ...b.ids).then(
            () => b.done.resolve(),
            b.done.reject,
          );
        });
      }
      batch.ids.push(id);
      return batch.done.promise;
    };
    const later = (ms: number, fn: () => void) => {
      const t = setTimeout(() => {
        timers.delete(t);
        fn();
      }, ms);
      timers.add(t);
    };
    const sleep = (ms: number) =>
      Promise.race([new Promise<void>((r) => later(ms, r)), stoppedP]);

    const deadLetter = async (
      src: Source,
      id: string,
      fields: (string | Uint8Array)[],
      reason: string,
      attempts: number,
      errors: AttemptError[],
      messageId = id,
    ) => {
      await redis.multi()
        .xadd(
          dlq,
          ...trim(),
          "*",
          ...fields as string[], // ioredis sends bytes as they are
          ...deadLetterFields({
            reason,
            attempts,
            errors,
            group: opts.group,
            entryId: id,
            deadAt: Date.now(),
          }),
        )
        .xack(src.stream, group, id)
        .hdel(errorsKey, errKey(src, id))
        .exec();
      report.deadLettered({
        topic,
        messageId,
        reason,
        attempts,
        group: opts.group,
      });
    };

    const history = async (src: Source, id: string) => {
      const raw = await redis.hget(errorsKey, errKey(src, id));
      return raw ? JSON.parse(raw) as AttemptError[] : [];
    };

    /**
     * Runs the handler once and settles. Resolves with the delay before the
     * next attempt when the entry was nak'ed (or the handler threw) and has
     * attempts left; with undefined when it is done (acked or dead).
     */
    const dispatch = async (
      src: Source,
      id: string,
      fields: string[],
      attempts: number,
    ): Promise<number | undefined> => {
      let decoded: ReturnType<typeof decodeFields> | undefined;
      let problem = entryTooLarge(fields, id, o.maxMessageBytes);
      let kept: (string | Uint8Array)[] = fields;
      if (problem === undefined && mayHideBadBytes(fields)) {
        // The client turned bytes that are not UTF-8 into U+FFFD: look at
        // the bytes, and keep them as they were in the dead letter.
        const [entry] = await redis.xrangeBuffer(src.stream, id, id);
        if (entry) {
          problem = notUtf8(entry[1], id);
          if (problem !== undefined) kept = entry[1];
        }
      }
      if (problem === undefined) {
        try {
          decoded = decodeFields(fields, id, topic);
        } catch (err) {
          problem = (err as Error).message;
        }
      }
      if (decoded === undefined) {
        await deadLetter(
          src,
          id,
          kept,
          `bad_message: ${problem}`,
          attempts,
          [],
        );
        return undefined;
      }
      const { envelope, key } = decoded;
      const max = envelope.delivery.maxAttempts;
      if (attempts > max) {
        // A consumer died holding it (its attempt left no error behind).
        await deadLetter(
          src,
          id,
          fields,
          `max attempts (${max}) reached`,
          attempts - 1,
          await history(src, id),
          envelope.id,
        );
        return undefined;
      }
      let settled = false;
      let retryIn: number | undefined;
      const fail = async (delayMs: number | undefined, error: string) => {
        const errors = [...await history(src, id), {
          at: Date.now(),
          attempt: attempts,
          error,
          consumer,
        }].slice(-20);
        if (attempts >= max) {
          await deadLetter(
            src,
            id,
            fields,
            `max attempts (${max}) reached`,
            attempts,
            errors,
            envelope.id,
          );
          return;
        }
        await redis.hset(errorsKey, errKey(src, id), JSON.stringify(errors));
        retryIn = delayMs ??
          backoffDelay(envelope.delivery.backoff, attempts, {
            baseMs: o.retryBaseMs,
            maxMs: o.retryMaxMs,
          });
      };
      const delivery: Delivery = {
        envelope,
        topic,
        key,
        attempts,
        get settled() {
          return settled;
        },
        async ack() {
          if (settled) return;
          settled = true;
          // A first delivery has no error history to clear.
          if (attempts === 1) await ackLater(src.stream, id);
          else {
            await redis.multi().xack(src.stream, group, id).hdel(
              errorsKey,
              errKey(src, id),
            ).exec();
          }
        },
        async nak(delayMs?: number, error = "nak") {
          if (settled) return;
          settled = true;
          await fail(delayMs, error);
        },
        async inProgress() {
          if (settled) return;
          await redis.xclaim(src.stream, group, consumer, 0, id, "JUSTID");
        },
        async term(reason: string) {
          if (settled) return;
          settled = true;
          await deadLetter(
            src,
            id,
            fields,
            reason,
            attempts,
            await history(src, id),
            envelope.id,
          );
        },
      };
      let returned = false;
      try {
        await handler(delivery);
        returned = true;
        await delivery.ack();
      } catch (err) {
        if (!returned) {
          report.handlerFailed({
            topic,
            messageId: envelope.id,
            attempt: attempts,
            error: err,
            group: opts.group,
          });
        }
        if (!delivery.settled) {
          await delivery.nak(
            undefined,
            err instanceof Error ? err.message : String(err),
          );
        }
      }
      return retryIn;
    };

    const track = (p: Promise<void>) => {
      const t = p.finally(() => running.delete(t));
      running.add(t);
    };

    // --- the main stream: any member, any order, XAUTOCLAIM takeover ----
    const start = (id: string, fields: string[], attempts: number) => {
      held.add(id);
      inFlight++;
      track(
        dispatch(main, id, fields, attempts)
          .then((retryIn) => {
            if (retryIn === undefined) held.delete(id);
            else scheduleRetry(id, attempts, retryIn);
          })
          .catch(() => {
            held.delete(id); // Redis unreachable: left pending, reclaimed later
          })
          .finally(() => {
            inFlight--;
            wake?.();
          }),
      );
    };

    const scheduleRetry = (id: string, attempts: number, wait: number) => {
      // Keep the entry fresh so XAUTOCLAIM elsewhere leaves it to us.
      const touchEvery = Math.max(100, Math.floor(o.ackWaitMs / 2));
      const due = Date.now() + wait;
      const step = () => {
        if (stopped) return;
        const left = due - Date.now();
        if (left > 0) {
          later(Math.min(left, touchEvery), step);
          if (left > touchEvery) {
            redis.xclaim(main.stream, group, consumer, 0, id, "JUSTID").catch(
              () => {},
            );
          }
          return;
        }
        if (inFlight >= maxInFlight) {
          later(10, step);
          return;
        }
        redis.xclaim(main.stream, group, consumer, 0, id).then((claimed) => {
          const entry = (claimed as Entry[])[0];
          held.delete(id);
          if (!entry || !entry[1]) {
            return redis.hdel(errorsKey, errKey(main, id)).then(() => {});
          }
          start(entry[0], entry[1], attempts + 1);
        }).catch(() => held.delete(id));
      };
      step();
    };

    // --- partition streams: one owner per partition, one entry per key at a time
    const owner = new PartitionOwner(redis, {
      prefix: o.prefix,
      topic,
      group,
      // Unique per run: a restart must not renew what its last run held.
      consumer: `${consumer}#${crypto.randomUUID().slice(0, 8)}`,
      partitions: o.partitions,
      leaseMs: o.ackWaitMs,
      idle: (n) => (keyedByPartition.get(n) ?? 0) === 0 && !reading.has(n),
      onAcquire: (n) => {
        recovering.add(n);
        track(
          recover(parts[n]).finally(() => {
            recovering.delete(n);
            wake?.();
          }),
        );
      },
    });

    /** Handles one keyed entry until it is done, retrying in place. */
    const runKeyed = async (
      src: Source,
      id: string,
      fields: string[],
      attempts: number,
    ) => {
      while (!stopped && owner.owns(src.partition!)) {
        let retryIn: number | undefined;
        try {
          retryIn = await dispatch(src, id, fields, attempts);
        } catch {
          retryIn = o.retryBaseMs; // Redis unreachable: try again
        }
        if (retryIn === undefined) return;
        await sleep(retryIn);
        if (stopped || !owner.owns(src.partition!)) return;
        const [entry] = await redis.xclaim(
          src.stream,
          group,
          consumer,
          0,
          id,
        ) as Entry[];
        if (!entry?.[1]) {
          await redis.hdel(errorsKey, errKey(src, id));
          return;
        }
        fields = entry[1];
        attempts++;
      }
    };

    const enqueueKeyed = (
      src: Source,
      id: string,
      fields: string[],
      attempts: number,
    ) => {
      const n = src.partition!;
      const chain = `${n}|${fieldMap(fields).get("key") ?? ""}`;
      if (keyedIds.has(`${n}|${id}`)) return;
      keyedIds.add(`${n}|${id}`);
      keyedByPartition.set(n, (keyedByPartition.get(n) ?? 0) + 1);
      const prev = chains.get(chain) ?? Promise.resolve();
      const next = prev.then(() => runKeyed(src, id, fields, attempts))
        .catch(() => {}) // left pending; the partition's next owner claims it
        .finally(() => {
          keyedIds.delete(`${n}|${id}`);
          keyedByPartition.set(n, keyedByPartition.get(n)! - 1);
          if (chains.get(chain) === next) chains.delete(chain);
          wake?.();
        });
      chains.set(chain, next);
      track(next);
    };

    /**
     * Claims a held partition's pending entries idle for `minIdleMs` and
     * queues them: on taking a partition over (0: a previous owner's entries
     * come first), and periodically for entries a stalled former owner read
     * after losing its lease.
     */
    const recover = async (src: Source, minIdleMs = 0) => {
      let cursor = "0-0";
      do {
        const [next, entries, deleted] = await redis.xautoclaim(
          src.stream,
          group,
          consumer,
          minIdleMs,
          cursor,
          "COUNT",
          100,
        ) as [string, Entry[], string[]?];
        cursor = next;
        for (const gone of deleted ?? []) {
          await redis.xack(src.stream, group, gone);
        }
        if (entries.length === 0) continue;
        const counts = new Map(
          (await redis.xpending(
            src.stream,
            group,
            entries[0][0],
            entries[entries.length - 1][0],
            entries.length,
            consumer,
          ) as [string, string, number, number][]).map((
            [id, , , count],
          ) => [id, count]),
        );
        for (const [id, fields] of entries) {
          if (!fields) await redis.xack(src.stream, group, id);
          else enqueueKeyed(src, id, fields, counts.get(id) ?? 1);
        }
      } while (cursor !== "0-0" && !stopped);
    };

    const slots = () => {
      let keyed = 0;
      for (const v of keyedByPartition.values()) keyed += v;
      return maxInFlight - inFlight - keyed;
    };

    const leaseLoop = async () => {
      while (!stopped) {
        try {
          await owner.tick();
        } catch {
          // Redis unreachable: leases run out and others take over.
        }
        await sleep(Math.max(50, Math.floor(o.ackWaitMs / 3)));
      }
    };

    const claimLoop = async () => {
      let cursor = "0-0";
      while (!stopped) {
        await sleep(o.claimIntervalMs);
        if (stopped) break;
        const free = maxInFlight - inFlight;
        if (free <= 0) continue;
        try {
          for (const n of owner.readable()) {
            if (!recovering.has(n)) await recover(parts[n], o.ackWaitMs);
          }
          const [next, entries, deleted] = await redis.xautoclaim(
            main.stream,
            group,
            consumer,
            o.ackWaitMs,
            cursor,
            "COUNT",
            free,
          ) as [string, Entry[], string[]?];
          cursor = next;
          for (const gone of deleted ?? []) {
            await redis.multi().xack(main.stream, group, gone).hdel(
              errorsKey,
              errKey(main, gone),
            ).exec();
          }
          for (const [id, fields] of entries) {
            if (held.has(id)) continue;
            if (!fields) {
              await redis.xack(main.stream, group, id);
              continue;
            }
            const pending = await redis.xpending(
              main.stream,
              group,
              id,
              id,
              1,
            ) as [string, string, number, number][];
            start(id, fields, pending[0]?.[3] ?? 1);
          }
        } catch (err) {
          if (isNoGroup(err)) await ensureGroups("0").catch(() => {});
        }
      }
    };

    const readLoop = async () => {
      let failures = 0;
      while (!stopped) {
        // Read again once a quarter of the slots are free: fewer, larger
        // XREADGROUPs (whatever is busy calls wake when it finishes).
        const free = slots();
        if (free < lowWater) {
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
          continue;
        }
        const readable = owner.readable().filter((n) => !recovering.has(n));
        const streams = [main.stream, ...readable.map((n) => parts[n].stream)];
        reading = new Set(readable);
        try {
          const res = await reader.call([
            "XREADGROUP",
            "GROUP",
            group,
            consumer,
            "COUNT",
            free,
            "BLOCK",
            o.blockMs,
            "STREAMS",
            ...streams,
            ...streams.map(() => ">"),
          ], o.blockMs + READ_GRACE_MS) as [string, Entry[]][] | null;
          reading = new Set();
          failures = 0;
          for (const [stream, entries] of res ?? []) {
            const src = byStream.get(stream)!;
            for (const [id, fields] of entries) {
              if (!fields) continue;
              if (src.partition === undefined) start(id, fields, 1);
              else enqueueKeyed(src, id, fields, 1);
            }
          }
        } catch (err) {
          reading = new Set();
          if (stopped) break;
          if (isNoGroup(err)) {
            // Redis lost the group (restart without persistence): everything in the stream is new to us.
            await ensureGroups("0").catch(() => {});
          } else {
            await new Promise((r) =>
              setTimeout(r, Math.min(50 * ++failures, 1000))
            );
          }
        }
      }
    };

    try {
      await owner.tick();
    } catch (err) {
      reader.disconnect();
      releaseName();
      throw err;
    }
    const loops = Promise.all([readLoop(), claimLoop(), leaseLoop()]);
    const sub: Subscription = {
      topic,
      group: opts.group,
      async close() {
        if (stopped) return;
        stopped = true;
        onStop();
        subs.delete(sub);
        wake?.();
        reader.disconnect();
        for (const t of timers) clearTimeout(t);
        timers.clear();
        await loops;
        await Promise.allSettled([...running]);
        await owner.stop().catch(() => {});
        await Promise.all(
          [...byStream.keys()].map((s) =>
            (ephemeral
              ? redis.xgroup("DESTROY", s, group)
              : redis.eval(DELETE_IDLE_CONSUMER, 1, s, group, consumer))
              .catch(() => {})
          ),
        );
        releaseName();
      },
    };
    subs.add(sub);
    return sub;
  }
  return {
    name: "redis-streams",
    caps,
    redis,
    async publish(
      topic: string,
      envelope: Envelope,
      opts: PublishOptions = {},
    ) {
      if (closed) throw new TransportError("closed", "transport is closed");
      checkTopic(topic);
      assertFits(envelope, caps.maxMessageBytes);
      try {
        await redis.xadd(
          opts.key === undefined ? streamKey(o.prefix, topic) : partitionKey(
            o.prefix,
            topic,
            partitionOf(opts.key, o.partitions),
          ),
          ...trim(),
          "*",
          ...encodeFields(envelope, opts.key),
        );
      } catch (err) {
        throw new TransportError(
          "unavailable",
          `Cannot publish to '${topic}': ${(err as Error).message}`,
          { cause: err },
        );
      }
    },
    subscribe,
    async deadLetters(
      topic: string,
      opts: { limit?: number } = {},
    ): Promise<DeadLetter[]> {
      const entries = await redis.xrange(
        dlqKey(o.prefix, topic),
        "-",
        "+",
        "COUNT",
        opts.limit ?? 1000,
      );
      return entries.map(([id, fields]) => decodeDeadLetter(fields, id, topic));
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.allSettled([...subs].map((s) => s.close()));
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
