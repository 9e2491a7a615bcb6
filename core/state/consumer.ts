/**
 * The loop that works a {@linkcode DurableQueue}: claims as many messages as
 * it has free slots, runs the handler on each, keeps leases alive while a
 * handler runs, acks on success and naks (with backoff) on failure. It polls
 * adaptively: at once when woken by a local enqueue, every `minPollMs` while
 * work keeps coming, backing off to `maxPollMs` when idle.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import {
  checkConsumerName,
  type Delivery,
  type DurableQueue,
} from "./queue.ts";

/** Options for {@linkcode consume}. */
export interface ConsumeOptions {
  /** Handlers running at once. @default {4} */
  concurrency?: number;
  /** Lease per claim; renewed every half lease while the handler runs. @default {30000} */
  leaseMs?: number;
  /**
   * Name recorded on claims and in error history: at most 256 characters
   * (`MAX_CONSUMER_CHARS`; `consume` throws a `RangeError` beyond).
   * @default {"anonymous"}
   */
  consumer?: string;
  /** @default {10} */
  minPollMs?: number;
  /** @default {1000} */
  maxPollMs?: number;
  /** Whether this consumer should sweep expired leases and due delayed messages. @default {() => true} */
  sweeper?: () => boolean;
  /** @default {500} */
  sweepEveryMs?: number;
  clock?: Clock;
  /** Told about errors the loop survives (claim, sweep, settle failures). */
  onError?: (err: unknown) => void;
}

/** A running consumer. */
export interface Consumer {
  /** Stops claiming and waits up to `deadlineMs` for running handlers. */
  stop(deadlineMs?: number): Promise<void>;
  /** Handlers running now. */
  readonly running: number;
}

/**
 * Starts consuming `queue` with `handler`. The handler's return value is the
 * ack result; a throw naks with the error message. A handler may settle the
 * delivery itself (`d.nak(5000)`, `d.term("bad input")`), or ack it through
 * its second argument, which joins the acks batched into one commit (to ack
 * inside a trace span, say).
 *
 * @example Usage
 * ```ts
 * import { DurableQueue } from "./queue.ts";
 * import { consume } from "./consumer.ts";
 * const kv = await Deno.openKv(":memory:");
 * const q = new DurableQueue<number>(kv, "squares");
 * const c = consume(q, (d) => Promise.resolve(d.payload * d.payload));
 * const { id } = await q.enqueue(7);
 * while ((await q.get(id))?.state !== "done") await new Promise((r) => setTimeout(r, 5));
 * await c.stop();
 * kv.close();
 * ```
 */
export function consume<T>(
  queue: DurableQueue<T>,
  handler: (
    delivery: Delivery<T>,
    ack: (result: unknown) => Promise<void>,
  ) => Promise<unknown>,
  options: ConsumeOptions = {},
): Consumer {
  const concurrency = options.concurrency ?? 4;
  const leaseMs = options.leaseMs ?? 30_000;
  const consumer = options.consumer ?? "anonymous";
  checkConsumerName(consumer, `consume '${queue.name}'`);
  const minPoll = options.minPollMs ?? 10;
  const maxPoll = options.maxPollMs ?? 1000;
  const sweepEvery = options.sweepEveryMs ?? 500;
  const sweeper = options.sweeper ?? (() => true);
  const clock = options.clock ?? systemClock;
  const onError = options.onError ?? (() => {});
  const running = new Set<Promise<void>>();
  const stopping = new AbortController();

  // Acks that complete in the same turn share one commit.
  let pending: {
    d: Delivery<T>;
    result: unknown;
    done: (err?: Error) => void;
  }[] = [];
  const flush = async () => {
    const batch = pending;
    pending = [];
    try {
      const errors = await queue.ackAll(
        batch.map((p) => p.d),
        batch.map((p) => p.result),
      );
      batch.forEach((p, i) => p.done(errors[i]));
    } catch (err) {
      batch.forEach((p) => p.done(err as Error));
    }
  };
  const ackLater = (d: Delivery<T>, result: unknown) =>
    new Promise<void>((resolve, reject) => {
      if (pending.length === 0) setTimeout(flush, 0);
      pending.push({
        d,
        result,
        done: (err) => (err ? reject(err) : resolve()),
      });
    });

  const run = (d: Delivery<T>) => {
    const keepAlive = new AbortController();
    (async () => {
      while (!keepAlive.signal.aborted) {
        await clock.sleep(leaseMs / 2, keepAlive.signal);
        await d.inProgress().catch(onError);
      }
    })().catch(() => {});
    const p = (async () => {
      try {
        const result = await handler(d, (r) => ackLater(d, r));
        if (!d.settled) {
          try {
            await ackLater(d, result);
          } catch (err) {
            // A result the queue refused (too large, not serializable) has
            // dead-lettered its message: say so, or nobody hears of it.
            if (d.settled) return onError(err);
            throw err;
          }
        }
      } catch (err) {
        if (!d.settled) {
          await d.nak(
            undefined,
            err instanceof Error ? err.message : String(err),
          ).catch(onError);
        }
      } finally {
        keepAlive.abort();
      }
    })();
    running.add(p);
    p.finally(() => running.delete(p));
  };

  const loop = (async () => {
    let poll = minPoll;
    let lastSweep = -Infinity;
    while (!stopping.signal.aborted) {
      if (sweeper() && clock.mono() - lastSweep >= sweepEvery) {
        lastSweep = clock.mono();
        await queue.sweep().catch(onError);
      }
      const free = concurrency - running.size;
      if (free <= 0) {
        await Promise.race([
          ...running,
          queue.waitForWork(maxPoll, stopping.signal),
        ]);
        continue;
      }
      let claimed: Delivery<T>[] = [];
      try {
        claimed = await queue.claim(free, leaseMs, consumer);
      } catch (err) {
        onError(err);
      }
      if (claimed.length === 0) {
        await queue.waitForWork(Math.min(poll, sweepEvery), stopping.signal);
        poll = Math.min(maxPoll, poll * 2);
        continue;
      }
      poll = minPoll;
      for (const d of claimed) run(d);
    }
  })();

  return {
    get running() {
      return running.size;
    },
    async stop(deadlineMs = 10_000) {
      stopping.abort();
      await loop;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.allSettled([...running]),
        new Promise((r) => (timer = setTimeout(r, deadlineMs))),
      ]);
      clearTimeout(timer);
    },
  };
}
