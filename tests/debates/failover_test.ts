/**
 * A debate survives its node: two plexus processes on one KV file with
 * kv-lease, the agents (processes) connected to the follower; the leader,
 * which runs the debate's saga, is SIGKILLed while a round-2 turn is in
 * flight, and the other node takes over and finishes the debate, each turn
 * recorded once.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { PlexusProcess } from "../integration/_process.ts";
import { eventually, KV_TARGETS, startCluster } from "../cluster/_cluster.ts";
import {
  type AgentProcess,
  agentProcess,
  enrol,
  followDebate,
  type NodeLike,
} from "./_node.ts";
import type { DebateView } from "../../plugins/debates/mod.ts";

const LEASE = { leaseMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 100 };

const nodeLike = (p: PlexusProcess): NodeLike => ({
  url: p.url,
  dir: p.dir,
  api: (path, init, role = "analyst") => p.api(path, init, role),
  enrolled: () => enrol((path, init) => p.api(path, init, "operator")),
});

for (const target of KV_TARGETS) {
  Deno.test(`debates failover (${target.name}): the leader SIGKILLed mid-round 2 → the other node resumes the saga and the debate reaches consensus, every turn recorded once`, async () => {
    await using c = await startCluster(target, {
      nodes: 2,
      args: [
        "--consensus",
        "kv-lease",
        "--plugin",
        "builtin:sagas",
        "--plugin",
        "builtin:events",
        "--plugin",
        "builtin:debates",
      ],
      config: { pluginConfig: { "kv-lease": LEASE } },
    });
    if (!c) return;
    const views = await eventually(
      () =>
        Promise.all(
          c.nodes.map(async (n) =>
            await (await n.api("/api/v1/cluster")).json() as {
              nodeId: string;
              leader: string | null;
            }
          ),
        ),
      (vs) =>
        vs[0].leader !== null && vs.every((v) => v.leader === vs[0].leader),
      "a leader both nodes agree on",
    );
    const leaderId = views[0].leader!;
    const leader = c.nodes[views.findIndex((v) => v.nodeId === leaderId)];
    const survivor = c.nodes.find((n) => n !== leader)!;
    const survivorId = views.find((v) => v.nodeId !== leaderId)!.nodeId;
    const at = nodeLike(survivor);

    const agents: AgentProcess[] = [];
    try {
      agents.push(await agentProcess(at, "for"));
      // Thinks long enough for its round-2 turn to be in flight when the leader dies.
      agents.push(await agentProcess(at, "against", ["--think-ms", "2000"]));
      agents.push(await agentProcess(at, "follow-majority"));
      const [pro, con, follower] = agents;
      const res = await at.api("/api/v1/debates", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({
          topic: "Who finishes this?",
          participants: [pro.id, con.id, follower.id],
          rounds: 3,
          turnTimeoutMs: 15_000,
          consensus: { method: "majority" },
        }),
      });
      const body = await res.json();
      assert.equal(res.status, 201, JSON.stringify(body));
      const id = body.id as string;

      await con.asked((q) => q.round === 2);
      leader.signal("SIGKILL");
      await leader.status;

      const events = await followDebate(at, id, 90_000);
      const d = await (await at.api(`/api/v1/debates/${id}`))
        .json() as DebateView;
      assert.equal(d.status, "consensus", JSON.stringify(d));
      assert.deepEqual(d.result, {
        position: "against",
        round: 2,
        share: 0.667,
      });
      // One turn per participant and round, all answered.
      assert.deepEqual(
        d.turns.map((t) => [t.round, t.participant, t.status]),
        [1, 2].flatMap((r) => [0, 1, 2].map((p) => [r, p, "answered"])),
      );
      // Round 1 ran on the old leader; the turn in flight when it died was
      // asked again, and recorded, by the node that took over.
      assert.ok(
        d.turns.filter((t) => t.round === 1).every((t) => t.node === leaderId),
      );
      const resumed = d.turns.find((t) =>
        t.round === 2 && t.participant === 1
      )!;
      assert.equal(resumed.node, survivorId);
      assert.ok(
        con.questions.filter((q) => q.round === 2).length >= 2,
        "the killed leader's question and the new leader's",
      );
      // Every turn was published, at least once: a step run again by the
      // node that took over tells its turn again, since the dead node may
      // have recorded it and died before telling it.
      const published = events.filter((e) => e.type === "debate.turn").map((
        e,
      ) => `${e.data.round}/${e.data.participant}`);
      assert.deepEqual(
        [...new Set(published)].sort(),
        [1, 2].flatMap((r) => [pro, con, follower].map((a) => `${r}/${a.id}`))
          .sort(),
        String(published),
      );
      assert.equal(events.at(-1)?.data.status, "consensus");
    } finally {
      await Promise.all(agents.map((a) => a.kill()));
    }
  });
}
