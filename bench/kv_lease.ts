/**
 * Leader failover time of `consensus/kv-lease` with real processes: kill →
 * new leader observed by the survivors, over at least 20 SIGKILLs of the
 * leader; compared with the configured lease + retry period.
 *
 *   deno run -A bench/kv_lease.ts [--quick] [--kills 20] [--lease 1000]
 *     [--renew-deadline 700] [--retry 150] [--poll 20]
 *
 * Three plexus nodes (`main.ts --consensus kv-lease --log-level warn
 * --port 0`, each with its own `--data-dir` and `--node-id`) share one KV
 * file. Each round: wait until all three report the same leader and epoch
 * on `GET /api/v1/cluster`, wait a random 0–1.2 retry periods (so the kill
 * lands anywhere in the leader's renew cycle), SIGKILL the leader, and poll
 * both survivors every `--poll` ms. Two times are taken per kill: the first
 * survivor reporting a new leader (in practice the new leader itself), and
 * both survivors agreeing on it, which is the headline ("observed by the
 * survivors"). Then a replacement node (fresh id) is started and must agree
 * before the next round. Nodes log at warn, so each one's address is read
 * from its registry record in the shared KV.
 *
 * The baseline is the issue's bound, leaseMs + retryPeriodMs. The elector's
 * own worst case is longer: a follower may see the last renewal up to one
 * jittered poll (1.2 retry periods) after it was written, times the lease
 * from then, and takes over on its first poll after that (another 1.2):
 * leaseMs + 2.4 retryPeriodMs until the new leader knows; the other survivor
 * reads the new record on its next poll, up to 1.2 retry periods later.
 * Both bounds are reported, with whether the p99 stays within them.
 *
 * @module
 */
import { V8_FLAGS_ARG } from "../core/runtime_flags.ts";
import { createJwtAuthority } from "../core/security/jwt.ts";
import { loadNodeKey, NODE_KEY_FILE } from "../core/security/node_key.ts";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { nodeKey } from "../core/state/keys.ts";
import { info, isQuick, median, numFlag, round } from "./_util.ts";

const quick = isQuick();
const KILLS = numFlag("kills", quick ? 8 : 20);
const LEASE_MS = numFlag("lease", 1000);
const RENEW_DEADLINE_MS = numFlag("renew-deadline", 700);
const RETRY_MS = numFlag("retry", 150);
const POLL_MS = numFlag("poll", 20);
/** RETRY_JITTER of the elector: each wait is 1 to 1.2 retry periods. */
const JITTER = 0.2;
const START_TIMEOUT_MS = 30_000;

const REPO = fileURLToPath(new URL("../", import.meta.url));
const MAIN = join(REPO, "main.ts");

interface View {
  nodeId: string;
  leader: string | null;
  epoch: number;
}

