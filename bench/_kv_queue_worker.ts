/**
 * The queue workloads of `kv_queue.ts`, and a subprocess worker running them
 * against a shared KV file (the 3-process figure).
 *
 * As a subprocess (`deno run -A bench/_kv_queue_worker.ts KVFILE`) it opens
 * the KV, replies `{"ready":true}`, then on `{"cmd":"run",...}` produces its
 * share and consumes until told `{"cmd":"stop"}`, replying
 * `{"acked":k}` after every batch of acks (k = this worker's running total)
 * and `{"done":true,...}` with its counters when stopped. It exits on EOF.
 *
 * @module
 */
import { DurableQueue } from "../core/state/queue.ts";
import { openStore } from "../core/state/store.ts";
import { commands, reply } from "./_util.ts";

/** Lease long enough that no message is ever taken back during a run. */
const LEASE_MS = 60_000;

/** Options of {@linkcode runBatched}. */
export interface BatchedOptions {
  /** Messages this process enqueues (one `enqueueMany` per `enqueueBatch`). */
  produce: number;
  /** Messages per `enqueueMany` call. */
  enqueueBatch: number;
  /** `n` of each `claim(n)`. */
  claimBatch: number;
  /** Concurrent claim → ackAll loops. */
  consumers: number;
  /** Consumers stop once this process acked this many (Infinity: until `stop`). */
  target: number;
  /** Told the running total of acks after each `ackAll`. */
  onAcked?: (total: number) => void;
  /** Aborting stops the consumers (for multi-process runs). */
  signal?: AbortSignal;
  /** Consumer name on claims. */
  consumer?: string;
}

/** Counters of one run. */
export interface RunCounters {
  produced: number;
  acked: number;
  claims: number;
  emptyClaims: number;
  ackErrors: number;
}

/** KV calls made through a {@linkcode countingKv}. */
export interface KvCounts {
  /** `commit()` calls that returned (ok or a failed check). */
  commits: number;
  /** Commits whose checks failed (lost races). */
  failedChecks: number;
  /** Commits that threw (e.g. "database is locked"; retried by the queue). */
  thrown: number;
  /** `get`, `getMany` and `list` calls. */
  reads: number;
}

/** Zeroed counters. */
export function newCounts(): KvCounts {
  return { commits: 0, failedChecks: 0, thrown: 0, reads: 0 };
}

/**
 * `kv` with its commits and reads counted into `counts` (so the report
 * states measured, not assumed, commits per task).
 */
export function countingKv(kv: Deno.Kv, counts: KvCounts): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            try {
              const res = await commit();
              counts.commits++;
              if (!res.ok) counts.failedChecks++;
              return res;
            } catch (err) {
              counts.thrown++;
              throw err;
            }
          };
          return op;
        };
      }
      if (prop === "get" || prop === "getMany" || prop === "list") {
        counts.reads++;
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/**
 * Batched path: producers `enqueueMany` in batches, consumers `claim(n)` and
 * `ackAll` what they got, concurrently in this process.
 */
export async function runBatched(
  q: DurableQueue<number>,
  o: BatchedOptions,
): Promise<RunCounters> {
  const c: RunCounters = {
    produced: 0,
    acked: 0,
    claims: 0,
    emptyClaims: 0,
    ackErrors: 0,
  };
  const producer = (async () => {
    while (c.produced < o.produce) {
      const k = Math.min(o.enqueueBatch, o.produce - c.produced);
      const items = Array.from(
        { length: k },
        (_, i) => ({ payload: c.produced + i }),
      );
      c.produced += k;
      await q.enqueueMany(items);
    }
  })();
  const consumer = async () => {
    while (c.acked < o.target && !o.signal?.aborted) {
      const ds = await q.claim(o.claimBatch, LEASE_MS, o.consumer);
      c.claims++;
      if (ds.length === 0) {
        c.emptyClaims++;
        // Nothing ready yet: the producer (here or elsewhere) is behind.
        await q.waitForWork(2);
        continue;
      }
      const errs = await q.ackAll(ds, ds.map((d) => d.payload));
      const failed = errs.filter((e) => e !== undefined).length;
      c.ackErrors += failed;
      c.acked += ds.length - failed;
      o.onAcked?.(c.acked);
    }
  };
  await Promise.all([
    producer,
    ...Array.from({ length: o.consumers }, consumer),
  ]);
  return c;
}

/**
 * Unbatched path: one `enqueue` per message, one `claim(1)` and one `ack`
 * per message (three commits each), producer and consumer concurrent.
 */
export async function runUnbatched(
  q: DurableQueue<number>,
  n: number,
): Promise<RunCounters> {
  const c: RunCounters = {
    produced: 0,
    acked: 0,
    claims: 0,
    emptyClaims: 0,
    ackErrors: 0,
  };
  const producer = (async () => {
    while (c.produced < n) await q.enqueue(c.produced++);
  })();
  const consumer = (async () => {
    while (c.acked < n) {
      const [d] = await q.claim(1, LEASE_MS);
      c.claims++;
      if (!d) {
        c.emptyClaims++;
        await q.waitForWork(2);
        continue;
      }
      try {
        await d.ack(d.payload);
        c.acked++;
      } catch {
        c.ackErrors++;
      }
    }
  })();
  await Promise.all([producer, consumer]);
  return c;
}

if (import.meta.main) {
  const counts = newCounts();
  const kv = countingKv(await openStore(Deno.args[0]), counts);
  reply({ ready: true });
  const stop = new AbortController();
  let running: Promise<RunCounters> | undefined;
  for await (const cmd of commands()) {
    if (cmd.cmd === "run") {
      const q = new DurableQueue<number>(kv, String(cmd.queue));
      let last = 0;
      running = runBatched(q, {
        produce: Number(cmd.produce),
        enqueueBatch: Number(cmd.enqueueBatch),
        claimBatch: Number(cmd.claimBatch),
        consumers: Number(cmd.consumers),
        target: Infinity,
        signal: stop.signal,
        consumer: String(cmd.name),
        onAcked: (total) => {
          if (total !== last) reply({ acked: last = total });
        },
      });
    } else if (cmd.cmd === "stop") {
      stop.abort();
      const c = await running;
      reply({ done: true, ...c, kv: counts });
    }
  }
  // Consumers waiting on an empty claim end on their own once stopped.
  stop.abort();
  await running?.catch(() => {});
  kv.close();
}
