/**
 * A deterministic simulation of Deno KV for testing the lease elector: one
 * virtual timeline, per-node clocks that run at their own rate and can be
 * paused or crashed, and per-node links to an in-memory KV with latency,
 * lost replies, lost requests and partitions.
 *
 * Everything random comes from a seeded PRNG, and each event's microtasks are
 * drained before the next event, so a seed replays exactly.
 *
 * Model:
 * - A request travels for one latency draw, takes effect on arrival (reads
 *   see every commit applied before), and the reply travels for another.
 * - A commit fault either applies the commit and loses the reply, or loses
 *   the request; both reach the caller as a thrown error, as a broken
 *   connection would. A latency spike past the caller's timeout makes a
 *   commit apply after the caller gave up on it.
 * - A paused node keeps its clocks running (like SIGSTOP or a GC pause) but
 *   runs nothing: its timers and replies are held until it resumes. A crashed
 *   node never runs again; requests it already sent still arrive.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import type { Clock } from "../core/clock.ts";
import type {
  ElectionAtomic,
  ElectionKv,
} from "../core/state/lease_elector.ts";

interface SimEvent {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

/** A scheduled event that can be cancelled. */
export interface SimTimer {
  /** Keeps the event from running (nothing happens if it already ran). */
  cancel(): void;
}

/** Options for {@linkcode Sim.run}. */
export interface SimRunOptions {
  /** Called after each event once its microtasks have drained. */
  afterEvent?: () => void;
  /** Stop as soon as this returns true (checked after each event). */
  stopWhen?: () => boolean;
}

const drain = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The virtual timeline: a priority queue of events ordered by (time, insertion). */
export class Sim {
  /** Global virtual time in ms. */
  now = 0;
  /** Events run so far. */
  events = 0;
  #heap: SimEvent[] = [];
  #seq = 0;

  /** Runs `fn` after `delayMs` of virtual time. */
  at(delayMs: number, fn: () => void): SimTimer {
    const ev: SimEvent = {
      at: this.now + Math.max(0, delayMs),
      seq: this.#seq++,
      fn,
      cancelled: false,
    };
    this.#push(ev);
    return { cancel: () => void (ev.cancelled = true) };
  }

  /**
   * Runs events in order up to `untilMs` (then sets `now` to it), or until
   * `stopWhen` holds. Resolves true if `stopWhen` stopped it.
   */
  async run(untilMs: number, options: SimRunOptions = {}): Promise<boolean> {
    await drain();
    if (options.stopWhen?.()) return true;
    while (this.#heap.length > 0 && this.#heap[0].at <= untilMs) {
      const ev = this.#pop();
      if (ev.cancelled) continue;
      this.now = ev.at;
      this.events++;
      ev.fn();
      await drain();
      options.afterEvent?.();
      if (options.stopWhen?.()) return true;
    }
    this.now = Math.max(this.now, untilMs);
    return false;
  }

  #less(a: SimEvent, b: SimEvent): boolean {
    return a.at < b.at || (a.at === b.at && a.seq < b.seq);
  }

  #push(ev: SimEvent): void {
    const h = this.#heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  #pop(): SimEvent {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && this.#less(h[l], h[m])) m = l;
        if (r < h.length && this.#less(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return top;
  }
}

/** Options for {@linkcode SimClock}. */
export interface SimClockOptions {
  /** Local ms per global ms (clock-rate skew). @default {1} */
  rate?: number;
  /** Wall-clock reading at creation. @default {1_700_000_000_000} */
  wallStart?: number;
}

/** One node's clock on the shared timeline; mono() starts at 0 when created. */
export class SimClock implements Clock {
  /** Local ms per global ms. */
  readonly rate: number;
  #sim: Sim;
  #base: number;
  #wallStart: number;
  #paused = false;
  #crashed = false;
  #held: (() => void)[] = [];

