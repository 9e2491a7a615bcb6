/**
 * A send to an agent through the HTTP API is a `gateway.send` span under the
 * route span, in the caller's trace (the agent is enrolled but offline: the
 * durable channel queues the message); a request to a connected agent is a
 * `gateway.request` span whose traceparent the agent receives.
 */
import assert from "node:assert/strict";
import { generateAgentKey } from "../../sdk/keys.ts";
import { connectAgent } from "../../sdk/mod.ts";
import { enrolOn, seedOf, TEST_BACKOFF } from "../gateway/_sdk_helpers.ts";
import { startPlexus } from "../integration/_process.ts";
import { otelEnv, startReceiver } from "./_receiver.ts";

Deno.test("telemetry: a send to an agent is a gateway.send span and a broadcast a gateway.broadcast span, each under its route span", async () => {
  await using rx = startReceiver();
  const node = await startPlexus({ env: otelEnv(rx.url, "plexus-gw") });
  try {
    const key = await generateAgentKey();
    const post = (path: string, body: unknown, traceparent?: string) =>
      node.api(path, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(traceparent ? { traceparent } : {}),
        },
        body: JSON.stringify(body),
      });
    const enrolled = await post("/api/v1/agents", {
      agentId: key.id,
      publicKey: key.publicKey,
      roles: ["agent"],
    });
    assert.equal(enrolled.status, 201, await enrolled.text());
    const traceId = "9a8b7c6d5e4f30211203f4e5d6c7b8a9";
    const res = await post(`/api/v1/agents/${key.id}/send`, {
      channel: "policies",
      message: { rule: 1 },
      message_type: "notification",
    }, `00-${traceId}-0f1e2d3c4b5a6978-01`);
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.status, "queued");

    const find = (name: string) =>
      rx.spans.find((s) => s.traceId === traceId && s.name === name);
    await rx.until(
      () =>
        find("gateway.send") !== undefined &&
        find("POST /api/v1/agents/:id/send") !== undefined,
      "the gateway.send span and its route span",
    );
    const send = find("gateway.send")!;
    assert.equal(
      send.parentSpanId,
      find("POST /api/v1/agents/:id/send")!.spanId,
    );
    assert.equal(send.attributes["plexus.agent"], key.id);
    assert.equal(send.attributes["plexus.channel"], "policies");

    // A broadcast: a gateway.broadcast span under its route span.
    const btrace = "0123456789abcdef0123456789abcdef";
    const b = await post("/api/v1/agents/broadcast", {
      channel: "policies",
      message: { rule: 2 },
    }, `00-${btrace}-0f1e2d3c4b5a6978-01`);
    assert.equal(b.status, 200, await b.text());
    const inB = (name: string) =>
      rx.spans.find((s) => s.traceId === btrace && s.name === name);
    await rx.until(
      () =>
        inB("gateway.broadcast") !== undefined &&
        inB("POST /api/v1/agents/broadcast") !== undefined,
      "the gateway.broadcast span and its route span",
    );
    assert.equal(
      inB("gateway.broadcast")!.parentSpanId,
      inB("POST /api/v1/agents/broadcast")!.spanId,
    );
    assert.equal(
      inB("gateway.broadcast")!.attributes["plexus.channel"],
      "policies",
    );
  } finally {
    await node.close();
  }
});

Deno.test("telemetry: a request to an agent is a gateway.request span whose traceparent reaches the agent (the record's tp header)", async () => {
  await using rx = startReceiver();
  const node = await startPlexus({ env: otelEnv(rx.url, "plexus-gw-req") });
  try {
    const key = await generateAgentKey();
    await enrolOn(node, key, ["worker"]);
    await using agent = await connectAgent({
      url: node.url,
      id: key.id,
      privateKey: seedOf(key),
      backoff: TEST_BACKOFF,
    });
    await agent.handle("tasks.gpu", (m) => ({ traceparent: m.traceparent }));
    const traceId = "1234abcd1234abcd1234abcd1234abcd";
    const res = await node.api("/api/v1/tasks", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      },
      body: JSON.stringify({ type: "x", capability: "gpu", payload: {} }),
    }, "analyst");
    const submitted = await res.json();
    assert.equal(res.status, 202, JSON.stringify(submitted));
    const { id } = submitted;
    let task: { status: string; result?: { traceparent?: string } } = {
      status: "",
    };
    for (let i = 0; i < 200 && task.status !== "done"; i++) {
      task = await (await node.api(`/api/v1/tasks/${id}`)).json();
      if (task.status !== "done") await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(task.status, "done", JSON.stringify(task));
    const tp = task.result?.traceparent;
    assert.ok(tp, "the agent saw a traceparent");
    const [, trace, parentId] = tp.split("-");
    assert.equal(trace, traceId);
    await rx.until(
      () => rx.spans.some((s) => s.spanId === parentId),
      "the span the agent's traceparent names",
    );
    const request = rx.spans.find((s) => s.spanId === parentId)!;
    assert.equal(request.name, "gateway.request");
    assert.equal(request.kind, 3); // CLIENT
    assert.equal(request.attributes["plexus.agent"], key.id);
    assert.equal(request.attributes["plexus.channel"], "tasks.gpu");
  } finally {
    await node.close();
  }
});
