/**
 * Work sharing across real processes: tasks submitted to any node run on
 * some node, survive a SIGKILLed worker, and are never lost.
 */
import assert from "node:assert/strict";
import { DurableQueue } from "../../core/state/queue.ts";
import { allTasks, eventually, KV_TARGETS, startCluster } from "./_cluster.ts";
import type { PlexusProcess } from "../integration/_process.ts";

/** Posts `n` tasks spread round-robin over the nodes, `parallel` at a time. */
async function submit(
  nodes: PlexusProcess[],
  n: number,
  body: (i: number) => unknown,
  parallel = 24,
): Promise<string[]> {
  const ids: string[] = new Array(n);
  const urls = nodes.map((x) => x.url);
  // Signed by n1's key; n2 and n3 accept it through the shared keyring.
  const token = await nodes[0].token("analyst");
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < n) {
      const i = next++;
      const res = await fetch(`${urls[i % urls.length]}/api/v1/tasks`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${token}`,
        },
        body: JSON.stringify(body(i)),
      });
      const json = await res.json();
      assert.equal(res.status, 202, JSON.stringify(json));
      ids[i] = json.id;
    }
  }));
  return ids;
}

for (const target of KV_TARGETS) {
  Deno.test(`cluster (${target.name}): 10,000 tasks submitted across 3 nodes all complete, shared by all`, async () => {
    await using c = await startCluster(target, {
      nodes: 3,
      // 10,000 submissions from one IP as fast as possible: the rate limits
      // would pace them (and add two shared-KV commits each); this test is
      // about the queue. Rate limits have their own cluster test.
      config: { tasks: { concurrency: 16 }, rateLimit: { enabled: false } },
    });
    if (!c) return;
    const q = new DurableQueue(c.kv, "tasks");
    const n = 10_000;
    const ids = await submit(
      c.nodes,
      n,
      (i) => ({ type: "echo", payload: { i } }),
    );
    assert.equal(new Set(ids).size, n);
    await eventually(
      () => q.stats(),
      (s) => s.ready + s.delayed + s.inflight === 0,
      "the queue to drain",
      240_000,
    );
    const tasks = await allTasks(c.kv);
    const done = tasks.filter((t) => t.state === "done");
    assert.equal(
      done.length,
      n,
      `all ${n} done (states: ${JSON.stringify(await q.stats())})`,
    );
    assert.deepEqual(
      done.map((t) => (t.result as { i: number }).i).sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i),
      "each task's own result",
    );
    const byNode = Object.groupBy(done, (t) => t.consumer ?? "?");
    assert.deepEqual(
      Object.keys(byNode).sort(),
      ["n1", "n2", "n3"],
      "every node took a share",
    );
    console.log(
      `  shares: ${
        Object.entries(byNode).map(([k, v]) => `${k}=${v!.length}`).join(" ")
      }`,
    );
  });

  Deno.test(`cluster (${target.name}): a SIGKILLed worker's tasks are redone after their leases expire; none lost`, async () => {
    await using c = await startCluster(target, {
      nodes: 3,
      config: { tasks: { concurrency: 4, leaseMs: 1500 } },
    });
    if (!c) return;
    // Long enough that the tasks n2 holds when sampled still run at the kill.
    const n = 120;
    await submit(
      c.nodes,
      n,
      () => ({ type: "sleep", payload: { ms: 600 } }),
      8,
    );
    const victim = c.nodes[1];
    const holding = await eventually(
      async () =>
        (await allTasks(c.kv)).filter((t) =>
          t.state === "inflight" && t.consumer === "n2"
        ),
      (v) => v.length > 0,
      "n2 to hold tasks",
    );
    victim.signal("SIGKILL");
    await victim.exit();
    // What n2 held when it died: its leases stay until they expire (1.5 s),
    // so read them now. (It may have finished the sampled tasks and taken
    // others between the sample and the kill.)
    const heldAtDeath = (await allTasks(c.kv)).filter((t) =>
      t.state === "inflight" && t.consumer === "n2"
    ).map((t) => t.id).sort();
    assert.ok(
      heldAtDeath.length >= 1,
      "n2 held tasks when it died (it runs 4 at a time while work is ready)",
    );
    const q = new DurableQueue(c.kv, "tasks");
    await eventually(
      () => q.stats(),
      (s) => s.ready + s.delayed + s.inflight === 0,
      "the queue to drain",
      120_000,
    );
    const tasks = await allTasks(c.kv);
    assert.equal(tasks.length, n);
    assert.equal(
      tasks.filter((t) => t.state === "done").length,
      n,
      "none lost",
    );
    const redone = tasks.filter((t) => t.attempts > 1);
    // A task runs twice only if n2 held it when it died: its lease expired,
    // the sweep says so in its error history, and someone else finished it.
    for (const t of redone) {
      assert.ok(
        t.errors.some((e) => e.error === "lease expired (held by n2)"),
        `task ${t.id} ran ${t.attempts} times without n2's lease expiring: ${
          JSON.stringify(t.errors)
        }`,
      );
      assert.notEqual(t.consumer, "n2");
    }
    // Exactly the tasks n2 held when it died ran again, no others.
    assert.deepEqual(
      redone.map((t) => t.id).sort(),
      heldAtDeath,
      "the tasks n2 held at its death, and only those, were redone",
    );
    assert.ok(
      redone.length <= 4,
      `duplicates at most n2's concurrency (4), got ${redone.length}`,
    );
    console.log(
      `  n2 held ${holding.length} when sampled, ${heldAtDeath.length} at its death; ${redone.length} task(s) ran twice`,
    );
  });
}
