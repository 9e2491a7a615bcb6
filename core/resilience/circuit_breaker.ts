/**
 * Per-endpoint circuit breakers: closed, open and half-open, with
 * Moleculer's defaults (open when at least half of the calls in the last
 * 60 s failed and there were at least 20; try again after 10 s).
 *
 * Time comes from an injected {@linkcode Clock} and the open → half-open
 * step happens when the breaker is next consulted, so a test drives the
 * whole state machine with a `ManualClock` and no timers.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import type { MetricsRegistry } from "../observe/metrics.ts";
import { Emitter, type Unsubscribe } from "./_events.ts";
import { CircuitOpenError } from "./errors.ts";

/** The states of a circuit. */
export type CircuitState = "closed" | "open" | "half-open";

/** Emitted on every state change. */
export interface CircuitEvent {
  /** The endpoint whose circuit changed. */
  endpoint: string;
  /** State left. */
  from: CircuitState;
  /** State entered. */
  to: CircuitState;
  /** Failed calls ÷ calls in the window when the change happened. */
  failureRate: number;
  /** Calls in the window when the change happened. */
  requests: number;
}

/** Event names: the state entered, or `change` for every transition. */
export type CircuitEvents = Record<CircuitState | "change", CircuitEvent>;

/** Options for {@linkcode createCircuitBreakers}. */
export interface CircuitBreakerOptions {
  /** Failure rate (0..1] in the window at which the circuit opens. @default {0.5} */
  threshold?: number;
  /** Fewest calls in the window before the rate is judged. @default {20} */
  minRequests?: number;
  /** Length of the sliding window. @default {60000} */
  windowMs?: number;
  /** Buckets the window slides by. @default {10} */
  windowBuckets?: number;
  /** Time an open circuit refuses calls before it lets trials through. @default {10000} */
  halfOpenAfterMs?: number;
  /**
   * Trial calls let through at once while half-open. A trial never
   * recorded (its caller lost it) frees its slot after `halfOpenAfterMs`.
   * @default {1}
   */
  halfOpenMaxCalls?: number;
  /** Which errors thrown inside `call` count as failures. @default {every error} */
  isFailure?: (err: unknown) => boolean;
  /** Time source (`mono()` is read). @default {systemClock} */
  clock?: Clock;
  /** Registry for `plexus_circuit_*` metrics, labelled by endpoint. */
  metrics?: MetricsRegistry;
}

/** One endpoint's circuit. */
export interface CircuitBreaker {
  /** The endpoint this circuit guards. */
  readonly endpoint: string;
  /** The current state (an open circuit past its wait reads as half-open). */
  readonly state: CircuitState;
  /** Whether a call would be let through now; takes no trial slot. */
  canPass(): boolean;
  /**
   * Lets one call through or throws {@linkcode CircuitOpenError}; while
   * half-open it takes a trial slot that `record` gives back.
   */
  acquire(): void;
  /** Records the outcome of a call that `acquire` let through. */
  record(ok: boolean): void;
  /** `acquire`, run `fn`, `record` its outcome; rethrows what `fn` throws. */
  call<T>(fn: () => Promise<T>): Promise<T>;
  /** Calls and failures in the current window. */
  stats(): { requests: number; failures: number; failureRate: number };
  /** Calls `listener` on `event`; returns a function that stops it. */
  on<K extends keyof CircuitEvents>(
    event: K,
    listener: (e: CircuitEvents[K]) => void,
  ): Unsubscribe;
}

/** Circuits for many endpoints, created on first use. */
export interface CircuitBreakers {
  /** The circuit of `endpoint`. */
  get(endpoint: string): CircuitBreaker;
  /**
   * The candidates whose circuit lets a call through now. Returns the same
   * array when every circuit is closed (the common case costs nothing).
   */
  filter<T extends { readonly id: string }>(
    candidates: readonly T[],
  ): readonly T[];
  /** How many circuits are open or half-open. */
  readonly notClosed: number;
  /** Forgets endpoints not in `keep` and their state gauge (bounded memory and series under churn). */
  prune(keep: Iterable<string>): void;
  /** Calls `listener` on `event`; returns a function that stops it. */
  on<K extends keyof CircuitEvents>(
    event: K,
    listener: (e: CircuitEvents[K]) => void,
  ): Unsubscribe;
}

const STATE_VALUE: Record<CircuitState, number> = {
  closed: 0,
  "half-open": 1,
  open: 2,
};

interface Resolved {
  threshold: number;
  minRequests: number;
  windowMs: number;
  windowBuckets: number;
  halfOpenAfterMs: number;
  halfOpenMaxCalls: number;
  isFailure: (err: unknown) => boolean;
  clock: Clock;
}