  /** A clock on `sim`'s timeline, starting now. */
  constructor(sim: Sim, options: SimClockOptions = {}) {
    this.#sim = sim;
    this.rate = options.rate ?? 1;
    this.#base = sim.now;
    this.#wallStart = options.wallStart ?? 1_700_000_000_000;
  }

  /** Whether the node is paused. */
  get paused(): boolean {
    return this.#paused;
  }
  /** Whether the node has crashed. */
  get crashed(): boolean {
    return this.#crashed;
  }

  now(): number {
    return this.#wallStart + this.mono();
  }

  mono(): number {
    return (this.#sim.now - this.#base) * this.rate;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        timer.cancel();
        reject(signal!.reason);
      };
      const timer = this.#sim.at(
        Math.max(0, ms) / this.rate,
        () =>
          this.deliver(() => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
          }),
      );
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Runs `fn` on this node now, after it resumes, or never if it crashed. */
  deliver(fn: () => void): void {
    if (this.#crashed) return;
    if (this.#paused) this.#held.push(fn);
    else fn();
  }

  /** Stops running the node's code; its clocks keep going. */
  pause(): void {
    if (!this.#crashed) this.#paused = true;
  }

  /** Runs everything held during the pause, in order. */
  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    const held = this.#held;
    this.#held = [];
    for (const fn of held) fn();
  }

  /** The node never runs again. */
  crash(): void {
    this.#crashed = true;
    this.#paused = false;
    this.#held = [];
  }
}

/** What happens to one commit on a link. */
export type CommitFault = "none" | "applied-then-error" | "lost-with-error";

/** Which request a latency is drawn for. */
export type SimOp = "read" | "commit";
/** Which way a message travels. */
export type SimLeg = "request" | "reply";

/** Faults on one node's link to the KV; change them at any time. */
export interface SimLinkFaults {
  /** One-way latency of each request and each reply, ms. @default {() => 1} */
  latencyMs?: (op: SimOp, leg: SimLeg) => number;
  /** Fate of each commit, decided when it is sent. @default {() => "none"} */
  commitFault?: (mutations: SimMutation[]) => CommitFault;
  /** Whether a read's reply is an error. @default {() => false} */
  readFails?: () => boolean;
  /** Requests sent while true vanish: never applied, never answered. */
  partitioned?: boolean;
}

/** A mutation as the simulated KV records it. */
export type SimMutation =
  | { type: "set"; key: Deno.KvKey; value: unknown }
  | { type: "delete"; key: Deno.KvKey };

interface Stored {
  key: Deno.KvKey;
  value: unknown;
  versionstamp: string;
}

/** The simulated database: strongly consistent, one global versionstamp counter. */
export class SimKv {
  /** The timeline requests travel on. */
  readonly sim: Sim;
  /** Commits applied. */
  commits = 0;
  /** Called after each applied commit, before anyone hears of it. */
  onCommit?: (mutations: SimMutation[], versionstamp: string) => void;
  /** Called for each commit whose checks failed. */
  onRejected?: (mutations: SimMutation[]) => void;
  #store = new Map<string, Stored>();
  #version = 0;

  /** An empty database whose requests travel on `sim`. */
  constructor(sim: Sim) {
    this.sim = sim;
  }

  /** Reads a key instantly (for assertions and setup, not for nodes). */
  get<T = unknown>(key: Deno.KvKey): Deno.KvEntryMaybe<T> {
    const e = this.#store.get(JSON.stringify(key));
    return e
      ? {
        key: e.key,
        value: structuredClone(e.value) as T,
        versionstamp: e.versionstamp,
      }
      : { key, value: null, versionstamp: null };
  }

  /** Applies an atomic operation instantly: all checks pass, or nothing happens. */
  apply(
    checks: Deno.AtomicCheck[],
    mutations: SimMutation[],
  ): Deno.KvCommitResult | Deno.KvCommitError {
    for (const c of checks) {
      const current = this.#store.get(JSON.stringify(c.key));
      if ((current?.versionstamp ?? null) !== c.versionstamp) {
        this.onRejected?.(mutations);
        return { ok: false };
      }
    }
    const versionstamp = (++this.#version).toString(16).padStart(20, "0");
    for (const m of mutations) {
      const id = JSON.stringify(m.key);
      if (m.type === "set") {
        this.#store.set(id, {
          key: m.key,
          value: structuredClone(m.value),
          versionstamp,
        });
      } else this.#store.delete(id);
    }
    this.commits++;
    this.onCommit?.(mutations, versionstamp);
    return { ok: true, versionstamp };
  }

  /** A node's connection, timed by its clock and subject to `faults`. */
  client(clock: SimClock, faults: SimLinkFaults = {}): SimKvClient {
    return new SimKvClient(this, clock, faults);
  }
}

