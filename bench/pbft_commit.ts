/**
 * PBFT commit throughput and latency against Raft's, same machine, same
 * run: 4 in-process PBFT replicas (f = 1) over real loopback WebSocket
 * links, each with its own fsync'd log, 1 KiB writes submitted on the
 * primary by many concurrent clients, each answered on f + 1 = 2 matching
 * results; then Raft's `bench/raft_commit.ts` setup (3 in-process nodes,
 * fsync'd logs, the same links, 1 KiB writes proposed on the leader) with
 * the same clients and duration, in four alternating slices each (both
 * clusters up throughout). `ratio` = PBFT commits/s ÷ Raft commits/s.
 *
 * It also times the authenticators on this machine (HMAC-SHA256 per link,
 * Ed25519 sign and verify, SHA-256), since that choice drives PBFT's cost.
 *
 * `--quick` shortens the runs; `--concurrency N` (default 256).
 *
 * @module
 */
import process from "node:process";
import { ed25519 } from "@noble/curves/ed25519.js";
import { info, isQuick, numFlag, round } from "./_util.ts";
import { startLoopbackCluster } from "../consensus/raft/_loopback.ts";
import { startPbftLoopback } from "../consensus/pbft/_loopback.ts";
import { createPbftAuth } from "../consensus/pbft/auth.ts";

const quick = isQuick();
const SECONDS = quick ? 3 : 8;
const CONCURRENCY = numFlag("concurrency", 256);
const VALUE = "v".repeat(1024);

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

interface Run {
  commits: number;
  p50: number;
  p99: number;
  failed: number;
  /** CPU per commit: steadier than commits/s on a shared machine. */
  cpuUsPerCommit: number;
}

/** Latencies, time and process CPU measured over every slice of one system. */
interface Tally {
  lat: number[];
  seconds: number;
  failed: number;
  /** Microseconds of CPU (user + system, every thread) the process used. */
  cpuUs: number;
}

function summary(t: Tally): Run {
  const sorted = [...t.lat].sort((a, b) => a - b);
  return {
    commits: t.lat.length / t.seconds,
    p50: pct(sorted, 0.5),
    p99: pct(sorted, 0.99),
    failed: t.failed,
    cpuUsPerCommit: t.cpuUs / Math.max(1, t.lat.length),
  };
}

/** One slice: warm up 0.5 s, then measure `seconds`, adding to `tally`. */
async function drive(
  write: (key: string) => Promise<unknown>,
  seconds: number,
  tally: Tally,
): Promise<void> {
  const lat: number[] = [];
  let failed = 0;
  let stop = false;
  let seq = 0;
  const client = async () => {
    while (!stop) {
      const key = `k${seq++ % 1000}`;
      const t0 = performance.now();
      try {
        await write(key);
        if (!stop) lat.push(performance.now() - t0);
      } catch {
        failed++;
        // A write refused at once (Raft's leader stepped down) must not
        // loop in microtasks: the timer that ends the slice would never run.
        await new Promise((r) => setTimeout(r, 1));
      }
    }
  };
  const clients = Array.from({ length: CONCURRENCY }, client);
  await new Promise((r) => setTimeout(r, 500)); // warm up
  lat.length = 0;
  failed = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const done = lat.slice(0);
  const cpu = process.cpuUsage(cpu0);
  const elapsed = (performance.now() - t0) / 1000;
  stop = true;
  await Promise.all(clients);
  tally.lat.push(...done);
  tally.seconds += elapsed;
  tally.failed += failed;
  tally.cpuUs += cpu.user + cpu.system;
}

/** Microseconds per call of each authenticator on a 300-byte message. */
function authCosts() {
  const a = ed25519.utils.randomSecretKey(),
    b = ed25519.utils.randomSecretKey();
  const publicKeys = new Map([
    ["a", ed25519.getPublicKey(a)],
    ["b", ed25519.getPublicKey(b)],
  ]);
  const A = createPbftAuth({ id: "a", privateKey: a, publicKeys });
  const B = createPbftAuth({ id: "b", privateKey: b, publicKeys });
  const msg = "x".repeat(300);
  const time = (n: number, fn: () => void) => {
    for (let i = 0; i < 200; i++) fn();
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    return round(((performance.now() - t0) / n) * 1000, 1);
  };
  const mac = A.mac("b", msg), sig = A.sign(msg);
  return {
    mac_us: time(5000, () => A.mac("b", msg)),
    mac_check_us: time(5000, () => B.checkMac("a", msg, mac)),
    sign_us: time(1000, () => A.sign(msg)),
    verify_us: time(1000, () => B.verify("a", msg, sig)),
    sha256_us: time(5000, () => A.digest(msg)),
  };
}

