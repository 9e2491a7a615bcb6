/**
 * Seeded chaos runs of several lease electors on the simulated KV, with the
 * safety checks run after every event and a liveness check at the end.
 *
 * Each node also runs a "worker" that, while it believes it leads, writes a
 * protected resource (`RESOURCE_KEY`) through the fence, sometimes after a
 * think time in which it may be paused or deposed. The KV checks every
 * resource write as it commits.
 *
 * @module
 */
import { electionEpochKey } from "./keys.ts";
import { type LeaseDurations, LeaseElector } from "./lease_elector.ts";
import { guardedAtomic } from "./fence.ts";
import { mulberry32 } from "../random.ts";
import {
  type CommitFault,
  Sim,
  SimClock,
  SimKv,
  type SimKvClient,
  type SimLinkFaults,
} from "../../testing/sim_kv.ts";

/** The key leaders write through the fence. */
export const RESOURCE_KEY: Deno.KvKey = ["resource"];
const ELECTION = "sim";

/** Options for {@linkcode runChaos}. */
export interface ChaosOptions extends Partial<LeaseDurations> {
  /** Number of nodes. @default {3 to 5, from the seed} */
  nodes?: number;
  /** Virtual ms of faults before the liveness phase. @default {20000} */
  chaosMs?: number;
  /** Clock rates are drawn from [minRate, maxRate]. @default {0.85} */
  minRate?: number;
  /** @default {1.2} */
  maxRate?: number;
  /** Workers write through the fence; false is the control experiment. @default {true} */
  fenced?: boolean;
  /** Fail on two simultaneous believers (false when skew is out of bounds). @default {true} */
  exclusiveBelief?: boolean;
  /** Run the liveness phase. @default {true} */
  liveness?: boolean;
  /** Upper bound of normal one-way latency, ms. @default {15} */
  maxLatencyMs?: number;
}

/** What one run saw. */
export interface ChaosReport {
  seed: number;
  /** Broken invariants, each with the virtual time; empty when all held. */
  violations: string[];
  /** Distinct leadership terms seen. */
  terms: number;
  /** Highest epoch reached. */
  maxEpoch: number;
  /** Resource writes that committed. */
  acceptedWrites: number;
  /** Resource writes the fence rejected. */
  rejectedWrites: number;
  /** Events in which two nodes believed they led. */
  overlaps: number;
  /** Ambiguous commits injected. */
  ambiguousCommits: number;
  /** Pauses injected. */
  pauses: number;
  /** Virtual ms from crashing the leader to a new leader (liveness phase). */
  failoverMs?: number;
  /** The bound `failoverMs` is checked against. */
  failoverBoundMs?: number;
  /** FNV-1a hash of the run's trace, to show a seed replays exactly. */
  traceHash: string;
  /** Events processed. */
  events: number;
}

interface SimNode {
  id: string;
  instance: number;
  clock: SimClock;
  link: SimKvClient;
  elector: LeaseElector;
  stopped: boolean;
  /** Latency multiplier while a slow spell lasts. */
  slow: number;
}

