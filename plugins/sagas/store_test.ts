import assert from "node:assert/strict";
import { createSagaStore, FencedError } from "./store.ts";
import type { SagaDef, StepDef } from "./machine.ts";
import type { FenceToken } from "../../core/state/fence.ts";
import { electionEpochKey } from "../../core/state/keys.ts";

const once = { maxAttempts: 1, backoffMs: 10, maxBackoffMs: 10 };
const step = (id: string, o: Partial<StepDef> = {}): StepDef => ({
  id,
  run: { kind: "task", type: id },
  compensate: { kind: "task", type: `undo-${id}` },
  timeoutMs: 1000,
  retry: once,
  compensationRetry: once,
  ...o,
});

Deno.test("saga store: state is written after every transition, with the open index, timers and dead letters", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createSagaStore(kv);
  const def: SagaDef = {
    name: "t",
    groups: [
      [step("a")],
      [step("b", {
        retry: { maxAttempts: 2, backoffMs: 100, maxBackoffMs: 100 },
      })],
    ],
  };
  await store.start("s1", def, 0);
  await assert.rejects(store.start("s1", def, 0), /saga 's1' exists already/);
  assert.deepEqual(await store.open(), ["s1"]);
  await store.apply("s1", { type: "succeeded", step: "a", attempt: 1 }, 1);
  await store.apply(
    "s1",
    { type: "failed", step: "b", attempt: 1, error: "x" },
    2,
  );
  assert.deepEqual(await store.due(1000), [{ saga: "s1", step: "b", at: 102 }]);
  assert.deepEqual(await store.due(50), []);
  // Too early: nothing changes and the timer stays.
  await store.apply("s1", { type: "due", step: "b" }, 50);
  assert.equal((await store.due(1000)).length, 1);
  await store.apply("s1", { type: "due", step: "b" }, 102);
  assert.deepEqual(await store.due(1000), []);
  await store.apply(
    "s1",
    { type: "failed", step: "b", attempt: 2, error: "y" },
    103,
  );
  // a is being compensated; its compensation fails for good.
  await store.apply("s1", {
    type: "compensation-failed",
    step: "a",
    attempt: 1,
    error: "refund refused",
  }, 104);
  const s = (await store.get("s1"))!;
  assert.equal(s.status, "compensation-failed");
  assert.deepEqual(await store.deadLetters(), [
    { saga: "s1", step: "a", error: "refund refused", at: 104 },
  ]);
  assert.deepEqual(await store.open(), []);
  // An operator retries the dead letter: the saga is open again (a leader
  // taking over resumes it) and out of the finished index (retention does
  // not delete it while it compensates); undone, the dead letter is gone.
  await store.apply("s1", { type: "retry-compensation", step: "a" }, 200);
  assert.deepEqual(await store.open(), ["s1"]);
  assert.equal(await store.trim(10_000), 0);
  assert.equal((await store.deadLetters()).length, 1);
  await store.apply("s1", {
    type: "compensation-succeeded",
    step: "a",
    attempt: 2,
  }, 201);
  assert.equal((await store.get("s1"))!.status, "compensated");
  assert.deepEqual(await store.deadLetters(), []);
  assert.deepEqual(await store.open(), []);
  assert.equal(await store.trim(10_000), 1);
  kv.close();
});

Deno.test("saga store: concurrent appliers never lose an update", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createSagaStore(kv);
  const group = Array.from({ length: 20 }, (_, i) => step(`p${i}`));
  await store.start("s2", { name: "par", groups: [group] }, 0);
  await Promise.all(
    group.map((g, i) =>
      store.apply("s2", { type: "succeeded", step: g.id, attempt: 1 }, 1 + i)
    ),
  );
  const s = (await store.get("s2"))!;
  assert.equal(s.status, "completed");
  assert.ok(group.every((g) => s.steps[g.id].status === "done"));
  kv.close();
});

Deno.test("saga store: a deposed leader's write is refused by the fence", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createSagaStore(kv);
  const acquire = async (
    holder: string,
    epoch: number,
  ): Promise<FenceToken> => {
    const res = await kv.set(electionEpochKey("leader"), { epoch, holder });
    return {
      election: "leader",
      epoch,
      holder,
      versionstamp: res.versionstamp,
    };
  };
  const old = await acquire("n1", 1);
  await store.start(
    "s3",
    { name: "f", groups: [[step("a")], [step("b")]] },
    0,
    old,
  );
  const fresh = await acquire("n2", 2);
  await assert.rejects(
    store.apply("s3", { type: "succeeded", step: "a", attempt: 1 }, 1, old),
    (err: unknown) =>
      err instanceof FencedError && /epoch 1\) ended/.test(err.message),
  );
  assert.equal((await store.get("s3"))!.steps.a.status, "running");
  await store.apply(
    "s3",
    { type: "succeeded", step: "a", attempt: 1 },
    1,
    fresh,
  );
  assert.equal((await store.get("s3"))!.steps.b.status, "running");
  kv.close();
});

