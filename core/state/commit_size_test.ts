import assert from "node:assert/strict";
import { serialize } from "node:v8";
import {
  CommitSize,
  keyBytes,
  KV_COMMIT_LIMITS,
  valueBytes,
} from "./commit_size.ts";
import { openStore } from "./store.ts";

/**
 * Values of several shapes, each a different share of KV's value limit,
 * and how much more than the counted limit KV surely refuses (the count
 * takes a Latin-1 character as two bytes; V8 may store it in one).
 */
const shapes: [string, (i: number) => unknown, number?][] = [
  ["ascii strings", (i) => "x".repeat(9_000 + i)],
  ["two-byte strings", (i) => "é€".repeat(4_000 + i)],
  ["byte arrays", (i) => new Uint8Array(20_000 + i)],
  ["records", (i) => ({ id: `m${i}`, payload: "p".repeat(12_000), n: i })],
  ["small values", (i) => i],
  ["queue records with error histories", (i) => ({
    id: `0193a1b2-c3d4-7e5f-8a9b-${String(i).padStart(12, "0")}`,
    payload: { text: "ü€".repeat(300), n: [i, -i, i / 3, 2 ** 40] },
    errors: Array.from({ length: 20 }, (_, k) => ({
      at: 1_700_000_000_000 + k,
      error: `boom ${k} ` + "é".repeat(50),
      consumer: "n1/c1",
    })),
    leaseUntil: 1_700_000_060_000,
  }), 1.8],
];

/**
 * Fills one commit on `kv` with `value`s until CommitSize, without its
 * margin, counts KV's limit; commits it (it must land), then shows that
 * `refusedAt` times as many are refused: the count is an upper bound, and
 * a close one.
 */
async function fillToLimit(
  kv: Deno.Kv,
  value: (i: number) => unknown,
  checks: number,
  refusedAt = 1.1,
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
  for (let j = 0; j < Math.ceil(i * refusedAt) + 1; j++) {
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

for (const [name, value, refusedAt] of shapes) {
  Deno.test(`commit size: a commit of ${name} counted just under KV's limit commits; KV refuses a little more`, async () => {
    const kv = await Deno.openKv(":memory:");
    try {
      // Checks are capped apart (100), as the callers' batches are.
      await fillToLimit(kv, value, 50, refusedAt);
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
    for (const [name, value, refusedAt] of shapes) {
      await t.step(name, () => fillToLimit(kv, value, 5, refusedAt));
    }
  } finally {
    kv.close();
  }
});

Deno.test("commit size: valueBytes bounds V8's serialization of every shape", () => {
  const twoByte = "日本" + "a".repeat(5000);
  const big = new Uint8Array(10_000);
  const sparse: unknown[] = [];
  sparse[50] = "x";
  const values: unknown[] = [
    "",
    "a".repeat(100),
    "é".repeat(100), // Latin-1: one byte each in V8, counted as two
    "€".repeat(100),
    "😀".repeat(100),
    0,
    -1,
    2 ** 31,
    1.5,
    NaN,
    true,
    null,
    undefined,
    10n ** 30n,
    new Date(0),
    new Map([["a", 1]]),
    new Uint8Array(100),
    big.subarray(0, 10), // V8 serializes the whole buffer
    [1, "two", { three: [3] }],
    sparse,
    { 0: "a", 1: "b", length: 2 },
    { nested: { deeper: { deepest: "x".repeat(1000) } } },
  ];
  for (const v of values) {
    assert.ok(
      valueBytes(v) >= serialize(v).length,
      `${String(v).slice(0, 20)}: ${valueBytes(v)} < ${serialize(v).length}`,
    );
  }
  // The one gap: an ASCII string V8 holds two bytes a character (a slice
  // of a non-ASCII one) serializes to up to twice its count. Callers retry
  // a commit KV refuses as too large with fewer messages.
  for (const slice of [twoByte.slice(2), twoByte.slice(2, 40)]) {
    assert.ok(valueBytes(slice) * 2 >= serialize(slice).length);
  }
});

Deno.test("commit size: fits() keeps a 10 % margin below each limit", () => {
  const size = new CommitSize();
  while (size.fits()) size.delete(["d", size.mutations]);
  assert.equal(size.mutations, 901);
  assert.equal(keyBytes(["a", 1, true, new Uint8Array([0, 1])]), 3 + 9 + 1 + 5);
});
