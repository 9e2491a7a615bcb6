/**
 * A real `main.ts` node started with `--no-gateway` (issue 15): everything
 * but the gateway answers as usual (health, plugins, tasks, the log stream,
 * metrics), the gateway's routes are 404, and its socket is refused.
 */
import assert from "node:assert/strict";
import { runMain, startPlexus } from "./_process.ts";
import { rawUpgrade } from "../_raw_upgrade.ts";

Deno.test("no gateway: a node started with --no-gateway serves health, plugins, tasks and /ws, and answers the gateway's routes 404", async () => {
  const p = await startPlexus({
    args: ["--no-gateway", "--plugin", "./plugins/examples/hello.ts"],
  });
  try {
    const health = await (await fetch(`${p.url}/health`)).json();
    assert.equal(health.status, "healthy");
    assert.deepEqual(Object.keys(health.services).sort(), [
      "dashboard",
      "hello",
      "kv",
    ]);
    const greet = await fetch(`${p.url}/plugins/hello/greet/ada`);
    assert.equal(greet.status, 200);
    await greet.body?.cancel();

    // A token from the node's own key, as an operator would mint it.
    const minted = await runMain(p.dir, [
      "--allow-read",
      `--allow-write=${p.dir}`,
      "--allow-env",
    ], [
      "token",
      "--data-dir",
      p.dir,
      "--role",
      "admin",
      "--sub",
      "ci",
      "--ttl",
      "10m",
    ]);
    assert.equal(minted.code, 0, minted.stderr);
    const auth = { authorization: `Bearer ${minted.stdout.trim()}` };

    const plugins = await (await fetch(`${p.url}/api/v1/plugins`, {
      headers: auth,
    })).json();
    assert.deepEqual(plugins.map((x: { name: string }) => x.name), [
      "dashboard",
      "hello",
    ]);
    for (const path of ["/api/v1/agents", "/api/v1/agents/x/status"]) {
      const r = await fetch(`${p.url}${path}`, { headers: auth });
      assert.equal(r.status, 404, path);
      await r.body?.cancel();
    }
    const agentSocket = await rawUpgrade(
      `${p.url.replace("http", "ws")}/ws/agent`,
      {},
    );
    assert.equal(agentSocket.status, 404);
    const logSocket = await rawUpgrade(`${p.url.replace("http", "ws")}/ws`, {});
    assert.equal(logSocket.status, 101);

    // Tasks still work: the hello plugin registers none, so a capability task
    // waits (no agent can take it) instead of failing.
    const submitted = await fetch(`${p.url}/api/v1/tasks`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ type: "resize", capability: "gpu" }),
    });
    assert.equal(submitted.status, 202, await submitted.clone().text());
    const { id } = await submitted.json();
    const view = await (await fetch(`${p.url}/api/v1/tasks/${id}`, {
      headers: auth,
    })).json();
    assert.equal(view.id, id);
    assert.notEqual(view.status, "dead");
    const metrics = await (await fetch(`${p.url}/metrics`)).text();
    assert.doesNotMatch(metrics, /plexus_gateway_/);
  } finally {
    await p.close();
  }
});
