/**
 * Sagas on 3 real nodes: 3-step sagas/s against the same work as plain
 * tasks, in the same run on the same nodes.
 *
 *   deno run -A bench/sagas.ts [--quick] [--sagas N] [--rounds R] [--tick 50]
 *
 * Three `main.ts` nodes share one fresh KV file (`kv-lease` elects the node
 * that drives sagas, task concurrency 16 per node, rate limits off, the
 * plugin's default `tickMs` 50 unless `--tick`), each
 * with `builtin:sagas` and the test fixture's `shop.step` task type (three
 * small KV writes: its call, its effect once per key, its log line).
 *
 * - sagas: N sagas of 3 `shop.step` steps (each with a compensation that
 *   does not run), POSTed to `/api/v1/sagas` round-robin over the nodes, 24
 *   requests in flight; rate = N / (first POST → no saga open in KV).
 * - plain tasks (baseline): the same 3·N `shop.step` tasks with the same
 *   payloads, POSTed to `/api/v1/tasks` the same way, all at once (no step
 *   waits for the one before); rate = N / (first POST → queue empty), i.e.
 *   triples of tasks per second.
 *
 * ratio = sagas/s ÷ triples/s: what running the work as sagas (ordered
 * steps, state written after each, the leader polling each task) costs.
 * Rounds alternate plain and saga phases; the medians are reported.
 *
 * @module
 */
import { join } from "node:path";
import { DurableQueue } from "../core/state/queue.ts";
import type { PlexusProcess } from "../tests/integration/_process.ts";
import {
  allTasks,
  fileTarget,
  startCluster,
} from "../tests/cluster/_cluster.ts";
import { info, isQuick, median, numFlag, round, spread } from "./_util.ts";

const N = numFlag("sagas", isQuick() ? 200 : 500);
const ROUNDS = numFlag("rounds", isQuick() ? 1 : 3);
const PARALLEL = 24;
/** The sagas plugin's tickMs (sweep and task polling period). */
const TICK = numFlag("tick", 50);
const FIXTURE = join(import.meta.dirname!, "../tests/sagas/_shop_plugin.ts");

const step = (i: number) => ({
  id: `s${i}`,
  run: { kind: "task", type: "shop.step", payload: { name: `s${i}` } },
  compensate: {
    kind: "task",
    type: "shop.step",
    payload: { name: `undo-s${i}` },
  },
  timeoutMs: 300_000,
  retry: { maxAttempts: 1 },
});
const DEFINITION = { name: "bench", steps: [step(1), step(2), step(3)] };

/** POSTs `n` bodies round-robin over the nodes, PARALLEL at a time. */
async function postAll(
  nodes: PlexusProcess[],
  token: string,
  path: string,
  n: number,
  body: (i: number) => unknown,
) {
  let next = 0;
  await Promise.all(Array.from({ length: PARALLEL }, async () => {
    while (next < n) {
      const i = next++;
      const res = await fetch(`${nodes[i % nodes.length].url}${path}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${token}`,
        },
        body: JSON.stringify(body(i)),
      });
      if (res.status >= 300) {
        throw new Error(`${path}: ${res.status} ${await res.text()}`);
      }
      await res.body?.cancel();
    }
  }));
}

const until = async (done: () => Promise<boolean>) => {
  while (!await done()) await new Promise((r) => setTimeout(r, 20));
};

info(
  `sagas: ${N} sagas of 3 steps vs ${
    3 * N
  } plain tasks, 3 nodes, ${ROUNDS} round(s)`,
);
const c = await startCluster(fileTarget, {
  nodes: 3,
  args: [
    "--consensus",
    "kv-lease",
    "--plugin",
    "builtin:sagas",
    "--plugin",
    FIXTURE,
  ],
  config: {
    pluginConfig: { sagas: { tickMs: TICK } },
    pluginTrust: { "saga-shop": "trusted" },
    rateLimit: { enabled: false },
    tasks: { concurrency: 16 },
  },
});
if (!c) throw new Error("no cluster");
const sagaRates: number[] = [];
const plainRates: number[] = [];
let stuck = 0;
let deadTasks = 0;
const reasons: Record<string, number> = {};
try {
  const token = await c.nodes[0].token("analyst");
  const q = new DurableQueue(c.kv, "tasks");
  const open = async () =>
    (await Array.fromAsync(c.kv.list({ prefix: ["sagas", "open"] }), (e) => e))
      .length;
  // Warm up: one saga through every node.
  await postAll(c.nodes, token, "/api/v1/sagas", 3, (i) => ({
    id: `warm-${i}`,
    definition: DEFINITION,
  }));
  await until(async () => await open() === 0);
  for (let r = 0; r < ROUNDS; r++) {
    let t0 = performance.now();
    await postAll(c.nodes, token, "/api/v1/tasks", 3 * N, (i) => ({
      type: "shop.step",
      payload: {
        saga: {
          id: `plain-${r}-${Math.floor(i / 3)}`,
          step: `s${i % 3 + 1}`,
          idempotencyKey: `plain-${r}-${Math.floor(i / 3)}:s${i % 3 + 1}`,
          attempt: 1,
          compensating: false,
        },
        input: { name: `s${i % 3 + 1}` },
      },
    }));
    await until(async () => {
      const s = await q.stats();
      return s.ready + s.delayed + s.inflight === 0;
    });
    const plain = N / ((performance.now() - t0) / 1000);
    plainRates.push(plain);
    t0 = performance.now();
    await postAll(c.nodes, token, "/api/v1/sagas", N, (i) => ({
      id: `bench-${r}-${i}`,
      definition: DEFINITION,
    }));
    const posted = (performance.now() - t0) / 1000;
    await until(async () => await open() === 0);
    const sagas = N / ((performance.now() - t0) / 1000);
    sagaRates.push(sagas);
    info(
      `  round ${r + 1}: plain ${round(plain)} triples/s (${
        round(3 * plain)
      } tasks/s); sagas ${round(sagas)}/s (posted in ${round(posted, 1)} s)`,
    );
  }
  for await (
    const e of c.kv.list<{ status: string; reason?: string }>({
      prefix: ["sagas", "saga"],
    })
  ) {
    if (e.value.status === "completed") continue;
    stuck++;
    const why = (e.value.reason ?? e.value.status).replace(
      /[0-9a-f-]{36}/g,
      "…",
    );
    reasons[why] = (reasons[why] ?? 0) + 1;
  }
  deadTasks = (await allTasks(c.kv)).filter((t) => t.state === "dead").length;
} finally {
  await c[Symbol.asyncDispose]();
}
const value = median(sagaRates);
const baseline = median(plainRates);
console.log(JSON.stringify({
  bench: "sagas",
  metric: "sagas_per_s_3_nodes",
  unit: "1/s",
  value: round(value, 1),
  baseline: {
    name: "the same 3 tasks per saga as plain tasks (triples/s), same nodes",
    value: round(baseline, 1),
  },
  ratio: round(value / baseline, 2),
  sagas: N,
  rounds: ROUNDS,
  tick_ms: TICK,
  not_completed: stuck,
  not_completed_why: reasons,
  dead_tasks: deadTasks,
  spread: {
    sagas: round(spread(sagaRates), 2),
    plain: round(spread(plainRates), 2),
  },
  load: Deno.loadavg(),
}));
