/**
 * The linearizability checker over histories of concurrent read/write/cas
 * clients against simulated Raft drivers (crashes, restarts, partitions,
 * delays, drops), and a deliberately broken build it must catch. Every run
 * also checks that no proposal was applied twice (drivers re-send waiting
 * proposals to each new leader), and a build that applies every copy is
 * caught.
 */
import assert from "node:assert/strict";
import { check, kvModel } from "../../testing/linearizability.ts";
import { simulate } from "./_sim.ts";

const SEEDS = Number(Deno.env.get("SEEDS") ?? 20);

Deno.test(`raft: histories of concurrent read/write/cas clients are linearizable over ${SEEDS} seeded chaos runs`, async () => {
  let ops = 0;
  for (let seed = 1; seed <= SEEDS; seed++) {
    const r = await simulate({ seed });
    assert.ok(
      r.completed > 100,
      `seed ${seed}: only ${r.completed} operations completed`,
    );
    assert.ok(r.crashes + r.partitions > 0, `seed ${seed}: no faults`);
    assert.deepEqual(r.duplicates, [], `seed ${seed}: applied twice`);
    const verdict = check(kvModel(), r.history, { timeoutMs: 20_000 });
    assert.equal(verdict, "ok", `seed ${seed}: history is ${verdict}`);
    ops += r.history.length;
  }
  assert.ok(ops > SEEDS * 100);
});

Deno.test("raft: histories stay linearizable when nodes compact their logs every 40 entries and laggards install snapshots", async () => {
  let snapshots = 0;
  let installs = 0;
  for (let seed = 101; seed <= 100 + Math.ceil(SEEDS / 2); seed++) {
    const r = await simulate({ seed, compactEvery: 40 });
    snapshots += r.snapshots;
    installs += r.installs;
    assert.deepEqual(r.duplicates, [], `seed ${seed}: applied twice`);
    const verdict = check(kvModel(), r.history, { timeoutMs: 20_000 });
    assert.equal(verdict, "ok", `seed ${seed}: history is ${verdict}`);
  }
  assert.ok(snapshots > 0, "no node ever compacted");
  assert.ok(installs > 0, "no snapshot was ever sent to a laggard");
});

Deno.test("raft: 5-node histories are linearizable too", async () => {
  for (let seed = 201; seed <= 200 + Math.ceil(SEEDS / 4); seed++) {
    const r = await simulate({ seed, nodes: 5, clients: 6 });
    assert.ok(r.completed > 100, `seed ${seed}: ${r.completed} completed`);
    assert.deepEqual(r.duplicates, [], `seed ${seed}: applied twice`);
    const verdict = check(kvModel(), r.history, { timeoutMs: 20_000 });
    assert.equal(verdict, "ok", `seed ${seed}: history is ${verdict}`);
  }
});

Deno.test("raft: the checker catches a build that serves reads without ReadIndex", async () => {
  const verdicts: string[] = [];
  for (let seed = 1; seed <= 6; seed++) {
    const r = await simulate({ seed, unsafeLocalReads: true });
    verdicts.push(check(kvModel(), r.history, { timeoutMs: 20_000 }));
  }
  // Stale local reads on lagging followers and deposed leaders are illegal.
  assert.ok(
    verdicts.filter((v) => v === "illegal").length >= 4,
    `verdicts: ${verdicts.join(", ")}`,
  );
});

Deno.test("raft: the duplicate check catches a build that applies both copies of a re-sent proposal", async () => {
  let duplicates = 0;
  for (let seed = 1; seed <= 6; seed++) {
    const r = await simulate({ seed, unsafeApplyCopies: true });
    duplicates += r.duplicates.length;
  }
  // Copies of proposals re-sent to a new leader do commit twice in these runs.
  assert.ok(duplicates >= 3, `only ${duplicates} duplicate(s) caught`);
});
