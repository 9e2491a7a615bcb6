import assert from "node:assert/strict";
import { createLogger } from "./observe/logger.ts";
import { createMetrics } from "./observe/metrics.ts";
import type { NodeRecord } from "./state/registry.ts";
import {
  createTaskRouter,
  RemoteTaskError,
  type TaskRun,
} from "./task_router.ts";
import { createRoundRobin } from "../plugins/balancers/round_robin.ts";
import { createConsistentHash } from "../plugins/balancers/consistent_hash.ts";
import { withCircuitBreakers } from "./resilience/guarded.ts";
import { createCircuitBreakers } from "./resilience/circuit_breaker.ts";
import type { Balancer } from "./contracts/balancer.ts";

const log = createLogger({ sinks: [] });

function record(
  id: string,
  types: string[],
  heartbeatAt = Date.now(),
): NodeRecord {
  return {
    id,
    address: `http://${id}`,
    version: "0",
    load: { inflight: 0, rss: 0 },
    heartbeatAt,
    startedAt: 0,
    meta: { taskTypes: types },
  };
}

/** A router over fixed records; `answer` plays each remote node. */
function setup(
  nodes: NodeRecord[],
  answer: (node: string, task: TaskRun) => Response | Promise<Response>,
  balancer: Balancer = createRoundRobin(),
  here = { id: "self", types: ["echo"] },
  status?: Record<string, "up" | "suspect" | "down">,
) {
  const calls: string[] = [];
  const router = createTaskRouter({
    nodeId: here.id,
    balancer,
    registry: {
      nodes: () => Promise.resolve(nodes),
      thresholds: { suspectAfterMs: 5000, downAfterMs: 15000 },
    },
    call: async (url, init) => {
      const node = new URL(String(url)).host;
      calls.push(node);
      return await answer(node, JSON.parse(String(init?.body)));
    },
    handlesHere: (t) => here.types.includes(t.type),
    log,
    metrics: createMetrics("plexus_"),
    membersTtlMs: 0,
    memberStatus: status
      ? () => Promise.resolve(new Map(Object.entries(status)))
      : undefined,
  });
  return { router, calls };
}

const task = (type = "echo", key?: string): TaskRun => ({
  id: crypto.randomUUID(),
  type,
  payload: { x: 1 },
  attempt: 1,
  ...(key ? { key } : {}),
});
const ok = (node: string) => Response.json({ result: node });

Deno.test("task router: runs go only to live nodes that handle the type, spread by the balancer", async () => {
  const { router, calls } = setup([
    record("a", ["echo"]),
    record("b", ["echo", "resize"]),
    record("c", ["resize"]),
    record("d", ["echo"], Date.now() - 60_000), // down
  ], ok);
  const ran: unknown[] = [];
  for (let i = 0; i < 9; i++) {
    ran.push(await router.run(task(), () => Promise.resolve("self")));
  }
  const counts = Object.groupBy(ran as string[], (x) => x);
  assert.deepEqual(Object.keys(counts).sort(), ["a", "b", "self"]);
  for (const n of ["a", "b", "self"]) assert.equal(counts[n]!.length, 3);
  assert.ok(!calls.includes("c") && !calls.includes("d"));
});

Deno.test("task router: a node that cannot be reached is skipped for another pick; a worker's own error is not retried", async () => {
  const { router, calls } = setup(
    [record("a", ["echo"]), record("b", ["echo"])],
    (node) => {
      if (node === "a") throw new TypeError("connection refused");
      return Response.json({ error: { message: "boom" } }, { status: 422 });
    },
    createRoundRobin(),
    { id: "self", types: [] },
  );
  await assert.rejects(
    () => router.run(task(), () => Promise.resolve("self")),
    (e: Error) => e instanceof RemoteTaskError && e.message === "boom",
  );
  assert.deepEqual(
    calls,
    ["a", "b"],
    "a failed to connect, b ran it and failed",
  );
  calls.length = 0;
  await assert.rejects(
    () => router.run(task(), () => Promise.resolve()),
    RemoteTaskError,
  );
  assert.equal(calls.filter((c) => c === "b").length, 1, "no second call to b");
});

Deno.test("task router: no node handles the type → a clear error", async () => {
  const { router } = setup([record("a", ["resize"])], ok, createRoundRobin(), {
    id: "self",
    types: [],
  });
  await assert.rejects(
    () => router.run(task("echo"), () => Promise.resolve()),
    /no live node handles task type 'echo'/,
  );
});

Deno.test("task router: with consistent hashing a key always runs on the same node", async () => {
  const { router } = setup(
    [record("a", ["echo"]), record("b", ["echo"]), record("c", ["echo"])],
    ok,
    createConsistentHash(),
  );
  for (const key of ["k1", "k2", "k3", "k4"]) {
    const first = await router.run(
      task("echo", key),
      () => Promise.resolve("self"),
    );
    for (let i = 0; i < 5; i++) {
      assert.equal(
        await router.run(task("echo", key), () => Promise.resolve("self")),
        first,
        `key ${key}`,
      );
    }
  }
});

Deno.test("task router: a node whose runs keep failing is cut off by its circuit breaker", async () => {
  const balancer = withCircuitBreakers(
    createRoundRobin(),
    createCircuitBreakers({ minRequests: 4, threshold: 0.5 }),
  );
  const { router, calls } = setup(
    [record("bad", ["echo"]), record("good", ["echo"])],
    (node) => node === "bad" ? new Response("down", { status: 503 }) : ok(node),
    balancer,
    { id: "self", types: [] },
  );
  for (let i = 0; i < 20; i++) {
    assert.equal(await router.run(task(), () => Promise.resolve()), "good");
  }
  const toBad = calls.filter((c) => c === "bad").length;
  assert.ok(
    toBad >= 4 && toBad <= 5,
    `bad was called ${toBad} times before its circuit opened`,
  );
});

Deno.test("task router: the consensus plugin's membership overrides heartbeat age where it knows a node", async () => {
  const { router, calls } = setup(
    [
      record("fresh-but-dead", ["echo"]),
      record("stale-but-alive", ["echo"], Date.now() - 60_000),
      record("unknown", ["echo"]),
    ],
    ok,
    createRoundRobin(),
    { id: "self", types: [] },
    { "fresh-but-dead": "down", "stale-but-alive": "up" },
  );
  for (let i = 0; i < 6; i++) await router.run(task(), () => Promise.resolve());
  assert.deepEqual(
    [...new Set(calls)].sort(),
    ["stale-but-alive", "unknown"],
    "gossip's down wins over a fresh heartbeat; nodes it does not know fall back to the registry",
  );
});