/** Runs one seeded chaos simulation and reports what it saw. */
export async function runChaos(
  seed: number,
  options: ChaosOptions = {},
): Promise<ChaosReport> {
  const rng = mulberry32(seed);
  const between = (lo: number, hi: number) => lo + (hi - lo) * rng();
  const durations: LeaseDurations = {
    leaseMs: options.leaseMs ?? 1_500,
    renewDeadlineMs: options.renewDeadlineMs ?? 1_000,
    retryPeriodMs: options.retryPeriodMs ?? 200,
  };
  const { leaseMs, retryPeriodMs } = durations;
  const nodeCount = options.nodes ?? 3 + Math.floor(rng() * 3);
  const chaosMs = options.chaosMs ?? 20_000;
  const minRate = options.minRate ?? 0.85;
  const maxRate = options.maxRate ?? 1.2;
  const fenced = options.fenced ?? true;
  const exclusive = options.exclusiveBelief ?? true;
  const maxLatency = options.maxLatencyMs ?? 15;

  const sim = new Sim();
  const kv = new SimKv(sim);
  const report: ChaosReport = {
    seed,
    violations: [],
    terms: 0,
    maxEpoch: 0,
    acceptedWrites: 0,
    rejectedWrites: 0,
    overlaps: 0,
    ambiguousCommits: 0,
    pauses: 0,
    traceHash: "",
    events: 0,
  };
  let hash = 0x811c9dc5;
  const trace = (s: string) => {
    const line = `${sim.now.toFixed(3)} ${s}\n`;
    for (let i = 0; i < line.length; i++) {
      hash = Math.imul(hash ^ line.charCodeAt(i), 0x01000193) >>> 0;
    }
  };
  const violate = (what: string) => {
    if (report.violations.length < 10) {
      report.violations.push(
        `seed ${seed} at t=${sim.now.toFixed(1)}: ${what}`,
      );
    }
  };

  // The protected resource: every accepted write must carry the current
  // epoch, so no write with a stale epoch ever commits.
  let maxAccepted = 0;
  kv.onCommit = (mutations) => {
    for (const m of mutations) {
      if (m.type !== "set" || m.key[0] !== RESOURCE_KEY[0]) continue;
      const epoch = (m.value as { epoch: number }).epoch;
      const current =
        kv.get<{ epoch: number }>(electionEpochKey(ELECTION)).value?.epoch ?? 0;
      if (epoch < maxAccepted) {
        violate(
          `resource accepted a write with epoch ${epoch} after one with epoch ${maxAccepted}`,
        );
      }
      if (epoch !== current) {
        violate(
          `resource accepted a write with epoch ${epoch} while epoch ${current} is current`,
        );
      }
      maxAccepted = Math.max(maxAccepted, epoch);
      report.acceptedWrites++;
      trace(`write ${epoch}`);
    }
  };
  kv.onRejected = (mutations) => {
    if (mutations.some((m) => m.key[0] === RESOURCE_KEY[0])) {
      report.rejectedWrites++;
    }
  };

  let chaos = true;
  const normalLatency = () => between(0.5, maxLatency);
  const faultsFor = (node: () => SimNode | undefined): SimLinkFaults => ({
    latencyMs: () => {
      const slow = node()?.slow ?? 1;
      // A rare spike outlives the caller's timeout: the op lands late.
      if (chaos && rng() < 0.03) {
        return between(retryPeriodMs, 4 * retryPeriodMs);
      }
      return normalLatency() * slow;
    },
    commitFault: (): CommitFault => {
      if (!chaos) return "none";
      const r = rng();
      if (r < 0.04) {
        report.ambiguousCommits++;
        return "applied-then-error";
      }
      if (r < 0.08) {
        report.ambiguousCommits++;
        return "lost-with-error";
      }
      return "none";
    },
    readFails: () => chaos && rng() < 0.02,
  });

  const nodes: SimNode[] = []; // live instances, one per id
  const everyone: SimNode[] = []; // every instance that may still believe
  let instances = 0;

  const startNode = (id: string): SimNode => {
    const instance = ++instances;
    const clock = new SimClock(sim, {
      rate: between(minRate, maxRate),
      wallStart: 1_700_000_000_000 + between(-5_000, 5_000),
    });
    const box: { node?: SimNode } = {};
    const link = kv.client(clock, faultsFor(() => box.node));
    let nonces = 0;
    const elector = new LeaseElector({
      kv: link,
      clock,
      nodeId: id,
      name: ELECTION,
      ...durations,
      random: rng,
      newNonce: () => `${id}/${instance}/${++nonces}`,
    });
    const node: SimNode = {
      id,
      instance,
      clock,
      link,
      elector,
      stopped: false,
      slow: 1,
    };
    box.node = node;
    let lastEpoch = 0;
    elector.onLeaderChange((c) => {
      trace(`${id}/${instance} sees ${c.leader}@${c.epoch}`);
      if (c.epoch < lastEpoch) {
        violate(
          `${id}/${instance} saw the epoch go back from ${lastEpoch} to ${c.epoch}`,
        );
      }
      lastEpoch = c.epoch;
    });
    elector.start();
    void work(node);
    nodes.push(node);
    everyone.push(node);
    return node;
  };

  const work = async (node: SimNode) => {
    while (!node.stopped) {
      await node.clock.sleep(between(50, 150));
      if (node.stopped || !node.elector.isLeader()) continue;
      const token = node.elector.fence();
      // Think before writing: a pause or a slow spell here is the classic
      // way a deposed leader writes late.
      if (rng() < 0.3) await node.clock.sleep(between(0, 2 * leaseMs));
      const op = fenced ? guardedAtomic(node.link, token) : node.link.atomic();
      op.set(RESOURCE_KEY, { epoch: token.epoch, by: node.id });
      try {
        await op.commit();
      } catch {
        // Outcome unknown; the KV's own check decides, which is the point.
      }
    }
  };

  const replace = (node: SimNode) => {
    nodes.splice(nodes.indexOf(node), 1);
    return startNode(node.id);
  };

  // Safety, after every event.
  const believers = new Map<number, number>(); // instance → epoch it leads with
  const epochHolder = new Map<number, number>(); // epoch → instance
  let maxLeaderEpoch = 0;
  const check = () => {
    const leading: SimNode[] = [];
    for (let i = everyone.length - 1; i >= 0; i--) {
      const n = everyone[i];
      if (n.elector.isLeader()) leading.push(n);
      else {
        believers.delete(n.instance);
        // A dead instance that stopped believing never believes again.
        if (n.clock.crashed || n.stopped) everyone.splice(i, 1);
      }
    }
    if (leading.length > 1) {
      report.overlaps++;
      if (exclusive) {
        violate(
          `${leading.length} nodes believe they lead: ${
            leading.map((n) => `${n.id}/${n.instance}@${n.elector.epoch()}`)
              .join(", ")
          }`,
        );
      }
    }
    for (const n of leading) {
      const epoch = n.elector.fence().epoch;
      const holder = epochHolder.get(epoch);
      if (holder !== undefined && holder !== n.instance) {
        violate(
          `epoch ${epoch} led by two instances: ${holder} and ${n.instance}`,
        );
      }
      const before = believers.get(n.instance);
      if (before === undefined) {
        if (epoch <= maxLeaderEpoch) {
          violate(
            `${n.id}/${n.instance} began leading with epoch ${epoch}, not above ${maxLeaderEpoch}`,
          );
        }
        report.terms++;
        trace(`lead ${n.id}/${n.instance}@${epoch}`);
      } else if (before !== epoch) {
        violate(
          `${n.id}/${n.instance} switched epoch ${before} → ${epoch} without stepping down`,
        );
      }
      believers.set(n.instance, epoch);
      epochHolder.set(epoch, n.instance);
      maxLeaderEpoch = Math.max(maxLeaderEpoch, epoch);
    }
    report.maxEpoch = maxLeaderEpoch;
  };

  for (let i = 0; i < nodeCount; i++) startNode(`n${i + 1}`);

  // Faults, while the chaos phase lasts.
  const pick = () => nodes[Math.floor(rng() * nodes.length)];
  const liveCount = () =>
    nodes.filter((n) => !n.clock.paused && !n.stopped).length;
  const nextFault = () => {
    sim.at(between(50, 600), () => {
      if (!chaos) return;
      const r = rng();
      const node = pick();
      if (r < 0.3) {
        if (!node.clock.paused) {
          report.pauses++;
          trace(`pause ${node.id}/${node.instance}`);
          node.clock.pause();
          sim.at(between(0, 2.5 * leaseMs), () => node.clock.resume());
        }
      } else if (r < 0.38 && liveCount() > 1) {
        trace(`crash ${node.id}/${node.instance}`);
        node.clock.crash();
        node.stopped = true;
        sim.at(between(0, 3 * leaseMs), () => {
          if (nodes.includes(node)) replace(node);
        });
      } else if (r < 0.44 && !node.stopped) {
        trace(`stop ${node.id}/${node.instance}`);
        node.stopped = true;
        void node.elector.stop().then(() =>
          sim.at(between(0, leaseMs), () => {
            if (nodes.includes(node)) replace(node);
          })
        );
      } else if (r < 0.54) {
        node.slow = between(5, 30);
        sim.at(between(0, leaseMs), () => void (node.slow = 1));
      } else if (r < 0.6) {
        node.link.faults.partitioned = true;
        sim.at(
          between(0, 2 * leaseMs),
          () => void (node.link.faults.partitioned = false),
        );
      }
      nextFault();
    });
  };
  nextFault();

  await sim.run(chaosMs, { afterEvent: check });

  if (options.liveness ?? true) {
    // Heal: no more faults, everyone back, in-flight spikes allowed to land.
    chaos = false;
    for (const n of [...nodes]) {
      n.slow = 1;
      n.link.faults.partitioned = false;
      if (n.clock.crashed || n.stopped) replace(n);
      else n.clock.resume();
    }
    const healedAt = sim.now;
    const leading = () => nodes.find((n) => n.elector.isLeader());
    const settleBound = 3 * (leaseMs / minRate) + 8 * retryPeriodMs;
    const settled = await sim.run(healedAt + settleBound, {
      afterEvent: check,
      stopWhen: () => leading() !== undefined,
    });
    if (!settled) {
      violate(`no leader within ${settleBound} ms of healing`);
    } else {
      // Let pending spikes from the chaos phase land before measuring.
      await sim.run(sim.now + 8 * retryPeriodMs, { afterEvent: check });
      const leader = leading();
      if (!leader) violate("the leader was lost in a healthy network");
      else {
        trace(`crash leader ${leader.id}/${leader.instance}`);
        leader.clock.crash();
        leader.stopped = true;
        nodes.splice(nodes.indexOf(leader), 1);
        const crashedAt = sim.now;
        const rateMin = Math.min(...nodes.map((n) => n.clock.rate));
        // Observe the last renewal (one poll), wait a lease on the slowest
        // clock, take over at the next poll; polls are ≤ 1.2 retry periods
        // apart; each KV round trip costs ≤ 2 latencies.
        const bound = (leaseMs + 2 * 1.2 * retryPeriodMs) / rateMin +
          8 * maxLatency;
        report.failoverBoundMs = bound;
        const failedOver = await sim.run(crashedAt + bound, {
          afterEvent: check,
          stopWhen: () => leading() !== undefined,
        });
        if (!failedOver) {
          violate(`no new leader within ${bound.toFixed(1)} ms of a crash`);
        } else {
          report.failoverMs = sim.now - crashedAt;
          // A healthy cluster keeps its leader.
          const stable = leading()!;
          const changed = await sim.run(sim.now + 4 * leaseMs, {
            afterEvent: check,
            stopWhen: () => !stable.elector.isLeader(),
          });
          if (changed) violate("leadership changed in a healthy network");
        }
      }
    }
  }
  for (const n of nodes) n.stopped = true;
  report.events = sim.events;
  report.traceHash = hash.toString(16).padStart(8, "0");
  return report;
}
