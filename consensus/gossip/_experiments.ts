/**
 * The measurements the tests and `bench/gossip.ts` share: failure-detection
 * time against the SWIM paper's formula, dissemination time in protocol
 * periods, false positives per node-hour, and bytes per second per member.
 *
 * What "time to first detection" means here: victims crash just before a
 * protocol-period boundary; the sample is the time from that boundary until
 * the first member raises a suspicion of the victim (its probe got no direct
 * or indirect ack by the end of its period). In the paper's model every
 * member picks a uniformly random target at the start of each period and
 * suspects at its end, so the sample is T′ times the number of periods until
 * some member first picked the victim: geometric with success probability
 * 1 − (1 − 1/(n−1))^(n−f), whose mean tends to T′/(1 − e^(−q_f)).
 *
 * q_f is taken as the expected number of pings a member receives per period,
 * (n − f)/(n − 1) with f crashed members: the paper's n·q_f pingers each
 * choosing among the others. For one crash that is exactly 1, the paper's
 * large-group case (T′·e/(e − 1) ≈ 1.58 T′).
 *
 * That model is what the `aligned` mode reproduces: uniform random targets
 * and all members' periods starting together. memberlist's own mode
 * (round-robin over a shuffled list, periods at random offsets) is measured
 * too: a random phase adds the wait until the first probe and round-robin
 * cuts the tail (every member reaches the victim within n − 1 periods), so
 * its mean is reported beside the formula, not checked against it. The same
 * reasoning for random phases gives T′(1 + 1/q_f): first hits arrive about
 * as a Poisson process of rate q_f/T′, and the suspicion follows one period
 * after the probe; bench/gossip.ts prints both (measured within 5 % of it).
 *
 * @module
 */
import { type GossipConfig, gossipConfig } from "./config.ts";
import { decodePacket } from "./codec.ts";
import { GossipSim, mulberry32, simId } from "./_sim.ts";

/** Options for {@linkcode measureDetection}. */
export interface DetectionOptions {
  n: number;
  loss: number;
  /** First seed; run r uses seed + r. */
  seed: number;
  /** Independent runs. */
  runs: number;
  /** Members crashed together in each run (f). @default {1} */
  victims?: number;
  config?: Partial<GossipConfig>;
  /**
   * `aligned`: the paper's model (uniform random targets, periods in
   * step); `memberlist`: the config's own probe mode with random phases.
   * @default {"aligned"}
   */
  mode?: "aligned" | "memberlist";
  /** Protocol periods run before the crash. @default {4} */
  warmupPeriods?: number;
}

/** What {@linkcode measureDetection} saw. */
export interface DetectionResult {
  /** Protocol period T′, ms. */
  periodMs: number;
  /** Time to first detection of each victim, ms. */
  detectionMs: number[];
  /** From first suspicion until every live member knew, ms. */
  disseminationMs: number[];
  /** Victims not detected (or not fully known) before the run's limit. */
  undetected: number;
  /**
   * Victims left out because their first suspicion came from a probe sent
   * before the crash (a datagram lost just before it): that is a false
   * suspicion that happened to coincide, not a detection. Leaving them out
   * does not bias the rest: later target choices are independent of it.
   */
  excluded: number;
  /**
   * The protocol period in force, in units of T′: Lifeguard stretches each
   * member's period by its health score + 1, so the group probes at
   * mean(1/(score + 1)) times the nominal rate; this is the inverse of that
   * mean, sampled every half period from the crash until each victim's
   * first detection.
   */
  meanProbeScale: number;
  /** {@linkcode theoryMs} with T′ stretched by {@linkcode meanProbeScale}. */
  theoryScaledMs: number;
  /** (n − f)/(n − 1). */
  qf: number;
  /** T′/(1 − e^(−q_f)), the paper's expected detection time. */
  theoryMs: number;
  /** T′/(1 − (1 − 1/(n − 1))^(n − f)), the same model without the large-n limit. */
  exactMs: number;
}

