// The simulator must itself behave as its doc says, or the elector's
// simulation tests prove nothing.
import assert from "node:assert/strict";
import { mulberry32 } from "../core/random.ts";
import { Sim, SimClock, SimKv } from "./sim_kv.ts";

Deno.test("sim: mulberry32 is deterministic per seed and uniform in [0, 1)", () => {
  const a = mulberry32(1), b = mulberry32(1), c = mulberry32(2);
  const xs = Array.from({ length: 1000 }, () => a());
  assert.deepEqual(xs.slice(0, 5), Array.from({ length: 5 }, () => b()));
  assert.notEqual(xs[0], c());
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.05, `mean ${mean}`);
});

Deno.test("sim: events run in time order, ties in insertion order, cancelled ones not at all", async () => {
  const sim = new Sim();
  const seen: string[] = [];
  sim.at(20, () => seen.push("b"));
  sim.at(10, () => seen.push("a"));
  sim.at(20, () => seen.push("c"));
  sim.at(15, () => seen.push("x")).cancel();
  await sim.run(100);
  assert.deepEqual(seen, ["a", "b", "c"]);
  assert.equal(sim.now, 100);
});

Deno.test("sim: a clock's rate scales its time; a paused clock holds its timers; a crashed one drops them", async () => {
  const sim = new Sim();
  const fast = new SimClock(sim, { rate: 2 });
  const paused = new SimClock(sim);
  const crashed = new SimClock(sim);
  const woke: string[] = [];
  fast.sleep(100).then(() => woke.push(`fast@${sim.now}`));
  paused.sleep(10).then(() => woke.push(`paused@${sim.now}`));
  crashed.sleep(10).then(() => woke.push("crashed"));
  paused.pause();
  crashed.crash();
  await sim.run(60);
  assert.deepEqual(woke, ["fast@50"]);
  assert.equal(fast.mono(), 120);
  assert.equal(paused.mono(), 60, "time runs on during a pause");
  sim.at(0, () => paused.resume());
  await sim.run(200);
  assert.deepEqual(woke, ["fast@50", "paused@60"]);
});

Deno.test("sim: commits check versionstamps; faults apply-and-throw or lose-and-throw; partitions swallow requests", async () => {
  const sim = new Sim();
  const kv = new SimKv(sim);
  const clock = new SimClock(sim);
  const link = kv.client(clock, { latencyMs: () => 5 });
  const ok = link.atomic().check({ key: ["k"], versionstamp: null })
    .set(["k"], 1).commit();
  await sim.run(10);
  const first = await ok;
  assert.ok(first.ok);
  assert.equal(sim.now, 10);
  const stale = link.atomic().check({ key: ["k"], versionstamp: null })
    .set(["k"], 2).commit();
  await sim.run(20);
  assert.deepEqual(await stale, { ok: false });

  link.faults.commitFault = () => "applied-then-error";
  const applied = assert.rejects(
    link.atomic().set(["k"], 3).commit(),
    /connection lost during commit/,
  );
  await sim.run(30);
  await applied;
  assert.equal(kv.get(["k"]).value, 3);
  assert.ok(kv.get(["k"]).versionstamp! > first.versionstamp);

  link.faults.commitFault = () => "lost-with-error";
  const lost = assert.rejects(
    link.atomic().set(["k"], 4).commit(),
    /connection lost during commit/,
  );
  await sim.run(40);
  await lost;
  assert.equal(kv.get(["k"]).value, 3);

  link.faults = { partitioned: true };
  let answered = false;
  link.atomic().set(["k"], 5).commit().finally(() => answered = true);
  await sim.run(1_000);
  assert.equal(answered, false);
  assert.equal(kv.get(["k"]).value, 3);
});

Deno.test("sim: a reply to a paused node waits for it to resume", async () => {
  const sim = new Sim();
  const kv = new SimKv(sim);
  const clock = new SimClock(sim);
  const link = kv.client(clock, { latencyMs: () => 5 });
  let at: number | undefined;
  link.getMany([["k"]]).then(() => at = sim.now);
  clock.pause();
  sim.at(100, () => clock.resume());
  await sim.run(200);
  assert.equal(at, 100);
});
