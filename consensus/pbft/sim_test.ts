import assert from "node:assert/strict";
import { BEHAVIOURS, type PbftSimOptions, runPbftSim } from "./_sim.ts";

// SEED=n replays one seed (printing its trace hash); SEEDS=n changes how
// many seeds the sweep runs (default 300).
const one = Deno.env.get("SEED");
const seeds = Number(Deno.env.get("SEEDS") ?? 300);
const sweep: PbftSimOptions = { chaosMs: 1500, liveness: true };

Deno.test({
  name:
    `pbft sim: ${seeds} seeds of Byzantine chaos keep agreement, and every healed cluster commits again within the bound`,
  ignore: one !== undefined,
  fn() {
    const failed: string[] = [];
    const totals = {
      executed: 0,
      accepted: 0,
      viewChanges: 0,
      stateTransfers: 0,
      batchFetches: 0,
      crashes: 0,
      rejected: 0,
      byzantinePrimary: 0,
      sevenReplicas: 0,
    };
    const behaviours = new Set<string>();
    const recovery: number[] = [];
    for (let seed = 1; seed <= seeds; seed++) {
      const r = runPbftSim(seed, sweep);
      if (r.violations.length > 0) {
        failed.push(
          `SEED=${seed} (trace ${r.traceHash}, byzantine ${r.byzantine} doing ${r.behaviours}):\n  ${
            r.violations.join("\n  ")
          }`,
        );
      }
      totals.executed += r.executed;
      totals.accepted += r.accepted;
      totals.viewChanges += r.viewChanges;
      totals.stateTransfers += r.stateTransfers;
      totals.batchFetches += r.batchFetches;
      totals.crashes += r.crashes;
      totals.rejected += r.rejected;
      if (r.byzantine.includes("r0")) totals.byzantinePrimary++;
      if (r.replicas === 7) totals.sevenReplicas++;
      for (const b of r.behaviours) behaviours.add(b);
      if (r.recoveryMs !== undefined) recovery.push(r.recoveryMs);
    }
    if (failed.length > 0) {
      console.error(
        `${failed.length} failing seed(s); replay one with SEED=n:\n${
          failed.slice(0, 5).join("\n")
        }`,
      );
    }
    assert.equal(failed.length, 0, failed[0]);
    recovery.sort((a, b) => a - b);
    console.log(
      `pbft sim: ${JSON.stringify(totals)}; recovery after healing p50 ${
        recovery[Math.floor(recovery.length / 2)]?.toFixed(0)
      } ms, max ${recovery.at(-1)?.toFixed(0)} ms (virtual)`,
    );
    // The chaos really exercised what it claims to.
    assert.deepEqual([...behaviours].sort(), [...BEHAVIOURS].sort());
    assert(totals.viewChanges > seeds, `view changes: ${totals.viewChanges}`);
    assert(
      totals.stateTransfers > seeds / 10,
      `state transfers: ${totals.stateTransfers}`,
    );
    assert(totals.crashes > seeds, `crashes: ${totals.crashes}`);
    // View changes name batches by digest; replicas that lacked one fetched it.
    assert(
      totals.batchFetches > seeds,
      `batches fetched for new views: ${totals.batchFetches}`,
    );
    assert(totals.rejected > seeds, `rejected: ${totals.rejected}`);
    assert(totals.accepted > 10 * seeds, `accepted: ${totals.accepted}`);
    assert(
      totals.byzantinePrimary > seeds / 4,
      `Byzantine primaries: ${totals.byzantinePrimary}`,
    );
    assert(
      totals.sevenReplicas > seeds / 10,
      `runs with f = 2: ${totals.sevenReplicas}`,
    );
  },
});

Deno.test({
  name: "pbft sim: SEED replays one seed and prints its trace hash",
  ignore: one === undefined,
  fn() {
    const seed = Number(one);
    const r = runPbftSim(seed, { ...sweep, keepTrace: true });
    console.log(
      `SEED=${seed} replicas=${r.replicas} byzantine=${r.byzantine} behaviours=${r.behaviours} events=${r.events} executed=${r.executed} accepted=${r.accepted} maxView=${r.maxView} trace=${r.traceHash}`,
    );
    if (r.violations.length > 0) {
      console.log(r.trace!.slice(-80).join("\n"));
      for (const s of r.final) console.log(JSON.stringify(s));
    }
    assert.deepEqual(r.violations, []);
  },
});

