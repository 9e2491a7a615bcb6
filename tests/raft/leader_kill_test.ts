/**
 * Real processes: the leader of a 3-node cluster is SIGKILLed over and over
 * (RAFT_KILLS, default 50) while clients write; every acknowledged write
 * must survive, also after the whole cluster is killed and restarted from
 * disk.
 */
import assert from "node:assert/strict";
import { RaftCluster } from "./_raft_cluster.ts";
import { startWriters, verifyAcked } from "./_clients.ts";

const KILLS = Number(Deno.env.get("RAFT_KILLS") ?? 50);

Deno.test({
  name:
    `raft: every acknowledged write survives ${KILLS} leader SIGKILLs and a restart of the whole cluster from disk`,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await RaftCluster.start(3);
    try {
      await c.leader();
      const writers = startWriters(c, 4);
      const terms: number[] = [];
      for (let k = 0; k < KILLS; k++) {
        const l = await c.leader();
        terms.push((await c.status(l))!.term);
        // Let some writes through under this leader.
        const before = writers.acked.size;
        const end = Date.now() + 20_000;
        while (writers.acked.size < before + 5 && Date.now() < end) {
          await new Promise((r) => setTimeout(r, 5));
        }
        await c.kill(l);
        await c.spawn(l);
      }
      await c.leader();
      await writers.stop();
      console.log(
        `${KILLS} leader kills: ${writers.acked.size} writes acknowledged, ${writers.failed()} attempts failed, terms ${
          terms[0]
        }..${terms.at(-1)}`,
      );
      assert.ok(
        writers.acked.size >= KILLS * 5,
        `only ${writers.acked.size} writes acknowledged`,
      );
      // Terms only grow: each kill was followed by a new election.
      assert.deepEqual(terms, [...terms].sort((a, b) => a - b));
      assert.ok(terms.at(-1)! > terms[0], `terms ${terms}`);

      // The whole cluster down at once, then back from disk.
      await Promise.all(c.nodes.map((_, i) => c.kill(i)));
      await Promise.all(c.nodes.map((_, i) => c.spawn(i)));
      const l = await c.leader();
      const wrong = await verifyAcked(c, (l + 1) % 3, writers.acked);
      assert.deepEqual(wrong, [], `${wrong.length} acknowledged writes lost`);
    } finally {
      await c.close();
    }
  },
});