/**
 * Mean of a list (NaN when empty).
 *
 * @example Usage
 * ```ts
 * import { mean } from "./_experiments.ts";
 * mean([1, 2, 3]); // 2
 * ```
 */
export function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/**
 * The SWIM paper's expected time to first detection.
 *
 * @example Usage
 * ```ts
 * import { detectionTheoryMs } from "./_experiments.ts";
 * Math.round(detectionTheoryMs(1000, 1)); // 1582
 * ```
 */
export function detectionTheoryMs(periodMs: number, qf: number): number {
  return periodMs / (1 - Math.exp(-qf));
}

/**
 * Runs seeded crash experiments and collects detection and dissemination
 * times.
 *
 * @example Usage
 * ```ts
 * import { measureDetection } from "./_experiments.ts";
 * const r = measureDetection({ n: 5, loss: 0, seed: 1, runs: 3 });
 * r.detectionMs.length; // 3
 * ```
 */
export function measureDetection(o: DetectionOptions): DetectionResult {
  const f = o.victims ?? 1;
  const mode = o.mode ?? "aligned";
  const config: Partial<GossipConfig> = mode === "aligned"
    ? { ...o.config, probeMode: "random", staggerStart: false }
    : { ...o.config };
  const T = gossipConfig(config).probeIntervalMs;
  const qf = (o.n - f) / (o.n - 1);
  const result: DetectionResult = {
    periodMs: T,
    detectionMs: [],
    disseminationMs: [],
    undetected: 0,
    excluded: 0,
    meanProbeScale: 0,
    theoryScaledMs: 0,
    qf,
    theoryMs: detectionTheoryMs(T, qf),
    exactMs: T / (1 - (1 - 1 / (o.n - 1)) ** (o.n - f)),
  };
  let scaleSum = 0;
  let scaleSamples = 0;
  for (let r = 0; r < o.runs; r++) {
    const seed = o.seed + r;
    const sim = new GossipSim({ n: o.n, seed, loss: o.loss, config });
    const rng = mulberry32(seed ^ 0x5eed);
    const crashAt = (o.warmupPeriods ?? 4) * T +
      (mode === "aligned" ? 0 : rng() * T);
    sim.runUntil(crashAt - 0.5);
    // Victims every member still sees as alive, so a first suspicion after
    // the crash is new at every member.
    const victims = new Map<
      string,
      {
        first?: number;
        knowers: Set<number>;
        done?: number;
        excluded?: boolean;
      }
    >();
    for (let tries = 0; victims.size < f && tries < 50 * f; tries++) {
      const i = Math.floor(rng() * o.n);
      const id = simId(i);
      if (victims.has(id)) continue;
      if (
        !sim.members.every((m) =>
          m.index === i || m.node.member(id)?.state === "alive"
        )
      ) {
        continue;
      }
      victims.set(id, { knowers: new Set() });
    }
    for (const id of victims.keys()) sim.crash(Number(id.slice(1)));
    const live = o.n - victims.size;
    let pending = victims.size;
    let undetected = victims.size;
    // Sample the members' probe-interval multiplier every half period until
    // every victim was first detected: the protocol period actually used.
    const sample = () => {
      scaleSum += sim.live().reduce((a, m) =>
        a + 1 / (m.node.healthScore + 1), 0) /
        live;
      scaleSamples++;
      if (undetected > 0) sim.at(sim.now + T / 2, sample);
    };
    sample();
    // When each member last pinged each victim, to tell a probe sent
    // before the crash from one sent after.
    const lastPing = new Map<string, number>();
    sim.onSend = (from, to, data) => {
      const id = simId(to);
      if (!victims.has(id)) return;
      if (decodePacket(data).some((m) => m.type === "ping")) {
        lastPing.set(`${from}>${id}`, sim.now);
      }
    };
    sim.onEvent = (i, ev) => {
      if (ev.type !== "suspect" && ev.type !== "failed") return;
      const v = victims.get(ev.id);
      if (!v || v.done !== undefined) return;
      if (v.first === undefined) {
        v.first = ev.at;
        undetected--;
        if ((lastPing.get(`${i}>${ev.id}`) ?? -1) < crashAt - 0.5) {
          v.excluded = true;
        }
      }
      v.knowers.add(i);
      if (v.knowers.size === live) {
        v.done = ev.at;
        pending--;
      }
    };
    sim.runUntil(crashAt + 60 * T, () => pending === 0);
    for (const v of victims.values()) {
      if (v.excluded) {
        result.excluded++;
        continue;
      }
      if (v.first === undefined || v.done === undefined) {
        result.undetected++;
        continue;
      }
      result.detectionMs.push(v.first - crashAt);
      result.disseminationMs.push(v.done - v.first);
    }
  }
  result.meanProbeScale = scaleSamples / scaleSum;
  result.theoryScaledMs = detectionTheoryMs(T * result.meanProbeScale, qf);
  return result;
}

