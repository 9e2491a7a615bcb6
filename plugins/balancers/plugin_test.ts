import assert from "node:assert/strict";
import { loadPlugin } from "../../core/loader.ts";
import { createTestKernel } from "../../core/testing.ts";
import consistentHash from "./consistent_hash.ts";
import leastConnections from "./least_connections.ts";
import p2cEwma from "./p2c_ewma.ts";
import type { BalancerApi } from "../../core/balancer_plugin.ts";
import random from "./random.ts";
import roundRobin from "./round_robin.ts";
import smoothWeighted from "./smooth_weighted.ts";

const ALL = [
  roundRobin,
  random,
  smoothWeighted,
  leastConnections,
  p2cEwma,
  consistentHash,
];

Deno.test("balancer plugins: each loads in a kernel, provides balancer:NAME and its api picks", async () => {
  await using t = await createTestKernel(ALL);
  const nodes = [{ id: "node-1" }, { id: "node-2" }];
  for (const plugin of ALL) {
    const name = plugin.manifest.name;
    assert.equal(plugin.manifest.kind, "balancer");
    const api = t.kernel.get<BalancerApi>(`balancer:${name}`);
    assert.equal(api.name, name);
    const picked = api.pick(nodes, { key: "k" })!;
    assert.ok(nodes.includes(picked));
    api.report(picked.id, { ok: true, latencyMs: 3 });
    assert.equal(api.create().name, name);
  }
  const res = await t.api("/api/v1/plugins");
  const listed = (await res.json()) as { name: string; kind: string }[];
  assert.deepEqual(
    listed.filter((p) => p.kind === "balancer").map((p) => p.name).sort(),
    ALL.map((p) => p.manifest.name).sort(),
  );
});

Deno.test("balancer plugins: config reaches the strategy (smooth-weighted keeps nginx's order)", async () => {
  await using t = await createTestKernel([smoothWeighted, consistentHash], {
    pluginConfig: { "consistent-hash": { boundedLoad: 1.25, vnodes: 40 } },
  });
  const swrr = t.kernel.get<BalancerApi>("balancer:smooth-weighted");
  const nodes = [
    { id: "a", weight: 5 },
    { id: "b", weight: 1 },
    { id: "c", weight: 1 },
  ];
  const seq = Array.from({ length: 7 }, () => {
    const p = swrr.pick(nodes)!;
    swrr.report(p.id, { ok: true, latencyMs: 1 });
    return p.id;
  });
  assert.equal(seq.join(" "), "a a b a c a a");
  const ring = t.kernel.get<BalancerApi>("balancer:consistent-hash");
  const two = [{ id: "x" }, { id: "y" }];
  // Bounded at 1.25 over two nodes: the third held call for one key finds
  // its owner at ceil(1.25 × 3 / 2) = 2 and spills over.
  const held = Array.from(
    { length: 3 },
    () => ring.pick(two, { key: "hot" })!.id,
  );
  assert.equal(new Set(held).size, 2, `${held}`);
});

Deno.test("balancer plugins: circuits open on failures, drop the endpoint and show in metrics", async () => {
  await using t = await createTestKernel([roundRobin], {
    pluginConfig: { "round-robin": { circuitBreaker: { minRequests: 2 } } },
  });
  const api = t.kernel.get<BalancerApi>("balancer:round-robin");
  const nodes = [{ id: "good" }, { id: "bad" }];
  for (let i = 0; i < 4; i++) {
    const p = api.pick(nodes)!;
    api.report(p.id, { ok: p.id === "good", latencyMs: 1 });
  }
  assert.equal(api.breakers!.get("bad").state, "open");
  assert.deepEqual(
    Array.from({ length: 4 }, () => api.pick(nodes)!.id),
    ["good", "good", "good", "good"],
  );
  assert.match(t.metrics.render(), /plexus_circuit_state\{endpoint="bad"\} 2/);
  assert.ok(
    t.logs.some((r) =>
      r.msg === "endpoint circuit open" && r.plugin === "round-robin"
    ),
  );
});

Deno.test("balancer plugins: circuit breakers can be turned off; bad config is refused by field", async () => {
  await using t = await createTestKernel([leastConnections], {
    pluginConfig: {
      "least-connections": { circuitBreaker: { enabled: false } },
    },
  });
  assert.equal(
    t.kernel.get<BalancerApi>("balancer:least-connections").breakers,
    undefined,
  );
  await assert.rejects(
    createTestKernel([consistentHash], {
      pluginConfig: { "consistent-hash": { boundedLoad: 0.5 } },
    }),
    /plugin 'consistent-hash' has invalid config: boundedLoad/,
  );
});

Deno.test("balancer plugins: each file loads by path through the plugin loader (what --plugin and builtin: do)", async () => {
  const files = [
    "round_robin.ts",
    "random.ts",
    "smooth_weighted.ts",
    "least_connections.ts",
    "p2c_ewma.ts",
    "consistent_hash.ts",
    "examples/least_recent.ts",
  ];
  const dir = new URL(".", import.meta.url).pathname;
  const loaded = await Promise.all(
    files.map(async (f) => (await loadPlugin(`./${f}`, { cwd: dir })).value),
  );
  await using t = await createTestKernel(loaded);
  for (const name of ["round-robin", "p2c-ewma", "least-recent"]) {
    assert.equal(t.kernel.get<BalancerApi>(`balancer:${name}`).name, name);
  }
});
