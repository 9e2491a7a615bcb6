import assert from "node:assert/strict";
import { join } from "node:path";
import { V8_FLAGS_ARG } from "../../core/runtime_flags.ts";
import { cmdline } from "./_task.ts";
import {
  clusterAuth,
  freePortRange,
  poll,
  runMain,
  spawnCluster,
  waitHealthy,
} from "./_process.ts";

const PERMS = [
  "--allow-run=deno",
  "--allow-read",
  "--allow-env",
];

Deno.test("cluster: bad flags exit 2 with one line naming the problem", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-cluster-" });
  try {
    for (
      const [args, expect] of [
        [["cluster"], /--nodes is required/],
        [
          ["cluster", "--nodes", "0"],
          /--nodes must be an integer from 1 to 32, got '0'/,
        ],
        [
          ["cluster", "--nodes", "2", "--consensus", "nope"],
          /'nope' is not built in \(built in: .*kv-lease/,
        ],
        [
          ["cluster", "--nodes", "2", "--port", "65535"],
          /--port must leave room for 2 ports/,
        ],
        [["cluster", "--nodez", "2"], /nodez/],
      ] as const
    ) {
      const r = await runMain(dir, [...PERMS, `--allow-write=${dir}`], [
        ...args,
      ]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, expect);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "cluster: --nodes 3 starts three nodes sharing one KV; a SIGKILLed leader is replaced; SIGTERM stops the rest",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = freePortRange(3, { alsoAbove: 1000 });
    await using cluster = await spawnCluster([
      "--nodes",
      "3",
      "--consensus",
      "kv-lease",
      "--port",
      String(port),
    ]);
    /** "node-N@epoch" as node `i` (0-based) sees the leader, or undefined. */
    const view = async (i: number) => {
      try {
        const res = await fetch(`http://127.0.0.1:${port + i}/health`);
        const d = String((await res.json()).services?.["kv-lease"]?.detail);
        const own = /^leader of '.*', epoch (\d+)$/.exec(d);
        if (own) return `node-${i + 1}@${own[1]}`;
        const other = /leader: (node-\d), epoch (\d+)/.exec(d);
        return other ? `${other[1]}@${other[2]}` : undefined;
      } catch {
        return undefined;
      }
    };
    const agreed = async (nodes: number[]) => {
      const views = await Promise.all(nodes.map(view));
      return views.every((v) => v && v === views[0]) && views[0];
    };
    {
      const first = await poll(
        () => agreed([0, 1, 2]),
        "three nodes agreeing on a leader",
      );
      const [leader, epoch] = first.split("@");
      const pid = cluster.pidOf(leader);
      // Each node runs with the runtime's flags (core/runtime_flags.ts).
      const args = await cmdline(pid);
      assert.ok(args.includes(V8_FLAGS_ARG), args.join(" "));
      Deno.kill(pid, "SIGKILL");
      await poll(
        () =>
          cluster.stderr.includes(`${leader} (pid ${pid}) exited on SIGKILL`),
        "the kill report",
      );
      const survivors = [0, 1, 2].filter((i) => `node-${i + 1}` !== leader);
      const next = await poll(async () => {
        const v = await agreed(survivors);
        return v && !v.startsWith(`${leader}@`) && v;
      }, "a new leader on both survivors");
      const nextEpoch = next.split("@")[1];
      assert.ok(
        Number(nextEpoch) > Number(epoch),
        `epoch ${nextEpoch} after ${epoch}`,
      );
      const status = await cluster.stop();
      const err = cluster.stderr;
      assert.equal(
        status.code,
        1,
        "a node was SIGKILLed, so the cluster exits 1",
      );
      assert.equal((err.match(/exited with code 0/g) ?? []).length, 2, err);
    }
  },
});

for (const consensus of ["kv-lease", "raft", "gossip"]) {
  Deno.test({
    name:
      `cluster: --consensus ${consensus} — three nodes agree on a leader, share routed tasks, and stop cleanly on SIGTERM`,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const port = freePortRange(3, { alsoAbove: 1000 });
      await using cluster = await spawnCluster([
        "--nodes",
        "3",
        "--consensus",
        consensus,
        "--port",
        String(port),
        "--",
        "--balancer",
        "round-robin",
      ]);
      const dir = cluster.dir;
      {
        const urls = [0, 1, 2].map((i) => `http://127.0.0.1:${port + i}`);
        await waitHealthy(urls);
        const auth = await clusterAuth(
          dir,
          join(dir, "c", "node-1"),
          "analyst",
        );
        const leader = await poll(async () => {
          const views = await Promise.all(urls.map(async (u) => {
            const r = await fetch(`${u}/api/v1/cluster`, { headers: auth });
            return r.status === 200 ? (await r.json()).leader : null;
          }));
          return views[0] && views.every((v) => v === views[0]) && views[0];
        }, "the three nodes to agree on a leader");
        assert.match(leader, /^node-[123]$/);
        const ids: string[] = [];
        for (let i = 0; i < 30; i++) {
          const r = await fetch(`${urls[i % 3]}/api/v1/tasks`, {
            method: "POST",
            headers: { ...auth, "content-type": "application/json" },
            body: JSON.stringify({ type: "sleep", payload: { ms: 10 } }),
          });
          const body = await r.json();
          assert.equal(r.status, 202, JSON.stringify(body));
          ids.push(body.id);
        }
        const views = await poll(async () => {
          const v = await Promise.all(ids.map(async (id, i) => {
            const r = await fetch(`${urls[(i + 1) % 3]}/api/v1/tasks/${id}`, {
              headers: auth,
            });
            return await r.json() as { status: string; node?: string };
          }));
          return v.every((x) => x.status === "done") && v;
        }, "30 tasks done");
        const claimers = new Set(views.map((v) => v.node));
        assert.ok(claimers.size >= 2, `one node did all: ${[...claimers]}`);
        const status = await cluster.stop();
        const err = cluster.stderr;
        assert.equal(status.code, 0, err);
        assert.equal((err.match(/exited with code 0/g) ?? []).length, 3, err);
      }
    },
  });
}