const dir = await Deno.makeTempDir({ prefix: "plexus-bench-pbft-" });
try {
  const auth = authCosts();
  info(`authenticators (µs): ${JSON.stringify(auth)}`);

  // Both clusters run side by side and take turns, so a change in the
  // machine's load (it is shared) weighs on both alike.
  const p = await startPbftLoopback(4, {
    dir: `${dir}/pbft`,
    driver: {
      requestTimeoutMs: 30_000,
      maxBatch: 256,
      // Requests (about 32 full batches), as the plugin's default window.
      checkpointInterval: 8192,
      window: 512,
    },
  });
  const r = await startLoopbackCluster(3, { dir: `${dir}/raft` });
  const pbftTally: Tally = { lat: [], seconds: 0, failed: 0, cpuUs: 0 };
  /** PBFT operations submitted, and the client requests they left in. */
  let submitted = 0, requests = 0;
  const raftTally: Tally = { lat: [], seconds: 0, failed: 0, cpuUs: 0 };
  try {
    const t = performance.now();
    while (r.leader() < 0) {
      if (performance.now() - t > 20_000) throw new Error("no raft leader");
      await new Promise((res) => setTimeout(res, 10));
    }
    const primary = p.nodes[0].driver!;
    const leader = r.nodes[r.leader()].driver!;
    const SLICES = 4;
    const requestsBefore = primary.requests;
    for (let i = 0; i < SLICES; i++) {
      await drive(
        (key) => {
          submitted++;
          return primary.submit({ op: "write", key, value: VALUE });
        },
        SECONDS / SLICES,
        pbftTally,
      );
      await drive(
        (key) => leader.propose({ op: "write", key, value: VALUE }),
        SECONDS / SLICES,
        raftTally,
      );
    }
    requests = p.nodes[0].driver!.requests - requestsBefore;
  } finally {
    await p.close();
    await r.close();
  }
  const pbft = summary(pbftTally);
  const raft = summary(raftTally);
  info(
    `pbft: ${
      round(pbft.commits)
    } commits/s of 1 KiB on 4 replicas (fsync on), p50 ${
      round(pbft.p50, 2)
    } ms, p99 ${round(pbft.p99, 2)} ms, ${pbft.failed} failed`,
  );
  info(
    `raft: ${
      round(raft.commits)
    } commits/s of 1 KiB on 3 nodes (fsync on), p50 ${
      round(raft.p50, 2)
    } ms, p99 ${round(raft.p99, 2)} ms, ${raft.failed} failed`,
  );
  console.log(JSON.stringify({
    bench: "pbft_commit",
    metric: "commits_per_s",
    unit: "1/s",
    value: round(pbft.commits),
    baseline: {
      name: "raft commits/s (bench/raft_commit.ts setup, same run)",
      value: round(raft.commits),
    },
    ratio: round(pbft.commits / raft.commits, 3),
    details: {
      p50_ms: round(pbft.p50, 2),
      p99_ms: round(pbft.p99, 2),
      raft_p50_ms: round(raft.p50, 2),
      raft_p99_ms: round(raft.p99, 2),
      failed: pbft.failed,
      // Process CPU (all threads) per commit while each system ran.
      cpu_us_per_commit: round(pbft.cpuUsPerCommit, 1),
      raft_cpu_us_per_commit: round(raft.cpuUsPerCommit, 1),
      seconds: SECONDS,
      concurrency: CONCURRENCY,
      replicas: 4,
      raft_nodes: 3,
      authenticators_us: auth,
      normal_case: "HMAC-SHA256 per link",
      client_requests:
        "Ed25519 signature per request (one sign at the submitting node, one verify per replica); a node's operations submitted while 4 of its requests are outstanding leave together in the next one",
      ops_per_request: round(submitted / Math.max(1, requests), 1),
      // CPU the request signatures took in this one process (1 sign + 4
      // verifies per request), per second of run.
      request_auth_cpu_ms_per_s: round(
        (pbft.commits / (submitted / Math.max(1, requests))) *
          (auth.sign_us + 4 * auth.verify_us) / 1000,
        1,
      ),
      // What else ran: the machine is shared (1-, 5- and 15-minute load).
      loadavg: (await Deno.readTextFile("/proc/loadavg").catch(() => ""))
        .split(" ").slice(0, 3).join(" "),
      checkpoints_and_view_changes: "Ed25519 signatures",
      target_ratio: 0.3,
    },
  }));
} finally {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
