import assert from "node:assert/strict";
import { countPicks, maxDeviation, nodes } from "./_test_util.ts";
import { createLeastConnections } from "./least_connections.ts";
import { seededRandom } from "./strategy.ts";

Deno.test("least-connections: with calls finishing at once, ties spread calls evenly", () => {
  const b = createLeastConnections({ random: seededRandom(1) });
  const counts = countPicks(b, nodes(4), 40_000);
  const dev = maxDeviation(counts, () => 10_000);
  assert.ok(dev < 0.05, `deviation ${dev}`);
});

Deno.test("least-connections: sends new calls away from a loaded endpoint until it catches up", () => {
  const b = createLeastConnections({ random: seededRandom(2) });
  const c = nodes(3);
  // n0 holds five slow calls.
  for (let i = 0; i < 5; i++) b.pick([c[0]]);
  assert.equal(b.inflight("n0"), 5);
  const next = Array.from({ length: 10 }, () => b.pick(c)!.id);
  assert.equal(next.filter((id) => id === "n0").length, 0, `${next}`);
  assert.equal(b.inflight("n1"), 5);
  assert.equal(b.inflight("n2"), 5);
  // Now all hold five: n0's calls finish, so it is preferred again.
  for (let i = 0; i < 5; i++) b.report("n0", { ok: true, latencyMs: 50 });
  assert.equal(b.pick(c)!.id, "n0");
});

Deno.test("least-connections: in-flight calls settle in proportion to weight", () => {
  const b = createLeastConnections({ random: seededRandom(3) });
  const c = [{ id: "big", weight: 3 }, { id: "small", weight: 1 }];
  for (let i = 0; i < 400; i++) b.pick(c);
  assert.equal(b.inflight("big"), 300);
  assert.equal(b.inflight("small"), 100);
});

Deno.test("least-connections: a report without a pick does not go negative", () => {
  const b = createLeastConnections();
  b.report("ghost", { ok: true, latencyMs: 1 });
  assert.equal(b.inflight("ghost"), 0);
  assert.equal(b.pick([]), undefined);
});
