/**
 * `plexus cluster --consensus pbft`: four real nodes started from nothing
 * but the command (it makes each node's Ed25519 key and the member list),
 * one write, read back through every node.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  clusterAuth,
  freePortRange,
  poll,
  runMain,
  spawnCluster,
  waitHealthy,
} from "../integration/_process.ts";

Deno.test("pbft cluster: --consensus pbft with fewer than 4 nodes exits 2 naming the problem", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-pbft-cluster-" });
  try {
    const r = await runMain(dir, [
      "--allow-run=deno",
      "--allow-read",
      "--allow-env",
      `--allow-write=${dir}`,
    ], ["cluster", "--nodes", "3", "--consensus", "pbft"]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /--consensus pbft needs --nodes 4 or more.*got 3/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "pbft cluster: --nodes 4 --consensus pbft makes the keys and member list, and a write on one node reads back on all four",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = freePortRange(4, { alsoAbove: 1000 });
    await using cluster = await spawnCluster([
      "--nodes",
      "4",
      "--consensus",
      "pbft",
      "--port",
      String(port),
    ]);
    const dir = cluster.dir;
    const urls = [0, 1, 2, 3].map((i) => `http://127.0.0.1:${port + i}`);
    await waitHealthy(urls);
    // The member list names every node with the public key of its key file.
    const config = JSON.parse(
      await Deno.readTextFile(join(dir, "c", "pbft.json")),
    );
    const members = config.pluginConfig.pbft.members;
    assert.deepEqual(members.map((m: { id: string }) => m.id), [
      "node-1",
      "node-2",
      "node-3",
      "node-4",
    ]);
    for (const [i, m] of members.entries()) {
      assert.equal(m.url, urls[i]);
      const key = JSON.parse(
        await Deno.readTextFile(join(dir, "c", m.id, "pbft-key.json")),
      );
      assert.equal(m.publicKey, key.publicKey);
      assert.match(key.privateKey, /^[A-Za-z0-9_-]{43}$/);
    }
    assert.equal(
      new Set(members.map((m: { publicKey: string }) => m.publicKey)).size,
      4,
    );
    const auth = await clusterAuth(dir, join(dir, "c", "node-1"), "analyst");
    // The replicas agree on a primary in view 0 before the write.
    await poll(async () => {
      const views = await Promise.all(urls.map(async (u) => {
        const r = await fetch(`${u}/api/v1/pbft/status`, { headers: auth });
        return r.status === 200 ? await r.json() : (r.body?.cancel(), null);
      }));
      return views.every((v) => v && v.primary === "node-1" && !v.changing);
    }, "four replicas in view 0 with primary node-1");
    const put = await fetch(`${urls[1]}/api/v1/pbft/kv/greeting`, {
      method: "PUT",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ value: "hi" }),
    });
    const putBody = await put.json();
    assert.equal(put.status, 200, JSON.stringify(putBody));
    for (const u of urls) {
      const r = await fetch(`${u}/api/v1/pbft/kv/greeting`, { headers: auth });
      const body = await r.json();
      assert.equal(r.status, 200, `${u}: ${JSON.stringify(body)}`);
      assert.equal(body.value, "hi", `${u}: ${JSON.stringify(body)}`);
      assert.ok(body.matching.length >= 2, `${u}: ${JSON.stringify(body)}`);
    }
    const status = await cluster.stop();
    const err = cluster.stderr;
    assert.equal(status.code, 0, err);
    assert.equal((err.match(/exited with code 0/g) ?? []).length, 4, err);
  },
});
