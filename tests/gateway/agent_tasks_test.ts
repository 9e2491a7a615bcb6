/**
 * The node asking agents (backend → agent requests) and tasks run by agents
 * that offer a capability, against the real gateway with the SDK.
 */
import assert from "node:assert/strict";
import {
  type AgentGateway,
  GatewayRequestError,
} from "../../gateway/gateway.ts";
import { AgentError, connectAgent } from "../../sdk/mod.ts";
import { startTestNode, type TestNode, until } from "./_node.ts";
import { enrolledKey, seedOf, TEST_BACKOFF } from "./_sdk_helpers.ts";

async function withNode(fn: (n: TestNode) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-agent-tasks-" });
  const n = await startTestNode({ dir });
  try {
    await fn(n);
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

const gatewayOf = (n: TestNode) =>
  n.handle.kernel.get<AgentGateway>("gateway:agents");

function code(expected: string) {
  return (err: unknown) => {
    assert.ok(err instanceof GatewayRequestError, String(err));
    assert.equal(err.code, expected, err.message);
    return true;
  };
}

Deno.test("gateway: the node asks an agent on a backend channel it handles and gets its answer, or a clear error code", async () => {
  await withNode(async (n) => {
    const key = await enrolledKey(n, ["worker"]);
    await using agent = await connectAgent({
      url: n.url,
      id: key.id,
      privateKey: seedOf(key),
      backoff: TEST_BACKOFF,
    });
    await agent.handle("tasks.gpu", (m) => {
      const p = m.payload as {
        payload: { n: number; fail?: boolean; slow?: boolean };
      };
      if (p.payload.fail) {
        throw new AgentError("bad_request", "cannot render that");
      }
      if (p.payload.slow) {
        return new Promise((r) => setTimeout(() => r(1), 1500));
      }
      return { doubled: p.payload.n * 2 };
    });
    const gw = gatewayOf(n);
    assert.deepEqual(gw.capabilities(), { gpu: [key.id] });
    assert.deepEqual(
      await gw.request(key.id, "tasks.gpu", { payload: { n: 21 } }),
      { doubled: 42 },
    );
    await assert.rejects(
      gw.request(key.id, "tasks.gpu", { payload: { n: 1, fail: true } }),
      code("bad_request"),
    );
    await assert.rejects(
      gw.request(key.id, "tasks.gpu", { payload: { n: 1, slow: true } }, {
        timeoutMs: 200,
      }),
      code("timeout"),
    );
    await assert.rejects(
      gw.request(key.id, "tasks.cpu", { payload: {} }),
      code("no_handler"),
    );
    await assert.rejects(
      gw.request("did:key:nobody", "tasks.gpu", {}),
      code("unavailable"),
    );
    // The connection is still fine after all that.
    assert.deepEqual(
      await gw.request(key.id, "tasks.gpu", { payload: { n: 2 } }),
      { doubled: 4 },
    );
    // A request in flight when the agent goes away fails at once.
    const pending = gw.request(key.id, "tasks.gpu", {
      payload: { n: 1, slow: true },
    }, { timeoutMs: 10_000 });
    const refused = assert.rejects(pending, code("unavailable"));
    const t0 = Date.now();
    await agent.close();
    await refused;
    assert.ok(Date.now() - t0 < 5000);
    assert.deepEqual(gw.capabilities(), {});
  });
});

Deno.test("tasks: a task with a capability runs on a connected agent offering it; without one it is retried, then dead", async () => {
  await withNode(async (n) => {
    const key = await enrolledKey(n, ["worker"]);
    await using agent = await connectAgent({
      url: n.url,
      id: key.id,
      privateKey: seedOf(key),
      backoff: TEST_BACKOFF,
    });
    const seen: unknown[] = [];
    await agent.handle("tasks.render", (m) => {
      seen.push(m.payload);
      const p = m.payload as { type: string; payload: { frame: number } };
      return { type: p.type, frame: p.payload.frame, by: key.id };
    });
    const submit = async (body: unknown) => {
      const r = await n.post("/api/v1/tasks", body);
      assert.equal(r.status, 202, JSON.stringify(r.body));
      return r.body.id as string;
    };
    const id = await submit({
      type: "frame",
      capability: "render",
      payload: { frame: 7 },
    });
    const view = await until(async () => {
      const v = await (await n.api(`/api/v1/tasks/${id}`)).json();
      return v.status === "done" && v;
    }, "the agent to run the task");
    assert.deepEqual(view.result, { type: "frame", frame: 7, by: key.id });
    assert.equal(seen.length, 1);
    assert.equal((seen[0] as { id: string }).id, id);
    // Bad capability names are refused at submit.
    const bad = await n.post("/api/v1/tasks", {
      type: "frame",
      capability: "has space",
    });
    assert.equal(bad.status, 400);
    assert.match(
      String((bad.body.error as { message: string }).message),
      /capability/,
    );
    // Nobody offers "audio": the task is retried, then dead (3 attempts).
    const orphan = await submit({ type: "clip", capability: "audio" });
    const dead = await until(
      async () => {
        const v = await (await n.api(`/api/v1/tasks/${orphan}`)).json();
        return v.status === "dead" && v;
      },
      "the orphan task to die",
      30_000,
    );
    assert.equal(dead.attempts, 3);
    assert.match(dead.error, /no agent offers capability 'audio'/);
  });
});