function resolve(options: CircuitBreakerOptions): Resolved {
  const o = {
    threshold: 0.5,
    minRequests: 20,
    windowMs: 60_000,
    windowBuckets: 10,
    halfOpenAfterMs: 10_000,
    halfOpenMaxCalls: 1,
    isFailure: () => true,
    clock: systemClock,
    ...options,
  };
  if (!(o.threshold > 0 && o.threshold <= 1)) {
    throw new RangeError(
      `Cannot create circuit breaker: threshold must be in (0, 1], got ${o.threshold}`,
    );
  }
  for (
    const k of [
      "minRequests",
      "windowMs",
      "windowBuckets",
      "halfOpenAfterMs",
      "halfOpenMaxCalls",
    ] as const
  ) {
    if (!Number.isInteger(o[k]) || o[k] < 1) {
      throw new RangeError(
        `Cannot create circuit breaker: ${k} must be a positive integer, got ${
          o[k]
        }`,
      );
    }
  }
  return o;
}

interface Meters {
  state(endpoint: string, s: CircuitState): void;
  forget(endpoint: string): void;
  transition(endpoint: string, to: CircuitState): void;
  rejected(endpoint: string): void;
  result(endpoint: string, ok: boolean): void;
}

function meters(metrics: MetricsRegistry | undefined): Meters | undefined {
  if (!metrics) return undefined;
  const state = metrics.gauge(
    "plexus_circuit_state",
    "Circuit state per endpoint: 0 closed, 1 half-open, 2 open",
  );
  const transitions = metrics.counter(
    "plexus_circuit_transitions_total",
    "Circuit state changes per endpoint, by the state entered",
  );
  const rejected = metrics.counter(
    "plexus_circuit_rejected_total",
    "Calls refused by an open or half-open circuit",
  );
  const results = metrics.counter(
    "plexus_circuit_calls_total",
    "Call outcomes recorded by circuits, by result",
  );
  return {
    state: (endpoint, s) => state.set(STATE_VALUE[s], { endpoint }),
    forget: (endpoint) => state.remove({ endpoint }),
    transition: (endpoint, to) => transitions.inc({ endpoint, state: to }),
    rejected: (endpoint) => rejected.inc({ endpoint }),
    result: (endpoint, ok) =>
      results.inc({ endpoint, result: ok ? "success" : "failure" }),
  };
}

class Breaker implements CircuitBreaker {
  readonly endpoint: string;
  #o: Resolved;
  #events: Emitter<CircuitEvents>;
  #meters: Meters | undefined;
  #onChange: (from: CircuitState, to: CircuitState) => void;
  #state: CircuitState = "closed";
  #openedAt = 0;
  #trials = 0;
  #trialAt = 0;
  #bucketMs: number;
  // Sliding window: slot i holds the counts of bucket number #epochs[i].
  #epochs: number[];
  #requests: number[];
  #failures: number[];

  constructor(
    endpoint: string,
    o: Resolved,
    events: Emitter<CircuitEvents>,
    m: Meters | undefined,
    onChange: (from: CircuitState, to: CircuitState) => void,
  ) {
    this.endpoint = endpoint;
    this.#o = o;
    this.#events = events;
    this.#meters = m;
    this.#onChange = onChange;
    this.#bucketMs = o.windowMs / o.windowBuckets;
    this.#epochs = new Array(o.windowBuckets).fill(-Infinity);
    this.#requests = new Array(o.windowBuckets).fill(0);
    this.#failures = new Array(o.windowBuckets).fill(0);
    m?.state(endpoint, "closed");
  }

  get state(): CircuitState {
    this.#maybeHalfOpen();
    return this.#state;
  }

