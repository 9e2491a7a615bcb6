/**
 * Consistent hashing on a ring with virtual nodes, with an optional bounded
 * load ("Consistent Hashing with Bounded Loads", Mirrokni, Thorup and
 * Zadimoghaddam 2016; HAProxy's `hash-balance-factor`).
 *
 * Each candidate owns `vnodes × weight` points on a 32-bit ring; a key goes
 * to the owner of the first point at or after the key's hash. When a
 * candidate joins or leaves, only the keys on its arcs move: about 1/n of
 * them. With `boundedLoad: c` no candidate takes a call while it has
 * `ceil(c × (in flight + 1) × weight ÷ total weight)` or more in flight;
 * the key walks on round the ring to the next candidate with room, so hot
 * keys spill over instead of overloading one node.
 *
 * Without `ctx.key` the pick falls back to round-robin. The plugin
 * (`builtin:balancers/consistent-hash`) provides `balancer:consistent-hash`.
 *
 * @module
 */
import { z } from "zod";
import { Inflight } from "./_inflight.ts";
import { balancerPlugin } from "../../core/balancer_plugin.ts";
import {
  type Balancer,
  type Candidate,
  type PickContext,
  weightOf,
} from "./strategy.ts";
import { deleteOldest } from "../../core/oldest.ts";

/** Options for {@linkcode createConsistentHash}. */
export interface ConsistentHashOptions {
  /** Ring points per unit of weight. @default {160} */
  vnodes?: number;
  /** Load factor c ≥ 1 to bound each candidate's share of calls in flight; off when absent. */
  boundedLoad?: number;
  /** 32-bit hash of keys and ring points. @default {hash32} */
  hash?: (value: string) => number;
}

/** A consistent-hash balancer. */
export interface ConsistentHash extends Balancer {
  /** The candidate owning `key` on the ring, ignoring load; counts nothing. */
  locate<C extends Candidate>(
    candidates: readonly C[],
    key: string,
  ): C | undefined;
  /** Picks of `endpoint` not yet reported. */
  inflight(endpoint: string): number;
}

/**
 * FNV-1a over UTF-16 code units with MurmurHash3's 32-bit finalizer (FNV
 * alone clusters similar short strings such as `node-1#7`).
 *
 * @example Usage
 * ```ts
 * import { hash32 } from "./consistent_hash.ts";
 * hash32("user-42") === hash32("user-42"); // true
 * hash32("user-42") !== hash32("user-43"); // true
 * ```
 */
