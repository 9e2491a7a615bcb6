/**
 * Active health checks: probe every endpoint on an interval, each probe
 * under a timeout, and mark an endpoint down after `unhealthyThreshold`
 * failures in a row and up again after `healthyThreshold` successes in a
 * row (Envoy's and nginx's `fails`/`passes`). Balancers leave down
 * endpoints out (`filter`); circuit breakers catch what the probes miss.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import type { MetricsRegistry } from "../observe/metrics.ts";
import { Emitter, type Unsubscribe } from "./_events.ts";
import { createTimeout } from "./timeout.ts";

/** An endpoint's health. */
export type HealthStatus = "up" | "down";

/** Emitted when an endpoint changes status. */
export interface HealthEvent {
  /** The endpoint probed. */
  endpoint: string;
  /** Its new status. */
  status: HealthStatus;
  /** Why the last probe failed, when it did. */
  error?: unknown;
}

/** Event names: the status entered. */
export type HealthEvents = Record<HealthStatus, HealthEvent>;

/** Options for {@linkcode createHealthChecks}. */
export interface HealthCheckOptions {
  /** Probes one endpoint: resolving means healthy. Should honour `signal`. */
  probe: (endpoint: string, signal: AbortSignal) => Promise<unknown>;
  /** Time between rounds of probes. @default {5000} */
  intervalMs?: number;
  /** Longest a probe may take before it counts as failed. @default {2000} */
  timeoutMs?: number;
  /** Failures in a row that mark an endpoint down. @default {3} */
  unhealthyThreshold?: number;
  /** Successes in a row that mark a down endpoint up again. @default {2} */
  healthyThreshold?: number;
  /** Time source for the interval and the probe timeout. @default {systemClock} */
  clock?: Clock;
  /** Registry for the `plexus_endpoint_up` gauge. */
  metrics?: MetricsRegistry;
}

/** Health checks over a changing set of endpoints. */
export interface HealthChecks {
  /** Replaces the endpoints probed; new ones start up, removed ones are forgotten. */
  track(endpoints: Iterable<string>): void;
  /** Probes every tracked endpoint once, now, and applies the results. */
  check(): Promise<void>;
  /** Starts probing every `intervalMs` until `stop`. */
  start(): void;
  /** Stops probing and waits for the round in progress. */
  stop(): Promise<void>;
  /** The endpoint's status; endpoints never tracked are up. */
  status(endpoint: string): HealthStatus;
  /** The candidates that are up; the same array when all are. */
  filter<T extends { readonly id: string }>(
    candidates: readonly T[],
  ): readonly T[];
  /** Calls `listener` on `event`; returns a function that stops it. */
  on<K extends keyof HealthEvents>(
    event: K,
    listener: (e: HealthEvents[K]) => void,
  ): Unsubscribe;
}

interface Track {
  status: HealthStatus;
  fails: number;
  passes: number;
}

/**
 * Creates health checks.
 *
 * @example Usage
 * ```ts
 * import { createHealthChecks } from "./health_check.ts";
 * const down = new Set(["node-2"]);
 * const checks = createHealthChecks({
 *   probe: (id) => down.has(id) ? Promise.reject(new Error("refused")) : Promise.resolve(),
 *   unhealthyThreshold: 1,
 * });
 * checks.track(["node-1", "node-2"]);
 * await checks.check();
 * checks.filter([{ id: "node-1" }, { id: "node-2" }]); // [{ id: "node-1" }]
 * ```
 */
export function createHealthChecks(options: HealthCheckOptions): HealthChecks {
  const o = {
    intervalMs: 5000,
    timeoutMs: 2000,
    unhealthyThreshold: 3,
    healthyThreshold: 2,
    clock: systemClock,
    ...options,
  };
  for (
    const k of [
      "intervalMs",
      "timeoutMs",
      "unhealthyThreshold",
      "healthyThreshold",
    ] as const
  ) {
    if (!Number.isInteger(o[k]) || o[k] < 1) {
      throw new RangeError(
        `Cannot create health checks: ${k} must be a positive integer, got ${
          o[k]
        }`,
      );
    }
  }
  const events = new Emitter<HealthEvents>();
  const gauge = o.metrics?.gauge(
    "plexus_endpoint_up",
    "Whether an endpoint passes its health checks (1) or not (0)",
  );
  const timeout = createTimeout({ name: "health probe", clock: o.clock });
  let tracks = new Map<string, Track>();
  let down = 0;
  let loop: Promise<void> | undefined;
  let stopper: AbortController | undefined;

  const apply = (endpoint: string, t: Track, ok: boolean, error?: unknown) => {
    if (ok) {
      t.fails = 0;
      t.passes++;
      if (t.status === "down" && t.passes >= o.healthyThreshold) {
        t.status = "up";
        down--;
        gauge?.set(1, { endpoint });
        events.emit("up", { endpoint, status: "up" });
      }
    } else {
      t.passes = 0;
      t.fails++;
      if (t.status === "up" && t.fails >= o.unhealthyThreshold) {
        t.status = "down";
        down++;
        gauge?.set(0, { endpoint });
        events.emit("down", { endpoint, status: "down", error });
      }
    }
  };

  const check = async (): Promise<void> => {
    const round = [...tracks];
    await Promise.all(round.map(async ([endpoint, t]) => {
      let ok = true;
      let error: unknown;
      try {
        await timeout.run((signal) => o.probe(endpoint, signal), o.timeoutMs);
      } catch (err) {
        ok = false;
        error = err;
      }
      // An endpoint untracked while its probe ran is not resurrected.
      if (tracks.get(endpoint) === t) apply(endpoint, t, ok, error);
    }));
  };

  return {
    track(endpoints) {
      const next = new Map<string, Track>();
      for (const id of endpoints) {
        const t = tracks.get(id) ?? { status: "up", fails: 0, passes: 0 };
        if (!tracks.has(id)) gauge?.set(1, { endpoint: id });
        next.set(id, t);
      }
      for (const [id, t] of tracks) {
        if (next.has(id)) continue;
        if (t.status === "down") down--;
        gauge?.remove({ endpoint: id });
      }
      tracks = next;
    },
    check,
    start() {
      if (loop) return;
      const ctl = stopper = new AbortController();
      loop = (async () => {
        while (!ctl.signal.aborted) {
          await check();
          await o.clock.sleep(o.intervalMs, ctl.signal).catch(() => {});
        }
      })();
    },
    async stop() {
      stopper?.abort();
      await loop;
      loop = undefined;
      stopper = undefined;
    },
    status: (endpoint) => tracks.get(endpoint)?.status ?? "up",
    filter(candidates) {
      if (down === 0) return candidates;
      return candidates.filter((c) => tracks.get(c.id)?.status !== "down");
    },
    on: (event, listener) => events.on(event, listener),
  };
}
