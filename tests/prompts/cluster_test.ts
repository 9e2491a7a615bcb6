/**
 * Prompts across nodes sharing one KV: a node with no agent for a
 * capability sends the hop to a node that has one (found through the
 * nodes' advertisements in KV), the agents' asks come back to the node
 * answering the prompt, and every hop is still verified there.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  advertised,
  promptAgent,
  type PromptNode,
  startPromptNode,
} from "./_node.ts";

/** Posts `body` to `node` until it is answered (the other node's advertisement may not be read yet). */
async function answered(node: PromptNode, body: unknown) {
  const end = Date.now() + 10_000;
  for (;;) {
    const r = await node.prompt(body);
    if (r.status !== 503 || Date.now() > end) return r;
    await new Promise((res) => setTimeout(res, 50));
  }
}

Deno.test("prompts across nodes: the root agent on another node, its asks routed back, agents on both nodes, the whole chain verified", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-prompts-cluster-" });
  const prompts = { advertiseMs: 100 };
  await using a = await startPromptNode({ dir, name: "a", prompts });
  await using b = await startPromptNode({ dir, name: "b", prompts });
  const [rootKey, planKey, orderKey] = await Promise.all([
    a.enrolled(),
    a.enrolled(),
    a.enrolled(),
  ]);
  // Root and ordering on b, planning on a; the prompt goes to a.
  await using _root = await promptAgent(b, rootKey, "prompt", async (hop) => {
    const plan = await hop.ask("plan", { prompt: "plan it" });
    const order = await hop.ask("order", { prompt: "order it" });
    return `${plan} + ${order}`;
  });
  await using _plan = await promptAgent(a, planKey, "plan", () => "plan A");
  await using _order = await promptAgent(b, orderKey, "order", () => "order B");

  // Node a must know b's root and ordering agents before the prompt: an ask
  // for a capability no advertisement lists yet fails.
  await advertised(dir, { b: ["prompt", "order"], a: ["plan"] });
  const r = await answered(a, { prompt: "trip", sageEnabled: true });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.response, "plan A + order B");
  const meta = r.body.metadata as { agent: string };
  assert.equal(meta.agent, rootKey.id);
  const v = r.body.sageVerification as {
    verified: boolean;
    chain: {
      hop: number;
      agent: string;
      from: string;
      signatureValid: boolean;
    }[];
  };
  assert.equal(v.verified, true);
  assert.deepEqual(
    v.chain.map((l) => [l.hop, l.agent, l.from, l.signatureValid]),
    [
      [0, rootKey.id, "node:a", true],
      [1, planKey.id, rootKey.id, true],
      [2, orderKey.id, rootKey.id, true],
    ],
  );
  const logs = r.body.logs as { from: string; to: string }[];
  assert.ok(logs.some((l) => l.from === "node:a" && l.to === "node:b"));
  assert.ok(logs.some((l) => l.from === rootKey.id && l.to === "node:b"));

  // An agent on b that is not part of a prompt cannot ask through b for it.
  const strangerKey = await a.enrolled();
  await using stranger = await promptAgent(b, strangerKey, "misc", () => "x");
  await assert.rejects(
    stranger.ask("plan", {}, {
      requestId: (meta as { requestId?: string }).requestId ?? "r",
    }),
    /takes no part/,
  );
});
