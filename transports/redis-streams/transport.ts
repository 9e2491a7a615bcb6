/**
 * A {@linkcode Transport} on Redis Streams (ioredis).
 *
 * - One stream per topic (`plexus:{topic}`), one consumer group per
 *   subscription group (`XGROUP CREATE … MKSTREAM`); a subscription without a
 *   group gets its own group, destroyed on close.
 * - `XREADGROUP … BLOCK` on a connection of its own per subscription, asking
 *   for at most the free `maxInFlight` slots; `XACK` after the handler.
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
 *
 * @module
 */
import { Redis } from "ioredis";
import type { Envelope } from "../../core/envelope.ts";
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
import {
  deadLetterFields,
  decodeDeadLetter,
  decodeFields,
  dlqKey,
  encodeFields,
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
  /** Consumer name prefix (unique per process by default). */
  consumerName?: string;
  /** Longest wait for the first connection. @default {5000} */
  connectTimeoutMs?: number;
}

/** The Redis Streams transport, with its client for diagnostics. */
export interface RedisStreamsTransport extends Transport {
  readonly redis: Redis;
}

type Entry = [id: string, fields: string[] | null];

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
    ordering: "none",
    groups: true,
    maxMessageBytes: o.maxMessageBytes,
  };
  const trim = (): (string | number)[] =>
    o.maxLen > 0 ? ["MAXLEN", "~", o.maxLen] : [];
  const subs = new Set<Subscription>();
  let closed = false;
  let subCounter = 0;

  async function subscribe(
    topic: string,
    handler: DeliveryHandler,
    opts: SubscribeOptions = {},
  ): Promise<Subscription> {
    if (closed) throw new TransportError("closed", "transport is closed");
    const stream = streamKey(o.prefix, topic);
    const errorsKey = `${o.prefix}errors:${topic}`;
    const dlq = dlqKey(o.prefix, topic);
    const consumer = `${o.consumerName}-${++subCounter}`;
    const ephemeral = opts.group === undefined;
    const group = opts.group ?? `~${consumer}`;
    const maxInFlight = Math.max(1, opts.maxInFlight ?? 1);
    const reader = redis.duplicate();
    reader.on("error", () => {});
    const held = new Set<string>();
    const timers = new Set<ReturnType<typeof setTimeout>>();
    const running = new Set<Promise<void>>();
    let inFlight = 0;
    let stopped = false;
    let wake: (() => void) | undefined;
    let onStop = () => {};
    const stoppedP = new Promise<void>((r) => (onStop = r));

    const ensureGroup = async (from: string) => {
      try {
        await redis.xgroup("CREATE", stream, group, from, "MKSTREAM");
      } catch (err) {
        if (!(err instanceof Error && err.message.startsWith("BUSYGROUP"))) {
          throw err;
        }
      }
    };
    await ensureGroup(ephemeral || o.startFrom === "new" ? "$" : "0");

    const errKey = (id: string) => `${group}|${id}`;
    const later = (ms: number, fn: () => void) => {
      const t = setTimeout(() => {
        timers.delete(t);
        fn();
      }, ms);
      timers.add(t);
    };

    const deadLetter = async (
      id: string,
      fields: string[],
      reason: string,
      attempts: number,
      errors: AttemptError[],
    ) => {
      await redis.multi()
        .xadd(
          dlq,
          ...trim(),
          "*",
          ...fields,
          ...deadLetterFields({
            reason,
            attempts,
            errors,
            group: opts.group,
            entryId: id,
            deadAt: Date.now(),
          }),
        )
        .xack(stream, group, id)
        .hdel(errorsKey, errKey(id))
        .exec();
    };

    const history = async (id: string): Promise<AttemptError[]> => {
      const raw = await redis.hget(errorsKey, errKey(id));
      return raw ? JSON.parse(raw) as AttemptError[] : [];
    };

    const dispatch = async (id: string, fields: string[], attempts: number) => {
      let decoded: ReturnType<typeof decodeFields>;
      try {
        decoded = decodeFields(fields, id, topic);
      } catch (err) {
        await deadLetter(
          id,
          fields,
          `bad_message: ${(err as Error).message}`,
          attempts,
          [],
        );
        return;
      }
      const { envelope, key } = decoded;
      const max = envelope.delivery.maxAttempts;
      if (attempts > max) {
        // A consumer died holding it (its attempt left no error behind).
        await deadLetter(
          id,
          fields,
          `max attempts (${max}) reached`,
          attempts - 1,
          await history(id),
        );
        return;
      }
      held.add(id);
      inFlight++;
      let settled = false;
      const release = () => {
        held.delete(id);
      };
      const fail = async (delayMs: number | undefined, error: string) => {
        const errors = [...await history(id), {
          at: Date.now(),
          attempt: attempts,
          error,
          consumer,
        }].slice(-20);
        if (attempts >= max) {
          await deadLetter(
            id,
            fields,
            `max attempts (${max}) reached`,
            attempts,
            errors,
          );
          release();
          return;
        }
        await redis.hset(errorsKey, errKey(id), JSON.stringify(errors));
        const wait = delayMs ??
          backoffDelay(envelope.delivery.backoff, attempts, {
            baseMs: o.retryBaseMs,
            maxMs: o.retryMaxMs,
          });
        scheduleRetry(id, attempts, wait);
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
          await redis.multi().xack(stream, group, id).hdel(
            errorsKey,
            errKey(id),
          ).exec();
          release();
        },
        async nak(delayMs?: number, error = "nak") {
          if (settled) return;
          settled = true;
          await fail(delayMs, error);
        },
        async inProgress() {
          if (settled) return;
          await redis.xclaim(stream, group, consumer, 0, id, "JUSTID");
        },
        async term(reason: string) {
          if (settled) return;
          settled = true;
          await deadLetter(id, fields, reason, attempts, await history(id));
          release();
        },
      };
      try {
        await handler(delivery);
        await delivery.ack();
      } catch (err) {
        if (!delivery.settled) {
          await delivery.nak(
            undefined,
            err instanceof Error ? err.message : String(err),
          )
            .catch(() => {}); // stays pending; XAUTOCLAIM retries it
        }
      } finally {
        inFlight--;
        wake?.();
      }
    };

    const start = (id: string, fields: string[], attempts: number) => {
      const p = dispatch(id, fields, attempts)
        .catch(() => {
          held.delete(id); // Redis unreachable: left pending, reclaimed later
        })
        .finally(() => running.delete(p));
      running.add(p);
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
            redis.xclaim(stream, group, consumer, 0, id, "JUSTID").catch(
              () => {},
            );
          }
          return;
        }
        if (inFlight >= maxInFlight) {
          later(10, step);
          return;
        }
        redis.xclaim(stream, group, consumer, 0, id).then((claimed) => {
          const entry = (claimed as Entry[])[0];
          if (!entry || !entry[1]) {
            held.delete(id);
            return redis.hdel(errorsKey, errKey(id)).then(() => {});
          }
          held.delete(id);
          start(entry[0], entry[1], attempts + 1);
        }).catch(() => held.delete(id));
      };
      step();
    };

    const claimLoop = async () => {
      let cursor = "0-0";
      while (!stopped) {
        await Promise.race([
          new Promise<void>((r) => later(o.claimIntervalMs, r)),
          stoppedP,
        ]);
        if (stopped) break;
        const free = maxInFlight - inFlight;
        if (free <= 0) continue;
        try {
          const [next, entries, deleted] = await redis.xautoclaim(
            stream,
            group,
            consumer,
            o.ackWaitMs,
            cursor,
            "COUNT",
            free,
          ) as [string, Entry[], string[]?];
          cursor = next;
          for (const gone of deleted ?? []) {
            await redis.multi().xack(stream, group, gone).hdel(
              errorsKey,
              errKey(gone),
            ).exec();
          }
          for (const [id, fields] of entries) {
            if (held.has(id)) continue;
            if (!fields) {
              await redis.xack(stream, group, id);
              continue;
            }
            const pending = await redis.xpending(stream, group, id, id, 1) as [
              string,
              string,
              number,
              number,
            ][];
            start(id, fields, pending[0]?.[3] ?? 1);
          }
        } catch (err) {
          if (isNoGroup(err)) await ensureGroup("0").catch(() => {});
        }
      }
    };

    const readLoop = async () => {
      let failures = 0;
      while (!stopped) {
        const free = maxInFlight - inFlight;
        if (free <= 0) {
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
          continue;
        }
        try {
          const res = await reader.xreadgroup(
            "GROUP",
            group,
            consumer,
            "COUNT",
            free,
            "BLOCK",
            o.blockMs,
            "STREAMS",
            stream,
            ">",
          ) as [string, Entry[]][] | null;
          failures = 0;
          for (const [, entries] of res ?? []) {
            for (const [id, fields] of entries) {
              if (fields) start(id, fields, 1);
            }
          }
        } catch (err) {
          if (stopped) break;
          if (isNoGroup(err)) {
            // Redis lost the group (restart without persistence): everything in the stream is new to us.
            await ensureGroup("0").catch(() => {});
          } else {
            await new Promise((r) =>
              setTimeout(r, Math.min(50 * ++failures, 1000))
            );
          }
        }
      }
    };

    const loops = Promise.all([readLoop(), claimLoop()]);
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
        if (ephemeral) {
          await redis.xgroup("DESTROY", stream, group).catch(() => {});
        }
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
      assertFits(envelope, caps.maxMessageBytes);
      try {
        await redis.xadd(
          streamKey(o.prefix, topic),
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
