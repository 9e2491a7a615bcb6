/**
 * Speed of the linearizability checker (`testing/linearizability.ts`)
 * on random linearizable key-value histories generated from a real
 * sequential execution (`tests/simulation/testdata/random_history.ts`).
 *
 *   deno run -A bench/linearizability.ts [--quick] [--rounds 5]
 *
 * Headline: operations checked per second on the "raft-like" shape (2000
 * operations, 8 clients, 2 keys, 1 % of operations left pending by crashed
 * clients), median of `--rounds` rounds over 10 seeded histories each.
 * Baseline, measured in the same run: replaying the same histories through
 * the model in the order their operations really took effect — one model
 * step per operation, the floor any checker that has to find that order
 * stands on. Other shapes (more clients, one key, more crashes, and the
 * lossy stale-read register of the tests with about half its operations
 * pending) are printed on stderr and in `details` with their search steps,
 * which do not depend on the machine.
 *
 * @module
 */
import { checkDetailed, kvModel } from "../testing/linearizability.ts";
import { checkParallel } from "../testing/linearizability_parallel.ts";
import {
  type RandomHistory,
  type RandomHistoryOptions,
  randomKvHistory,
} from "../tests/simulation/testdata/random_history.ts";
import { simulateRegister } from "../tests/simulation/testdata/replicated_register.ts";
import { info, isQuick, median, numFlag, round } from "./_util.ts";

const quick = isQuick();
const ROUNDS = numFlag("rounds", quick ? 3 : 5);
const HISTORIES = quick ? 4 : 10;
const model = kvModel();

interface Shape extends RandomHistoryOptions {
  name: string;
}
const HEADLINE: Shape = {
  name: "2000 ops, 8 clients, 2 keys, 1% crashed",
  ops: 2000,
  clients: 8,
  keys: 2,
  crashRate: 0.01,
};
const OTHERS: Shape[] = [
  { name: "1000 ops, 5 clients, 1 key", ops: 1000, clients: 5 },
  {
    name: "2000 ops, 10 clients, 1 key, 3% crashed",
    ops: 2000,
    clients: 10,
    crashRate: 0.03,
  },
  {
    name: "5000 ops, 16 clients, 4 keys, 1% crashed",
    ops: 5000,
    clients: 16,
    keys: 4,
    crashRate: 0.01,
  },
  ...(quick
    ? []
    : [{ name: "3000 ops, 16 clients, 1 key", ops: 3000, clients: 16 }]),
];

function generate(shape: Shape): RandomHistory[] {
  return Array.from(
    { length: HISTORIES },
    (_, i) => randomKvHistory(1000 + i, shape),
  );
}

/** Checks every history; returns operations per second and mean steps. */
function checkAll(runs: RandomHistory[]): { rate: number; steps: number } {
  let ops = 0;
  let steps = 0;
  const t0 = performance.now();
  for (const { history } of runs) {
    const report = checkDetailed(model, history);
    if (report.result !== "ok") {
      throw new Error(`A generated history was judged ${report.result}`);
    }
    ops += history.length;
    steps += report.steps;
  }
  const s = (performance.now() - t0) / 1000;
  return { rate: ops / s, steps: steps / runs.length };
}

/** Replays each history in its real effect order, per key. */
function replayAll(runs: RandomHistory[]): number {
  let ops = 0;
  const t0 = performance.now();
  // Enough repetitions to be measurable: a replay is ~1000x a check's speed.
  const reps = 200;
  for (let k = 0; k < reps; k++) {
    for (const { history, applied } of runs) {
      const states = new Map<string, ReturnType<typeof model.init>>();
      for (const op of applied) {
        const key = op.input.key;
        const [ok, next] = model.step(
          states.get(key) ?? model.init(),
          op.input,
          op.output,
        );
        if (!ok) throw new Error("The real execution does not replay");
        states.set(key, next);
      }
      ops += history.length;
    }
  }
  return ops / ((performance.now() - t0) / 1000);
}

