import assert from "node:assert/strict";
import { createPromptCluster } from "./cluster.ts";

Deno.test("prompt cluster: a node advertised after a cached read is found on the next ask, not a quarter interval later", async () => {
  using kv = await Deno.openKv(":memory:");
  let t = 1_000_000;
  const now = () => t;
  let bCaps: string[] = [];
  const a = createPromptCluster(
    kv,
    { id: "a", address: "http://a" },
    () => [],
    {
      intervalMs: 2000,
      now,
    },
  );
  const b = createPromptCluster(
    kv,
    { id: "b", address: "http://b" },
    () => bCaps,
    { intervalMs: 2000, now },
  );
  await b.advertise();
  assert.deepEqual(await a.nodesFor("order"), []); // read and cached
  bCaps = ["order"];
  await b.advertise();
  t += 10; // well inside the cache's quarter interval
  assert.deepEqual(await a.nodesFor("order"), [{
    id: "b",
    address: "http://b",
  }]);
  // A stale record (older than three intervals) is a node gone.
  t += 2000 * 3 + 1;
  assert.deepEqual(await a.nodesFor("order"), []);
});
