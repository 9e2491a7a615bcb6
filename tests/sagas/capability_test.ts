/**
 * Capability steps: a saga's step runs on a connected agent offering the
 * capability (through the node's task service and the gateway), its
 * compensation too; a capability no connected agent offers is refused at
 * submit.
 */
import assert from "node:assert/strict";
import { AgentError, connectAgent } from "../../sdk/mod.ts";
import { startTestNode, until } from "../gateway/_node.ts";
import { enrolledKey, seedOf, TEST_BACKOFF } from "../gateway/_sdk_helpers.ts";

Deno.test("sagas: capability steps run on an agent offering them; a failure compensates on the agent; an unoffered capability is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-saga-cap-" });
  const n = await startTestNode({
    dir,
    plugins: ["builtin:sagas"],
    pluginConfig: { sagas: { tickMs: 20 } },
    // One run per saga attempt: the agent's refusal is final at once.
    config: { tasks: { maxAttempts: 1 } },
  });
  try {
    const key = await enrolledKey(n, ["worker"]);
    await using agent = await connectAgent({
      url: n.url,
      id: key.id,
      privateKey: seedOf(key),
      backoff: TEST_BACKOFF,
    });
    /** What the agent did, in order, with the step's idempotency key. */
    const did: string[] = [];
    type Run = {
      payload: {
        saga: { idempotencyKey: string };
        input: { amount: number };
        sagaInput: { order: string };
      };
    };
    await agent.handle("tasks.payments", (m) => {
      const p = (m.payload as Run).payload;
      did.push(`charge ${p.input.amount} ${p.saga.idempotencyKey}`);
      return { charged: p.input.amount, order: p.sagaInput.order };
    });
    await agent.handle("tasks.refunds", (m) => {
      did.push(`refund ${(m.payload as Run).payload.saga.idempotencyKey}`);
      return { refunded: true };
    });
    await agent.handle("tasks.shipping", () => {
      throw new AgentError("bad_request", "no courier today");
    });
    const step = (id: string, capability: string, compensate?: string) => ({
      id,
      run: { kind: "capability", capability, payload: { amount: 30 } },
      ...(compensate
        ? { compensate: { kind: "capability", capability: compensate } }
        : {}),
      retry: { maxAttempts: 1 },
    });
    // The gateway's presence record lists the agent's channels: wait for it.
    await until(async () => {
      const r = await n.post("/api/v1/sagas", {
        definition: { name: "probe", steps: [step("p", "payments")] },
        id: "probe",
        input: { order: "probe" },
      }, "analyst");
      return r.status === 201;
    }, "the agent's capabilities to be known");
    await until(async () => {
      const s = await (await n.api("/api/v1/sagas/probe")).json();
      return s.status === "completed";
    }, "the probe saga");
    did.length = 0;

    const ok = await n.post("/api/v1/sagas", {
      id: "paid",
      input: { order: "o-7" },
      definition: {
        name: "pay",
        steps: [step("charge", "payments", "refunds")],
      },
    }, "analyst");
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    const paid = await until(async () => {
      const s = await (await n.api("/api/v1/sagas/paid")).json();
      return s.status === "completed" && s;
    }, "the paid saga");
    assert.deepEqual(paid.steps.charge.result, { charged: 30, order: "o-7" });
    assert.deepEqual(did, ["charge 30 paid:charge"]);

    did.length = 0;
    await n.post("/api/v1/sagas", {
      id: "unshipped",
      input: { order: "o-8" },
      definition: {
        name: "ship",
        steps: [
          step("charge", "payments", "refunds"),
          step("ship", "shipping"),
        ],
      },
    }, "analyst");
    const failed = await until(async () => {
      const s = await (await n.api("/api/v1/sagas/unshipped")).json();
      return s.status === "compensated" && s;
    }, "the unshipped saga to compensate");
    assert.match(failed.steps.ship.attempts[0].error, /no courier today/);
    assert.deepEqual(did, [
      "charge 30 unshipped:charge",
      "refund unshipped:charge:compensate",
    ]);

    const bad = await n.post("/api/v1/sagas", {
      definition: { name: "x", steps: [step("a", "oracle")] },
    }, "analyst");
    assert.equal(bad.status, 400);
    assert.equal(
      (bad.body.error as { field: string }).field,
      "definition.steps[0].run",
    );
    assert.match(
      (bad.body.error as { message: string }).message,
      /unknown capability 'oracle' \(known: .*payments/,
    );
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
