/**
 * The gossip plugin inside real `main.ts` nodes: three nodes with
 * `--consensus gossip` and a shared KV find each other through `--peers`
 * (gossip ports derived from the HTTP ports), agree on the KV-lease leader,
 * and see a SIGKILLed node go down.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type PlexusProcess, startPlexus } from "../integration/_process.ts";
import { eventually } from "../cluster/_cluster.ts";
import { freePort } from "./_ports.ts";

interface ClusterJson {
  leader: string | null;
  epoch: number;
  consensus: string;
  members: { id: string; address: string; status: string }[];
}

const PROBE_MS = 200;

Deno.test("gossip plugin: three main.ts nodes see each other, share the lease leader and mark a SIGKILLed node down", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gossip-" });
  const ports = [freePort(), freePort(), freePort()];
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const config = join(dir, "config.json");
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      pluginConfig: {
        gossip: {
          protocol: { probeIntervalMs: PROBE_MS, probeTimeoutMs: 100 },
          sharedKvCheckMs: 200,
          leaseMs: 3000,
          renewDeadlineMs: 2000,
          retryPeriodMs: 500,
        },
      },
    }),
  );
  const nodes: PlexusProcess[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      nodes.push(
        await startPlexus({
          port: String(ports[i]),
          args: [
            "--node-id",
            `g${i + 1}`,
            "--kv",
            join(dir, "shared.kv"),
            "--config",
            config,
            "--consensus",
            "gossip",
            "--peers",
            urls.filter((_, j) => j !== i).join(","),
          ],
          allowWrite: [dir],
          env: { PLEXUS_MESH_SECRET: "gossip-test-secret-0123456789" },
        }),
      );
    }
    const view = async (n: PlexusProcess) =>
      (await (await n.api("/api/v1/cluster")).json()) as ClusterJson;
    for (const n of nodes) {
      const v = await eventually(
        () => view(n),
        (v) =>
          v.members.length === 3 && v.members.every((m) => m.status === "up") &&
          v.leader !== null,
        `3 gossip members up and a leader on ${n.url}`,
        30_000,
      );
      assert.equal(v.consensus, "gossip");
      assert.deepEqual(
        v.members.map((m) => m.address).sort(),
        [...urls].sort(),
        "members carry their HTTP base URLs (derived by the port rule)",
      );
    }
    const leaders = await Promise.all(
      nodes.map(async (n) => (await view(n)).leader),
    );
    assert.equal(new Set(leaders).size, 1, `one lease leader, saw ${leaders}`);

    // Several shared-KV checks later, nobody reports an unshared KV.
    await new Promise((r) => setTimeout(r, 1500));
    for (const n of nodes) {
      const health = await (await fetch(`${n.url}/health`)).json();
      assert.doesNotMatch(health.services.gossip.detail, /not shared/);
      assert.match(health.services.gossip.detail, /kv-lease, fenced/);
    }

    // The operators' view (the console's consensus detail).
    type Status = {
      id: string;
      healthScore: number;
      alive: number;
      suspicions: string;
      members: {
        id: string;
        state: string;
        lastSeenMsAgo: number | null;
        suspicion?: {
          confirmations: number;
          expected: number;
          deadInMs: number;
        };
      }[];
    };
    const status = async (n: PlexusProcess) => {
      const res = await n.api("/api/v1/gossip/status", {}, "viewer");
      assert.equal(res.status, 200);
      return (await res.json()) as Status;
    };
    const before = await status(nodes[0]);
    assert.equal(before.id, "g1");
    assert.equal(before.alive, 3);
    assert.equal(before.suspicions, "");
    assert.equal(typeof before.healthScore, "number");
    assert.ok(
      before.members.every((m) =>
        m.id === "g1" || (m.lastSeenMsAgo !== null && m.lastSeenMsAgo < 10_000)
      ),
      JSON.stringify(before.members),
    );

    // Each node's own version and load (the console reads it from members
    // whose records its KV does not hold).
    const self = await nodes[1].api("/api/v1/cluster/self", {}, "viewer");
    assert.equal(self.status, 200);
    const me = await self.json();
    assert.equal(me.id, "g2");
    assert.equal(me.address, urls[1]);
    assert.equal(typeof me.version, "string");
    assert.equal(typeof me.load.inflight, "number");
    assert.ok(me.load.rss > 0);
    const anonymous = await fetch(`${urls[1]}/api/v1/cluster/self`);
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();

    nodes[2].signal("SIGKILL");
    await nodes[2].status;
    // g1's status shows g3 suspect (with its suspicion) or, once the timer
    // ran out, dead; every suspicion seen has its fields.
    await eventually(
      () => status(nodes[0]),
      (st) => {
        const g3 = st.members.find((m) => m.id === "g3");
        if (g3?.state === "suspect") {
          assert.ok(g3.suspicion, JSON.stringify(g3));
          assert.ok(g3.suspicion.expected >= 1);
          assert.ok(g3.suspicion.deadInMs >= 0);
          assert.match(st.suspicions, /^g3 \d+\/\d+ confirmations, dead in /);
        }
        return g3?.state === "dead";
      },
      "g3 dead in g1's gossip status",
      30_000,
    );
    // Detection within suspicion timeout bounds: generous for a loaded machine.
    for (const n of nodes.slice(0, 2)) {
      const v = await eventually(
        () => view(n),
        (v) => v.members.find((m) => m.id === "g3")?.status === "down",
        `g3 down in ${n.url}'s view`,
        30_000,
      );
      assert.ok(v.members.filter((m) => m.status === "up").length === 2);
    }
  } finally {
    await Promise.all(nodes.map((n) => n.close()));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
