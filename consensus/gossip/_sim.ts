/**
 * A seeded, deterministic network for {@linkcode SwimNode}s: one virtual
 * timeline, per-packet latency and loss, crashed members, and "slow" members
 * whose received packets are handled late (a CPU-starved process whose
 * receive loop lags while its timers still fire).
 *
 * Every random draw comes from seeded PRNGs, so a seed replays exactly. The
 * packets are the real encoded bytes a datagram driver would send, so the
 * byte counts are real.
 *
 * Model: each datagram is dropped with probability `loss`, else delivered
 * after a latency drawn uniformly from `latencyMs`. Stream (push/pull)
 * messages are never dropped: TCP would retransmit them.
 *
 * @module
 */
import type { GossipConfig } from "./config.ts";
import { type MembershipEvent, SwimNode } from "./node.ts";
import { TimerHeap } from "./_heap.ts";
import { mulberry32 } from "../../core/random.ts";

export { mulberry32 };

/** Options for {@linkcode GossipSim}. */
export interface GossipSimOptions {
  /** Members. */
  n: number;
  /** PRNG seed. */
  seed: number;
  /** Probability a datagram is lost. @default {0} */
  loss?: number;
  /** One-way latency range, ms. @default {[1, 5]} */
  latencyMs?: [number, number];
  /** Protocol settings for every member. */
  config?: Partial<GossipConfig>;
  /**
   * `preloaded`: everyone knows everyone at t = 0; `join`: member 0 starts
   * alone and the others join through it over the first second.
   * @default {"preloaded"}
   */
  start?: "preloaded" | "join";
  /** The first `count` members handle each received packet this much later. */
  slow?: { count: number; delayMs: [number, number] };
}

/** One simulated member. */
export interface SimMember {
  index: number;
  node: SwimNode;
  crashed: boolean;
  slow: boolean;
  scheduledAt: number;
}

type SimEvent =
  | { kind: "deliver"; to: number; from: string; data: Uint8Array }
  | { kind: "wake"; index: number }
  | { kind: "call"; fn: () => void };

/**
 * The simulated cluster.
 *
 * @example Usage
 * ```ts
 * import { GossipSim } from "./_sim.ts";
 * const sim = new GossipSim({ n: 5, seed: 1, loss: 0.05 });
 * sim.runUntil(2000);
 * sim.crash(4);
 * sim.runUntil(40_000);
 * sim.members[0].node.member("n4")?.state; // "dead"
 * ```
 */
export class GossipSim {
  /** Virtual time, ms. */
  now = 0;
  /** Events processed. */
  events = 0;
  readonly members: SimMember[] = [];
  /** Called for each membership event as it happens. */
  onEvent?: (member: number, event: MembershipEvent) => void;
  /** Called for each packet sent (before loss is applied). */
  onSend?: (from: number, to: number, data: Uint8Array) => void;
  readonly loss: number;
  #rng: () => number;
  #latency: [number, number];
  #slowDelay: [number, number];
  #heap = new TimerHeap<SimEvent>();
  #byAddr = new Map<string, number>();

  constructor(readonly options: GossipSimOptions) {
    const { n, seed } = options;
    this.loss = options.loss ?? 0;
    this.#rng = mulberry32(seed);
    this.#latency = options.latencyMs ?? [1, 5];
    this.#slowDelay = options.slow?.delayMs ?? [0, 0];
    const slowCount = options.slow?.count ?? 0;
    const all = Array.from({ length: n }, (_, i) => ({
      id: simId(i),
      addr: simAddr(i),
    }));
    const preloaded = (options.start ?? "preloaded") === "preloaded";
    for (let i = 0; i < n; i++) {
      this.#byAddr.set(all[i].addr, i);
      const m: SimMember = {
        index: i,
        node: undefined as unknown as SwimNode,
        crashed: false,
        slow: i < slowCount,
        scheduledAt: Infinity,
      };
      this.members.push(m);
      const create = () => {
        m.node = new SwimNode({
          id: all[i].id,
          addr: all[i].addr,
          now: this.now,
          random: mulberry32((seed * 7919 + i * 104_729 + 1) >>> 0),
          config: options.config,
          members: preloaded ? all : undefined,
        });
        if (!preloaded && i > 0) m.node.join([all[0].addr], this.now);
        this.#after(m);
      };
      if (preloaded || i === 0) create();
      else {
        m.node = new SwimNode({
          id: all[i].id,
          addr: all[i].addr,
          now: 0,
          config: options.config,
        });
        m.crashed = true;
        this.at(1 + (i / n) * 1000, () => {
          m.crashed = false;
          create();
        });
      }
    }
  }

  /** Runs `fn` at virtual time `t`. */
  at(t: number, fn: () => void): void {
    this.#heap.push(t, { kind: "call", fn });
  }

  /** Stops a member for good: it sends and handles nothing more. */
  crash(index: number): void {
    this.members[index].crashed = true;
  }

  /** Runs every event up to and including time `t`. */
  runUntil(t: number, stop?: () => boolean): void {
    const heap = this.#heap;
    while (heap.peekAt() <= t) {
      const { at, value } = heap.pop()!;
      this.now = at;
      this.events++;
      this.#run(value, at);
      if (stop?.()) return;
    }
    this.now = t;
  }

  /** Live (not crashed) members. */
  live(): SimMember[] {
    return this.members.filter((m) => !m.crashed);
  }

  #run(e: SimEvent, at: number): void {
    if (e.kind === "call") {
      e.fn();
      return;
    }
    const m = this.members[e.kind === "wake" ? e.index : e.to];
    if (m.crashed) return;
    if (e.kind === "wake") {
      if (m.scheduledAt !== at) return;
      m.scheduledAt = Infinity;
      m.node.tick(at);
    } else {
      m.node.receive(e.from, e.data, at);
    }
    this.#after(m);
  }

  #after(m: SimMember): void {
    const node = m.node;
    for (const ev of node.drainEvents()) this.onEvent?.(m.index, ev);
    const [lo, hi] = this.#latency;
    for (const p of node.drainPackets()) {
      const to = this.#byAddr.get(p.to);
      if (to === undefined) continue;
      this.onSend?.(m.index, to, p.data);
      if (!p.reliable && this.loss > 0 && this.#rng() < this.loss) continue;
      let delay = lo + (hi - lo) * this.#rng();
      if (this.members[to].slow) {
        const [a, b] = this.#slowDelay;
        delay += a + (b - a) * this.#rng();
      }
      this.#heap.push(this.now + delay, {
        kind: "deliver",
        to,
        from: node.addr,
        data: p.data,
      });
    }
    const next = node.nextTickAt();
    if (next < m.scheduledAt) {
      m.scheduledAt = next;
      this.#heap.push(next, { kind: "wake", index: m.index });
    }
  }
}

/**
 * The id of simulated member `i`.
 *
 * @example Usage
 * ```ts
 * import { simId } from "./_sim.ts";
 * simId(3); // "n3"
 * ```
 */
export function simId(i: number): string {
  return `n${i}`;
}

/**
 * The address of simulated member `i`.
 *
 * @example Usage
 * ```ts
 * import { simAddr } from "./_sim.ts";
 * simAddr(300); // "10.0.1.44:7946"
 * ```
 */
export function simAddr(i: number): string {
  return `10.0.${i >> 8}.${i & 255}:7946`;
}

/**
 * Member index of a simulated id.
 *
 * @example Usage
 * ```ts
 * import { simIndex } from "./_sim.ts";
 * simIndex("n12"); // 12
 * ```
 */
export function simIndex(id: string): number {
  return Number(id.slice(1));
}