const headline = generate(HEADLINE);
checkAll(headline); // warm-up
replayAll(headline);
const rates: number[] = [];
const baselines: number[] = [];
let headlineSteps = 0;
for (let r = 0; r < ROUNDS; r++) {
  const c = checkAll(headline);
  rates.push(c.rate);
  headlineSteps = c.steps;
  baselines.push(replayAll(headline));
}
const value = median(rates);
const baseline = median(baselines);
info(
  `${HEADLINE.name}: ${round(value)} ops/s checked (${
    round(2000 / value * 1000, 1)
  } ms per history, ${round(headlineSteps)} steps), replay ${
    round(baseline)
  } ops/s`,
);
const shapes: Record<string, unknown> = {};
for (const shape of OTHERS) {
  const runs = generate(shape);
  const c = checkAll(runs);
  const msPerHistory = shape.ops / c.rate * 1000;
  shapes[shape.name] = {
    ms_per_history: round(msPerHistory, 1),
    steps_per_history: round(c.steps),
  };
  info(
    `${shape.name}: ${round(msPerHistory, 1)} ms per history, ${
      round(c.steps)
    } search steps`,
  );
}
{
  // Jepsen-like: the stale-read register with 30 % of messages lost, so
  // about half the operations never return; some histories are illegal.
  const name = "lossy register: 400 ops, 10 clients, 1 key, ~50% pending";
  const histories = Array.from(
    { length: HISTORIES },
    (_, i) =>
      simulateRegister({
        seed: i + 1,
        staleReads: true,
        lossRate: 0.3,
        clients: 10,
        opsPerClient: 40,
        keys: ["x"],
      }).history,
  );
  let steps = 0;
  let illegal = 0;
  const t0 = performance.now();
  for (const history of histories) {
    const report = checkDetailed(model, history);
    steps += report.steps;
    if (report.result === "illegal") illegal++;
  }
  const msPerHistory = (performance.now() - t0) / histories.length;
  shapes[name] = {
    ms_per_history: round(msPerHistory, 1),
    steps_per_history: round(steps / histories.length),
    illegal: `${illegal}/${histories.length}`,
  };
  info(
    `${name}: ${
      round(msPerHistory, 1)
    } ms per history (illegal ones with their diagnostic), ${
      round(steps / histories.length)
    } search steps, ${illegal}/${histories.length} illegal`,
  );
}
{
  // A hard multi-key history (12 clients and 3 % crashes per key, ~250 ms
  // a partition): its partitions checked one after another here, then in
  // Workers (checkParallel). Easy histories check in milliseconds, less
  // than starting a Worker (~60 ms), and stay on one thread.
  const keys = quick ? 4 : 8;
  const shape = { ops: 2000 * keys, clients: 12 * keys, keys, crashRate: 0.03 };
  const name =
    `${shape.ops} ops, ${shape.clients} clients, ${keys} keys, 3% crashed`;
  const { history } = randomKvHistory(77, shape);
  const serial: number[] = [];
  const parallel: number[] = [];
  let workers = 0;
  for (let r = 0; r < Math.min(ROUNDS, 3); r++) {
    let t0 = performance.now();
    if (checkDetailed(model, history).result !== "ok") {
      throw new Error("the long history was judged not linearizable");
    }
    serial.push(performance.now() - t0);
    t0 = performance.now();
    const report = await checkParallel(
      {
        module: new URL("../testing/linearizability.ts", import.meta.url),
        export: "kvModel",
      },
      history,
    );
    if (report.result !== "ok") {
      throw new Error("the long history was judged not linearizable");
    }
    parallel.push(performance.now() - t0);
    workers = report.workers;
  }
  shapes[name] = {
    ms_one_thread: round(median(serial), 1),
    ms_in_workers: round(median(parallel), 1),
    workers,
    speedup: round(median(serial) / median(parallel), 2),
  };
  info(
    `${name}: ${round(median(serial), 1)} ms on one thread, ${
      round(median(parallel), 1)
    } ms in ${workers} Workers (startup included)`,
  );
}
console.log(JSON.stringify({
  bench: "linearizability",
  metric: "ops_checked_per_s",
  unit: "1/s",
  value: round(value),
  baseline: {
    name: "replay of the real effect order through the model",
    value: round(baseline),
  },
  ratio: round(value / baseline, 4),
  details: {
    shape: HEADLINE.name,
    histories: HISTORIES,
    rounds: ROUNDS,
    ms_per_history: round(HEADLINE.ops / value * 1000, 2),
    steps_per_history: round(headlineSteps),
    shapes,
  },
}));
