import assert from "node:assert/strict";
import type { LeaderChange } from "../../core/consensus.ts";
import { createTestKernel } from "../../core/testing.ts";
import { GossipDriver } from "./driver.ts";
import gossip, { type GossipConsensus, seedsFromPeers } from "./plugin.ts";

const SECRET = "plugin-test-secret-0123456789";
const PROTOCOL = { probeIntervalMs: 100, probeTimeoutMs: 50 };

async function until(what: string, pred: () => boolean | Promise<boolean>) {
  const end = Date.now() + 15_000;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("gossip plugin: seeds follow the port rule (HTTP port + offset) and keep IPv6 brackets", () => {
  assert.deepEqual(
    [
      ...seedsFromPeers(
        ["http://127.0.0.1:8087", "http://[::1]:8088"],
        1000,
      ),
    ],
    [
      ["127.0.0.1:9087", "http://127.0.0.1:8087"],
      ["[::1]:9088", "http://[::1]:8088"],
    ],
  );
});

Deno.test("gossip plugin: members come from gossip and lowest-id leadership is local, unfenced and follows departures", async () => {
  const peer = await GossipDriver.start({
    id: "a-peer",
    secret: SECRET,
    config: PROTOCOL,
    log: () => {},
  });
  let peerClosed = false;
  try {
    await using t = await createTestKernel([gossip], {
      pluginConfig: {
        gossip: {
          secret: SECRET,
          seeds: [peer.addr],
          leader: "lowest-id",
          protocol: PROTOCOL,
          leaveTimeoutMs: 500,
        },
      },
    });
    const api = t.kernel.get<GossipConsensus>("consensus:gossip");
    assert.equal(t.kernel.get("consensus:*"), api);
    assert.equal(api.name, "gossip");
    assert.equal(api.fenced, false);
    const changes: LeaderChange[] = [];
    api.onLeaderChange((c) => changes.push(c));
    await until(
      "both members up",
      async () =>
        (await api.members()).filter((m) => m.status === "up").length === 2,
    );
    const members = await api.members();
    const self = members.find((m) => m.id === "test-node")!;
    assert.equal(self.address, "http://127.0.0.1:0");
    assert.equal(members.find((m) => m.id === "a-peer")?.address, peer.addr);
    assert.equal(api.leader(), "a-peer");
    assert.equal(api.isLeader(), false);
    const health = await (await t.request("/health")).json();
    assert.match(health.services.gossip.detail, /2\/2 members alive over udp/);
    assert.match(health.services.gossip.detail, /not fenced/);

    await peer.leave(1000);
    peerClosed = true;
    await until(
      "peer down",
      async () =>
        (await api.members()).find((m) => m.id === "a-peer")?.status ===
          "down",
    );
    assert.equal(api.leader(), "test-node");
    assert.equal(api.isLeader(), true);
    assert.deepEqual(changes.at(-1), {
      leader: "test-node",
      epoch: api.epoch(),
    });
    assert.match(
      t.metrics.render(),
      /plexus_gossip_members\{state="left"\} 1/,
    );
  } finally {
    if (!peerClosed) await peer.close();
  }
});

Deno.test("gossip plugin: by default the leader is the KV lease's, fenced", async () => {
  await using t = await createTestKernel([gossip], {
    pluginConfig: {
      gossip: {
        leaseMs: 3000,
        renewDeadlineMs: 2000,
        retryPeriodMs: 50,
        protocol: PROTOCOL,
        leaveTimeoutMs: 200,
      },
    },
  });
  const api = t.kernel.get<GossipConsensus>("consensus:gossip");
  assert.equal(api.fenced, true);
  await until("lease leadership", () => api.isLeader());
  assert.equal(api.leader(), "test-node");
  assert.equal(api.epoch(), 1);
  const health = await (await t.request("/health")).json();
  assert.match(health.services.gossip.detail, /kv-lease, fenced, epoch 1/);
  assert.ok(
    t.logs.some((r) => /running alone with a random secret/.test(r.msg)),
    "no secret and no seeds: warned, not failed",
  );
});

Deno.test("gossip plugin: seeds without a cluster secret fail the setup with a hint", async () => {
  const before = Deno.env.get("PLEXUS_MESH_SECRET");
  Deno.env.delete("PLEXUS_MESH_SECRET");
  try {
    await assert.rejects(
      createTestKernel([gossip], {
        pluginConfig: { gossip: { seeds: ["127.0.0.1:1"] } },
      }),
      /cluster secret of at least 16 characters to join 127\.0\.0\.1:1.*PLEXUS_MESH_SECRET \(got none\)/s,
    );
  } finally {
    if (before !== undefined) Deno.env.set("PLEXUS_MESH_SECRET", before);
  }
});

Deno.test("gossip plugin: a live member that does not share the KV is named in the health detail as not fenced", async () => {
  const peer = await GossipDriver.start({
    id: "other-kv",
    secret: SECRET,
    config: PROTOCOL,
    log: () => {},
  });
  try {
    await using t = await createTestKernel([gossip], {
      pluginConfig: {
        gossip: {
          secret: SECRET,
          seeds: [peer.addr],
          protocol: PROTOCOL,
          sharedKvCheckMs: 100,
          leaveTimeoutMs: 200,
        },
      },
    });
    const detail = async () =>
      String(
        (await (await t.request("/health")).json()).services.gossip.detail,
      );
    await until(
      "the unshared KV named",
      async () =>
        /KV not shared with other-kv: not fenced across them/.test(
          await detail(),
        ),
    );
    assert.ok(
      t.logs.some((r) => /other-kv do not share this node's KV/.test(r.msg)),
      "warned once in the log",
    );
  } finally {
    await peer.close();
  }
});
