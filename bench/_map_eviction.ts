/**
 * What evicting a bounded map's oldest entry costs, the obvious way
 * (`map.delete(map.keys().next().value)`) against `deleteOldest`
 * (core/oldest.ts), at 1,000, 10,000 and 100,000 entries; FIFO (insert,
 * evict) and LRU (an entry used again is moved to the end). Prints µs per
 * eviction and checks both ways leave the same map.
 *
 *   deno run bench/_map_eviction.ts
 *
 * @module
 */
import { deleteOldest } from "../core/oldest.ts";

const N = 300_000;
for (const max of [1000, 10_000, 100_000]) {
  const keys = Array.from({ length: N + max }, (_, i) => `k${i}`);
  for (const lru of [false, true]) {
    const run = (evict: (m: Map<string, number>) => void) => {
      const m = new Map<string, number>();
      for (let i = 0; i < max; i++) m.set(keys[i], i);
      const t0 = performance.now();
      for (let i = max; i < N + max; i++) {
        if (lru) {
          const k = keys[i - 1 - (i * 7919) % (max / 2)];
          const v = m.get(k);
          if (v !== undefined) {
            m.delete(k);
            m.set(k, v);
          }
        }
        m.set(keys[i], i);
        if (m.size > max) evict(m);
      }
      return { us: (performance.now() - t0) * 1000 / N, kept: [...m.keys()] };
    };
    const slow = run((m) => m.delete(m.keys().next().value!));
    const fast = run(deleteOldest);
    if (slow.kept.join() !== fast.kept.join()) throw new Error("maps differ");
    console.log(
      `${max} entries, ${lru ? "LRU " : "FIFO"}: keys().next() ${
        slow.us.toFixed(2)
      } µs, deleteOldest ${fast.us.toFixed(2)} µs per eviction`,
    );
  }
}
