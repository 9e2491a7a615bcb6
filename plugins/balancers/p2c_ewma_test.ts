import assert from "node:assert/strict";
import { countPicks, maxDeviation, nodes } from "./_test_util.ts";
import { createP2cEwma } from "./p2c_ewma.ts";
import { seededRandom } from "./strategy.ts";

/** A P2C-EWMA balancer on a manual millisecond clock. */
function setup(seed = 1) {
  const clock = { t: 0 };
  const b = createP2cEwma({ random: seededRandom(seed), now: () => clock.t });
  return { b, clock };
}

/** Picks and reports `rounds` calls; each endpoint answers in `latency(id)` ms. */
function drive(
  b: ReturnType<typeof createP2cEwma>,
  clock: { t: number },
  candidates: { id: string }[],
  rounds: number,
  latency: (id: string) => number,
): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i < rounds; i++) {
    clock.t += 1;
    const c = b.pick(candidates)!;
    counts.set(c.id, (counts.get(c.id) ?? 0) + 1);
    b.report(c.id, { ok: true, latencyMs: latency(c.id) });
  }
  return counts;
}

Deno.test("p2c-ewma: equal endpoints share calls evenly", () => {
  const { b, clock } = setup();
  const counts = drive(b, clock, nodes(5), 50_000, () => 10);
  const dev = maxDeviation(counts, () => 10_000);
  assert.ok(dev < 0.1, `deviation ${dev}`);
});

Deno.test("p2c-ewma: a slow endpoint gets almost no calls once its latency is known", () => {
  const { b, clock } = setup();
  const c = nodes(5);
  const counts = drive(b, clock, c, 10_000, (id) => id === "n4" ? 100 : 10);
  assert.ok(counts.get("n4")! < 100, `slow node got ${counts.get("n4")}`);
  assert.ok(b.latency("n4")! > 3 * b.latency("n0")!);
});

Deno.test("p2c-ewma: a node turning slow is avoided at once, then trusted again gradually", () => {
  const { b, clock } = setup(4);
  const c = nodes(2);
  drive(b, clock, c, 1000, () => 10);
  // One slow answer from n0: peak EWMA jumps to it.
  const p = b.pick(c)!;
  b.report(p.id, { ok: true, latencyMs: 200 });
  assert.equal(b.latency(p.id), 200);
  const other = p.id === "n0" ? "n1" : "n0";
  const after = drive(b, clock, c, 100, () => 10);
  assert.equal(after.get(p.id) ?? 0, 0);
  assert.equal(after.get(other), 100);
  // Without new samples its cost decays (time constant 10 s) until it is tried.
  clock.t += 30_000;
  assert.ok(b.latency(p.id)! < 200 * Math.exp(-2.9));
  const later = drive(b, clock, c, 2000, () => 10);
  assert.ok(later.get(p.id)! > 500, `recovered node got ${later.get(p.id)}`);
});

Deno.test("p2c-ewma: calls in flight raise an endpoint's cost", () => {
  const { b, clock } = setup(5);
  const c = nodes(2);
  drive(b, clock, c, 200, () => 10);
  // Hold calls without reporting: each pick adds load to the one picked.
  for (let i = 0; i < 40; i++) b.pick(c);
  const diff = Math.abs(b.inflight("n0") - b.inflight("n1"));
  assert.ok(diff <= 2, `in flight ${b.inflight("n0")} vs ${b.inflight("n1")}`);
});

Deno.test("p2c-ewma: an endpoint failing fast is not mistaken for a fast one", () => {
  const { b, clock } = setup(6);
  const c = nodes(3);
  const counts = new Map<string, number>();
  for (let i = 0; i < 5000; i++) {
    clock.t += 1;
    const p = b.pick(c)!;
    counts.set(p.id, (counts.get(p.id) ?? 0) + 1);
    const broken = p.id === "n2";
    b.report(p.id, { ok: !broken, latencyMs: broken ? 1 : 10 });
  }
  assert.ok(counts.get("n2")! < 1000, `broken node got ${counts.get("n2")}`);
});

Deno.test("p2c-ewma: a fresh endpoint is tried while idle but not flooded while its first call runs", () => {
  const { b, clock } = setup(7);
  const c = nodes(2);
  drive(b, clock, [c[0]], 10, () => 10);
  const first = Array.from({ length: 10 }, () => b.pick(c)!.id);
  assert.equal(first.filter((id) => id === "n1").length, 1, `${first}`);
});

Deno.test("p2c-ewma: options out of range are refused with the value seen", () => {
  assert.throws(
    () => createP2cEwma({ decayMs: 0 }),
    /decayMs must be > 0, got 0/,
  );
  assert.throws(
    () => createP2cEwma({ failurePenalty: 0.5 }),
    /failurePenalty must be ≥ 1, got 0.5/,
  );
  assert.equal(countPicks(createP2cEwma(), [{ id: "x" }], 3).get("x"), 3);
});
