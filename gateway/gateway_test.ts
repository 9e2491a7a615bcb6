import assert from "node:assert/strict";
import { createTestKernel } from "../core/testing.ts";
import { definePlugin } from "../core/plugin.ts";
import type { AgentGateway } from "./gateway.ts";
import gatewayPlugin, { localGateway } from "./mod.ts";

const DID = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw";

Deno.test("gateway: plugins get the gateway:agents capability (send, status, onRequest)", async () => {
  let api: AgentGateway | undefined;
  const plugin = definePlugin({
    manifest: {
      name: "fleet",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:fleet"],
      requires: ["gateway:agents"],
    },
    setup(ctx) {
      api = ctx.kernel.get<AgentGateway>("gateway:agents");
      const off = api.onRequest("agent.*.requests", () => ({ ok: true }));
      return Promise.resolve({ stop: () => Promise.resolve(off()) });
    },
  });
  await using t = await createTestKernel([gatewayPlugin, plugin]);
  assert.ok(api);
  await api.enrol({ agentId: DID, publicKey: DID, roles: ["agent"] }, "fleet");
  const sent = await api.send(DID, "policies", { v: 1 }, { priority: 6 });
  assert.equal(sent.status, "queued");
  assert.deepEqual(await api.status(DID), {
    agent_id: DID,
    connected: false,
    last_seen: null,
    channels: [],
    session_expires: null,
  });
  assert.equal(await api.status("nobody"), null);
  // The same through HTTP.
  const res = await t.api(`/api/v1/agents/${DID}/send`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ channel: "policies", message: 2 }),
  }, "operator");
  assert.equal(res.status, 200);
  assert.equal((await res.json()).status, "queued");
  await assert.rejects(
    api.send(DID, "nope", 1),
    /may not subscribe to channel 'nope'/,
  );
});

Deno.test("gateway: /ws/agent wants a WebSocket upgrade and spends the handshake rate limit", async () => {
  await using t = await createTestKernel([gatewayPlugin], {
    rateLimit: { wsHandshake: { rate: 1, periodMs: 60_000, burst: 2 } },
  });
  const plain = await t.request("/ws/agent");
  assert.equal(plain.status, 426);
  await plain.body?.cancel();
  const upgrade = { headers: { upgrade: "websocket" } };
  const env = {
    remoteAddr: { hostname: "203.0.113.9", port: 1, transport: "tcp" },
  };
  // Not a real upgrade (no server connection under it): refused with 400.
  for (let i = 0; i < 2; i++) {
    const r = await t.app.request("/ws/agent", upgrade, env);
    assert.equal(r.status, 400);
    await r.body?.cancel();
  }
  const limited = await t.app.request("/ws/agent", upgrade, env);
  assert.equal(limited.status, 429);
  assert.ok(limited.headers.get("retry-after"));
  await limited.body?.cancel();
});

Deno.test("gateway: a kernel without the gateway plugin serves everything else, and /ws/agent and /api/v1/agents are 404", async () => {
  await using t = await createTestKernel([]);
  const health = await t.request("/health");
  assert.equal(health.status, 200);
  await health.body?.cancel();
  for (
    const [path, init] of [
      ["/ws/agent", { headers: { upgrade: "websocket" } }],
      ["/api/v1/agents", {}],
      ["/api/v1/gateway/wake", { method: "POST" }],
    ] as const
  ) {
    const r = path.startsWith("/api")
      ? await t.api(path, init)
      : await t.request(path, init);
    assert.equal(r.status, 404, path);
    await r.body?.cancel();
  }
  assert.equal(t.kernel.has("gateway:agents"), false);
  assert.deepEqual(t.tasks.capabilities(), {});
  assert.throws(() => localGateway(t.kernel), /not running/);
});

Deno.test("gateway: its config is pluginConfig.gateway, checked at start with the field named", async () => {
  await using t = await createTestKernel([gatewayPlugin], {
    pluginConfig: { gateway: { heartbeatMs: 1234 } },
  });
  assert.equal(t.kernel.list()[0].status, "running");
  await assert.rejects(
    createTestKernel([gatewayPlugin], {
      pluginConfig: { gateway: { heartbeatMs: "soon" } },
    }),
    /plugin 'gateway' has invalid config: .*heartbeatMs/,
  );
});

Deno.test("gateway: node-to-node routes refuse a caller with a token, even an admin's", async () => {
  await using t = await createTestKernel([gatewayPlugin]);
  const r = await t.api("/api/v1/gateway/kick", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ agentId: DID, code: 4401 }),
  }, "admin");
  assert.equal(r.status, 403);
  assert.match((await r.json()).error.message, /node's signature/);
});
