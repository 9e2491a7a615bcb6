/**
 * Real processes: a write sent to a follower while its leader is SIGSTOPped
 * is forwarded to the stopped leader; once the others elect a new leader the
 * follower re-sends it there, so it answers within about an election
 * timeout instead of the request timeout, and takes effect once.
 */
import assert from "node:assert/strict";
import { poll } from "../integration/_process.ts";
import { FAST, RaftCluster } from "./_raft_cluster.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

async function put(
  c: RaftCluster,
  i: number,
  key: string,
  value: string,
): Promise<{ status: number; ms: number; body: string }> {
  const t0 = performance.now();
  const res = await c.api(i, `/api/v1/raft/kv/${key}`, {
    method: "PUT",
    body: JSON.stringify({ value }),
  });
  const body = await res.text();
  return { status: res.status, ms: Math.round(performance.now() - t0), body };
}

Deno.test({
  name:
    "raft: a write forwarded to a SIGSTOPped leader is answered 200 through the new leader within 2.5 s (request timeout 5 s) and applied once",
  ...opts,
  async fn() {
    // 150–300 ms election timeouts, and the default 5 s request timeout.
    const c = await RaftCluster.start(3, { ...FAST, requestTimeoutMs: 5000 });
    try {
      const old = await c.leader();
      const follower = (old + 1) % 3;
      // A node knows it leads before its first heartbeat reaches the others;
      // until then the follower answers 503 "no leader known".
      await poll(
        async () => (await c.status(follower))?.lead === c.nodes[old].id,
        "the follower to learn the leader",
        10_000,
      );
      const warm = await put(c, follower, "k", "v0");
      assert.equal(warm.status, 200, warm.body);
      c.nodes[old].proc!.signal("SIGSTOP");
      // The follower still believes in the stopped leader and forwards to it.
      const first = await put(c, follower, "k", "v1");
      console.log(
        `write through a follower of a stopped leader: ${first.ms} ms`,
      );
      assert.equal(first.status, 200, first.body);
      assert.ok(first.ms < 2500, `answered after ${first.ms} ms`);
      const second = await put(c, follower, "k", "v2");
      assert.equal(second.status, 200, second.body);

      c.nodes[old].proc!.signal("SIGCONT");
      // The stopped leader reads the held proposal when it wakes; it must not
      // bring v1 back over v2.
      const fresh = await c.leader();
      assert.notEqual(fresh, old);
      const commit = (await c.status(fresh))!.commit;
      await poll(
        async () => {
          const s = await c.status(old);
          return s?.lead === c.nodes[fresh].id && s.applied >= commit;
        },
        "the old leader to follow the new one and catch up",
        30_000,
      );
      for (const i of [0, 1, 2]) {
        const r = await c.api(i, "/api/v1/raft/kv/k");
        assert.equal(r.status, 200);
        assert.equal((await r.json()).value, "v2", c.nodes[i].id);
      }
    } finally {
      await c.close();
    }
  },
});
