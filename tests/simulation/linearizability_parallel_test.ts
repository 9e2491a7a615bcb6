import assert from "node:assert/strict";
import {
  check,
  type KvInput,
  kvModel,
  type KvOutput,
  type Operation,
} from "../../testing/linearizability.ts";
import {
  checkParallel,
  loadModel,
} from "../../testing/linearizability_parallel.ts";
import { randomKvHistory } from "./testdata/random_history.ts";

type KvOp = Operation<KvInput, KvOutput>;
const kv = {
  module: new URL("../../testing/linearizability.ts", import.meta.url),
  export: "kvModel",
};

/** Replaces a read in the middle of key `key`'s operations with one of a value nobody wrote. */
function breakRead(history: KvOp[], key: string): KvOp[] {
  const reads = history.flatMap((o, i) =>
    o.input.op === "read" && o.input.key === key && o.output !== undefined
      ? [i]
      : []
  );
  const at = reads[Math.floor(reads.length / 2)];
  const broken = history.slice();
  broken[at] = { ...history[at], output: { value: 99 } };
  return broken;
}

Deno.test("linearizability in parallel: Workers give the verdict the single-thread checker gives", async () => {
  for (const seed of [21, 22, 23]) {
    const { history } = randomKvHistory(seed, {
      ops: 4000,
      clients: 12,
      keys: 6,
      crashRate: 0.01,
    });
    const ok = await checkParallel(kv, history, { workers: 2, serialMs: 0 });
    assert.equal(ok.workers, 2);
    assert.equal(ok.result, "ok");
    assert.equal(ok.result, check(kvModel(), history));
    assert.equal(ok.partitions, 6);
    assert.equal(ok.decided, 6);

    const broken = breakRead(history, "k3");
    const bad = await checkParallel(kv, broken, { workers: 2, serialMs: 0 });
    assert.equal(bad.result, "illegal");
    assert.equal(check(kvModel(), broken), "illegal");
    // The failing partition is the one holding key k3.
    const parts = kvModel().partition!(broken);
    assert.equal(parts[bad.illegalPartition!][0].input.key, "k3");
  }
});

Deno.test("linearizability in parallel: partitions still unchecked after serialMs go to Workers", async () => {
  // Four hard keys (12 clients, 3 % crashes each): one takes longer than
  // the 1 ms left to this thread, so the other three and it go to Workers.
  const { history } = randomKvHistory(31, {
    ops: 4 * 1500,
    clients: 4 * 12,
    keys: 4,
    crashRate: 0.03,
  });
  const report = await checkParallel(kv, history, { workers: 2, serialMs: 1 });
  assert.equal(report.result, "ok");
  assert.equal(report.workers, 2);
  assert.equal(report.decided, 4);
});

Deno.test("linearizability in parallel: easy histories and single partitions stay on this thread", async () => {
  const { history } = randomKvHistory(5, { ops: 500, clients: 4, keys: 3 });
  const small = await checkParallel(kv, history, { workers: 2 });
  assert.deepEqual(small, {
    result: "ok",
    partitions: 3,
    decided: 3,
    workers: 0,
  });
  const one = randomKvHistory(6, { ops: 500, clients: 4, keys: 1 }).history;
  assert.equal(
    (await checkParallel(kv, one, { workers: 2, serialMs: 0 })).workers,
    0,
  );
});

Deno.test("linearizability in parallel: a partition that cannot finish in time answers unknown, never a verdict", async () => {
  // Key "x": 24 overlapping writes and a read of a value none wrote (every
  // subset of the writes must be tried); key "y": easy.
  const history: KvOp[] = [];
  for (let i = 0; i < 24; i++) {
    history.push({
      clientId: i,
      input: { op: "write", key: "x", value: i },
      output: { ok: true },
      call: 0,
      return: 1000,
    });
  }
  history.push({
    clientId: 99,
    input: { op: "read", key: "x" },
    output: { value: 99 },
    call: 1001,
    return: 1002,
  });
  history.push({
    clientId: 100,
    input: { op: "write", key: "y", value: 1 },
    output: { ok: true },
    call: 0,
    return: 1,
  });
  const report = await checkParallel(kv, history, {
    workers: 2,
    serialMs: 0,
    timeoutMs: 50,
  });
  assert.equal(report.result, "unknown");
  assert.equal(report.workers, 2);
});

Deno.test("linearizability in parallel: a module without the named model is a clear error", async () => {
  await assert.rejects(
    () => loadModel({ module: kv.module, export: "noSuchModel" }),
    /export 'noSuchModel' of file:.*linearizability\.ts is missing/,
  );
  await assert.rejects(
    () => loadModel({ module: kv.module, export: "check" }),
    /export 'check' of .* is not a Model/,
  );
});
