/**
 * Balancing strategies: how fast each picks, and how much a latency-aware
 * strategy helps when one backend is slow.
 *
 *   deno run -A bench/balancers.ts [--quick]
 *
 * 1. Picks per second of every strategy (a `pick` then its `report`, over
 *    10 candidates; consistent hashing with a fresh key per call) against
 *    indexing a plain array round-robin, in interleaved rounds in the same
 *    process; medians over rounds.
 * 2. A seeded discrete-event simulation on a virtual clock: 10 backends,
 *    each a FIFO single-server queue with exponential service times (mean
 *    10 ms; one backend 100 ms, 10× slower), Poisson arrivals at 70 req/s
 *    (the slow backend at 70 % load under round-robin; 50 and 90 req/s are
 *    run too, for round-robin and P2C-EWMA). Every strategy sees
 *    the same arrivals and service draws; latency is arrival to completion
 *    (queueing included) and is reported back to the balancer at the
 *    completion time. Deterministic: the same seed prints the same figures.
 *
 * The last line is the JSON result: p99 latency of P2C-EWMA against
 * round-robin (`ratio` = p99(P2C-EWMA) ÷ p99(round-robin), target ≤ 0.5),
 * with picks/s per strategy and every strategy's p50/p99 in `details`.
 *
 * @module
 */
import {
  type Balancer,
  type Candidate,
  createConsistentHash,
  createLeastConnections,
  createP2cEwma,
  createRandom,
  createRoundRobin,
  createSmoothWeighted,
  type RandomSource,
  seededRandom,
} from "../plugins/balancers/mod.ts";
import { info, isQuick, median, round } from "./_util.ts";

const quick = isQuick();
const ROUNDS = quick ? 3 : 7;
const ROUND_MS = quick ? 100 : 250;
const SIM_REQUESTS = quick ? 60_000 : 300_000;
const SEED = 20261122;

// ---------------------------------------------------------------- picks/s

const CANDIDATES: Candidate[] = Array.from(
  { length: 10 },
  (_, i) => ({ id: `node-${i}`, weight: 1 + (i % 3) }),
);
const KEYS = Array.from({ length: 4096 }, (_, i) => `session-${i}`);
const OK = { ok: true, latencyMs: 5 };

type Op = (i: number) => unknown;

function pickOp(balancer: Balancer, keyed = false): Op {
  return (i) => {
    const c = balancer.pick(
      CANDIDATES,
      keyed ? { key: KEYS[i & 4095] } : undefined,
    )!;
    balancer.report(c.id, OK);
    return c;
  };
}

function opsPerSecond(op: Op): number {
  let n = 0;
  let sink = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ROUND_MS) {
    for (let i = 0; i < 4096; i++) {
      if (op(n + i) === undefined) sink++;
    }
    n += 4096;
    t = performance.now();
  }
  if (sink) throw new Error("a pick returned nothing");
  return n / ((t - t0) / 1000);
}

const ops: Record<string, Op> = {
  "array index": (i) => CANDIDATES[i % CANDIDATES.length],
  "round-robin": pickOp(createRoundRobin()),
  random: pickOp(createRandom({ random: seededRandom(1) })),
  "smooth-weighted": pickOp(createSmoothWeighted()),
  "least-connections": pickOp(
    createLeastConnections({ random: seededRandom(2) }),
  ),
  "p2c-ewma": pickOp(createP2cEwma({ random: seededRandom(3) })),
  "consistent-hash": pickOp(createConsistentHash(), true),
  "consistent-hash bounded 1.25": pickOp(
    createConsistentHash({ boundedLoad: 1.25 }),
    true,
  ),
};

const runs: Record<string, number[]> = {};
for (const [name, op] of Object.entries(ops)) {
  opsPerSecond(op); // warm up
  runs[name] = [];
}
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, op] of Object.entries(ops)) {
    runs[name].push(opsPerSecond(op));
  }
}
const picksPerS: Record<string, number> = {};
for (const [name, v] of Object.entries(runs)) {
  picksPerS[name] = round(median(v));
}
const arrayIndex = picksPerS["array index"];
for (const [name, v] of Object.entries(picksPerS)) {
  info(
    `${name.padEnd(30)} ${v.toLocaleString("en").padStart(14)} picks/s` +
      (name === "array index"
        ? ""
        : `  (${(arrayIndex / v).toFixed(1)}× slower than indexing)`),
  );
}

// ------------------------------------------------------------- simulation

const BACKENDS = 10;
const FAST_MS = 10;
const SLOW_MS = 100;
const RATE_PER_S = 70;

/** Min-heap of pending completions ordered by time. */
class Completions {
  #time: number[] = [];
  #backend: number[] = [];
  get size(): number {
    return this.#time.length;
  }
  peek(): number {
    return this.#time[0];
  }
  push(time: number, backend: number): void {
    const t = this.#time;
    const b = this.#backend;
    let i = t.length;
    t.push(time);
    b.push(backend);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (t[p] <= time) break;
      t[i] = t[p];
      b[i] = b[p];
      i = p;
    }
    t[i] = time;
    b[i] = backend;
  }
  /** Removes the earliest; returns its backend (its time was `peek()`). */
  pop(): number {
    const t = this.#time;
    const b = this.#backend;
    const top = b[0];
    const lastT = t.pop()!;
    const lastB = b.pop()!;
    const n = t.length;
    if (n === 0) return top;
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && t[c + 1] < t[c]) c++;
      if (t[c] >= lastT) break;
      t[i] = t[c];
      b[i] = b[c];
      i = c;
    }
    t[i] = lastT;
    b[i] = lastB;
    return top;
  }
}

