/**
 * Deno KV caps one atomic commit (1000 mutations, 819,200 bytes of keys and
 * values, 80 KiB of keys): commits whose size grows with the number or size
 * of messages must split, or stay under it by construction.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DurableQueue } from "./queue.ts";
import { queueKeys } from "./keys.ts";
import { openStore } from "./store.ts";

/** A KV file in a fresh temp dir, removed on dispose. */
async function tempStore(): Promise<
  { kv: Deno.Kv; [Symbol.asyncDispose](): Promise<void> }
> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-queue-limits-" });
  const kv = await openStore(join(dir, "q.kv"));
  return {
    kv,
    async [Symbol.asyncDispose]() {
      kv.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** `kv` with its commits counted. */
function countCommits(kv: Deno.Kv): { kv: Deno.Kv; commits: () => number } {
  let n = 0;
  const counted = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = () => {
            n++;
            return commit();
          };
          return op;
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return { kv: counted, commits: () => n };
}

const KIB16 = "x".repeat(16 * 1024);

Deno.test("queue limits: one claim of 800 messages of 16 KiB claims them all, in order, without a too-large commit", async () => {
  await using t = await tempStore();
  const c = countCommits(t.kv);
  // The counting proxy hides the local store: take its batch size.
  const q = new DurableQueue<string>(c.kv, "big", { maxBatch: 100 });
  for (let i = 0; i < 800; i += 40) {
    await q.enqueueMany(
      Array.from({ length: 40 }, (_, k) => ({ payload: `${i + k}:${KIB16}` })),
    );
  }
  let before = c.commits();
  const ds = await q.claim(800, 60_000);
  assert.equal(ds.length, 800);
  // ~13 MB of records: about 18 commits of at most 90 % of KV's 800 KiB.
  const claims = c.commits() - before;
  assert.ok(claims >= 16 && claims <= 26, `${claims} claim commits`);
  assert.deepEqual(
    ds.map((d) => Number(d.payload.split(":")[0])),
    Array.from({ length: 800 }, (_, i) => i),
  );
  const stats = await q.stats();
  assert.equal(stats.ready, 0);
  assert.equal(stats.inflight, 800);
  before = c.commits();
  const errs = await q.ackAll(ds);
  assert.deepEqual(errs.filter((e) => e !== undefined), []);
  const acks = c.commits() - before;
  assert.ok(acks >= 16 && acks <= 26, `${acks} ack commits`);
  assert.equal((await q.stats()).inflight, 0);
  const last = await t.kv.get<{ state: string }>(
    queueKeys("big").msg(ds[799].id),
  );
  assert.equal(last.value?.state, "done");
});
