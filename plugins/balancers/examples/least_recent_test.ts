import assert from "node:assert/strict";
import { createTestKernel } from "../../../core/testing.ts";
import type { BalancerApi } from "../mod.ts";
import leastRecent, { createLeastRecent } from "./least_recent.ts";

Deno.test("least-recent: picks the candidate picked longest ago, new ones first", () => {
  const b = createLeastRecent();
  const c = [{ id: "a" }, { id: "b" }, { id: "c" }];
  assert.deepEqual(
    Array.from({ length: 6 }, () => b.pick(c)!.id),
    ["a", "b", "c", "a", "b", "c"],
  );
  assert.equal(b.pick([{ id: "b" }, { id: "d" }, { id: "c" }])!.id, "d");
  assert.equal(b.pick([{ id: "b" }, { id: "c" }])!.id, "b");
  assert.equal(b.pick([]), undefined);
});

Deno.test("least-recent: stays even while the candidate list changes every call", () => {
  const b = createLeastRecent();
  const all = ["a", "b", "c", "d"].map((id) => ({ id }));
  const counts = new Map<string, number>();
  for (let i = 0; i < 4000; i++) {
    // Each call one agent is away, in turn.
    const present = all.filter((_, k) => k !== i % 4);
    const id = b.pick(present)!.id;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  for (const n of counts.values()) assert.ok(Math.abs(n - 1000) <= 2, `${n}`);
});

Deno.test("least-recent: loads as a plugin and gets circuit breakers like the built-ins", async () => {
  await using t = await createTestKernel([leastRecent], {
    pluginConfig: { "least-recent": { circuitBreaker: { minRequests: 1 } } },
  });
  const api = t.kernel.get<BalancerApi>("balancer:least-recent");
  const c = [{ id: "a" }, { id: "b" }];
  const first = api.pick(c)!;
  api.report(first.id, { ok: false, latencyMs: 1 });
  assert.deepEqual(
    Array.from({ length: 3 }, () => api.pick(c)!.id),
    ["b", "b", "b"],
  );
});