export function hash32(value: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < value.length; i++) {
    h = Math.imul(h ^ value.charCodeAt(i), 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

interface Ring {
  points: Uint32Array;
  /** Index into the candidates the ring was built from. */
  owners: Uint32Array;
  weights: Float64Array;
  totalWeight: number;
}

function signatureOf(candidates: readonly Candidate[]): string {
  let s = "";
  for (const c of candidates) s += `${c.id}\u0000${c.weight ?? 1}\u0000`;
  return s;
}

/**
 * Creates a consistent-hash balancer.
 *
 * @example Usage
 * ```ts
 * import { createConsistentHash } from "./consistent_hash.ts";
 * const ring = createConsistentHash({ boundedLoad: 1.25 });
 * const nodes = [{ id: "a" }, { id: "b" }, { id: "c" }];
 * const owner = ring.pick(nodes, { key: "user-42" })!;
 * ring.report(owner.id, { ok: true, latencyMs: 2 });
 * ring.pick(nodes, { key: "user-42" })?.id === owner.id; // true
 * ```
 */
export function createConsistentHash(
  options: ConsistentHashOptions = {},
): ConsistentHash {
  const vnodes = options.vnodes ?? 160;
  const factor = options.boundedLoad;
  const hash = options.hash ?? hash32;
  if (!Number.isInteger(vnodes) || vnodes < 1 || vnodes > 10_000) {
    throw new RangeError(
      `Cannot create consistent-hash balancer: vnodes must be an integer in [1, 10000], got ${vnodes}`,
    );
  }
  if (factor !== undefined && !(factor >= 1 && factor < Infinity)) {
    throw new RangeError(
      `Cannot create consistent-hash balancer: boundedLoad must be a finite number ≥ 1, got ${factor}`,
    );
  }
  const inflight = new Inflight();
  let lastCandidates: readonly Candidate[] | undefined;
  let ring: Ring | undefined;
  // A few recent rings by signature, so pools that alternate (or a list
  // rebuilt per call with the same members) do not rebuild every pick.
  const rings = new Map<string, Ring>();
  let next = 0;

  const build = (candidates: readonly Candidate[]): Ring => {
    if (candidates === lastCandidates && ring) return ring;
    const signature = signatureOf(candidates);
    lastCandidates = candidates;
    const cached = rings.get(signature);
    if (cached) return ring = cached;
    const weights = new Float64Array(candidates.length);
    let count = 0;
    let totalWeight = 0;
    for (let i = 0; i < candidates.length; i++) {
      weights[i] = weightOf(candidates[i]);
      totalWeight += weights[i];
      count += Math.max(1, Math.round(vnodes * weights[i]));
    }
    const entries = new Array<[number, number]>(count);
    let k = 0;
    for (let i = 0; i < candidates.length; i++) {
      const id = candidates[i].id;
      const points = Math.max(1, Math.round(vnodes * weights[i]));
      for (let v = 0; v < points; v++) entries[k++] = [hash(`${id}#${v}`), i];
    }
    // Ties (hash collisions) are ordered by id so the ring does not depend
    // on the order candidates were listed in.
    entries.sort((x, y) =>
      x[0] - y[0] ||
      (candidates[x[1]].id < candidates[y[1]].id ? -1 : 1)
    );
    const ringPoints = new Uint32Array(count);
    const owners = new Uint32Array(count);
    for (let i = 0; i < count; i++) {
      ringPoints[i] = entries[i][0];
      owners[i] = entries[i][1];
    }
    ring = { points: ringPoints, owners, weights, totalWeight };
    rings.set(signature, ring);
    if (rings.size > 8) deleteOldest(rings);
    return ring;
  };

  /** Index of the first ring point at or after `h`, wrapping to 0. */
  const seek = (points: Uint32Array, h: number): number => {
    let lo = 0;
    let hi = points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (points[mid] < h) lo = mid + 1;
      else hi = mid;
    }
    return lo === points.length ? 0 : lo;
  };

  const locate = <C extends Candidate>(
    candidates: readonly C[],
    key: string,
  ): C | undefined => {
    if (candidates.length < 2) return candidates[0];
    const r = build(candidates);
    return candidates[r.owners[seek(r.points, hash(key))]];
  };

  const pickBounded = <C extends Candidate>(
    candidates: readonly C[],
    key: string,
  ): C => {
    const r = build(candidates);
    const limit = factor! * (inflight.total + 1) / r.totalWeight;
    const start = seek(r.points, hash(key));
    const len = r.points.length;
    for (let step = 0; step < len; step++) {
      const i = r.owners[(start + step) % len];
      const c = candidates[i];
      if (inflight.get(c.id) < Math.ceil(limit * r.weights[i])) return c;
    }
    // Unreachable for factor ≥ 1: the capacities add up to more than the load.
    return candidates[r.owners[start]];
  };

  return {
    name: "consistent-hash",
    pick<C extends Candidate>(
      candidates: readonly C[],
      ctx?: PickContext,
    ): C | undefined {
      const n = candidates.length;
      if (n === 0) return undefined;
      let chosen: C;
      if (ctx?.key === undefined) {
        const i = next < n ? next : next % n;
        next = i + 1;
        chosen = candidates[i];
      } else if (n === 1) {
        chosen = candidates[0];
      } else if (factor === undefined) {
        chosen = locate(candidates, ctx.key)!;
      } else {
        chosen = pickBounded(candidates, ctx.key);
      }
      inflight.start(chosen.id);
      return chosen;
    },
    report(endpoint: string): void {
      inflight.end(endpoint);
    },
    locate,
    inflight: (endpoint) => inflight.get(endpoint),
  };
}

/** The consistent-hash plugin. */
export default balancerPlugin({
  name: "consistent-hash",
  options: {
    vnodes: z.number().int().min(1).max(10_000).default(160),
    boundedLoad: z.number().min(1).max(100).optional(),
  },
  create: (o) => createConsistentHash(o),
});
