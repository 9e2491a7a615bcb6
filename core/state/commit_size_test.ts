import assert from "node:assert/strict";
import { CommitSize, keyBytes, KV_COMMIT_LIMITS } from "./commit_size.ts";

/** Values of several shapes, each a different share of KV's value limit. */
const shapes: [string, (i: number) => unknown][] = [
  ["ascii strings", (i) => "x".repeat(9_000 + i)],
  ["two-byte strings", (i) => "é€".repeat(4_000 + i)],
  ["byte arrays", (i) => new Uint8Array(20_000 + i)],
  ["records", (i) => ({ id: `m${i}`, payload: "p".repeat(12_000), n: i })],
  ["small values", (i) => i],
];

for (const [name, value] of shapes) {
  Deno.test(`commit size: a commit of ${name} counted just under KV's limit commits; KV refuses one 10 % over`, async () => {
    const kv = await Deno.openKv(":memory:");
    try {
      const size = new CommitSize();
      const op = kv.atomic();
      let i = 0;
      for (;; i++) {
        const key = ["test", "commit-size", `k\0${i}`, i];
        // Checks are capped apart (100), as the callers' batches are.
        const checked = i < 50;
        const one = new CommitSize().set(key, value(i));
        if (checked) one.check(key);
        const next = new CommitSize().add(size).add(one);
        if (
          next.bytes > KV_COMMIT_LIMITS.mutationBytes ||
          next.mutations > KV_COMMIT_LIMITS.mutations ||
          next.keys > KV_COMMIT_LIMITS.keyBytes
        ) break;
        size.add(one);
        if (checked) op.check({ key, versionstamp: null });
        op.set(key, value(i));
      }
      assert.ok(i > 10, `only ${i} fit`);
      assert.equal((await op.commit()).ok, true);
      // The bound is close: KV refuses 10 % more of the same.
      const over = kv.atomic();
      for (let j = 0; j < Math.ceil(i * 1.1) + 1; j++) {
        const key = ["test", "commit-size-over", `k\0${j}`, j];
        over.set(key, value(j));
      }
      await assert.rejects(() => over.commit(), /too large|Too many/);
    } finally {
      kv.close();
    }
  });
}

Deno.test("commit size: fits() keeps a 10 % margin below each limit", () => {
  const size = new CommitSize();
  while (size.fits()) size.delete(["d", size.mutations]);
  assert.equal(size.mutations, 901);
  assert.equal(keyBytes(["a", 1, true, new Uint8Array([0, 1])]), 3 + 9 + 1 + 5);
});