/** Options for {@linkcode measureFalsePositives}. */
export interface FalsePositiveOptions {
  n: number;
  loss: number;
  seed: number;
  /** Virtual time simulated, ms. */
  durationMs: number;
  config?: Partial<GossipConfig>;
  /** Slow members (the first `count`), as in {@linkcode GossipSim}. */
  slow?: { count: number; delayMs: [number, number] };
}

/** What {@linkcode measureFalsePositives} saw. */
export interface FalsePositiveResult {
  /** Healthy members declared dead, counted once per (member, incarnation). */
  falsePositives: number;
  /** Of those, how many were about normal-speed members. */
  falsePositivesOfFastMembers: number;
  /** Suspicions raised, counted once per (member, incarnation). */
  suspicions: number;
  nodeHours: number;
  /** falsePositives / nodeHours. */
  perNodeHour: number;
  /** Bytes sent per member per second (datagrams and push/pull). */
  bytesPerNodePerSecond: number;
  /** Of those, push/pull (stream) bytes. */
  pushPullBytesPerNodePerSecond: number;
  /** Virtual ms per real ms, to size runs. */
  speed: number;
}

/**
 * Runs a crash-free cluster and counts healthy members declared dead.
 *
 * @example Usage
 * ```ts
 * import { measureFalsePositives } from "./_experiments.ts";
 * const r = measureFalsePositives({ n: 5, loss: 0, seed: 1, durationMs: 60_000 });
 * r.falsePositives; // 0
 * ```
 */
export function measureFalsePositives(
  o: FalsePositiveOptions,
): FalsePositiveResult {
  const started = performance.now();
  const sim = new GossipSim({
    n: o.n,
    seed: o.seed,
    loss: o.loss,
    config: o.config,
    slow: o.slow,
  });
  const slowCount = o.slow?.count ?? 0;
  const failed = new Set<string>();
  const suspected = new Set<string>();
  let fast = 0;
  sim.onEvent = (_i, ev) => {
    const key = `${ev.id}/${ev.incarnation}`;
    if (ev.type === "suspect") suspected.add(key);
    if (ev.type !== "failed" || failed.has(key)) return;
    failed.add(key);
    if (Number(ev.id.slice(1)) >= slowCount) fast++;
  };
  sim.runUntil(o.durationMs);
  const nodeHours = (o.n * o.durationMs) / 3_600_000;
  const bytes = sim.members.reduce((a, m) => a + m.node.stats.bytesSent, 0);
  const stream = sim.members.reduce(
    (a, m) => a + m.node.stats.bytesSentReliable,
    0,
  );
  return {
    falsePositives: failed.size,
    falsePositivesOfFastMembers: fast,
    suspicions: suspected.size,
    nodeHours,
    perNodeHour: failed.size / nodeHours,
    bytesPerNodePerSecond: bytes / o.n / (o.durationMs / 1000),
    pushPullBytesPerNodePerSecond: stream / o.n / (o.durationMs / 1000),
    speed: o.durationMs / (performance.now() - started),
  };
}
