/**
 * Raft commit throughput and latency: 3 in-process nodes over real loopback
 * WebSocket links, each with its own fsync'd log file, 1 KiB write commands
 * proposed on the leader by many concurrent clients (group commit: one
 * fdatasync per Ready on every node, however many commands it carries).
 *
 * Baseline, same run, same disk: sequential 1 KiB appends each followed by
 * fdatasync — the physical limit of one synchronous writer. `ratio` =
 * commits/s ÷ fsyncs/s (> 1 means batching beats one fsync per command).
 *
 * `--quick` shortens the runs; `--concurrency N` (default 256).
 *
 * @module
 */
import { join } from "node:path";
import { info, isQuick, numFlag, round } from "./_util.ts";
import { startLoopbackCluster } from "../consensus/raft/_loopback.ts";

const quick = isQuick();
const SECONDS = quick ? 3 : 10;
const CONCURRENCY = numFlag("concurrency", 256);
const VALUE = "v".repeat(1024);

const dir = await Deno.makeTempDir({ prefix: "plexus-bench-raft-" });

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

async function fsyncBaseline(seconds: number): Promise<number> {
  const f = await Deno.open(join(dir, "baseline.log"), {
    write: true,
    create: true,
    append: true,
  });
  const rec = new TextEncoder().encode(VALUE);
  let n = 0;
  const end = performance.now() + seconds * 1000;
  const t0 = performance.now();
  while (performance.now() < end) {
    await f.write(rec);
    await f.syncData();
    n++;
  }
  const s = (performance.now() - t0) / 1000;
  f.close();
  return n / s;
}

try {
  const fsyncs = await fsyncBaseline(quick ? 1.5 : 4);
  info(`baseline: ${round(fsyncs)} fsync'd 1 KiB appends/s`);

  const c = await startLoopbackCluster(3, { dir });
  try {
    const t = performance.now();
    while (c.leader() < 0) {
      if (performance.now() - t > 20_000) throw new Error("no leader");
      await new Promise((r) => setTimeout(r, 10));
    }
    const leader = c.nodes[c.leader()].driver!;
    const lat: number[] = [];
    let failed = 0;
    let stop = false;
    let seq = 0;
    const client = async () => {
      while (!stop) {
        const key = `k${seq++ % 1000}`;
        const t0 = performance.now();
        try {
          await leader.propose({ op: "write", key, value: VALUE });
          if (!stop) lat.push(performance.now() - t0);
        } catch {
          failed++;
          // A write refused at once (the leader stepped down) must not loop
          // in microtasks: the timer that ends the slice would never run.
          await new Promise((r) => setTimeout(r, 1));
        }
      }
    };
    // Warm up, then measure.
    const clients = Array.from({ length: CONCURRENCY }, client);
    await new Promise((r) => setTimeout(r, 1000));
    lat.length = 0;
    const writesBefore = c.nodes.map((n) => n.driver!.applied);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const done = lat.length;
    const elapsed = (performance.now() - t0) / 1000;
    stop = true;
    await Promise.all(clients);
    const commits = done / elapsed;
    const sorted = [...lat].sort((a, b) => a - b);
    const applied = c.nodes.map((n, i) => n.driver!.applied - writesBefore[i]);
    info(
      `raft: ${round(commits)} commits/s of 1 KiB on 3 nodes (fsync on), p50 ${
        round(pct(sorted, 0.5), 2)
      } ms, p99 ${
        round(pct(sorted, 0.99), 2)
      } ms, ${CONCURRENCY} clients, ${failed} failed; applied per node ${
        applied.join("/")
      }`,
    );
    console.log(JSON.stringify({
      bench: "raft_commit",
      metric: "commits_per_s",
      unit: "1/s",
      value: round(commits),
      baseline: {
        name: "fsync'd 1 KiB appends/s on this disk",
        value: round(fsyncs),
      },
      ratio: round(commits / fsyncs, 3),
      details: {
        p50_ms: round(pct(sorted, 0.5), 2),
        p99_ms: round(pct(sorted, 0.99), 2),
        seconds: SECONDS,
        concurrency: CONCURRENCY,
        failed,
        nodes: 3,
        transport: "in-process nodes, WebSocket links over loopback",
        target_commits_per_s: 5000,
      },
    }));
  } finally {
    await c.close();
  }
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