  canPass(): boolean {
    this.#maybeHalfOpen();
    if (this.#state === "closed") return true;
    if (this.#state === "open") return false;
    if (
      this.#trials >= this.#o.halfOpenMaxCalls &&
      this.#o.clock.mono() - this.#trialAt >= this.#o.halfOpenAfterMs
    ) this.#trials = 0;
    return this.#trials < this.#o.halfOpenMaxCalls;
  }

  acquire(): void {
    if (!this.canPass()) {
      this.#meters?.rejected(this.endpoint);
      throw new CircuitOpenError(
        this.endpoint,
        this.#state === "open"
          ? {
            state: "open",
            retryInMs: this.#openedAt + this.#o.halfOpenAfterMs -
              this.#o.clock.mono(),
          }
          : { state: "half-open" },
      );
    }
    if (this.#state === "half-open") {
      this.#trials++;
      this.#trialAt = this.#o.clock.mono();
    }
  }

  record(ok: boolean): void {
    this.#meters?.result(this.endpoint, ok);
    this.#maybeHalfOpen();
    if (this.#state === "half-open") {
      if (this.#trials > 0) this.#trials--;
      if (ok) {
        this.#reset();
        this.#transition("closed");
      } else {
        this.#open();
      }
      return;
    }
    this.#count(ok);
    if (this.#state === "closed" && !ok) {
      const { requests, failureRate } = this.stats();
      if (
        requests >= this.#o.minRequests && failureRate >= this.#o.threshold
      ) this.#open();
    }
  }

  async call<T>(fn: () => Promise<T>): Promise<T> {
    this.acquire();
    let result: T;
    try {
      result = await fn();
    } catch (err) {
      this.record(!this.#o.isFailure(err));
      throw err;
    }
    this.record(true);
    return result;
  }

  stats(): { requests: number; failures: number; failureRate: number } {
    const oldest = Math.floor(this.#o.clock.mono() / this.#bucketMs) -
      this.#o.windowBuckets;
    let requests = 0;
    let failures = 0;
    for (let i = 0; i < this.#epochs.length; i++) {
      if (this.#epochs[i] > oldest) {
        requests += this.#requests[i];
        failures += this.#failures[i];
      }
    }
    return {
      requests,
      failures,
      failureRate: requests ? failures / requests : 0,
    };
  }

  /** Calls `listener` on `event`; returns a function that stops it. */
  on<K extends keyof CircuitEvents>(
    event: K,
    listener: (e: CircuitEvents[K]) => void,
  ): Unsubscribe {
    return this.#events.on(event, (e) => {
      if (e.endpoint === this.endpoint) listener(e);
    });
  }

  #count(ok: boolean): void {
    const epoch = Math.floor(this.#o.clock.mono() / this.#bucketMs);
    const slot = epoch % this.#o.windowBuckets;
    if (this.#epochs[slot] !== epoch) {
      this.#epochs[slot] = epoch;
      this.#requests[slot] = 0;
      this.#failures[slot] = 0;
    }
    this.#requests[slot]++;
    if (!ok) this.#failures[slot]++;
  }

  #reset(): void {
    this.#epochs.fill(-Infinity);
  }

  #open(): void {
    this.#openedAt = this.#o.clock.mono();
    this.#trials = 0;
    this.#transition("open");
  }

  #maybeHalfOpen(): void {
    if (
      this.#state === "open" &&
      this.#o.clock.mono() - this.#openedAt >= this.#o.halfOpenAfterMs
    ) {
      this.#trials = 0;
      this.#transition("half-open");
    }
  }

  #transition(to: CircuitState): void {
    const from = this.#state;
    if (from === to) return;
    this.#state = to;
    this.#onChange(from, to);
    this.#meters?.state(this.endpoint, to);
    this.#meters?.transition(this.endpoint, to);
    const { requests, failureRate } = this.stats();
    const event: CircuitEvent = {
      endpoint: this.endpoint,
      from,
      to,
      failureRate,
      requests,
    };
    this.#events.emit(to, event);
    this.#events.emit("change", event);
  }
}

/**
 * Creates a set of per-endpoint circuit breakers sharing one configuration,
 * event stream and metrics.
 *
 * @example Usage
 * ```ts
 * import { createCircuitBreakers } from "./circuit_breaker.ts";
 * import { ManualClock } from "../clock.ts";
 * const clock = new ManualClock();
 * const breakers = createCircuitBreakers({ minRequests: 4, clock });
 * const opened: string[] = [];
 * breakers.on("open", (e) => opened.push(e.endpoint));
 * for (let i = 0; i < 4; i++) breakers.get("node-2").record(false);
 * opened; // ["node-2"]
 * breakers.filter([{ id: "node-1" }, { id: "node-2" }]); // [{ id: "node-1" }]
 * await clock.advance(10_000);
 * breakers.get("node-2").state; // "half-open"
 * ```
 */
export function createCircuitBreakers(
  options: CircuitBreakerOptions = {},
): CircuitBreakers {
  const o = resolve(options);
  const m = meters(options.metrics);
  const events = new Emitter<CircuitEvents>();
  const breakers = new Map<string, Breaker>();
  let notClosed = 0;
  const onChange = (from: CircuitState, to: CircuitState) => {
    if (from === "closed") notClosed++;
    else if (to === "closed") notClosed--;
  };
  const get = (endpoint: string): Breaker => {
    let b = breakers.get(endpoint);
    if (!b) {
      breakers.set(endpoint, b = new Breaker(endpoint, o, events, m, onChange));
    }
    return b;
  };
  return {
    get,
    filter(candidates) {
      if (notClosed === 0) return candidates;
      return candidates.filter((c) => breakers.get(c.id)?.canPass() ?? true);
    },
    get notClosed() {
      return notClosed;
    },
    prune(keep) {
      const wanted = new Set(keep);
      for (const [id, b] of breakers) {
        if (wanted.has(id)) continue;
        if (b.state !== "closed") notClosed--;
        breakers.delete(id);
        m?.forget(id);
      }
    },
    on: (event, listener) => events.on(event, listener),
  };
}
