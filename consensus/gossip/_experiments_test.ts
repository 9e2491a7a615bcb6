// Seeded simulations of the SWIM + Lifeguard core against the SWIM paper's
// analysis (see _experiments.ts for exactly what is measured). Every run is
// deterministic: a failing check prints its seed, and
// `SEED=<n> deno test -A consensus/gossip/_experiments_test.ts` replays the
// grid from that seed. The full grid at longer durations is bench/gossip.ts.
import assert from "node:assert/strict";
import { PLAIN_SWIM } from "./config.ts";
import {
  type DetectionResult,
  mean,
  measureDetection,
  measureFalsePositives,
} from "./_experiments.ts";
import { GossipSim } from "./_sim.ts";

function envSeed(): number {
  try {
    const s = Deno.env.get("SEED");
    return s === undefined ? 1 : Number(s);
  } catch {
    return 1; // no env permission: the default seed
  }
}

const SEED = envSeed();
const LOSSES = [0, 0.01, 0.05, 0.1, 0.2];
const pct = (x: number) => `${Math.round(x * 100)} %`;
const fixed = (x: number, d = 2) => x.toFixed(d);

/** n, runs, victims per run, warm-up periods: about 100+ detections per cell. */
const SIZES: [number, number, number, number][] = [
  [5, 300, 1, 4],
  [50, 24, 5, 3],
  [500, 2, 50, 2],
];

interface Cell {
  n: number;
  loss: number;
  seed: number;
  lifeguard: DetectionResult;
  plain?: DetectionResult;
}

let grid: Cell[] | undefined;
function detectionGrid(): Cell[] {
  if (grid) return grid;
  grid = [];
  for (const [n, runs, victims, warmupPeriods] of SIZES) {
    for (const loss of LOSSES) {
      const seed = SEED + 1000 * n + Math.round(loss * 100);
      const common = { n, loss, seed, runs, victims, warmupPeriods };
      grid.push({
        n,
        loss,
        seed,
        lifeguard: measureDetection(common),
        // Plain SWIM at n = 500 and high loss is slow to simulate (its false
        // positives churn the whole group): that row is in the benchmark.
        plain: n < 500
          ? measureDetection({ ...common, config: PLAIN_SWIM })
          : undefined,
      });
    }
  }
  return grid;
}

Deno.test("gossip sim: mean time to first detection is within ±20 % of T′/(1 − e^(−q_f)) at n = 5, 50, 500 and 0–20 % loss", () => {
  const bad: string[] = [];
  console.log(
    "n     loss  samples  measured  theory  ratio | plain SWIM ratio | Lifeguard x  ratio vs x·theory",
  );
  for (const c of detectionGrid()) {
    const lg = c.lifeguard;
    const m = mean(lg.detectionMs);
    // Lifeguard stretches T′ by each member's health multiplier; the
    // formula is checked with T′ scaled by their mean multiplier while it ran.
    const ratio = m / lg.theoryScaledMs;
    const plainRatio = c.plain
      ? mean(c.plain.detectionMs) / c.plain.theoryMs
      : undefined;
    console.log(
      `${String(c.n).padEnd(5)} ${pct(c.loss).padEnd(5)} ${
        String(lg.detectionMs.length).padEnd(8)
      } ` +
        `${fixed(m / 1000)} s    ${fixed(lg.theoryMs / 1000)} s  ${
          fixed(m / lg.theoryMs)
        }  | ` +
        `${
          plainRatio === undefined ? "(bench)" : fixed(plainRatio)
        }             | ` +
        `${fixed(lg.meanProbeScale)}        ${fixed(ratio)}`,
    );
    if (lg.detectionMs.length < 90) {
      bad.push(
        `seed ${c.seed} n=${c.n} loss=${c.loss}: only ${lg.detectionMs.length} samples`,
      );
    }
    if (ratio < 0.8 || ratio > 1.2) {
      bad.push(
        `seed ${c.seed} n=${c.n} loss=${c.loss}: Lifeguard ratio ${
          fixed(ratio)
        }`,
      );
    }
    if (plainRatio !== undefined && (plainRatio < 0.8 || plainRatio > 1.2)) {
      bad.push(
        `seed ${c.seed} n=${c.n} loss=${c.loss}: plain SWIM ratio ${
          fixed(plainRatio)
        }`,
      );
    }
    if (lg.undetected > 0) {
      bad.push(
        `seed ${c.seed} n=${c.n} loss=${c.loss}: ${lg.undetected} victims never detected`,
      );
    }
  }
  assert.deepEqual(bad, [], "replay with SEED=<n>");
});

