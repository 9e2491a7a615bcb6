/**
 * Debates across nodes sharing one KV: the node that leads runs the saga's
 * steps and asks agents connected to the other node through it.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Consensus } from "../../core/consensus.ts";
import { debateAgent, followDebate, startDebateNode } from "./_node.ts";

Deno.test("debates across nodes: the leader asks agents connected to the other node through it; every turn answered", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-debates-cluster-" });
  await using a = await startDebateNode(dir, { name: "a", lease: true });
  await using b = await startDebateNode(dir, { name: "b", lease: true });
  const pro = await debateAgent(a, "for");
  const con = await debateAgent(b, "against");
  const follower = await debateAgent(b, "follow-majority");
  try {
    // Posted on b with a capability participant; b may or may not lead.
    const r = await b.post({
      topic: "Across nodes?",
      participants: [pro.id, con.id, "debate"],
      rounds: 3,
      turnTimeoutMs: 10_000,
      consensus: { method: "majority" },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = String(r.body.id);
    const events = await followDebate(a, id);
    assert.equal(events.at(-1)?.data.status, "consensus");
    const d = await a.view(id);
    assert.ok(
      d.turns.every((t) => t.status === "answered"),
      JSON.stringify(d.turns.filter((t) => t.status !== "answered")),
    );
    const leaders = new Set(d.turns.map((t) => t.node));
    const leader = [a, b].find((n) =>
      n.handle.kernel.get<Consensus>("consensus:*").isLeader()
    );
    assert.deepEqual([...leaders], [leader?.handle.node.id]);
    // The capability slot got one of the agents offering 'debate' (all three do).
    const slot2 = d.turns.filter((t) => t.participant === 2).map((t) =>
      t.agent
    );
    assert.ok(
      slot2.every((x) => [pro.id, con.id, follower.id].includes(x!)),
      String(slot2),
    );
  } finally {
    await Promise.all([pro, con, follower].map((x) => x.agent.close()));
  }
});
