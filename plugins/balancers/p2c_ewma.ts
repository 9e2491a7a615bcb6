/**
 * Power of two choices with peak-EWMA latency (Finagle's `P2CPeakEwma`,
 * Envoy's least-request with two choices): each pick draws two distinct
 * candidates at random and takes the cheaper, where
 * `cost = ewma(latency) × (in flight + 1) ÷ weight`.
 *
 * The EWMA is time-based (`w = e^(−Δt/decayMs)`), so it smooths the same
 * whatever the call rate, and "peak": a sample above the average replaces
 * it at once, so a node that turns slow is avoided at once and trusted
 * again gradually. Read-time decay lets an endpoint nobody picks drift back
 * towards zero cost and get probed again. An endpoint with no sample yet
 * costs 0 while idle (so it is tried) and a large penalty while its first
 * calls are in flight (so a burst is not all sent to it). A failure counts
 * as `max(latency, ewma) × failurePenalty`, so an endpoint failing fast
 * does not look fast.
 *
 * The plugin (`builtin:balancers/p2c-ewma`) provides `balancer:p2c-ewma`.
 *
 * @module
 */
import { z } from "zod";
import { balancerPlugin } from "../../core/balancer_plugin.ts";
import {
  type Balancer,
  type Candidate,
  type Outcome,
  type RandomSource,
  seededRandom,
  weightOf,
} from "./strategy.ts";

/** Options for {@linkcode createP2cEwma}. */
export interface P2cEwmaOptions {
  /** Draws the two choices. @default {Math.random} */
  random?: RandomSource;
  /** Milliseconds clock the decay runs on. @default {performance.now} */
  now?: () => number;
  /** Time constant of the EWMA, in ms. @default {10000} */
  decayMs?: number;
  /** Factor a failed call's latency is multiplied by. @default {2} */
  failurePenalty?: number;
}

/** A P2C-EWMA balancer, which can tell what it has learned. */
export interface P2cEwma extends Balancer {
  /** Current (decayed) latency estimate of `endpoint` in ms; undefined before its first report. */
  latency(endpoint: string): number | undefined;
  /** Picks of `endpoint` not yet reported. */
  inflight(endpoint: string): number;
}

/** What is known of one endpoint; one map lookup per pick or report. */
interface Slot {
  /** Latency EWMA in ms as of `stamp`; NaN before the first report. */
  ewma: number;
  stamp: number;
  inflight: number;
}

// Cost of an endpoint with no latency sample yet and calls in flight.
const PENALTY = 2 ** 40;

/**
 * Creates a P2C peak-EWMA balancer.
 *
 * @example Usage
 * ```ts
 * import { createP2cEwma } from "./p2c_ewma.ts";
 * const balancer = createP2cEwma();
 * const nodes = [{ id: "fast" }, { id: "slow" }];
 * balancer.pick(nodes);
 * balancer.report("fast", { ok: true, latencyMs: 5 });
 * balancer.pick(nodes);
 * balancer.report("slow", { ok: true, latencyMs: 80 });
 * balancer.pick(nodes)?.id; // "fast"
 * ```
 */
export function createP2cEwma(options: P2cEwmaOptions = {}): P2cEwma {
  const random = options.random ?? Math.random;
  const now = options.now ?? performance.now.bind(performance);
  const decayMs = options.decayMs ?? 10_000;
  const failurePenalty = options.failurePenalty ?? 2;
  if (!(decayMs > 0)) {
    throw new RangeError(
      `Cannot create p2c-ewma balancer: decayMs must be > 0, got ${decayMs}`,
    );
  }
  if (!(failurePenalty >= 1)) {
    throw new RangeError(
      `Cannot create p2c-ewma balancer: failurePenalty must be ≥ 1, got ${failurePenalty}`,
    );
  }
  let slots = new Map<string, Slot>();
  let pruneAt = 1024;

  const slotOf = (id: string): Slot => {
    let slot = slots.get(id);
    if (!slot) {
      if (slots.size >= pruneAt) {
        forgetIdle();
        pruneAt = Math.max(1024, 2 * slots.size);
      }
      slots.set(id, slot = { ewma: NaN, stamp: 0, inflight: 0 });
    }
    return slot;
  };
  // Past a size that doubles each time, endpoints with nothing in flight are
  // dropped (they start afresh if they come back), so churn stays bounded.
  const forgetIdle = () => {
    const kept = new Map<string, Slot>();
    for (const [id, slot] of slots) if (slot.inflight > 0) kept.set(id, slot);
    slots = kept;
  };
  const decayed = (s: Slot, t: number): number => {
    const dt = t - s.stamp;
    return dt > 0 ? s.ewma * Math.exp(-dt / decayMs) : s.ewma;
  };
  const cost = (c: Candidate, t: number): number => {
    const s = slots.get(c.id);
    if (!s) return 0;
    if (s.ewma !== s.ewma) return s.inflight === 0 ? 0 : PENALTY + s.inflight;
    return decayed(s, t) * (s.inflight + 1) / weightOf(c);
  };

  return {
    name: "p2c-ewma",
    pick<C extends Candidate>(candidates: readonly C[]): C | undefined {
      const n = candidates.length;
      if (n === 0) return undefined;
      let chosen = candidates[0];
      if (n > 1) {
        const i = Math.floor(random() * n);
        let j = Math.floor(random() * (n - 1));
        if (j >= i) j++;
        const t = now();
        const a = candidates[i];
        const b = candidates[j];
        chosen = cost(b, t) < cost(a, t) ? b : a;
      }
      slotOf(chosen.id).inflight++;
      return chosen;
    },
    report(endpoint: string, outcome: Outcome): void {
      const s = slots.get(endpoint);
      if (!s) return;
      if (s.inflight > 0) s.inflight--;
      const t = now();
      const latency = Math.max(0, outcome.latencyMs);
      if (s.ewma !== s.ewma) {
        s.ewma = outcome.ok ? latency : latency * failurePenalty;
        s.stamp = t;
        return;
      }
      const current = decayed(s, t);
      const sample = outcome.ok
        ? latency
        : Math.max(latency, current) * failurePenalty;
      if (sample > current) {
        s.ewma = sample;
      } else {
        const w = Math.exp(-Math.max(0, t - s.stamp) / decayMs);
        s.ewma = s.ewma * w + sample * (1 - w);
      }
      s.stamp = t;
    },
    latency(endpoint) {
      const s = slots.get(endpoint);
      return s && s.ewma === s.ewma ? decayed(s, now()) : undefined;
    },
    inflight: (endpoint) => slots.get(endpoint)?.inflight ?? 0,
  };
}

/** The P2C peak-EWMA plugin. */
export default balancerPlugin({
  name: "p2c-ewma",
  options: {
    seed: z.number().int().optional(),
    decayMs: z.number().positive().max(3_600_000).default(10_000),
    failurePenalty: z.number().min(1).max(1000).default(2),
  },
  create: ({ seed, decayMs, failurePenalty }) =>
    createP2cEwma({
      random: seed === undefined ? undefined : seededRandom(seed),
      decayMs,
      failurePenalty,
    }),
});
