/**
 * Raft leader failover time, measured as the Raft paper's Figure 16 does:
 * from the leader's crash until the new leader's first heartbeat (or
 * append) has reached every other surviving node. Election timeouts are
 * random in [150, 300) ms (10 ms ticks × [15, 30)), heartbeats every 30 ms.
 *
 * In-process nodes over real loopback WebSocket links with fsync'd logs (200
 * process kills do not fit in 60 s); a kill drops the node at once. Two
 * 3-node clusters run side by side, each killing its leader, then
 * restarting it, over and over, until the kills add up to 200 (`--quick`:
 * 40).
 *
 * Baseline: the 600 ms p99 target. `ratio` = p99 / 600 (≤ 1 meets it).
 *
 * @module
 */
import { info, isQuick, numFlag, round } from "./_util.ts";
import { startLoopbackCluster } from "../consensus/raft/_loopback.ts";

const KILLS = numFlag("kills", isQuick() ? 40 : 200);
const CLUSTERS = 2;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const dir = await Deno.makeTempDir({ prefix: "plexus-bench-failover-" });
const samples: number[] = [];

async function run(k: number, kills: number): Promise<void> {
  const c = await startLoopbackCluster(3, {
    dir: `${dir}/c${k}`,
    tickMs: 10,
    electionTick: 15,
    heartbeatTick: 3,
  });
  try {
    const settle = async () => {
      const end = performance.now() + 20_000;
      while (
        c.leader() < 0 || c.nodes.some((n) => !n.driver?.leader())
      ) {
        if (performance.now() > end) {
          throw new Error(
            `cluster did not settle: ${
              JSON.stringify(
                c.nodes.map((n) => [n.driver?.status(), n.links?.peers()]),
              )
            }`,
          );
        }
        await sleep(5);
      }
    };
    await settle();
    for (let i = 0; i < kills; i++) {
      // A random phase against the heartbeat timer.
      await sleep(20 + Math.random() * 60);
      const old = c.leader();
      const oldTerm = c.nodes[old].driver!.node.term;
      const survivors = c.nodes.filter((_, j) => j !== old);
      const learned = new Map<string, number>();
      const done = Promise.withResolvers<void>();
      const offs = survivors.map((n) =>
        n.driver!.onLeaderChange((ch) => {
          if (
            ch.leader && ch.leader !== c.nodes[old].id && ch.epoch > oldTerm &&
            !learned.has(n.id)
          ) {
            learned.set(n.id, performance.now());
            if (learned.size === survivors.length) done.resolve();
          }
        })
      );
      const t0 = performance.now();
      await c.kill(old);
      await Promise.race([done.promise, sleep(10_000)]);
      for (const off of offs) off();
      if (learned.size < survivors.length) {
        throw new Error(`kill ${i}: no new leader within 10 s`);
      }
      samples.push(Math.max(...learned.values()) - t0);
      await c.start(old);
      await settle();
    }
  } finally {
    await c.close();
  }
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

try {
  const per = Math.ceil(KILLS / CLUSTERS);
  const t = performance.now();
  await Promise.all(Array.from({ length: CLUSTERS }, (_, k) => run(k, per)));
  const sorted = [...samples].sort((a, b) => a - b);
  const p50 = pct(sorted, 0.5);
  const p99 = pct(sorted, 0.99);
  // The distribution, in 50 ms buckets.
  const buckets = new Map<number, number>();
  for (const v of sorted) {
    const b = Math.floor(v / 50) * 50;
    buckets.set(b, (buckets.get(b) ?? 0) + 1);
  }
  for (const [b, n] of buckets) {
    info(
      `${String(b).padStart(4)}-${String(b + 50).padEnd(4)} ms ${
        "#".repeat(Math.ceil(n * 60 / sorted.length))
      } ${n}`,
    );
  }
  info(
    `failover over ${sorted.length} leader kills: min ${
      round(sorted[0])
    } ms, p50 ${round(p50)} ms, p99 ${round(p99)} ms, max ${
      round(sorted.at(-1)!)
    } ms (${round((performance.now() - t) / 1000, 1)} s)`,
  );
  console.log(JSON.stringify({
    bench: "raft_failover",
    metric: "failover_p99_ms",
    unit: "ms",
    value: round(p99, 1),
    p50: round(p50, 1),
    baseline: { name: "target p99", value: 600 },
    ratio: round(p99 / 600, 3),
    details: {
      kills: sorted.length,
      p50_target_ms: 300,
      min_ms: round(sorted[0], 1),
      max_ms: round(sorted.at(-1)!, 1),
      election_timeout_ms: [150, 300],
      heartbeat_ms: 30,
      transport: "in-process nodes, WebSocket links over loopback, fsync on",
      buckets_50ms: Object.fromEntries(buckets),
    },
  }));
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
