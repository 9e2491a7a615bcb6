import assert from "node:assert/strict";
import { createTestKernel } from "../core/testing.ts";
import { definePlugin } from "../core/plugin.ts";
import type { AgentGateway } from "./gateway.ts";

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
  await using t = await createTestKernel([plugin]);
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
  await using t = await createTestKernel([], {
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
