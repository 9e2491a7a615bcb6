/**
 * Plexus's linearizability checker (`testing/linearizability.ts`) against
 * Porcupine (anishathalye/porcupine v1.3.1, Go) on the 102 of Porcupine's own
 * Jepsen etcd histories, in the same run.
 *
 *   deno run -A bench/peers/porcupine.ts [--quick] [--rounds R]
 *
 * Needs `go` on PATH. `scripts/peers/porcupine.sh` builds
 * `bench/peers/porcupine/main.go` (our harness around Porcupine's public
 * API; go.mod/go.sum pin the version) into `~/.cache/plexus/peers`, so
 * Porcupine and its test data come through the Go module proxy and stay
 * out of the repo.
 *
 * Rounds alternate: Porcupine checks every history (one process, each
 * check timed inside it, parsing excluded), then Plexus checks the same
 * histories, parsed by `_jepsen_etcd.ts`, timed the same way. Value:
 * histories checked per second over all of them, median over rounds;
 * ratio = Plexus ÷ Porcupine. Unknown outcomes (`:info`, a timed-out read,
 * an invoke never answered) follow Porcupine's harness in the headline —
 * closed at the end of the history with an unknown output — and this
 * checker's own convention (never returned) in `details`.
 *
 * A verdict that differs from `porcupine_test.go`'s expected one on either
 * side fails the bench (exit 1). Plexus checks each history with a 10 s
 * deadline: a slow case answers "unknown", reported as such, never as a
 * verdict. The histories are one key each, so partitioning by key (which
 * the checker does) has nothing to split here.
 *
 * @module
 */
import { join } from "node:path";
import { check } from "../../testing/linearizability.ts";
import {
  etcdModel,
  expectedVerdicts,
  parseJepsenEtcd,
  type UnknownConvention,
} from "./_jepsen_etcd.ts";
import { info, isQuick, median, numFlag, round } from "../_util.ts";
import { installPeer } from "./_install.ts";

const quick = isQuick();
const ROUNDS = numFlag("rounds", quick ? 2 : 5);
const TIMEOUT_MS = 10_000;
const [binary, moduleDir] = await installPeer("porcupine");
const expected = expectedVerdicts(
  await Deno.readTextFile(join(moduleDir, "porcupine_test.go")),
);
const numbers = [...expected.keys()].sort((a, b) => a - b);
const files = numbers.map((n) =>
  join(
    moduleDir,
    "test_data",
    "jepsen",
    `etcd_${String(n).padStart(3, "0")}.log`,
  )
);
const texts = await Promise.all(files.map((f) => Deno.readTextFile(f)));
if (numbers.length < 100) {
  console.error(
    `expected Porcupine's etcd histories (about 100), found ${numbers.length}`,
  );
  Deno.exit(1);
}

interface Pass {
  ms: number;
  slowest: { n: number; ms: number };
  unknown: number[];
}

function verdictCheck(side: string, n: number, ok: boolean) {
  if (ok !== expected.get(n)) {
    console.error(
      `${side} judged etcd_${String(n).padStart(3, "0")}.log ${
        ok ? "linearizable" : "not linearizable"
      }; porcupine_test.go expects ${expected.get(n)}`,
    );
    Deno.exit(1);
  }
}

async function porcupinePass(): Promise<Pass> {
  const out = await new Deno.Command(binary, {
    args: files,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) Deno.exit(1);
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  const pass: Pass = { ms: 0, slowest: { n: -1, ms: 0 }, unknown: [] };
  lines.forEach((line, k) => {
    const r = JSON.parse(line) as { ok: boolean; ms: number };
    verdictCheck("Porcupine", numbers[k], r.ok);
    pass.ms += r.ms;
    if (r.ms > pass.slowest.ms) pass.slowest = { n: numbers[k], ms: r.ms };
  });
  return pass;
}

function plexusPass(convention: UnknownConvention): Pass {
  const pass: Pass = { ms: 0, slowest: { n: -1, ms: 0 }, unknown: [] };
  texts.forEach((text, k) => {
    const history = parseJepsenEtcd(text, convention);
    const t0 = performance.now();
    const result = check(etcdModel, history, { timeoutMs: TIMEOUT_MS });
    const ms = performance.now() - t0;
    pass.ms += ms;
    if (ms > pass.slowest.ms) pass.slowest = { n: numbers[k], ms };
    if (result === "unknown") pass.unknown.push(numbers[k]);
    else verdictCheck(`Plexus (${convention})`, numbers[k], result === "ok");
  });
  return pass;
}

const runs = {
  porcupine: [] as Pass[],
  closed: [] as Pass[],
  pending: [] as Pass[],
};
info(`porcupine: ${numbers.length} Jepsen etcd histories, ${ROUNDS} round(s)`);
for (let r = 0; r < ROUNDS; r++) {
  runs.porcupine.push(await porcupinePass());
  runs.closed.push(plexusPass("closed"));
  runs.pending.push(plexusPass("pending"));
  info(
    `  round ${r + 1}: Porcupine ${round(runs.porcupine[r].ms, 1)} ms, Plexus ${
      round(runs.closed[r].ms, 1)
    } ms (closed), ${round(runs.pending[r].ms, 1)} ms (pending)`,
  );
}
const totalMs = (passes: Pass[]) => median(passes.map((p) => p.ms));
const perS = (passes: Pass[]) => numbers.length / (totalMs(passes) / 1000);
const summary = (passes: Pass[]) => {
  const last = passes.at(-1)!;
  return {
    total_ms: round(totalMs(passes), 1),
    histories_per_s: round(perS(passes), 1),
    slowest: `etcd_${String(last.slowest.n).padStart(3, "0")} ${
      round(last.slowest.ms, 1)
    } ms`,
    unknown: last.unknown.length,
  };
};
const unknownCount = runs.closed.at(-1)!.unknown.length +
  runs.pending.at(-1)!.unknown.length;
info(
  `Porcupine ${round(totalMs(runs.porcupine), 1)} ms, Plexus ${
    round(totalMs(runs.closed), 1)
  } ms closed / ${
    round(totalMs(runs.pending), 1)
  } ms pending, for all ${numbers.length}; ${unknownCount} unknown`,
);
console.log(JSON.stringify({
  bench: "peers/porcupine",
  metric: "histories_per_s",
  unit: "1/s",
  value: round(perS(runs.closed), 1),
  baseline: {
    name: "Porcupine v1.3.1 (Go) on the same histories",
    value: round(perS(runs.porcupine), 1),
  },
  ratio: round(perS(runs.closed) / perS(runs.porcupine), 2),
  details: {
    histories: numbers.length,
    rounds: ROUNDS,
    verdicts: "all as porcupine_test.go expects, on both sides",
    porcupine: summary(runs.porcupine),
    plexus_closed: summary(runs.closed),
    plexus_pending: summary(runs.pending),
  },
  notes:
    "headline: unknown outcomes closed at the end of the history (Porcupine's harness); plexus_pending: never returned (this checker's convention); one key per history, so no partitions to check in parallel",
}));
