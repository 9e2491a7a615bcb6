/**
 * PBFT view change: time from the primary's failure to the first commit in
 * the new view, over many failures. 4 in-process replicas (f = 1) over
 * loopback WebSocket links with fsync'd logs; a client keeps writing 1 KiB
 * values through a backup; the primary is dropped at once (driver stopped,
 * links and listener closed: what a SIGKILL looks like to the others), and
 * the clock runs until a write is answered (f + 1 matching results) in a
 * later view. The dropped replica then restarts from its log and rejoins
 * before the next round. The view-change timeout is part of the figure:
 * backups wait `viewChangeMs` for a pending request before they give up on
 * the primary (200 ms here; 2000 ms by default in the plugin).
 *
 * Baseline, same run: the time a commit takes with a live primary (p50),
 * so `ratio` = p50 failover ÷ p50 commit.
 *
 * `--quick` does 20 failures instead of 100.
 *
 * @module
 */
import { info, isQuick, numFlag, round } from "./_util.ts";
import { startPbftLoopback } from "../consensus/pbft/_loopback.ts";

const quick = isQuick();
const FAILURES = numFlag("failures", quick ? 20 : 100);
const TICK_MS = 10;
const VIEW_CHANGE_TICKS = 20;
const VALUE = "v".repeat(1024);

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const dir = await Deno.makeTempDir({ prefix: "plexus-bench-pbft-vc-" });
const c = await startPbftLoopback(4, {
  dir,
  driver: {
    tickMs: TICK_MS,
    viewChangeTicks: VIEW_CHANGE_TICKS,
    requestTimeoutMs: 30_000,
    retryMs: 100,
    checkpointInterval: 16,
  },
});
try {
  const until = async (what: string, pred: () => boolean, ms = 20_000) => {
    const t = performance.now();
    while (!pred()) {
      if (performance.now() - t > ms) {
        const states = c.nodes.map((n) =>
          n.driver ? JSON.stringify(n.driver.status()) : `${n.id} down`
        );
        throw new Error(`timed out: ${what}; replicas:\n${states.join("\n")}`);
      }
      await sleep(5);
    }
  };
  await until("a primary", () => c.primary() >= 0);
  // A commit with a live primary, for the baseline.
  const commitMs: number[] = [];
  for (let i = 0; i < 50; i++) {
    const t0 = performance.now();
    await c.nodes[1].driver!.submit({ op: "write", key: "w", value: VALUE });
    commitMs.push(performance.now() - t0);
  }
  const failover: number[] = [];
  let seq = 0;
  for (let round_ = 0; round_ < FAILURES; round_++) {
    const p = c.primary();
    if (p < 0) throw new Error(`round ${round_}: no primary agreed`);
    const oldView = c.nodes[p].driver!.node.view;
    const via = c.nodes[(p + 1) % 4].driver!;
    let done = false;
    let t1 = 0;
    const writer = (async () => {
      while (!done) {
        const r = await via.submit({
          op: "write",
          key: `k${seq++ % 100}`,
          value: VALUE,
        });
        if (r.view > oldView && t1 === 0) t1 = performance.now();
      }
    })();
    await sleep(20);
    const t0 = performance.now();
    await c.kill(p);
    await until(`round ${round_}: a commit in a later view`, () => t1 > 0);
    failover.push(t1 - t0);
    done = true;
    await writer;
    await c.start(p);
    // Back in the current view (its own requests start its timer).
    const d = c.nodes[p].driver!;
    const view = via.node.view;
    const nudge = d.submit({ op: "write", key: "rejoin", value: "x" });
    await until(
      `round ${round_}: the restarted replica rejoins`,
      () => d.node.view === view && !d.node.status().changing,
    );
    await nudge;
  }
  const sorted = [...failover].sort((a, b) => a - b);
  const commitP50 = pct([...commitMs].sort((a, b) => a - b), 0.5);
  info(
    `pbft view change: ${FAILURES} primary failures, first commit in the new view after p50 ${
      round(pct(sorted, 0.5), 1)
    } ms, p99 ${round(pct(sorted, 0.99), 1)} ms, max ${
      round(sorted.at(-1)!, 1)
    } ms (timeout ${
      TICK_MS * VIEW_CHANGE_TICKS
    } ms); commit with a live primary p50 ${round(commitP50, 2)} ms`,
  );
  console.log(JSON.stringify({
    bench: "pbft_view_change",
    metric: "failover_p50_ms",
    unit: "ms",
    value: round(pct(sorted, 0.5), 1),
    baseline: {
      name: "commit p50 with a live primary (same cluster, same run)",
      value: round(commitP50, 2),
    },
    ratio: round(pct(sorted, 0.5) / commitP50, 1),
    details: {
      failures: FAILURES,
      p99_ms: round(pct(sorted, 0.99), 1),
      max_ms: round(sorted.at(-1)!, 1),
      view_change_timeout_ms: TICK_MS * VIEW_CHANGE_TICKS,
      replicas: 4,
      final_view: c.nodes[0].driver?.node.view,
    },
  }));
} finally {
  await c.close();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
