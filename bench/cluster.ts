/**
 * Cluster work sharing: tasks/s with 1 and with 3 real nodes sharing one KV
 * file, every task routed through the balancer (`--balancer p2c-ewma`), and
 * whether any task was lost or ran twice.
 *
 *   deno run -A bench/cluster.ts [--quick] [--tasks N] [--ms 20]
 *
 * Each phase starts its nodes on a fresh KV file (`kv-lease` elects the
 * sweeper, concurrency 8 per node, rate limits off), enqueues N `sleep`
 * tasks of `--ms` ms into the shared queue (batches of 10, from this
 * process) and waits until the queue is empty: rate = N / (first enqueue →
 * empty queue). `--balancer none` turns routing off (each node runs what it
 * claims).
 * Then it reads every task back: `lost` = tasks not done, `duplicates` =
 * tasks that took more than one attempt. The baseline is the same load on 1
 * node; ratio = 3-node rate / 1-node rate (3 is perfect scaling; the shared
 * KV file and the routing calls between nodes cost some of it).
 *
 * @module
 */
import { join } from "node:path";
import { DurableQueue } from "../core/state/queue.ts";
import { allTasks } from "../tests/cluster/_cluster.ts";
import type { TaskBody } from "../core/tasks.ts";
import {
  type PlexusProcess,
  startPlexus,
} from "../tests/integration/_process.ts";
import { info, isQuick, numFlag, round } from "./_util.ts";

const N = numFlag("tasks", isQuick() ? 600 : 3000);
const MS = numFlag("ms", 20);
const bi = Deno.args.indexOf("--balancer");
/** `none`: every node runs what it claims (no routing). */
const BALANCER = bi >= 0 ? Deno.args[bi + 1] : "p2c-ewma";

interface Phase {
  nodes: number;
  perS: number;
  lost: number;
  duplicates: number;
  spread: Record<string, number>;
}

async function phase(count: number, balancer: string): Promise<Phase> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-bench-cluster-" });
  const kvFile = join(dir, "shared.kv");
  const config = join(dir, "config.json");
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      rateLimit: { enabled: false },
      tasks: { concurrency: 8 },
    }),
  );
  const nodes: PlexusProcess[] = [];
  const kv = await Deno.openKv(kvFile);
  try {
    for (let i = 1; i <= count; i++) {
      nodes.push(
        await startPlexus({
          args: [
            "--kv",
            kvFile,
            "--node-id",
            `n${i}`,
            "--config",
            config,
            ...(balancer === "none" ? [] : ["--balancer", balancer]),
            "--consensus",
            "kv-lease",
          ],
          allowWrite: [dir],
        }),
      );
    }
    await new Promise((r) => setTimeout(r, 1500)); // heartbeats with task types
    const q = new DurableQueue<TaskBody>(kv, "tasks");
    // Enqueued straight into the shared queue in batches (what POST
    // /api/v1/tasks does one at a time): the phase measures the nodes
    // working the queue, not HTTP submission into one contended file.
    const t0 = performance.now();
    for (let i = 0; i < N; i += 10) {
      await q.enqueueMany(
        Array.from({ length: Math.min(10, N - i) }, () => ({
          payload: { type: "sleep", payload: { ms: MS } },
          options: { maxAttempts: 3 },
        })),
      );
    }
    const submitted = (performance.now() - t0) / 1000;
    for (;;) {
      const s = await q.stats();
      if (s.ready + s.delayed + s.inflight === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const seconds = (performance.now() - t0) / 1000;
    const tasks = await allTasks(kv);
    const done = tasks.filter((t) => t.state === "done");
    const spread: Record<string, number> = {};
    for (const t of done) {
      spread[t.consumer ?? "?"] = (spread[t.consumer ?? "?"] ?? 0) + 1;
    }
    info(
      `  ${count} node(s): submitted in ${round(submitted, 2)} s, drained at ${
        round(seconds, 2)
      } s`,
    );
    return {
      nodes: count,
      perS: N / seconds,
      lost: N - done.length,
      duplicates: tasks.filter((t) => t.attempts > 1).length,
      spread,
    };
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
    kv.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

info(`cluster: ${N} sleep tasks of ${MS} ms, concurrency 8 per node`);
const show = (label: string, p: Phase) =>
  info(
    `  ${label}: ${
      round(p.perS)
    } tasks/s, lost ${p.lost}, duplicates ${p.duplicates}, claimed by ${
      JSON.stringify(p.spread)
    }`,
  );
const one = await phase(1, BALANCER);
show(`1 node  (${BALANCER})`, one);
const three = await phase(3, BALANCER);
show(`3 nodes (${BALANCER})`, three);
// The same without routing (each node runs what it claims), for comparison.
const pullOne = BALANCER === "none" ? one : await phase(1, "none");
const pullThree = BALANCER === "none" ? three : await phase(3, "none");
if (BALANCER !== "none") {
  show("1 node  (no routing)", pullOne);
  show("3 nodes (no routing)", pullThree);
}
const all = [one, three, pullOne, pullThree];
console.log(JSON.stringify({
  bench: "cluster",
  metric: "tasks_per_s_3_nodes",
  unit: "1/s",
  value: round(three.perS),
  baseline: {
    name: `1 node, same tasks (--balancer ${BALANCER})`,
    value: round(one.perS),
  },
  ratio: round(three.perS / one.perS, 2),
  lost: all.reduce((n, p) => n + p.lost, 0),
  duplicates: all.reduce((n, p) => n + p.duplicates, 0),
  tasks: N,
  task_ms: MS,
  balancer: BALANCER,
  without_routing: {
    one_node: round(pullOne.perS),
    three_nodes: round(pullThree.perS),
    ratio: round(pullThree.perS / pullOne.perS, 2),
  },
}));