/** One plexus process. */
interface Node {
  id: string;
  child: Deno.ChildProcess;
  url: string;
  /** An API token signed with its own key (read from its data dir). */
  token: string;
  exited: boolean;
  /** Its stdout and stderr (warnings and errors only, at warn level). */
  output: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const dir = await Deno.makeTempDir({ prefix: "plexus-bench-kvlease-" });
const kvFile = join(dir, "shared.kv");
const configFile = join(dir, "config.json");
const lock = join(dir, "deno.lock");
await Deno.writeTextFile(
  configFile,
  JSON.stringify({
    // Polled every POLL_MS on every node from one IP: the API rate limits
    // would refuse the probes (and add shared-KV commits to what is measured).
    rateLimit: { enabled: false },
    pluginConfig: {
      "kv-lease": {
        leaseMs: LEASE_MS,
        renewDeadlineMs: RENEW_DEADLINE_MS,
        retryPeriodMs: RETRY_MS,
      },
    },
  }),
);
// The nodes record what they import in a lockfile: give them a private copy.
await Deno.copyFile(join(REPO, "deno.lock"), lock).catch(() => {});
const kv = await Deno.openKv(kvFile);
const all: Node[] = [];
let nextId = 1;

async function drain(stream: ReadableStream<Uint8Array>, out: string[]) {
  const decoder = new TextDecoder();
  try {
    for await (const chunk of stream) out.push(decoder.decode(chunk));
  } catch {
    // torn down on kill
  }
}

/** Starts a node and waits until its registry record names its address. */
async function startNode(): Promise<Node> {
  const id = `n${nextId++}`;
  const data = join(dir, id);
  const spawnedAt = Date.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      V8_FLAGS_ARG,
      `--lock=${lock}`,
      "--allow-net",
      "--allow-read",
      `--allow-write=${dir}`,
      "--allow-env",
      "--allow-import",
      MAIN,
      "--kv",
      kvFile,
      "--node-id",
      id,
      "--consensus",
      "kv-lease",
      "--config",
      configFile,
      "--log-level",
      "warn",
      "--port",
      "0",
      "--data-dir",
      data,
      "--plugins-dir",
      join(data, "plugins.d"),
    ],
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const node: Node = {
    id,
    child,
    url: "",
    token: "",
    exited: false,
    output: [],
  };
  all.push(node);
  child.status.then(() => (node.exited = true));
  drain(child.stdout, node.output);
  drain(child.stderr, node.output);
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!node.url) {
    if (node.exited) {
      throw new Error(`${id} exited during start:\n${node.output.join("")}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`${id} did not register within ${START_TIMEOUT_MS} ms`);
    }
    const rec = await kv.get<{ address?: string; startedAt?: number }>(
      nodeKey(id),
    );
    if (rec.value?.address && (rec.value.startedAt ?? 0) >= spawnedAt - 1000) {
      node.url = rec.value.address;
    } else await sleep(POLL_MS);
  }
  node.token = await createJwtAuthority(
    await loadNodeKey(join(data, NODE_KEY_FILE)),
  ).issue("bench", "viewer", { ttl: "1h" });
  return node;
}

async function view(node: Node): Promise<View | null> {
  try {
    const res = await fetch(new URL("/api/v1/cluster", node.url), {
      headers: { authorization: `Bearer ${node.token}` },
      signal: AbortSignal.timeout(2_000),
    });
    return await res.json() as View;
  } catch {
    return null;
  }
}

/** Polls until every node reports the same non-null leader and epoch. */
async function agreed(nodes: Node[], timeoutMs = 15_000): Promise<View> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const vs = await Promise.all(nodes.map(view));
    const v0 = vs[0];
    if (
      v0?.leader && vs.every((v) =>
        v !== null && v.leader === v0.leader && v.epoch === v0.epoch
      ) && nodes.some((n) =>
        n.id === v0.leader
      )
    ) return v0;
    if (performance.now() > deadline) {
      throw new Error(
        `no agreed leader in ${timeoutMs} ms: ${JSON.stringify(vs)}`,
      );
    }
    await sleep(POLL_MS);
  }
}

/** Nearest-rank percentile (p99 of 20 samples is the largest). */
function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length, Math.max(1, Math.ceil(p * s.length))) - 1];
}

interface Kill {
  firstMs: number;
  allMs: number;
  epochStep: number;
}

async function killOnce(live: Node[], k: number): Promise<{
  kill: Kill;
  survivors: Node[];
}> {
  const before = await agreed(live);
  // Land the kill at a random point of the leader's renew cycle.
  await sleep(Math.random() * RETRY_MS * (1 + JITTER));
  const victim = live.find((n) => n.id === before.leader)!;
  const survivors = live.filter((n) => n !== victim);
  const t0 = performance.now();
  victim.child.kill("SIGKILL");
  const seen = new Map<string, View>();
  let firstMs = NaN;
  for (;;) {
    const started = performance.now();
    await Promise.all(survivors.map(async (n) => {
      if (seen.has(n.id)) return;
      const v = await view(n);
      if (v?.leader && v.leader !== victim.id) {
        seen.set(n.id, v);
        if (Number.isNaN(firstMs)) firstMs = performance.now() - t0;
      }
    }));
    if (seen.size === survivors.length) break;
    if (performance.now() - t0 > 10 * LEASE_MS) {
      throw new Error(`kill ${k}: no new leader after ${10 * LEASE_MS} ms`);
    }
    await sleep(Math.max(0, started + POLL_MS - performance.now()));
  }
  let allMs = performance.now() - t0;
  let vs = [...seen.values()];
  if (vs.some((v) => v.leader !== vs[0].leader || v.epoch !== vs[0].epoch)) {
    // Survivors saw different terms: wait for agreement and time that.
    vs = [await agreed(survivors)];
    allMs = performance.now() - t0;
  }
  const kill = { firstMs, allMs, epochStep: vs[0].epoch - before.epoch };
  info(
    `kill ${k}: ${victim.id} (epoch ${before.epoch}) → ${vs[0].leader} (epoch ${
      vs[0].epoch
    }); first survivor ${round(kill.firstMs)} ms, ` +
      `both ${round(kill.allMs)} ms`,
  );
  return { kill, survivors };
}

try {
  const t0 = performance.now();
  info(
    `kv_lease: 3 nodes, leaseMs ${LEASE_MS}, renewDeadlineMs ${RENEW_DEADLINE_MS}, ` +
      `retryPeriodMs ${RETRY_MS} (jitter +${
        JITTER * 100
      } %), ${KILLS} kills, polling /api/v1/cluster every ${POLL_MS} ms`,
  );
  let live: Node[] = await Promise.all([startNode(), startNode(), startNode()]);
  await agreed(live);
  info(`started 3 nodes in ${round(performance.now() - t0)} ms`);
  const kills: Kill[] = [];
  for (let k = 1; k <= KILLS; k++) {
    const { kill, survivors } = await killOnce(live, k);
    kills.push(kill);
    live = [...survivors, await startNode()];
  }
  const first = kills.map((k) => k.firstMs);
  const both = kills.map((k) => k.allMs);
  const bound = LEASE_MS + RETRY_MS;
  const electorBound = LEASE_MS + 2 * (1 + JITTER) * RETRY_MS;
  const electorBoundAll = LEASE_MS + 3 * (1 + JITTER) * RETRY_MS;
  const p99 = percentile(both, 0.99);
  const p50 = median(both);
  const firstP99 = percentile(first, 0.99);
  const extraTerms = kills.filter((k) => k.epochStep !== 1).length;
  const spurious = all.reduce(
    (n, node) => n + node.output.join("").split("\n").filter(Boolean).length,
    0,
  );
  info(
    `both survivors: p50 ${round(p50)} ms, p99 ${round(p99)} ms, min ${
      round(Math.min(...both))
    }, max ${round(Math.max(...both))}; first survivor: p50 ${
      round(median(first))
    } ms, p99 ${round(firstP99)} ms`,
  );
  info(
    `baseline (issue) lease + retry = ${bound} ms → ratio ${
      round(p99 / bound, 3)
    }; elector worst case lease + 2.4 retry = ${electorBound} ms until the ` +
      `new leader knows (first-survivor p99 ${
        firstP99 <= electorBound ? "within" : "OVER"
      }), lease + 3.6 retry = ${electorBoundAll} ms until both survivors ` +
      `know (p99 ${p99 <= electorBoundAll ? "within" : "OVER"}), each plus ` +
      `up to ~${POLL_MS} ms of HTTP polling`,
  );
  if (p99 > bound) {
    info(
      `p99 is above lease + retry: a candidate times the lease from when it ` +
        `first SAW the last renewal (up to one jittered poll, 1.2 retry ` +
        `periods, after it was written) and only checks again on its next ` +
        `poll (up to 1.2 more), and the other survivor learns on its own ` +
        `next poll; only kills landing right before a renewal fit in ` +
        `lease + retry. Waking candidates exactly when the lease they watch ` +
        `runs out, polling every 0.8-1 (not 1-1.2) retry periods as a ` +
        `candidate, and re-reading at once after a lost takeover race would ` +
        `bound it by about lease + retry`,
    );
  }
  info(
    `${extraTerms} kills moved the epoch by other than 1; ${spurious} ` +
      `warn/error output lines from the nodes; took ${
        round((performance.now() - t0) / 1000, 1)
      } s`,
  );
  console.log(JSON.stringify({
    bench: "kv_lease",
    metric: "failover_p99_ms",
    unit: "ms",
    value: round(p99),
    p50: round(p50),
    baseline: {
      name: "configured leaseMs + retryPeriodMs",
      value: bound,
    },
    ratio: round(p99 / bound, 3),
    notes: `SIGKILL of the leader → both survivors report the new leader on ` +
      `GET /api/v1/cluster (polled every ${POLL_MS} ms), ${KILLS} kills, ` +
      `3 real nodes on one KV file; p99 is nearest-rank`,
    details: {
      kills: KILLS,
      lease_ms: LEASE_MS,
      renew_deadline_ms: RENEW_DEADLINE_MS,
      retry_period_ms: RETRY_MS,
      failover_ms: both.map((v) => round(v)),
      first_survivor: {
        p50: round(median(first)),
        p99: round(firstP99),
        failover_ms: first.map((v) => round(v)),
      },
      elector_bound_ms: electorBound,
      first_within_elector_bound: firstP99 <= electorBound,
      elector_bound_all_survivors_ms: electorBoundAll,
      within_elector_bound_all_survivors: p99 <= electorBoundAll,
      epoch_steps_not_1: extraTerms,
    },
  }));
} finally {
  for (const n of all) {
    if (!n.exited) {
      try {
        n.child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
  }
  await Promise.all(all.map((n) => n.child.status.catch(() => {})));
  kv.close();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
