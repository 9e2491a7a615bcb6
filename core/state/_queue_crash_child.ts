/**
 * Child of queue_crash_test.ts: enqueues numbered messages (100 in flight)
 * on the KV file `Deno.args[0]` while one consumer claims and acks them,
 * with the commit mode `Deno.args[1]` ("sync" or a window in ms). Each
 * acknowledged enqueue or ack is printed once its call resolved, as
 * `E <seq> ...` or `A <seq> ...` lines, until the parent kills it.
 *
 * @module
 */
import { DurableQueue } from "./queue.ts";
import { openStore } from "./store.ts";

const [path, mode] = Deno.args;
const kv = await openStore(path);
const q = new DurableQueue<number>(kv, "crash", {
  commit: mode === "sync" ? "sync" : { windowMs: Number(mode) },
});
const out = (line: string) =>
  Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
out("ready");
const consumer = (async () => {
  for (;;) {
    const ds = await q.claim(50, 60_000, "crash-child");
    if (ds.length === 0) {
      await q.waitForWork(5);
      continue;
    }
    const errs = await q.ackAll(ds);
    const acked = ds.filter((_, i) => errs[i] === undefined);
    if (acked.length) out("A " + acked.map((d) => d.payload).join(" "));
  }
})();
for (let seq = 0; seq < 1_000_000; seq += 100) {
  const batch = Array.from({ length: 100 }, (_, i) => seq + i);
  await Promise.all(batch.map((n) => q.enqueue(n)));
  out("E " + batch.join(" "));
}
await consumer;
