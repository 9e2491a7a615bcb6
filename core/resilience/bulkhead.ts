/**
 * A bulkhead: at most `concurrency` calls run at once, up to `queueSize`
 * more wait in FIFO order, and anything beyond is refused at once with a
 * {@linkcode BulkheadFullError} (Moleculer's defaults: 10 and 100).
 *
 * @module
 */
import type { MetricsRegistry } from "../observe/metrics.ts";
import { Emitter, type Unsubscribe } from "./_events.ts";
import { BulkheadFullError } from "./errors.ts";

/** Options for {@linkcode createBulkhead}. */
export interface BulkheadOptions {
  /** Name in error messages, events and the `bulkhead` metric label. @default {"bulkhead"} */
  name?: string;
  /** Calls running at once. @default {10} */
  concurrency?: number;
  /** Calls waiting for a slot; 0 refuses whatever cannot run now. @default {100} */
  queueSize?: number;
  /** Registry for `plexus_bulkhead_*` metrics. */
  metrics?: MetricsRegistry;
}

/** Emitted when a call is refused. */
export interface BulkheadEvents extends Record<string, unknown> {
  /** A call was refused; the figures are the bulkhead's at that moment. */
  rejected: {
    name: string;
    active: number;
    queued: number;
    concurrency: number;
    queueSize: number;
  };
}

/** A bulkhead. */
export interface Bulkhead {
  /** Runs `fn` now, after queueing, or throws {@linkcode BulkheadFullError}. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** Calls running now. */
  readonly active: number;
  /** Calls waiting now. */
  readonly queued: number;
  /** Calls `listener` on `event`; returns a function that stops it. */
  on<K extends keyof BulkheadEvents>(
    event: K,
    listener: (e: BulkheadEvents[K]) => void,
  ): Unsubscribe;
}

/**
 * Creates a bulkhead.
 *
 * @example Usage
 * ```ts
 * import { createBulkhead } from "./bulkhead.ts";
 * import { BulkheadFullError } from "./errors.ts";
 * const bulkhead = createBulkhead({ name: "db", concurrency: 1, queueSize: 0 });
 * const { promise, resolve } = Promise.withResolvers<void>();
 * const first = bulkhead.run(() => promise);
 * try {
 *   await bulkhead.run(() => Promise.resolve());
 * } catch (err) {
 *   err instanceof BulkheadFullError; // true
 * }
 * resolve();
 * await first;
 * ```
 */
export function createBulkhead(options: BulkheadOptions = {}): Bulkhead {
  const name = options.name ?? "bulkhead";
  const concurrency = options.concurrency ?? 10;
  const queueSize = options.queueSize ?? 100;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new RangeError(
      `Cannot create bulkhead '${name}': concurrency must be a positive integer, got ${concurrency}`,
    );
  }
  if (!Number.isInteger(queueSize) || queueSize < 0) {
    throw new RangeError(
      `Cannot create bulkhead '${name}': queueSize must be a non-negative integer, got ${queueSize}`,
    );
  }
  const events = new Emitter<BulkheadEvents>();
  const labels = { bulkhead: name };
  const m = options.metrics;
  const activeGauge = m?.gauge(
    "plexus_bulkhead_active",
    "Calls running inside a bulkhead",
  );
  const queuedGauge = m?.gauge(
    "plexus_bulkhead_queued",
    "Calls waiting for a bulkhead slot",
  );
  const rejected = m?.counter(
    "plexus_bulkhead_rejected_total",
    "Calls refused because a bulkhead was full",
  ).labels(labels);
  let active = 0;
  const queue: (() => void)[] = [];
  const publish = () => {
    activeGauge?.set(active, labels);
    queuedGauge?.set(queue.length, labels);
  };
  publish();

  const release = () => {
    const next = queue.shift();
    // The slot passes straight to the next waiter, so `active` stays.
    if (next) next();
    else active--;
    publish();
  };

  return {
    async run<T>(fn: () => Promise<T>): Promise<T> {
      if (active < concurrency) {
        active++;
        publish();
      } else if (queue.length < queueSize) {
        await new Promise<void>((resolve) => {
          queue.push(resolve);
          publish();
        });
      } else {
        rejected?.inc();
        events.emit("rejected", {
          name,
          active,
          queued: queue.length,
          concurrency,
          queueSize,
        });
        throw new BulkheadFullError(name, { concurrency, queueSize });
      }
      try {
        return await fn();
      } finally {
        release();
      }
    },
    get active() {
      return active;
    },
    get queued() {
      return queue.length;
    },
    on: (event, listener) => events.on(event, listener),
  };
}
