import assert from "node:assert/strict";
import { createDebateStore, type DebateRecord, type Turn } from "./store.ts";
import { tallyRound } from "./tally.ts";

const debate = (id: string, createdAt: number): DebateRecord => ({
  id,
  topic: "t",
  participants: [{ ref: "a", kind: "capability" }, {
    ref: "b",
    kind: "capability",
  }],
  rounds: 2,
  turnTimeoutMs: 1000,
  consensus: { method: "majority" },
  status: "running",
  saga: `debate-${id}`,
  createdAt,
  updatedAt: createdAt,
  roundsRun: 0,
});
const turn = (round: number, participant: number, position: string): Turn => ({
  round,
  participant,
  ref: "a",
  agent: "x",
  status: "answered",
  position,
  startedAt: 0,
  latencyMs: 1,
  node: "n",
});

Deno.test("debate store: the first write of a turn or a round wins, a re-run finds it", async () => {
  using kv = await Deno.openKv(":memory:");
  const store = createDebateStore(kv, ["plugins", "debates"]);
  await store.create(debate("d1", 1));
  await assert.rejects(store.create(debate("d1", 1)), /exists already/);
  const first = await store.recordTurn("d1", turn(1, 0, "for"));
  const again = await store.recordTurn("d1", turn(1, 0, "against"));
  assert.deepEqual([first.written, again.written], [true, false]);
  assert.equal(again.turn.position, "for");
  await store.recordTurn("d1", turn(1, 1, "for"));
  await store.recordTurn("d1", turn(2, 0, "for"));
  assert.deepEqual(
    (await store.turns("d1", 1, 1)).map((t) => t.participant),
    [0, 1],
  );
  const tally = tallyRound(await store.turns("d1", 1, 1), {
    method: "majority",
  });
  const done = (d: DebateRecord): DebateRecord => ({
    ...d,
    roundsRun: 1,
    status: "consensus",
    result: { position: "for", round: 1, share: 1 },
  });
  const r1 = await store.recordRound(
    "d1",
    { round: 1, tally, completedAt: 2 },
    done,
  );
  const r2 = await store.recordRound(
    "d1",
    { round: 1, tally, completedAt: 3 },
    done,
  );
  assert.deepEqual([r1.written, r2.written], [true, false]);
  const view = await store.view("d1");
  assert.equal(view?.status, "consensus");
  assert.deepEqual(view?.roundResults.map((r) => r.completedAt), [2]);
  assert.equal(view?.turns.length, 3);
  // A finished debate is not finished again.
  assert.equal(await store.finish("d1", "failed", "x"), null);
});

Deno.test("debate store: lists pages newest first, by status, following the index on status changes", async () => {
  using kv = await Deno.openKv(":memory:");
  const store = createDebateStore(kv, ["plugins", "debates"]);
  for (let i = 1; i <= 5; i++) await store.create(debate(`d${i}`, i));
  await store.finish("d2", "cancelled", undefined, 10);
  const page1 = await store.list({ limit: 3 });
  assert.deepEqual(page1.debates.map((d) => d.id), ["d5", "d4", "d3"]);
  const page2 = await store.list({ limit: 3, cursor: page1.cursor });
  assert.deepEqual(page2.debates.map((d) => d.id), ["d2", "d1"]);
  assert.equal(page2.cursor, undefined);
  const running = await store.list({ status: "running" });
  assert.deepEqual(running.debates.map((d) => d.id), ["d5", "d4", "d3", "d1"]);
  const cancelled = await store.list({ status: "cancelled" });
  assert.deepEqual(cancelled.debates.map((d) => [d.id, d.finishedAt]), [[
    "d2",
    10,
  ]]);
});
