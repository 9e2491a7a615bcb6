/**
 * A sealed record altered in flight between an agent and the node, by a
 * WebSocket proxy in between: the node refuses the record (it does not
 * open), the prompt fails with a clear error and nothing is cached; the node
 * stays up and answers other agents' prompts.
 *
 * @module
 */
import assert from "node:assert/strict";
import { localGateway } from "../../gateway/mod.ts";
import { TAG_BYTES } from "../../sdk/protocol/record.ts";
import { promptAgent, startPromptNode } from "./_node.ts";
import { startWsProxy } from "./_ws_proxy.ts";

Deno.test("prompts: a root agent's answer altered in flight is refused; the prompt fails clearly, nothing is cached, other agents are unaffected", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-prompts-tamper-" });
  await using node = await startPromptNode({
    dir,
    config: { health: { cacheMs: 0 } },
  });
  await using proxy = startWsProxy(node.url);
  const [tampered, direct] = [await node.enrolled(), await node.enrolled()];
  let asked = 0;
  await using victim = await promptAgent(node, tampered, "prompt", (hop) => {
    asked++;
    return `answer to ${hop.prompt}`;
  }, { via: proxy.url });
  // Another agent, connected to the node directly, for the 'order' scenario.
  await using _other = await promptAgent(
    node,
    direct,
    "prompt.order",
    (hop) => `order for ${hop.prompt}`,
  );

  const reconnected = new Promise((r) => victim.on("ready", r));
  // One bit of the answer's ciphertext flipped on its way to the node.
  proxy.arm((frame) => (frame[frame.length - TAG_BYTES - 1] ^= 1));
  const body = { prompt: "a room in Porto", sageEnabled: false };
  const r = await node.prompt(body);
  assert.ok(await proxy.tampered() > 0);
  assert.equal(asked, 1, "the agent answered; its answer was altered");
  assert.equal(r.status, 503, JSON.stringify(r.body));
  const error = r.body.error as { code: string; message: string };
  assert.equal(error.code, "agent_unavailable");
  assert.ok(error.message.includes(tampered.id), error.message);
  assert.equal(r.headers.get("retry-after"), "1");
  // The node closed the connection that carried the altered record.
  assert.equal(proxy.closes.at(0)?.code, 4403, JSON.stringify(proxy.closes));
  assert.equal(
    await node.metric("plexus_prompts_cache_total", { result: "hit" }),
    0,
  );

  // The node is up and answers the untouched agent.
  const other = await node.prompt({
    prompt: "two coffees",
    sageEnabled: false,
    scenario: "order",
  });
  assert.equal(other.status, 200, JSON.stringify(other.body));
  assert.equal(other.body.response, "order for two coffees");
  const health = await (await fetch(`${node.url}/health`)).json();
  assert.equal(health.status, "healthy");

  // Nothing was cached: once the agent is back (it reconnects through the
  // proxy, now a plain relay), the same prompt asks it again.
  await reconnected;
  const gateway = localGateway(node.handle.kernel);
  await waitFor(() =>
    Promise.resolve(gateway.capabilities().prompt?.length ? true : undefined)
  );
  const again = await node.prompt(body);
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.equal(again.headers.get("x-cache"), "MISS");
  assert.equal(again.body.response, "answer to a room in Porto");
  assert.equal(asked, 2);
});

/** Polls `probe` every 20 ms until it returns a value (at most 10 s). */
async function waitFor<T>(probe: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + 10_000;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error("gave up waiting after 10 s");
    await new Promise((r) => setTimeout(r, 20));
  }
}
