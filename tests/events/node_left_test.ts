/**
 * `node.left` for a crash, on real nodes sharing one KV (a file, and denokv
 * over KV Connect when it runs): SIGKILL one of
 * three and the leader (the smallest up id, no consensus plugin here)
 * stores exactly one `node.left {reason: "down"}` for it; over KV Connect,
 * a node stalled past the down threshold (SIGSTOP) is announced down, then
 * `node.joined` once it answers again (SIGCONT).
 */
import assert from "node:assert/strict";
import {
  eventually,
  fileTarget,
  KV_TARGETS,
  startCluster,
} from "../cluster/_cluster.ts";
import type { StoredEvent } from "../../plugins/events/store.ts";
import { storedEvents } from "./_util.ts";

/** Every stored event of the `node` stream, in offset order. */
const nodeEvents = (kv: Deno.Kv) => storedEvents(kv, "node");

const about = (es: StoredEvent[], type: string, nodeId: string) =>
  es.filter((e) =>
    e.type === type && (e.data as { nodeId: string }).nodeId === nodeId
  );

for (const target of KV_TARGETS) {
  // A SIGSTOPped process may hold a shared KV file's write lock and stall
  // every node; over KV Connect it holds nothing, so stall it only there.
  const stall = target !== fileTarget;
  Deno.test(
    `events (${target.name}): a SIGKILLed node gets exactly one node.left {reason: down} from the leader${
      stall ? "; a stalled one is left, then joined again" : ""
    }`,
    async () => {
      await using c = await startCluster(target, {
        nodes: 3,
        args: ["--plugin", "builtin:events"],
        config: { rateLimit: { enabled: false } },
      });
      if (!c) return;
      const [, n2, n3] = c.nodes;
      // Every node up and seen by the leader before the failures.
      await eventually(
        () => nodeEvents(c.kv),
        (es) => es.filter((e) => e.type === "node.joined").length === 3,
        "three node.joined",
      );
      n3.signal("SIGKILL");
      await n3.status;
      if (stall) n2.signal("SIGSTOP");
      const down = stall ? ["n3", "n2"] : ["n3"];
      try {
        // Down after 15 s without a heartbeat; the leader looks every second.
        const es = await eventually(
          () => nodeEvents(c.kv),
          (es) => down.every((id) => about(es, "node.left", id).length > 0),
          `node.left for ${down.join(" and ")}`,
          45_000,
        );
        for (const id of down) {
          const [left] = about(es, "node.left", id);
          assert.deepEqual(left.data, { nodeId: id, reason: "down" });
          assert.equal(left.node, "n1", "announced by the leader");
        }
      } finally {
        if (stall) n2.signal("SIGCONT");
      }
      if (stall) {
        const back = await eventually(
          () => nodeEvents(c.kv),
          (es) => about(es, "node.joined", "n2").length === 2,
          "n2 joined again",
          30_000,
        );
        const rejoined = about(back, "node.joined", "n2")[1];
        assert.equal(rejoined.node, "n1");
        assert.equal((rejoined.data as { address: string }).address, n2.url);
      }
      // A few more looks of the leader: still one event per transition.
      await new Promise((r) => setTimeout(r, 3_000));
      const final = await nodeEvents(c.kv);
      assert.equal(about(final, "node.left", "n3").length, 1);
      assert.equal(about(final, "node.left", "n2").length, stall ? 1 : 0);
      assert.equal(about(final, "node.joined", "n2").length, stall ? 2 : 1);
      assert.equal(about(final, "node.left", "n1").length, 0);
    },
  );
}
