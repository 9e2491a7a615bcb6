/**
 * Real processes: recovery from the loss of quorum with `plexus raft
 * recover`.
 */
import assert from "node:assert/strict";
import { runMain } from "../integration/_process.ts";
import { RaftCluster } from "./_raft_cluster.ts";

Deno.test({
  name:
    "raft: after 2 of 3 nodes are lost, 'plexus raft recover' lets the survivor elect itself, keep its data and serve writes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await RaftCluster.start(3);
    try {
      const l = await c.leader();
      for (let k = 0; k < 10; k++) {
        const res = await c.api(l, `/api/v1/raft/kv/k${k}`, {
          method: "PUT",
          body: JSON.stringify({ value: `v${k}` }),
        });
        assert.equal(res.status, 200);
        await res.body?.cancel();
      }
      const survivor = (l + 1) % 3;
      // Make sure the survivor holds every write before the others go.
      const commit = (await c.status(l))!.commit;
      while (((await c.status(survivor))?.applied ?? 0) < commit) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await Promise.all([0, 1, 2].map((i) => c.kill(i)));
      const id = c.nodes[survivor].id;

      // Without recovery the survivor alone has no quorum: no leader.
      await c.spawn(survivor);
      await new Promise((r) => setTimeout(r, 1500));
      const alone = await c.status(survivor);
      assert.notEqual(alone?.role, "leader");
      const refused = await c.api(survivor, "/api/v1/raft/kv/new", {
        method: "PUT",
        body: JSON.stringify({ value: "x" }),
      });
      assert.ok(refused.status >= 500, `status ${refused.status}`);
      await refused.body?.cancel();
      await c.kill(survivor);

      const wrong = await runMain(c.root, [
        "--allow-read",
        `--allow-write=${c.root}`,
      ], [
        "raft",
        "recover",
        "--data-dir",
        c.nodes[survivor].dir,
        "--members",
        "nobody",
      ]);
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /must include this node/);

      const out = await runMain(c.root, [
        "--allow-read",
        `--allow-write=${c.root}`,
      ], [
        "raft",
        "recover",
        "--data-dir",
        c.nodes[survivor].dir,
        "--members",
        id,
      ]);
      assert.equal(out.code, 0, out.stderr);
      const report = JSON.parse(out.stdout);
      assert.deepEqual(report.voters, [id]);
      assert.deepEqual(report.previousVoters, c.nodes.map((n) => n.id));

      await c.spawn(survivor);
      const s = await (async () => {
        for (let t = 0; t < 300; t++) {
          const st = await c.status(survivor);
          if (st?.role === "leader") return st;
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error("the recovered node did not elect itself");
      })();
      assert.deepEqual(s.voters, [id]);
      const w = await c.api(survivor, "/api/v1/raft/kv/new", {
        method: "PUT",
        body: JSON.stringify({ value: "after" }),
      });
      assert.equal(w.status, 200);
      await w.body?.cancel();
      for (let k = 0; k < 10; k++) {
        const r = await c.api(survivor, `/api/v1/raft/kv/k${k}`);
        assert.equal((await r.json()).value, `v${k}`);
      }
    } finally {
      await c.close();
    }
  },
});
