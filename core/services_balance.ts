/**
 * The node picks of service calls when no balancer plugin is loaded for
 * them (docs/services.md): a call with an affinity key goes to the node
 * rendezvous hashing ranks first for the key (a consistent hash: a node
 * joining or leaving moves only the keys it gains or held), and any other
 * call to the cheaper of two random nodes, where the cost is the node's
 * peak-EWMA latency times its calls in flight plus one (P2C, as
 * `plugins/balancers/p2c_ewma.ts` does for the `p2c-ewma` plugin). Both
 * implement the {@linkcode Balancer} contract, so the node puts circuit
 * breakers in front of them like any other.
 *
 * @module
 */
import type {
  Balancer,
  Candidate,
  Outcome,
  PickContext,
} from "./contracts/balancer.ts";

/** 32-bit FNV-1a of `s`, mixed (murmur3's finaliser) so near keys spread. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Rendezvous (highest random weight) hashing: the candidate whose
 * `hash(key|id)` is highest; without a key, the first candidate.
 *
 * @example Usage
 * ```ts
 * import { createRendezvous } from "./services_balance.ts";
 * const hrw = createRendezvous();
 * const nodes = [{ id: "a" }, { id: "b" }, { id: "c" }];
 * const first = hrw.pick(nodes, { key: "customer-7" })!.id;
 * hrw.pick(nodes, { key: "customer-7" })!.id === first; // true
 * ```
 */
export function createRendezvous(): Balancer {
  return {
    name: "rendezvous",
    pick<C extends Candidate>(candidates: readonly C[], ctx?: PickContext) {
      if (candidates.length <= 1 || ctx?.key === undefined) {
        return candidates[0];
      }
      let best = candidates[0];
      let top = -1;
      for (const c of candidates) {
        const h = hash(`${ctx.key}|${c.id}`);
        if (h > top || (h === top && c.id < best.id)) {
          top = h;
          best = c;
        }
      }
      return best;
    },
    report() {},
  };
}

/** Options of {@linkcode createP2c}. */
export interface P2cOptions {
  /** Time constant of the latency EWMA, ms. @default {2000} */
  decayMs?: number;
  /** Uniform numbers in [0, 1). @default {Math.random} */
  random?: () => number;
  /** Millisecond clock. @default {performance.now} */
  now?: () => number;
}

/**
 * Power of two choices over peak-EWMA latency × (in flight + 1): a node
 * that turns slow is avoided at once (a sample above the average replaces
 * it) and trusted again as the average decays; a failure counts double its
 * latency.
 *
 * @example Usage
 * ```ts
 * import { createP2c } from "./services_balance.ts";
 * const p2c = createP2c();
 * const nodes = [{ id: "fast" }, { id: "slow" }];
 * p2c.report("slow", { ok: true, latencyMs: 500 });
 * p2c.report("fast", { ok: true, latencyMs: 1 });
 * p2c.pick(nodes)!.id; // "fast"
 * ```
 */
export function createP2c(options: P2cOptions = {}): Balancer {
  const decayMs = options.decayMs ?? 2000;
  const random = options.random ?? Math.random;
  const now = options.now ?? (() => performance.now());
  const stats = new Map<
    string,
    { ewma: number; at: number; inflight: number }
  >();
  const stat = (id: string) => {
    let s = stats.get(id);
    if (!s) stats.set(id, s = { ewma: 0, at: now(), inflight: 0 });
    return s;
  };
  const cost = (id: string) => {
    const s = stats.get(id);
    if (!s) return 0;
    const decayed = s.ewma * Math.exp(-(now() - s.at) / decayMs);
    return (decayed + 0.001) * (s.inflight + 1);
  };
  return {
    name: "p2c",
    pick<C extends Candidate>(candidates: readonly C[]) {
      const n = candidates.length;
      if (n === 0) return undefined;
      let picked = candidates[0];
      if (n > 1) {
        const i = Math.floor(random() * n);
        let j = Math.floor(random() * (n - 1));
        if (j >= i) j++;
        const a = candidates[i];
        const b = candidates[j];
        picked = cost(a.id) <= cost(b.id) ? a : b;
      }
      stat(picked.id).inflight++;
      return picked;
    },
    report(endpoint: string, outcome: Outcome) {
      const s = stat(endpoint);
      if (s.inflight > 0) s.inflight--;
      const t = now();
      const sample = outcome.ok ? outcome.latencyMs : outcome.latencyMs * 2;
      const w = Math.exp(-Math.max(0, t - s.at) / decayMs);
      s.ewma = sample > s.ewma ? sample : s.ewma * w + sample * (1 - w);
      s.at = t;
    },
  };
}
