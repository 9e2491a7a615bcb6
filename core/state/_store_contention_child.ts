/**
 * Child of store_test.ts: opens the KV file `Deno.args[0]` (through
 * `openStore` unless `Deno.args[2]` is "raw"), waits for the file
 * `Deno.args[1]` to exist so every child starts together, then runs four
 * writers of 150 rounds each: a checked read-modify-write of a shared
 * counter (retried while its check fails), a `set` and a `delete`. Prints
 * `done <increments> <errors>` and the first error seen.
 *
 * @module
 */
import { openStore } from "./store.ts";

const [path, go, mode] = Deno.args;
const kv = mode === "raw" ? await Deno.openKv(path) : await openStore(path);
while (!(await Deno.stat(go).then(() => true, () => false))) {
  await new Promise((r) => setTimeout(r, 5));
}
let increments = 0;
let errors = 0;
let first = "";
const writer = async (w: number) => {
  for (let i = 0; i < 150; i++) {
    try {
      for (;;) {
        const n = await kv.get<number>(["n"]);
        const res = await kv.atomic().check(n).set(["n"], (n.value ?? 0) + 1)
          .commit();
        if (res.ok) break;
      }
      increments++;
      await kv.set(["w", Deno.pid, w], i);
      await kv.delete(["w", Deno.pid, w]);
    } catch (err) {
      errors++;
      first ||= (err as Error).message;
    }
  }
};
await Promise.all([0, 1, 2, 3].map(writer));
kv.close();
console.log(`done ${increments} ${errors} ${first}`);