Deno.test("gossip sim: a suspicion reaches every live member within O(log n) protocol periods", () => {
  const bad: string[] = [];
  console.log("n     loss  mean periods  p90   max    mean / log2(n)");
  for (const c of detectionGrid()) {
    const periods = c.lifeguard.disseminationMs.map((ms) =>
      ms / c.lifeguard.periodMs
    ).sort((a, b) => a - b);
    const p90 = periods[Math.floor(0.9 * (periods.length - 1))];
    const log2n = Math.log2(c.n);
    console.log(
      `${String(c.n).padEnd(5)} ${pct(c.loss).padEnd(5)} ${
        fixed(mean(periods)).padEnd(13)
      } ${fixed(p90).padEnd(5)} ${fixed(periods.at(-1)!).padEnd(6)} ${
        fixed(mean(periods) / log2n, 3)
      }`,
    );
    // The tail past p90 is members the infection missed (each member misses
    // a broadcast with probability ~e^(−retransmits)); they learn from the
    // dead notice or push/pull instead.
    if (p90 > log2n) {
      bad.push(
        `seed ${c.seed} n=${c.n} loss=${c.loss}: p90 ${
          fixed(p90)
        } periods > log2 n`,
      );
    }
  }
  assert.deepEqual(bad, [], "replay with SEED=<n>");
});

Deno.test("gossip sim: false positives per node-hour are printed for the loss grid and are zero at ≤ 5 % loss", () => {
  const bad: string[] = [];
  console.log(
    "n     loss  node-hours  suspicions  false positives  per node-hour  bytes/s/node",
  );
  const plan: [number, number, number][] = [
    // n, ms at ≤ 5 % loss, ms above
    [5, 3 * 3_600_000, 3_600_000],
    [50, 1_200_000, 300_000],
    [500, 30_000, 10_000],
  ];
  for (const [n, lowMs, highMs] of plan) {
    for (const loss of LOSSES) {
      const seed = SEED + 7 * n + Math.round(loss * 100);
      const r = measureFalsePositives({
        n,
        loss,
        seed,
        durationMs: loss <= 0.05 ? lowMs : highMs,
      });
      console.log(
        `${String(n).padEnd(5)} ${pct(loss).padEnd(5)} ${
          fixed(r.nodeHours, 1).padEnd(11)
        } ${String(r.suspicions).padEnd(11)} ${
          String(r.falsePositives).padEnd(16)
        } ${fixed(r.perNodeHour, 3).padEnd(14)} ${
          Math.round(r.bytesPerNodePerSecond)
        }`,
      );
      if (loss <= 0.05 && r.falsePositives > 0) {
        bad.push(
          `seed ${seed} n=${n} loss=${loss}: ${r.falsePositives} false positives`,
        );
      }
      if (loss >= 0.05 && r.suspicions === 0) {
        bad.push(
          `seed ${seed} n=${n} loss=${loss}: no suspicion at all, the loss was not exercised`,
        );
      }
    }
  }
  assert.deepEqual(bad, [], "replay with SEED=<n>");
});

Deno.test("gossip sim: Lifeguard cuts false positives caused by slow members compared with plain SWIM", () => {
  // 5 of 50 members handle each received packet 0–2 s late: they miss acks
  // and raise false suspicions, and refute their own late.
  const seed = SEED + 4242;
  const slow = { count: 5, delayMs: [0, 2000] as [number, number] };
  const common = { n: 50, loss: 0, seed, durationMs: 600_000, slow };
  const plain = measureFalsePositives({ ...common, config: PLAIN_SWIM });
  // Lifeguard alone: the stale-notice answer (ours, on by default) off.
  const lifeguard = measureFalsePositives({
    ...common,
    config: { answerStaleNotices: false },
  });
  const defaults = measureFalsePositives(common);
  const runs = [
    ["plain SWIM", plain],
    ["Lifeguard", lifeguard],
    ["defaults", defaults],
  ] as const;
  for (const [name, r] of runs) {
    console.log(
      `${name.padEnd(10)}: ${r.falsePositives} false positives ` +
        `(${r.falsePositivesOfFastMembers} of healthy-speed members), ` +
        `${fixed(r.perNodeHour)} per node-hour, ${r.suspicions} suspicions, ` +
        `${Math.round(r.bytesPerNodePerSecond)} B/s/node`,
    );
  }
  assert.ok(
    plain.falsePositives >= 3,
    `seed ${seed}: plain SWIM should suffer (${plain.falsePositives})`,
  );
  assert.ok(
    lifeguard.falsePositives * 3 <= plain.falsePositives,
    `seed ${seed}: Lifeguard ${lifeguard.falsePositives} vs plain ${plain.falsePositives}`,
  );
  assert.ok(
    lifeguard.suspicions < plain.suspicions,
    "fewer false suspicions too",
  );
  assert.ok(defaults.falsePositives <= lifeguard.falsePositives);
});

Deno.test("gossip sim: members joining through one seed converge, and a seed replays exactly", () => {
  const trace = () => {
    const sim = new GossipSim({ n: 30, seed: SEED, loss: 0.05, start: "join" });
    const log: string[] = [];
    sim.onEvent = (i, e) =>
      log.push(`${e.at.toFixed(3)} ${i} ${e.type} ${e.id}/${e.incarnation}`);
    sim.runUntil(20_000);
    return { sim, log };
  };
  const a = trace();
  for (const m of a.sim.members) {
    const alive = m.node.members().filter((x) => x.state === "alive").length;
    assert.equal(alive, 30, `member ${m.index} sees ${alive} alive`);
  }
  assert.deepEqual(trace().log, a.log);
});
