import assert from "node:assert/strict";
import { join } from "node:path";
import { writePbftClusterConfig } from "./local_cluster.ts";

const nodes = [1, 2, 3, 4].map((i) => ({
  id: `node-${i}`,
  url: `http://127.0.0.1:${8085 + i}`,
}));

Deno.test("local cluster: the PBFT member list is written once per key, and a restart reuses every node's key", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-pbft-keys-" });
  try {
    const first = writePbftClusterConfig(dir, nodes);
    const again = writePbftClusterConfig(dir, nodes);
    assert.deepEqual([...again.keys], [...first.keys]);
    const config = JSON.parse(await Deno.readTextFile(first.configFile));
    assert.deepEqual(
      config.pluginConfig.pbft.members,
      nodes.map((n) => ({ ...n, publicKey: first.keys.get(n.id)!.publicKey })),
    );
    const file = join(dir, "node-2", "pbft-key.json");
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    // A key file whose halves do not match is refused, not replaced.
    const k = JSON.parse(await Deno.readTextFile(file));
    await Deno.writeTextFile(
      file,
      JSON.stringify({ ...k, publicKey: first.keys.get("node-1")!.publicKey }),
    );
    assert.throws(
      () => writePbftClusterConfig(dir, nodes),
      /node-2.*pbft-key\.json is not a PBFT key pair/,
    );
    assert.throws(
      () => writePbftClusterConfig(dir, nodes.slice(0, 3)),
      /at least 4 nodes.*got 3/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