/** One node's connection to a {@linkcode SimKv}. */
export class SimKvClient implements ElectionKv {
  /** Faults applied to requests sent from now on. */
  faults: SimLinkFaults;
  #kv: SimKv;
  #clock: SimClock;

  /** A connection to `kv`; {@linkcode SimKv.client} makes one. */
  constructor(kv: SimKv, clock: SimClock, faults: SimLinkFaults) {
    this.#kv = kv;
    this.#clock = clock;
    this.faults = faults;
  }

  getMany(keys: Deno.KvKey[]): Promise<Deno.KvEntryMaybe<unknown>[]> {
    return this.#exchange("read", (reply) => {
      const fails = this.faults.readFails?.() ?? false;
      const entries = keys.map((k) => this.#kv.get(k));
      reply(() => {
        if (fails) throw new Error("sim: read failed");
        return entries;
      });
    });
  }

  atomic(): SimAtomic {
    return new SimAtomic((checks, mutations) =>
      this.#commit(checks, mutations)
    );
  }

  #commit(
    checks: Deno.AtomicCheck[],
    mutations: SimMutation[],
  ): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    const fault = this.faults.commitFault?.(mutations) ?? "none";
    return this.#exchange("commit", (reply) => {
      const result = fault === "lost-with-error"
        ? undefined
        : this.#kv.apply(checks, mutations);
      reply(() => {
        if (fault !== "none") {
          throw new Error(`sim: connection lost during commit (${fault})`);
        }
        return result!;
      });
    });
  }

  /** Sends a request: `arrive` runs at the KV and hands `reply` the answer. */
  #exchange<T>(
    op: SimOp,
    arrive: (reply: (answer: () => T) => void) => void,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.faults.partitioned) return;
      const sim = this.#kv.sim;
      sim.at(this.#latency(op, "request"), () =>
        arrive((answer) => {
          sim.at(this.#latency(op, "reply"), () =>
            this.#clock.deliver(() => {
              try {
                resolve(answer());
              } catch (err) {
                reject(err);
              }
            }));
        }));
    });
  }

  #latency(op: SimOp, leg: SimLeg): number {
    return Math.max(0.1, this.faults.latencyMs?.(op, leg) ?? 1);
  }
}

/** How a {@linkcode SimAtomic} sends its commit: over a client's link. */
export type SimSend = (
  checks: Deno.AtomicCheck[],
  mutations: SimMutation[],
) => Promise<Deno.KvCommitResult | Deno.KvCommitError>;

/** An atomic operation on the simulated KV. */
export class SimAtomic implements ElectionAtomic {
  #checks: Deno.AtomicCheck[] = [];
  #mutations: SimMutation[] = [];
  #send: SimSend;

  /** An empty operation; {@linkcode SimKvClient.atomic} makes one. */
  constructor(send: SimSend) {
    this.#send = send;
  }
  check(...checks: Deno.AtomicCheck[]): SimAtomic {
    this.#checks.push(...checks);
    return this;
  }
  set(key: Deno.KvKey, value: unknown): SimAtomic {
    this.#mutations.push({ type: "set", key, value: structuredClone(value) });
    return this;
  }
  delete(key: Deno.KvKey): SimAtomic {
    this.#mutations.push({ type: "delete", key });
    return this;
  }
  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return this.#send(this.#checks, this.#mutations);
  }
}
