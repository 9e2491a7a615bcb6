/**
 * What the retrying store costs a process alone on its file: `get`, a checked
 * `atomic().commit()` and `set`, through `openStore` (the proxy that retries
 * "database is locked") against a plain `Deno.openKv` on the same file, in µs
 * per call, four alternated rounds.
 *
 *   deno run --unstable-kv --allow-read --allow-write bench/_store_proxy_cost.ts
 *
 * @module
 */
import { join } from "node:path";
import { openStore } from "../core/state/store.ts";

const N = 5_000;
const dir = await Deno.makeTempDir({ prefix: "plexus-store-cost-" });
const path = join(dir, "cost.kv");
const plain = await Deno.openKv(path);
const retrying = await openStore(path);

const time = async (f: (i: number) => Promise<unknown>) => {
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await f(i);
  return ((performance.now() - t0) * 1000 / N).toFixed(1);
};
const ops = (kv: Deno.Kv) => ({
  get: (i: number) => kv.get(["k", i % 100]),
  commit: async (i: number) => {
    const e = await kv.get(["c", i % 100]);
    return kv.atomic().check(e).set(["c", i % 100], i).commit();
  },
  set: (i: number) => kv.set(["s", i % 100], i),
});
try {
  for (let round = 0; round < 4; round++) {
    const row: string[] = [];
    for (
      const [name, kv] of [["plain", plain], ["openStore", retrying]] as const
    ) {
      const o = ops(kv);
      row.push(
        `${name}: get ${await time(o.get)} · get+checked commit ${await time(
          o.commit,
        )} · set ${await time(o.set)}`,
      );
    }
    console.log(`round ${round + 1}  ${row.join("   |   ")}  (µs per call)`);
  }
} finally {
  plain.close();
  retrying.close();
  await Deno.remove(dir, { recursive: true });
}
