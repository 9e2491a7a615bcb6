/**
 * `plexus cluster --nodes 3 --consensus gossip`: the nodes start at once,
 * derive their gossip ports from their HTTP ports, find each other through
 * `--peers` with the secret the command hands them, agree on the KV-lease
 * leader (the cluster shares one KV file), see a SIGKILLed member go, and
 * stop gracefully on SIGTERM.
 */
import assert from "node:assert/strict";
import { freePortRange, poll, spawnCluster } from "../integration/_process.ts";

Deno.test({
  name:
    "gossip cluster command: 3 nodes started together see each other over UDP, agree on the lease leader and drop a SIGKILLed node",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = freePortRange(3, { alsoAbove: 1000 });
    const config = await Deno.makeTempFile({ suffix: ".json" });
    await Deno.writeTextFile(
      config,
      JSON.stringify({
        pluginConfig: {
          gossip: { protocol: { probeIntervalMs: 200, probeTimeoutMs: 100 } },
        },
      }),
    );
    await using cluster = await spawnCluster([
      "--nodes",
      "3",
      "--consensus",
      "gossip",
      "--port",
      String(port),
      "--",
      "--config",
      config,
    ]);
    const detail = async (i: number) => {
      try {
        const res = await fetch(`http://127.0.0.1:${port + i}/health`);
        return String((await res.json()).services?.gossip?.detail);
      } catch {
        return "";
      }
    };
    try {
      // What the nodes said last, for the message when they never agree.
      let last: string[] = [];
      const details = await poll(async () => {
        const d = last = await Promise.all([0, 1, 2].map(detail));
        const leaders = d.map((x) =>
          /leader (node-\d) \(kv-lease, fenced/.exec(x)?.[1]
        );
        return d.every((x) => x.startsWith("3/3 members alive over udp")) &&
          leaders.every((l) => l && l === leaders[0]) && d;
      }, "3 gossip members alive and one lease leader on every node").catch(
        (err) => {
          throw new Error(
            `${(err as Error).message}; last health details: ${
              JSON.stringify(last)
            }`,
          );
        },
      );
      const leader = /leader (node-\d)/.exec(details[0])![1];
      const victim = [1, 2, 3].map((i) => `node-${i}`).find((n) =>
        n !== leader
      )!;
      Deno.kill(cluster.pidOf(victim), "SIGKILL");
      const survivors = [0, 1, 2].filter((i) => `node-${i + 1}` !== victim);
      await poll(async () => {
        const d = await Promise.all(survivors.map(detail));
        return d.every((x) => x.startsWith("2/3 members alive"));
      }, `${victim} no longer alive on both survivors`);
      const status = await cluster.stop();
      const err = cluster.stderr;
      assert.equal(
        status.code,
        1,
        "a node was SIGKILLed, so the cluster exits 1",
      );
      assert.equal((err.match(/exited with code 0/g) ?? []).length, 2, err);
    } finally {
      await Deno.remove(config).catch(() => {});
    }
  },
});
