import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import raft, { type RaftConsensus } from "./plugin.ts";

const SECRET = { secret: "plugin-test-secret-0123" };

async function waitFor(what: string, pred: () => boolean, limitMs = 10_000) {
  const until = performance.now() + limitMs;
  while (!pred()) {
    if (performance.now() > until) {
      throw new Error(`timed out after ${limitMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The test kernel's data dir is "."; run inside a temporary folder. */
async function inTempDir(fn: () => Promise<void>): Promise<void> {
  const cwd = Deno.cwd();
  const dir = await Deno.makeTempDir({ prefix: "plexus-raft-plugin-" });
  Deno.chdir(dir);
  try {
    await fn();
  } finally {
    Deno.chdir(cwd);
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("raft plugin: a one-node cluster leads, serves the KV API and keeps its log in DATA_DIR/raft", async () => {
  await inTempDir(async () => {
    await using t = await createTestKernel([raft], {
      pluginConfig: { raft: { ...SECRET, tickMs: 10 } },
    });
    const api = t.kernel.get<RaftConsensus>("consensus:raft");
    assert.equal(t.kernel.get("consensus:*"), api);
    const changes: (string | null)[] = [];
    api.onLeaderChange((c) => changes.push(c.leader));
    // With 10 ms ticks a single node may have elected itself before the
    // listener was added (its event may still be on its way).
    const ledAlready = api.isLeader();
    await waitFor("leadership", () => api.isLeader());
    assert.equal(api.leader(), "test-node");
    assert.ok(api.epoch() >= 1);
    if (!ledAlready) {
      await waitFor("the leader change event", () => changes.length > 0);
    }
    assert.ok(
      changes.length <= 1 && changes.every((c) => c === "test-node"),
      `leader changes seen: ${JSON.stringify(changes)}`,
    );
    const put = await t.api("/api/v1/raft/kv/a%20b", {
      method: "PUT",
      body: JSON.stringify({ value: "1" }),
    });
    assert.equal(put.status, 200);
    assert.equal((await put.json()).value, "1");
    const get = await t.api("/api/v1/raft/kv/a%20b", {}, "viewer");
    assert.deepEqual(await get.json(), { key: "a b", value: "1", index: 2 });
    assert.equal(
      (await api.propose({ op: "delete", key: "a b" })).previous,
      "1",
    );
    assert.equal((await api.read("a b")).value, null);
    const members = await api.members();
    assert.deepEqual(members.map((m) => [m.id, m.status]), [[
      "test-node",
      "up",
    ]]);
    assert.ok((await Deno.stat("raft/raft.log")).size > 0);
    assert.equal((await Deno.readTextFile("raft/node-id")).trim(), "test-node");
  });
});

Deno.test("raft plugin: refuses to start without a cluster secret", async () => {
  await inTempDir(async () => {
    const before = Deno.env.get("PLEXUS_MESH_SECRET");
    Deno.env.delete("PLEXUS_MESH_SECRET");
    try {
      await assert.rejects(
        createTestKernel([raft]),
        /raft needs a cluster secret of at least 16 characters/,
      );
    } finally {
      if (before) Deno.env.set("PLEXUS_MESH_SECRET", before);
    }
  });
});

Deno.test("raft plugin: /api/v1/raft answers 404 on a node without raft", async () => {
  await using t = await createTestKernel([]);
  const res = await t.api("/api/v1/raft/kv/x");
  assert.equal(res.status, 404);
  assert.equal(
    (await res.json()).error.message,
    "no route for GET /api/v1/raft/kv/x",
  );
});
