/**
 * `POST /api/v1/agents`, `GET /api/v1/agents[/{id}/status]` and
 * `DELETE /api/v1/agents/{id}` over real HTTP.
 */
import assert from "node:assert/strict";
import { connect, newAgentKey } from "./_raw_client.ts";
import { startTestNode, type TestNode } from "./_node.ts";

async function withNode(fn: (n: TestNode) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-enrol-" });
  const n = await startTestNode({ dir });
  try {
    await fn(n);
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

const message = (body: Record<string, unknown>) =>
  (body.error as { message: string }).message;

Deno.test("enrolment: a did:key agent is enrolled, listed and has a status; a plain id works too", async () => {
  await withNode(async (n) => {
    const a = await newAgentKey();
    const r = await n.post("/api/v1/agents", {
      agentId: a.id,
      publicKey: a.id, // a did:key is a public key form too
      roles: ["agent", "worker"],
    });
    assert.equal(r.status, 201);
    assert.equal(r.body.agentId, a.id);
    assert.equal(r.body.publicKey, a.publicKey);
    assert.deepEqual(r.body.roles, ["agent", "worker"]);
    assert.equal(r.body.enrolledBy, "test-operator");
    const plain = await newAgentKey("sensor-7");
    assert.equal(
      (await n.post("/api/v1/agents", {
        agentId: plain.id,
        publicKey: plain.publicKey,
        roles: ["agent"],
      })).status,
      201,
    );
    const list = await (await n.api("/api/v1/agents", {}, "viewer")).json();
    assert.deepEqual(
      list.map((x: { agentId: string }) => x.agentId).sort(),
      [
        a.id,
        "sensor-7",
      ].sort(),
    );
    const status = await n.api(`/api/v1/agents/${a.id}/status`, {}, "viewer");
    assert.equal(status.status, 200);
    assert.deepEqual(await status.json(), {
      agent_id: a.id,
      connected: false,
      last_seen: null,
      channels: [],
      session_expires: null,
    });
    const missing = await n.api("/api/v1/agents/nobody/status");
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
  });
});

Deno.test("enrolment: bad keys, ids and roles are refused with 400 naming the problem", async () => {
  await withNode(async (n) => {
    const a = await newAgentKey();
    const other = await newAgentKey();
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ publicKey: "01" + "00".repeat(31) }, /small-order/],
      [
        {
          publicKey:
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        },
        /small-order/,
      ],
      [{ publicKey: "ed" + "ff".repeat(30) + "7f" }, /canonical/],
      [{ publicKey: "AAAA" }, /publicKey/],
      [{ publicKey: a.publicKey + "AA" }, /publicKey/],
      [{ publicKey: { kty: "OKP", crv: "X25519", x: a.publicKey } }, /Ed25519/],
      [{ publicKey: other.publicKey }, /did:key but not the one of publicKey/],
      [{ agentId: "has.dot" }, /agentId/],
      [{ agentId: "x".repeat(129) }, /agentId/],
      [{ roles: [] }, /roles/],
      [{ roles: ["Admin"] }, /role names/],
      [{ roles: Array.from({ length: 17 }, (_, i) => `r${i}`) }, /roles/],
      [{ extra: true }, /extra|unrecognized/i],
    ];
    for (const [patch, why] of cases) {
      const r = await n.post("/api/v1/agents", {
        agentId: a.id,
        publicKey: a.publicKey,
        roles: ["agent"],
        ...patch,
      });
      assert.equal(r.status, 400, JSON.stringify(patch));
      assert.match(message(r.body), why, JSON.stringify(patch));
    }
    assert.equal((await n.api("/api/v1/agents")).status, 200);
    assert.deepEqual(await (await n.api("/api/v1/agents")).json(), []);
  });
});

Deno.test("enrolment: re-enrolling is 409 unless replace; a new key invalidates the old one's sessions; permissions apply", async () => {
  await withNode(async (n) => {
    const a = await newAgentKey("edge-1");
    const body = { agentId: a.id, publicKey: a.publicKey, roles: ["agent"] };
    assert.equal((await n.post("/api/v1/agents", body)).status, 201);
    const again = await n.post("/api/v1/agents", body);
    assert.equal(again.status, 409);
    assert.match(message(again.body), /replace/);
    const s = await connect(n.ws, a);
    const b = await newAgentKey("edge-1");
    const replaced = await n.post("/api/v1/agents", {
      ...body,
      publicKey: b.publicKey,
      replace: true,
    });
    assert.equal(replaced.status, 200);
    assert.equal(replaced.body.replaced, true);
    // Its connection here closes at once (not at its next heartbeat); the
    // old key no longer authenticates, nor does its resumption token.
    assert.equal((await s.socket.closed).code, 4401);
    await assert.rejects(connect(n.ws, a));
    await assert.rejects(connect(n.ws, a, { resume: s.ready.resume }));
    (await connect(n.ws, b)).close();
    assert.equal((await n.post("/api/v1/agents", body, "analyst")).status, 403);
    const anon = await fetch(`${n.url}/api/v1/agents`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    assert.equal(anon.status, 401);
    await anon.body?.cancel();
  });
});

Deno.test("enrolment: DELETE disconnects the agent with 4401 and removes it, its tokens and its queue", async () => {
  await withNode(async (n) => {
    const a = await newAgentKey();
    await n.enrol(a);
    const queued = await n.post(`/api/v1/agents/${a.id}/send`, {
      channel: "policies",
      message: "x",
    });
    assert.equal(queued.body.status, "queued");
    const s = await connect(n.ws, a);
    assert.equal(
      (await n.api(`/api/v1/agents/${a.id}`, { method: "DELETE" }, "viewer"))
        .status,
      403,
    );
    const del = await n.api(`/api/v1/agents/${a.id}`, { method: "DELETE" });
    assert.equal(del.status, 204);
    assert.deepEqual(await s.socket.closed, {
      code: 4401,
      reason: "agent removed",
    });
    const status = await n.api(`/api/v1/agents/${a.id}/status`);
    assert.equal(status.status, 404);
    await status.body?.cancel();
    await assert.rejects(connect(n.ws, a));
    // Enrolled again with the same key: the old token and queue are gone.
    await n.enrol(a);
    await assert.rejects(connect(n.ws, a, { resume: s.ready.resume }));
    const s2 = await connect(n.ws, a);
    await s2.sub("policies");
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(s2.received.filter((r) => r.header.type === "msg").length, 0);
    s2.close();
    const again = await n.api(`/api/v1/agents/nobody`, { method: "DELETE" });
    assert.equal(again.status, 404);
    await again.body?.cancel();
  });
});