Deno.test("pbft sim: the same seed gives the same trace hash, another seed another", () => {
  const a = runPbftSim(42, sweep);
  const b = runPbftSim(42, sweep);
  const c = runPbftSim(43, sweep);
  assert.equal(a.traceHash, b.traceHash);
  assert.equal(a.events, b.events);
  assert.notEqual(a.traceHash, c.traceHash);
});

Deno.test("pbft sim: histories of the simulated clients are linearizable, and the checker sees them", () => {
  let ops = 0;
  for (let seed = 1; seed <= 20; seed++) {
    const r = runPbftSim(seed, sweep);
    assert.equal(r.linearizable, "ok", `seed ${seed}`);
    ops += r.history.length;
  }
  assert(ops > 200, `operations checked: ${ops}`);
});

Deno.test("pbft sim: a build whose prepare quorum is 2f instead of 2f + 1 is caught", () => {
  // An equivocating primary makes honest replicas prepare different
  // batches at one sequence number; then no new primary can choose.
  const caught: string[] = [];
  for (let seed = 1; seed <= 50 && caught.length === 0; seed++) {
    const r = runPbftSim(seed, {
      ...sweep,
      unsafePrepareQuorum: 2 * (seed % 3 === 0 ? 2 : 1),
      replicas: seed % 3 === 0 ? 7 : 4,
      byzantinePrimary: true,
      behaviours: ["equivocate", "silent-later"],
    });
    caught.push(...r.violations);
  }
  assert(caught.length > 0, "no seed exposed the 2f prepare quorum");
  // The correct build survives the same adversary.
  for (let seed = 1; seed <= 50; seed++) {
    const r = runPbftSim(seed, {
      ...sweep,
      replicas: seed % 3 === 0 ? 7 : 4,
      byzantinePrimary: true,
      behaviours: ["equivocate", "silent-later"],
    });
    assert.deepEqual(r.violations, [], `seed ${seed}`);
  }
});

Deno.test("pbft sim: the checks catch a client that accepts a result on f matching replies", () => {
  const caught: string[] = [];
  for (let seed = 1; seed <= 50 && caught.length === 0; seed++) {
    const r = runPbftSim(seed, {
      ...sweep,
      behaviours: ["false-replies"],
      unsafeClientQuorum: 1,
      byzantine: 1,
    });
    caught.push(...r.violations.filter((v) => v.includes("accepted")));
  }
  assert(caught.length > 0, "no seed exposed the credulous client");
});

Deno.test("pbft sim: a view change that trusts the newest prepared claim (no rules A1/A2) is caught", () => {
  // A Byzantine replica's VIEW-CHANGE claims prepared batches nobody
  // pre-prepared; the shortcut orders them, and the clients see writes no
  // client made.
  const caught: string[] = [];
  for (let seed = 1; seed <= 100 && caught.length === 0; seed++) {
    const r = runPbftSim(seed, {
      ...sweep,
      unsafeNewestClaim: true,
      behaviours: ["conflicting-view-change"],
    });
    caught.push(...r.violations.filter((v) => !v.includes("liveness")));
  }
  assert(caught.length > 0, "no seed exposed the newest-claim view change");
});

Deno.test("pbft sim: a build that takes requests without checking their clients' signatures is caught", () => {
  // A Byzantine primary alters an honest client's request or makes one up in
  // a client's name; honest replicas must refuse to prepare it.
  const caught: string[] = [];
  for (let seed = 1; seed <= 50 && caught.length === 0; seed++) {
    const r = runPbftSim(seed, {
      ...sweep,
      unsafeTrustRequests: true,
      byzantinePrimary: true,
      behaviours: ["invent-request"],
    });
    caught.push(...r.violations.filter((v) => v.includes("authenticity")));
  }
  assert(caught.length > 0, "no seed exposed the trusting build");
  // The correct build refuses them under the same adversary.
  let rejected = 0;
  for (let seed = 1; seed <= 30; seed++) {
    const r = runPbftSim(seed, {
      ...sweep,
      byzantine: 1,
      byzantinePrimary: true,
      behaviours: ["invent-request"],
    });
    assert.deepEqual(r.violations, [], `seed ${seed}`);
    rejected += r.rejected;
  }
  assert(rejected > 30, `refused: ${rejected}`);
});