Deno.test("saga store: trim deletes sagas finished before the cutoff with their dead letters, and nothing else", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createSagaStore(kv);
  const def: SagaDef = { name: "t", groups: [[step("a")], [step("b")]] };
  // old-ok completes at 10; old-dead fails and its compensation is
  // dead-lettered at 20; new-ok completes at 500; running never finishes.
  await store.start("old-ok", def, 0);
  await store.apply("old-ok", { type: "succeeded", step: "a", attempt: 1 }, 5);
  await store.apply("old-ok", { type: "succeeded", step: "b", attempt: 1 }, 10);
  await store.start("old-dead", def, 0);
  await store.apply(
    "old-dead",
    { type: "succeeded", step: "a", attempt: 1 },
    5,
  );
  await store.apply("old-dead", {
    type: "failed",
    step: "b",
    attempt: 1,
    error: "x",
  }, 10);
  await store.apply(
    "old-dead",
    { type: "compensation-failed", step: "a", attempt: 1, error: "y" },
    20,
  );
  await store.start("new-ok", def, 0);
  await store.apply(
    "new-ok",
    { type: "succeeded", step: "a", attempt: 1 },
    400,
  );
  await store.apply(
    "new-ok",
    { type: "succeeded", step: "b", attempt: 1 },
    500,
  );
  await store.start("running", def, 0);
  assert.equal((await store.get("old-dead"))?.status, "compensation-failed");
  assert.equal((await store.deadLetters()).length, 1);
  assert.equal(await store.trim(100), 2);
  assert.equal(await store.get("old-ok"), null);
  assert.equal(await store.get("old-dead"), null);
  assert.deepEqual(await store.deadLetters(), []);
  assert.equal((await store.get("new-ok"))?.status, "completed");
  assert.equal((await store.get("running"))?.status, "running");
  assert.deepEqual(await store.open(), ["running"]);
  assert.equal(await store.trim(100), 0);
  assert.equal(await store.trim(1000), 1);
  assert.deepEqual((await store.list()).sagas.map((s) => s.id), ["running"]);
  kv.close();
});

Deno.test("saga store: list by status reads the status index, which follows every transition, a page at a time", async () => {
  const kv = await Deno.openKv(":memory:");
  const store = createSagaStore(kv);
  const def: SagaDef = { name: "t", groups: [[step("a")]] };
  for (let i = 0; i < 5; i++) await store.start(`s${i}`, def, 0);
  // s1 and s3 complete, s4 fails (nothing to compensate: compensated).
  for (const id of ["s1", "s3"]) {
    await store.apply(id, { type: "succeeded", step: "a", attempt: 1 }, 1);
  }
  await store.apply(
    "s4",
    { type: "failed", step: "a", attempt: 1, error: "x" },
    1,
  );
  const ids = async (status?: string, limit?: number, cursor?: string) => {
    const page = await store.list({ status, limit, cursor });
    return { ids: page.sagas.map((s) => s.id), cursor: page.cursor };
  };
  assert.deepEqual((await ids("running")).ids, ["s0", "s2"]);
  assert.deepEqual((await ids("completed")).ids, ["s1", "s3"]);
  assert.deepEqual((await ids("compensated")).ids, ["s4"]);
  assert.deepEqual((await ids()).ids, ["s0", "s1", "s2", "s3", "s4"]);
  const first = await ids("completed", 1);
  assert.deepEqual(first.ids, ["s1"]);
  const second = await ids("completed", 1, first.cursor);
  assert.deepEqual(second, { ids: ["s3"], cursor: undefined });
  // The index holds one entry per saga; trimming removes theirs.
  const index = await Array.fromAsync(kv.list({ prefix: ["sagas", "status"] }));
  assert.equal(index.length, 5, "one index entry per saga");
  assert.equal(await store.trim(10), 3);
  assert.deepEqual((await ids("completed")).ids, []);
  assert.equal(
    (await Array.fromAsync(kv.list({ prefix: ["sagas", "status"] }))).length,
    2,
  );
  kv.close();
});