interface SimResult {
  p50: number;
  p99: number;
  p999: number;
  slowShare: number;
}

function exponential(random: RandomSource, mean: number): number {
  return -mean * Math.log(1 - random());
}

/**
 * Runs the simulation for one strategy. Arrivals and each backend's service
 * draws come from their own seeded streams, so every strategy meets the same
 * workload.
 */
function simulate(
  make: (now: () => number) => Balancer,
  requests: number,
  ratePerS = RATE_PER_S,
): SimResult {
  const ratePerMs = ratePerS / 1000;
  let clock = 0;
  const balancer = make(() => clock);
  const candidates: Candidate[] = Array.from(
    { length: BACKENDS },
    (_, i) => ({ id: `b${i}` }),
  );
  const slow = BACKENDS - 1;
  const arrivals = seededRandom(SEED);
  const service = Array.from(
    { length: BACKENDS },
    (_, i) => seededRandom(SEED + 1 + i),
  );
  const freeAt = new Float64Array(BACKENDS);
  const pending = new Completions();
  // Arrival time of each pending completion, FIFO per backend.
  const started: number[][] = Array.from({ length: BACKENDS }, () => []);
  const heads = new Int32Array(BACKENDS);
  const latencies = new Float64Array(requests);
  const warmup = Math.floor(requests / 10);
  let toSlow = 0;
  let t = 0;
  for (let r = 0; r < requests; r++) {
    t += exponential(arrivals, 1 / ratePerMs);
    // Completions due before this arrival reach the balancer first.
    while (pending.size && pending.peek() <= t) {
      clock = pending.peek();
      const b = pending.pop();
      const arrived = started[b][heads[b]++];
      balancer.report(candidates[b].id, {
        ok: true,
        latencyMs: clock - arrived,
      });
    }
    clock = t;
    const c = balancer.pick(candidates)!;
    const b = Number(c.id.slice(1));
    const begin = Math.max(t, freeAt[b]);
    const done = begin +
      exponential(service[b], b === slow ? SLOW_MS : FAST_MS);
    freeAt[b] = done;
    started[b].push(t);
    pending.push(done, b);
    latencies[r] = done - t;
    if (r >= warmup && b === slow) toSlow++;
  }
  const measured = latencies.slice(warmup).sort();
  const at = (q: number) =>
    measured[Math.min(measured.length - 1, Math.floor(q * measured.length))];
  return {
    p50: round(at(0.5), 1),
    p99: round(at(0.99), 1),
    p999: round(at(0.999), 1),
    slowShare: round(toSlow / measured.length, 4),
  };
}

const strategies: Record<string, (now: () => number) => Balancer> = {
  "round-robin": () => createRoundRobin(),
  random: () => createRandom({ random: seededRandom(SEED + 100) }),
  "least-connections": () =>
    createLeastConnections({ random: seededRandom(SEED + 101) }),
  "p2c-ewma": (now) => createP2cEwma({ random: seededRandom(SEED + 102), now }),
};
const sim: Record<string, SimResult> = {};
const simStart = performance.now();
for (const [name, make] of Object.entries(strategies)) {
  sim[name] = simulate(make, SIM_REQUESTS);
  const s = sim[name];
  info(
    `sim ${
      name.padEnd(18)
    } p50 ${s.p50} ms  p99 ${s.p99} ms  p99.9 ${s.p999} ms  to slow backend ${
      (s.slowShare * 100).toFixed(2)
    } %`,
  );
}
info(
  `simulation: ${SIM_REQUESTS} requests × ${
    Object.keys(strategies).length
  } strategies in ${Math.round(performance.now() - simStart)} ms of real time`,
);

// The same comparison at lighter and heavier load (slow backend at 50 % and
// 90 % under round-robin).
const sweep: Record<
  string,
  { rr_p99: number; p2c_p99: number; ratio: number }
> = {};
for (const rate of [50, 90]) {
  const r = simulate(strategies["round-robin"], SIM_REQUESTS, rate).p99;
  const p = simulate(strategies["p2c-ewma"], SIM_REQUESTS, rate).p99;
  sweep[`${rate}_per_s`] = { rr_p99: r, p2c_p99: p, ratio: round(p / r, 3) };
  info(`sim at ${rate} req/s: p99 round-robin ${r} ms, p2c-ewma ${p} ms`);
}

const p2c = sim["p2c-ewma"].p99;
const rr = sim["round-robin"].p99;
console.log(JSON.stringify({
  bench: "balancers",
  metric: "p99_latency_ms_one_backend_10x_slower",
  unit: "ms",
  value: p2c,
  baseline: { name: "round-robin p99, same simulated workload", value: rr },
  ratio: round(p2c / rr, 3),
  details: {
    picks_per_s: picksPerS,
    simulation: {
      backends: BACKENDS,
      service_mean_ms: { fast: FAST_MS, slow: SLOW_MS },
      arrivals_per_s: RATE_PER_S,
      requests: SIM_REQUESTS,
      seed: SEED,
      results: sim,
      load_sweep: sweep,
    },
  },
  notes:
    "picks/s = pick + report over 10 weighted candidates (consistent-hash with a key per call), medians of interleaved rounds; simulation is deterministic (seeded, virtual clock, FIFO queue per backend)",
}));
