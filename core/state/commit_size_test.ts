import assert from "node:assert/strict";
import { CommitSize, keyBytes, KV_COMMIT_LIMITS } from "./commit_size.ts";
import { openStore } from "./store.ts";

/** Values of several shapes, each a different share of KV's value limit. */
const shapes: [string, (i: number) => unknown][] = [
  ["ascii strings", (i) => "x".repeat(9_000 + i)],
  ["two-byte strings", (i) => "é€".repeat(4_000 + i)],
  ["byte arrays", (i) => new Uint8Array(20_000 + i)],
  ["records", (i) => ({ id: `m${i}`, payload: "p".repeat(12_000), n: i })],
  ["small values", (i) => i],
];

/**
 * Fills one commit on `kv` with `value`s until CommitSize, without its
 * margin, counts KV's limit; commits it (it must land), then shows that
 * 10 % more is refused: the count is an upper bound, and a close one.
 */
async function fillToLimit(
  kv: Deno.Kv,
  value: (i: number) => unknown,
  checks: number,
): Promise<void> {
  const run = crypto.randomUUID();
  const size = new CommitSize();
  const op = kv.atomic();
  let i = 0;
  for (;; i++) {
    const key = ["test", "commit-size", run, `k\0${i}`, i];
    const one = new CommitSize().set(key, value(i));
    if (i < checks) one.check(key);
    const next = new CommitSize().add(size).add(one);
    if (
      next.bytes > KV_COMMIT_LIMITS.mutationBytes ||
      next.mutations > KV_COMMIT_LIMITS.mutations ||
      next.keys > KV_COMMIT_LIMITS.keyBytes
    ) break;
    size.add(one);
    if (i < checks) op.check({ key, versionstamp: null });
    op.set(key, value(i));
  }
  assert.ok(i > 10, `only ${i} fit`);
  assert.equal((await op.commit()).ok, true);
  const over = kv.atomic();
  for (let j = 0; j < Math.ceil(i * 1.1) + 1; j++) {
    over.set(["test", "commit-size", run, "over", j], value(j));
  }
  await assert.rejects(() => over.commit(), /too large|Too many/);
  // Clean up (a remote store outlives the test).
  const keys = [];
  for await (const e of kv.list({ prefix: ["test", "commit-size", run] })) {
    keys.push(e.key);
  }
  for (let k = 0; k < keys.length; k += 500) {
    const del = kv.atomic();
    for (const key of keys.slice(k, k + 500)) del.delete(key);
    await del.commit();
  }
}

for (const [name, value] of shapes) {
  Deno.test(`commit size: a commit of ${name} counted just under KV's limit commits; KV refuses one 10 % over`, async () => {
    const kv = await Deno.openKv(":memory:");
    try {
      // Checks are capped apart (100), as the callers' batches are.
      await fillToLimit(kv, value, 50);
    } finally {
      kv.close();
    }
  });
}

Deno.test("commit size: the count holds on a denokv server (KV Connect) too", async (t) => {
  const url = Deno.env.get("DENO_KV_URL");
  if (!url) return; // no server: the local cases above stand
  const kv = await openStore(url);
  try {
    for (const [name, value] of shapes) {
      await t.step(name, () => fillToLimit(kv, value, 5));
    }
  } finally {
    kv.close();
  }
});

Deno.test("commit size: fits() keeps a 10 % margin below each limit", () => {
  const size = new CommitSize();
  while (size.fits()) size.delete(["d", size.mutations]);
  assert.equal(size.mutations, 901);
  assert.equal(keyBytes(["a", 1, true, new Uint8Array([0, 1])]), 3 + 9 + 1 + 5);
});
