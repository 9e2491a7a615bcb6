/**
 * Real processes: a 5-node cluster losing two leaders in a row, a 3-node
 * cluster whose leader is SIGSTOPped and SIGCONTed, and the HTTP API's
 * permissions.
 */
import assert from "node:assert/strict";
import { poll } from "../integration/_process.ts";
import { RaftCluster } from "./_raft_cluster.ts";
import { startWriters, verifyAcked } from "./_clients.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

async function put(
  c: RaftCluster,
  i: number,
  key: string,
  value: string,
): Promise<Response> {
  return await c.api(i, `/api/v1/raft/kv/${key}`, {
    method: "PUT",
    body: JSON.stringify({ value }),
  });
}

Deno.test({
  name:
    "raft: a 5-node cluster keeps every acknowledged write through two leader kills in a row, and the killed nodes catch up after a restart",
  ...opts,
  async fn() {
    const c = await RaftCluster.start(5);
    try {
      const writers = startWriters(c, 4);
      const first = await c.leader();
      await c.kill(first);
      const second = await c.leader();
      assert.notEqual(second, first);
      await c.kill(second);
      // Three of five left: still a quorum.
      const third = await c.leader();
      const before = writers.acked.size;
      await poll(
        () => writers.acked.size >= before + 20,
        "20 writes acknowledged by the 3 survivors",
        30_000,
      );
      await writers.stop();
      await Promise.all([c.spawn(first), c.spawn(second)]);
      const leaderCommit = (await c.status(third))!.commit;
      for (const i of [first, second]) {
        await poll(
          async () => ((await c.status(i))?.applied ?? 0) >= leaderCommit,
          `${c.nodes[i].id} to apply up to ${leaderCommit}`,
          30_000,
        );
      }
      const wrong = await verifyAcked(c, first, writers.acked);
      assert.deepEqual(wrong, [], `${wrong.length} acknowledged writes lost`);
      assert.ok(writers.acked.size >= 20);
    } finally {
      await c.close();
    }
  },
});

Deno.test({
  name:
    "raft: a SIGSTOPped leader is replaced; after SIGCONT it follows the new leader and serves the new value",
  ...opts,
  async fn() {
    const c = await RaftCluster.start(3);
    try {
      const old = await c.leader();
      const oldTerm = (await c.status(old))!.term;
      assert.equal((await put(c, old, "k", "before")).status, 200);
      c.nodes[old].proc!.signal("SIGSTOP");
      // The others elect a new leader without it.
      const others = [0, 1, 2].filter((i) => i !== old);
      const fresh = await poll(
        async () => {
          for (const i of others) {
            const s = await c.status(i);
            if (s?.role === "leader" && s.term > oldTerm) return i + 1;
          }
          return false;
        },
        "a new leader while the old one is stopped",
        30_000,
      ) - 1;
      const w = await put(c, fresh, "k", "after");
      assert.equal(w.status, 200, await w.text());
      c.nodes[old].proc!.signal("SIGCONT");
      await poll(
        async () => {
          const s = await c.status(old);
          return s?.role === "follower" && s.term > oldTerm &&
            s.lead === c.nodes[fresh].id;
        },
        "the old leader to follow the new one",
        30_000,
      );
      // A linearizable read through the old leader sees the new value.
      const r = await c.api(old, "/api/v1/raft/kv/k");
      assert.equal(r.status, 200);
      assert.equal((await r.json()).value, "after");
    } finally {
      await c.close();
    }
  },
});

Deno.test({
  name:
    "raft: the KV API needs a token, lets a viewer read but not write, and compare-and-set answers whether it swapped",
  ...opts,
  async fn() {
    const c = await RaftCluster.start(3);
    try {
      const l = await c.leader();
      const follower = (l + 1) % 3;
      await c.follows(follower, l);
      const p = c.nodes[follower].proc!;
      const anon = await p.fetch("/api/v1/raft/kv/x");
      assert.equal(anon.status, 401);
      await anon.body?.cancel();
      const viewerWrite = await p.api("/api/v1/raft/kv/x", {
        method: "PUT",
        body: JSON.stringify({ value: "1" }),
      }, "viewer");
      assert.equal(viewerWrite.status, 403);
      await viewerWrite.body?.cancel();
      // A write on a follower is forwarded to the leader inside Raft.
      const w = await put(c, follower, "x", "1");
      assert.equal(w.status, 200);
      assert.equal((await w.json()).previous, null);
      const viewerRead = await p.api("/api/v1/raft/kv/x", {}, "viewer");
      assert.equal(viewerRead.status, 200);
      assert.equal((await viewerRead.json()).value, "1");
      const cas = async (expect: string | null, value: string) => {
        const res = await c.api(l, "/api/v1/raft/kv/x", {
          method: "POST",
          body: JSON.stringify({ expect, value }),
        });
        assert.equal(res.status, 200);
        return await res.json();
      };
      const miss = await cas("0", "2");
      assert.equal(miss.ok, false);
      assert.equal(miss.value, "1");
      assert.equal((await cas("1", "2")).ok, true);
      const bad = await c.api(l, "/api/v1/raft/kv/x", {
        method: "PUT",
        body: JSON.stringify({ value: 5 }),
      });
      assert.equal(bad.status, 400);
      assert.match((await bad.json()).error.message, /got 5/);
      // The Consensus capability behind GET /api/v1/cluster.
      const view = await (await c.api(follower, "/api/v1/cluster")).json();
      assert.equal(view.consensus, "raft");
      assert.equal(view.leader, c.nodes[l].id);
      assert.ok(view.epoch >= 1);
      assert.deepEqual(
        view.members.map((
          m: { id: string; status: string },
        ) => [m.id, m.status]),
        c.nodes.map((n) => [n.id, "up"]),
      );
    } finally {
      await c.close();
    }
  },
});
